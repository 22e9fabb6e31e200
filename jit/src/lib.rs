//! pkbpf's execution engines: the reference interpreter (the definition of
//! pkbpf's semantics) and the x86-64 JIT.
#![deny(missing_docs)]
