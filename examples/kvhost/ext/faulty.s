# Tenant extension that aborts: it counts the request, then hands the key's
# first 8 bytes to the host helper kv_audit (id 0x1000), which aborts the call
# for keys starting "boom". The server must answer that request with ERR and
# keep serving.
r6 = r1
*(u32 *)(r10 - 4) = 0
r1 = map[idx:0]
r2 = r10
r2 += -4
call 1
if r0 == 0 goto audit
r1 = 1
lock *(u64 *)(r0 + 0) += r1
audit:
r1 = *(u64 *)(r6 + 24)
call 4096
r0 = 0
exit
