//! Durations on the command line: a number with a unit (`500ms`, `2s`, `1.5m`, `1h`), or a
//! plain number of seconds.

use std::time::Duration;

/// Parses a duration, with an error message that says what is expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let hint = "expected a number and a unit (ms, s, m, h), e.g. 500ms, 2s or 1.5m";
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: {hint}"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" | "sec" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?}; {hint}"
            ))
        }
    };
    if seconds <= 0.0 || !seconds.is_finite() || seconds > 1e9 {
        return Err(format!("invalid duration {text:?}: must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A short human form: `1.5s`, `250ms`, `2m`.
pub fn show(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{}ms", d.as_millis())
    } else if s < 120.0 {
        format!("{}s", (s * 100.0).round() / 100.0)
    } else {
        format!("{}m", (s / 60.0 * 10.0).round() / 10.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn errors_say_why() {
        assert!(parse("5x").unwrap_err().contains("unknown unit"));
        assert!(parse("fast").unwrap_err().contains("expected a number"));
        assert!(parse("0s").unwrap_err().contains("positive"));
        assert!(parse("").is_err());
    }

    #[test]
    fn shows_briefly() {
        assert_eq!(show(Duration::from_millis(250)), "250ms");
        assert_eq!(show(Duration::from_millis(1500)), "1.5s");
    }
}
