// SPDX-License-Identifier: MIT OR Apache-2.0
// Shared by the engine benchmark's programs. Each program is one C file whose
// entry is written once as
//
//     ENTRY(name)(struct ctx *c) { ... }
//
// Compiled with `clang -target bpf` it is `SEC("extension") int prog(...)`;
// compiled natively with `cc -O2 -shared` it is `int engine_<name>(...)`, so
// the same C body runs on every engine. `c` points to the input buffer the
// harness prepared (layout: the file's `struct ctx`).
#ifndef PKBPF_ENGINE_H
#define PKBPF_ENGINE_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#ifdef __bpf__
#define ENTRY(name) __attribute__((section("extension"), used)) int prog
#define LICENSE char _license[] __attribute__((section("license"), used)) = "GPL";
#else
#define ENTRY(name) int engine_##name
#define LICENSE
#endif

/* Bytes one call of a chunked program handles (memcpy, strcmp). */
#define CHUNK 4096
/* Chunks in 1 MiB. */
#define CHUNKS 256

#endif
