//! The `zerotasq` command line (being built: see issue 4).

fn main() {
    zerotasq::serve_if_worker();
    eprintln!("zerotasq: the command line is not built yet");
    std::process::exit(2);
}
