//! pkbpf's sandbox: protection keys, PKRU, domain gates, hardening.
#![deny(missing_docs)]
