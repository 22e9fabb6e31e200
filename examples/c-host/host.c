/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * A C host of pkbpf: loads an object, calls an extension on a context,
 * reads the extension's map, and shows the error paths. Prints key=value
 * lines that capi/tests/c_host.rs checks.
 *
 * usage: host OBJECT.bpf.o   (tests/bpf/embedded.bpf.c compiled)
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pkbpf.h"

struct input {
	uint64_t a;
	uint64_t b;
};

static int fail(const char *what, pkbpf_error *err)
{
	fprintf(stderr, "%s: %s (errno %d)\n", what, pkbpf_error_message(err),
		pkbpf_error_errno(err));
	pkbpf_error_free(err);
	return 1;
}

int main(int argc, char **argv)
{
	pkbpf_error *err = NULL;
	if (argc != 2) {
		fprintf(stderr, "usage: %s OBJECT\n", argv[0]);
		return 2;
	}
	pkbpf_runtime *rt =
		pkbpf_runtime_new(PKBPF_SANDBOX_AUTO, PKBPF_ENGINE_JIT, &err);
	if (!rt)
		return fail("runtime", err);
	pkbpf_isolation_info iso;
	if (pkbpf_isolation(rt, &iso) != 0)
		return 1;
	printf("isolation=%s protected=%d\n", iso.mpk_selected ? "pku" : "none",
	       iso.protected_calls);

	pkbpf_object *obj =
		pkbpf_object_load_file(rt, argv[1], sizeof(struct input), &err);
	if (!obj)
		return fail("load", err);
	pkbpf_program *add = pkbpf_program_find(obj, "add_inputs");
	pkbpf_program *mul = pkbpf_program_find(obj, "mul_inputs");
	if (!add || !mul) {
		fprintf(stderr, "program not found\n");
		return 1;
	}
	printf("missing_program=%s\n",
	       pkbpf_program_find(obj, "nope") ? "found" : "null");

	uint64_t sum = 0;
	for (uint64_t i = 0; i < 5; i++) {
		struct input in = { .a = 40 + i, .b = 2 };
		uint64_t r0;
		if (pkbpf_program_call(add, (uint8_t *)&in, sizeof in, &r0,
				       &err) != 0)
			return fail("call add_inputs", err);
		sum += r0;
	}
	printf("sum=%llu\n", (unsigned long long)sum);
	{
		struct input in = { .a = 6, .b = 7 };
		uint64_t r0;
		if (pkbpf_program_call(mul, (uint8_t *)&in, sizeof in, &r0,
				       &err) != 0)
			return fail("call mul_inputs", err);
		printf("mul=%llu\n", (unsigned long long)r0);
	}

	/* The extension counted its calls in legacy_counts[0]. */
	uint32_t key = 0;
	uint64_t count = 0;
	if (pkbpf_map_lookup(obj, "legacy_counts", (uint8_t *)&key, sizeof key,
			     (uint8_t *)&count, sizeof count, &err) != 0)
		return fail("lookup", err);
	printf("count=%llu\n", (unsigned long long)count);

	/* The host writes a map; the next call sees it. */
	count = 100;
	if (pkbpf_map_update(obj, "legacy_counts", (uint8_t *)&key, sizeof key,
			     (uint8_t *)&count, sizeof count, 0, &err) != 0)
		return fail("update", err);
	{
		struct input in = { .a = 1, .b = 1 };
		uint64_t r0;
		if (pkbpf_program_call(add, (uint8_t *)&in, sizeof in, &r0,
				       &err) != 0)
			return fail("call add_inputs", err);
	}
	pkbpf_map_lookup(obj, "legacy_counts", (uint8_t *)&key, sizeof key,
			 (uint8_t *)&count, sizeof count, NULL);
	printf("count_after_update=%llu\n", (unsigned long long)count);

	/* Hash map: absent key, update, lookup, delete, absent again. */
	uint64_t hkey = 9;
	uint8_t hval[16] = { 0 };
	int rc = pkbpf_map_lookup(obj, "legacy_hash", (uint8_t *)&hkey,
				  sizeof hkey, hval, sizeof hval, NULL);
	printf("hash_absent=%d\n", rc == -ENOENT);
	memset(hval, 0xab, sizeof hval);
	rc = pkbpf_map_update(obj, "legacy_hash", (uint8_t *)&hkey, sizeof hkey,
			      hval, sizeof hval, 1 /* BPF_NOEXIST */, NULL);
	printf("hash_update=%d\n", rc);
	rc = pkbpf_map_update(obj, "legacy_hash", (uint8_t *)&hkey, sizeof hkey,
			      hval, sizeof hval, 1 /* BPF_NOEXIST */, NULL);
	printf("hash_update_again_eexist=%d\n", rc == -EEXIST);
	memset(hval, 0, sizeof hval);
	rc = pkbpf_map_lookup(obj, "legacy_hash", (uint8_t *)&hkey, sizeof hkey,
			      hval, sizeof hval, NULL);
	printf("hash_lookup=%d byte=%#x\n", rc, hval[15]);
	rc = pkbpf_map_delete(obj, "legacy_hash", (uint8_t *)&hkey, sizeof hkey,
			      NULL);
	printf("hash_delete=%d\n", rc);
	rc = pkbpf_map_delete(obj, "legacy_hash", (uint8_t *)&hkey, sizeof hkey,
			      NULL);
	printf("hash_delete_again_enoent=%d\n", rc == -ENOENT);

	/* Error paths. */
	{
		uint8_t small[4] = { 0 };
		uint64_t r0;
		rc = pkbpf_program_call(add, small, sizeof small, &r0, &err);
		printf("short_ctx=%d errno=%d\n", rc == -EINVAL,
		       pkbpf_error_errno(err));
		printf("short_ctx_message=%s\n", pkbpf_error_message(err));
		pkbpf_error_free(err);
		err = NULL;
	}
	rc = pkbpf_map_lookup(obj, "no_such_map", (uint8_t *)&key, sizeof key,
			      (uint8_t *)&count, sizeof count, NULL);
	printf("no_such_map_enoent=%d\n", rc == -ENOENT);
	rc = pkbpf_map_lookup(obj, "legacy_counts", NULL, 4, (uint8_t *)&count,
			      sizeof count, NULL);
	printf("null_key_einval=%d\n", rc == -EINVAL);
	printf("null_rt_load=%s\n",
	       pkbpf_object_load(NULL, (const uint8_t *)"x", 1, 0, NULL) ?
		       "object" :
		       "null");
	{
		static const uint8_t junk[] = "not an elf object";
		pkbpf_object *bad = pkbpf_object_load(rt, junk, sizeof junk, 0,
						      &err);
		printf("junk_load=%s errno=%d\n", bad ? "object" : "null",
		       pkbpf_error_errno(err));
		pkbpf_error_free(err);
		err = NULL;
	}

	pkbpf_program_free(add);
	pkbpf_program_free(mul);
	pkbpf_object_free(obj);
	pkbpf_runtime_free(rt);
	printf("done\n");
	return 0;
}
