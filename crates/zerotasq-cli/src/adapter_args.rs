//! What the CLI tells each adapter it starts, on the adapter's command line:
//! `zerotasq __adapter SEP GRACE_MS WARN_SILENT_MS -- COMMAND...`.

use std::ffi::OsString;
use std::time::Duration;

/// The first argument that makes `zerotasq` an adapter.
pub const ADAPTER_ARG: &str = "__adapter";

/// What the CLI tells each adapter, on its command line.
pub struct AdapterArgs {
    pub separator: u8,
    /// A command still running after this long counts as started.
    pub grace: Duration,
    /// Warn once when the command has written nothing for this long while given records.
    pub warn_silent: Duration,
    pub command: Vec<OsString>,
}

impl AdapterArgs {
    /// The arguments after the program name.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            ADAPTER_ARG.into(),
            self.separator.to_string().into(),
            self.grace.as_millis().to_string().into(),
            self.warn_silent.as_millis().to_string().into(),
            "--".into(),
        ];
        args.extend(self.command.iter().cloned());
        args
    }

    /// Parses what [`AdapterArgs::to_args`] wrote (after `__adapter`).
    pub fn parse(args: &[OsString]) -> Option<AdapterArgs> {
        let num = |i: usize| args.get(i)?.to_str()?.parse::<u64>().ok();
        if args.get(3)?.to_str()? != "--" || args.len() < 5 {
            return None;
        }
        Some(AdapterArgs {
            separator: u8::try_from(num(0)?).ok()?,
            grace: Duration::from_millis(num(1)?),
            warn_silent: Duration::from_millis(num(2)?),
            command: args[4..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let args = AdapterArgs {
            separator: 0,
            grace: Duration::from_millis(100),
            warn_silent: Duration::from_secs(10),
            command: vec!["python3".into(), "-u".into()],
        };
        let parsed = AdapterArgs::parse(&args.to_args()[1..]).unwrap();
        assert_eq!(parsed.separator, 0);
        assert_eq!(parsed.grace, args.grace);
        assert_eq!(parsed.warn_silent, args.warn_silent);
        assert_eq!(parsed.command, args.command);
    }
}
