//! Declares the `pkbpf_force_disabled_mpk` cfg, which selects the disabled
//! MPK backend on x86-64 Linux (`RUSTFLAGS="--cfg pkbpf_force_disabled_mpk"`).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(pkbpf_force_disabled_mpk)");
}
