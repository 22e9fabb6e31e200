//! Arbitrary instruction bytes: decode and verify without panic, in bounded
//! time (libFuzzer's `-timeout`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(f) = pkbpf_fuzzlib::oracles::verifier(data) {
        panic!("{f}");
    }
});
