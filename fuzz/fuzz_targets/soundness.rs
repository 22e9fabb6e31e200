//! Every program the verifier accepts runs in the checked interpreter
//! without an out-of-region access or an uninitialised read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pkbpf_fuzzlib::Case;

fuzz_target!(|data: &[u8]| {
    if let Some(case) = Case::from_bytes(data) {
        if let Err(f) = pkbpf_fuzzlib::oracles::soundness(&case) {
            panic!("{f}");
        }
    }
});
