//! Enables the AVX-512 and AVX-VNNI kernels when the compiler has their intrinsics stable
//! (Rust 1.89+).
//! Without this script (e.g. a bare `rustc` build) the crate still compiles, down to Rust 1.63,
//! with the AVX2 and scalar paths.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-check-cfg=cfg(trillim_avx512)");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split('.').nth(1).and_then(|m| m.parse::<u32>().ok()));
    if minor.map_or(false, |m| m >= 89) {
        println!("cargo:rustc-cfg=trillim_avx512");
    }
}
