//! pkbpf's hooks: uprobes, uretprobes, syscall interception.
#![deny(missing_docs)]
