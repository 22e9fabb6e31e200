# Tenant extension (assembler text, so the server runs without clang):
# counts the request in map 0 (`counts`, array of one u64) and allows it.
r6 = r1
*(u32 *)(r10 - 4) = 0
r1 = map[idx:0]
r2 = r10
r2 += -4
call 1
if r0 == 0 goto out
r1 = 1
lock *(u64 *)(r0 + 0) += r1
out:
r0 = 0
exit
