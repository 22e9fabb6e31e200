/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * pkbpf.h - C ABI of pkbpf, a userspace eBPF runtime (libpkbpf.so / .a).
 *
 * Written by hand to match capi/src/lib.rs; capi/tests/header.rs checks that
 * every exported symbol and constant of the library is declared here.
 *
 * Conventions: handles are opaque and each has a *_free (NULL is ignored).
 * Functions that can fail take an optional `pkbpf_error **err`, written only
 * on failure (free it with pkbpf_error_free). int32_t results are 0 or a
 * negative errno, kernel style. Every entry point checks its pointers for
 * NULL and never unwinds into C. A program handle must be freed before its
 * object; objects may outlive their runtime. One thread at a time per handle.
 */
#ifndef PKBPF_H
#define PKBPF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* `sandbox` argument of pkbpf_runtime_new. */
#define PKBPF_SANDBOX_AUTO 0 /* protection keys where they work */
#define PKBPF_SANDBOX_MPK 1  /* require protection keys */
#define PKBPF_SANDBOX_NONE 2 /* no protection keys */

/* `engine` argument of pkbpf_runtime_new. */
#define PKBPF_ENGINE_JIT 0
#define PKBPF_ENGINE_INTERPRETER 1

typedef struct pkbpf_runtime pkbpf_runtime;
typedef struct pkbpf_object pkbpf_object;
typedef struct pkbpf_program pkbpf_program;
typedef struct pkbpf_error pkbpf_error;

/* What pkbpf_isolation reports. */
typedef struct pkbpf_isolation_info {
	int32_t mpk_selected;         /* 1: protection keys selected */
	int32_t protected_calls;      /* 1: calls run inside key domains */
	int32_t runtime_key;          /* the runtime's key, or -1 */
	uint32_t extension_key_count; /* extension keys allocated */
} pkbpf_isolation_info;

/* Creates a runtime; NULL and *err on failure. */
pkbpf_runtime *pkbpf_runtime_new(int32_t sandbox, int32_t engine,
				 pkbpf_error **err);
void pkbpf_runtime_free(pkbpf_runtime *rt);

/* Writes the isolation status to *out; 0 or -EINVAL. */
int32_t pkbpf_isolation(const pkbpf_runtime *rt, pkbpf_isolation_info *out);

/*
 * Loads an ELF object; its embedded programs get a context of ctx_size
 * writable bytes (0: the default, 64). Verifier rejection: NULL, *err with
 * errno EACCES and the verifier log in its message.
 */
pkbpf_object *pkbpf_object_load(const pkbpf_runtime *rt, const uint8_t *bytes,
				size_t len, uint32_t ctx_size,
				pkbpf_error **err);
pkbpf_object *pkbpf_object_load_file(const pkbpf_runtime *rt, const char *path,
				     uint32_t ctx_size, pkbpf_error **err);
void pkbpf_object_free(pkbpf_object *obj);

/* The program called `name`, or NULL. */
pkbpf_program *pkbpf_program_find(const pkbpf_object *obj, const char *name);
void pkbpf_program_free(pkbpf_program *prog);

/*
 * Runs prog on ctx (exactly ctx_len bytes, the size it was loaded with);
 * r0 goes to *ret. 0, or -EINVAL (size, NULL), -ECANCELED (a helper aborted
 * the call), -EFAULT (the program faulted or failed at run time).
 */
int32_t pkbpf_program_call(const pkbpf_program *prog, uint8_t *ctx,
			   size_t ctx_len, uint64_t *ret, pkbpf_error **err);

/* Map access by map name; results as bpf(2): 0, -ENOENT, -EINVAL, -EEXIST, -E2BIG. */
int32_t pkbpf_map_lookup(const pkbpf_object *obj, const char *map,
			 const uint8_t *key, size_t key_len, uint8_t *value,
			 size_t value_len, pkbpf_error **err);
int32_t pkbpf_map_update(const pkbpf_object *obj, const char *map,
			 const uint8_t *key, size_t key_len,
			 const uint8_t *value, size_t value_len, uint64_t flags,
			 pkbpf_error **err);
int32_t pkbpf_map_delete(const pkbpf_object *obj, const char *map,
			 const uint8_t *key, size_t key_len, pkbpf_error **err);

/* The message (valid until freed) and positive errno of an error. */
const char *pkbpf_error_message(const pkbpf_error *err);
int32_t pkbpf_error_errno(const pkbpf_error *err);
void pkbpf_error_free(pkbpf_error *err);

#ifdef __cplusplus
}
#endif

#endif /* PKBPF_H */
