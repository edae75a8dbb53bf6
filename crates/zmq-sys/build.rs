//! Builds libzmq from source (zeromq-src, compiled with `cc`) with CURVE on libsodium, which
//! libsodium-sys-stable built from its bundled source, and links both statically; with the
//! `system` feature, links the system's shared libzmq instead.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_SYSTEM").is_some() {
        println!("cargo:rustc-link-lib=zmq");
        return;
    }
    let sodium = |key: &str| {
        env::var(key).unwrap_or_else(|_| panic!("libsodium-sys-stable did not set {key}"))
    };
    let libsodium =
        zeromq_src::LibLocation::new(sodium("DEP_SODIUM_LIB"), sodium("DEP_SODIUM_INCLUDE"));
    // libzmq's own compiler warnings are not ours to fix; cc would print each as ours.
    let cxxflags = env::var("CXXFLAGS").unwrap_or_default();
    env::set_var("CXXFLAGS", format!("{cxxflags} -w"));
    zeromq_src::Build::new()
        .with_libsodium(Some(libsodium))
        .build();
}
