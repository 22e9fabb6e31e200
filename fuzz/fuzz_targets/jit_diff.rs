//! Verified programs (structured, biased toward acceptance, or raw seeds):
//! JIT and interpreter agree on r0 and memory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pkbpf_fuzzlib::Case;

fuzz_target!(|data: &[u8]| {
    if let Some(case) = Case::from_bytes(data) {
        if let Err(f) = pkbpf_fuzzlib::oracles::jit_diff(&case) {
            panic!("{f}");
        }
    }
});
