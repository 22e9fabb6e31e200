//! The BPF helpers (ids as in linux/bpf.h), one [`HelperFn`] each.
//!
//! Every helper, built-in or host-defined, is called the same way: JIT code
//! (through its per-helper stub) or the interpreter's adapter calls the
//! [`HelperFn`] with `r1..=r5` and the env pointer, which is always the
//! [`Invocation`] of the running call. The runtime builds that invocation
//! for each `Program::call` and keeps it alive (and otherwise unused) until
//! the call returns.
//!
//! Pointer arguments the verifier proved (map keys and values, stack
//! buffers, the context) are used as they are; pointers it cannot prove
//! (`probe_read*` sources, `probe_write_user` destinations, `%s` strings,
//! ringbuf records given back) are checked or copied with the sandbox's
//! fault-tolerant copy, so a bad one gives `-EFAULT`/`-EINVAL`, never a crash.
//!
//! In mpk mode (DESIGN.md, "The MPK domain model") a call runs in its
//! object's domain Xᵢ. Helpers that walk keyed memory (map helpers, ringbuf,
//! perf output, tail calls) take the helper gate into T and back
//! (`domain::helper_gate`); the others (time, ids, `prandom`, printk, and the
//! `probe_read*`/`probe_write_user` copies) stay in Xᵢ, so the hardware
//! itself stops a copy from R or another extension's pages. Because T
//! reaches every key, each helper first checks its pointer arguments with
//! `domain::check_ptr` (only what Xᵢ could touch itself) and its map
//! argument against the object's own maps; `probe_write_user` never writes a
//! page that carries any pkbpf key (`process_vm_writev` ignores pkeys).

pub mod printk;

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::Arc;

use pkbpf_jit::x86::{DirectHelperFn, HelperFn, HelperRet, PerCpuArrayLayout, HELPER_TAIL_CALL};
use pkbpf_maps::{RawMap, Region};
use pkbpf_verifier::verifier::helpers::id;
use pkbpf_verifier::CtxDesc;

use crate::runtime::domain::{self, ObjectKeys};
use pkbpf_sandbox::regions::Access;

/// Most tail calls one invocation may make (the kernel's `MAX_TAIL_CALL_CNT`).
pub const MAX_TAIL_CALLS: u32 = 33;
/// Most host-defined helpers one runtime registers.
pub const MAX_HOST_HELPERS: usize = 16;
/// Abort code of a host helper that returned an error (or panicked).
pub const ABORT_HOST_HELPER: u64 = 0x100;

const EFAULT: i64 = libc::EFAULT as i64;
const EINVAL: i64 = libc::EINVAL as i64;
const ENOENT: i64 = libc::ENOENT as i64;

/// What a hook knows about the probed call, filled in by the hooks layer
/// before it runs a program: the probed function's address for
/// `bpf_get_func_ip`, and the slot `bpf_override_return` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookCtx {
    /// Address of the probed function (`bpf_get_func_ip`).
    pub func_ip: u64,
    /// Set by `bpf_override_return`: the value the probed function should
    /// return instead of running (the hook skips the call and returns it).
    pub override_return: Option<u64>,
}

/// The output `bpf_trace_printk` lines go to (one call per line, without
/// the trailing newline).
pub type PrintkSink = Arc<dyn Fn(&str) + Send + Sync>;

/// A host-defined helper: gets the call's arguments, returns `r0` or an
/// error that aborts the program's call (the host sees
/// [`crate::runtime::CallError::HelperAbort`]).
pub type HostFn = Arc<dyn Fn(&HelperArgs) -> Result<u64, HostHelperError> + Send + Sync>;

/// Why a host helper refused to continue; aborts the current call only.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("host helper failed: {reason}")]
pub struct HostHelperError {
    /// What went wrong.
    pub reason: String,
}

/// What a host-defined helper is given.
#[derive(Debug)]
pub struct HelperArgs {
    /// `r1..=r5` as the program passed them.
    pub args: [u64; 5],
}

impl HelperArgs {
    /// Copies `out.len()` bytes from the program-supplied address `addr`
    /// with the fault-tolerant copy: a bad pointer is an error, not a crash.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), HostHelperError> {
        pkbpf_sandbox::copy_from_user(out, addr as usize).map_err(|f| HostHelperError {
            reason: format!("reading {} bytes at {addr:#x}: {f}", out.len()),
        })
    }
}

/// Per-object state the helpers consult.
pub(crate) struct ObjectState {
    /// The object's maps.
    pub region: Region,
    /// Each program's context, for tail-call compatibility.
    pub ctx_descs: Vec<CtxDesc>,
    /// Host helpers by trampoline slot.
    pub host: Vec<HostFn>,
    /// Where `bpf_trace_printk` writes.
    pub printk: PrintkSink,
    /// The object's protection keys (`None` without MPK).
    pub keys: Option<ObjectKeys>,
}

/// The env pointer of one call (and its tail calls).
pub(crate) struct Invocation<'a> {
    pub state: &'a ObjectState,
    /// Index of the program running now.
    pub prog: usize,
    /// Tail calls made so far.
    pub tail_calls: u32,
    /// The hook's context, when a hook runs the program.
    pub hook: Option<&'a mut HookCtx>,
    /// Why the last abort happened (host helper errors).
    pub abort_reason: Option<String>,
}

impl<'a> Invocation<'a> {
    pub fn new(state: &'a ObjectState, prog: usize, hook: Option<&'a mut HookCtx>) -> Self {
        Invocation {
            state,
            prog,
            tail_calls: 0,
            hook,
            abort_reason: None,
        }
    }
}

fn ret(v: i64) -> HelperRet {
    HelperRet {
        value: v as u64,
        abort: 0,
    }
}

/// Declares a helper: an `unsafe extern "C" fn` whose env is an
/// [`Invocation`].
macro_rules! helper {
    ($(#[$m:meta])* fn $name:ident($inv:ident, $r1:pat, $r2:pat, $r3:pat, $r4:pat, $r5:pat) $body:block) => {
        $(#[$m])*
        ///
        /// # Safety
        ///
        /// Only the runtime calls it, with the arguments a verified program
        /// passed and `env` pointing to the call's live [`Invocation`].
        unsafe extern "C" fn $name($r1: u64, $r2: u64, $r3: u64, $r4: u64, $r5: u64, env: *mut c_void) -> HelperRet {
            // SAFETY: the runtime passes the live Invocation of this call as
            // `env` and does not touch it while the program runs.
            #[allow(unused_variables)]
            let $inv: &mut Invocation<'_> = unsafe { &mut *(env as *mut Invocation<'_>) };
            $body
        }
    };
}

/// Whether the calling object may have a helper use `[addr, addr + len)`
/// (the confused-deputy check; see [`domain::check_ptr`]).
/// Without keys (no MPK) every pointer is allowed, decided here without a
/// call: map helpers run this per operation.
#[inline(always)]
fn may_use(inv: &Invocation<'_>, addr: u64, len: u64, access: Access) -> bool {
    inv.state.keys.is_none() || domain::check_ptr(inv.state.keys.as_ref(), addr, len, access)
}

/// The object's own map at `p`, or `None` for any other pointer (a forged
/// one, or another object's map); constant time.
#[inline(always)]
fn own_map<'m>(inv: &Invocation<'m>, p: u64) -> Option<&'m RawMap> {
    inv.state.region.raw_at(p as usize)
}

/// The per-CPU array maps of `region` whose `map_lookup_elem` the JIT may
/// inline, by map index: all of them when this process's threads have rseq
/// areas (the inlined code reads the CPU from there), none otherwise.
pub(crate) fn percpu_array_layouts(region: &Region) -> BTreeMap<usize, PerCpuArrayLayout> {
    let Some(cpu_id_offset) =
        pkbpf_maps::cpu::rseq_cpu_id_offset().and_then(|o| i32::try_from(o).ok())
    else {
        return BTreeMap::new();
    };
    (0..region.len())
        .filter_map(|i| Some((i, region.raw(i)?)))
        .filter(|(_, m)| m.map_type() == pkbpf_maps::MapType::PerCpuArray)
        .filter_map(|(i, m)| {
            Some((
                i,
                PerCpuArrayLayout {
                    values: m.values_ptr() as u64,
                    slot: u32::try_from(m.slot_size()).ok()?,
                    stride: u32::try_from(m.value_stride()).ok()?,
                    ncpus: m.slots(),
                    max_entries: m.max_entries(),
                    cpu_id_offset,
                },
            ))
        })
        .collect()
}

/// The map-helper prologue: the object's own map, its key (and value)
/// arguments checked, the helper gate into T entered (left on drop). A
/// refused map gives `-EINVAL` and a refused pointer `-EFAULT`, or NULL
/// (`null:` form) for helpers that return a pointer.
macro_rules! map_call {
    (null: $inv:ident, $map:expr, $(($ptr:expr, $len:ident, $acc:expr)),*) => {
        map_call!(@ 0, 0; $inv, $map, $(($ptr, $len, $acc)),*)
    };
    ($inv:ident, $map:expr, $(($ptr:expr, $len:ident, $acc:expr)),*) => {
        map_call!(@ -EINVAL, -EFAULT; $inv, $map, $(($ptr, $len, $acc)),*)
    };
    (@ $bad_map:expr, $bad_ptr:expr; $inv:ident, $map:expr, $(($ptr:expr, $len:ident, $acc:expr)),*) => {{
        let Some(m) = own_map($inv, $map) else {
            return ret($bad_map);
        };
        $(
            if !may_use($inv, $ptr, m.$len() as u64, $acc) {
                return ret($bad_ptr);
            }
        )*
        (m, domain::helper_gate($inv.state.keys.as_ref()))
    }};
}

// The three per-operation map helpers have a fast path for objects without
// protection keys (`--sandbox=none`): no pointer checks (there is nothing
// keyed to protect) and no gate, just the own-map check and the map's
// specialised operation, in a function small enough to need no register
// saves. Objects with keys take the checked path, out of line.
helper! {
    /// `bpf_map_lookup_elem(map, key)`.
    fn map_lookup_elem(inv, r1, r2, _, _, _) {
        if inv.state.keys.is_none() {
            let Some(m) = own_map(inv, r1) else {
                return ret(0);
            };
            // SAFETY: the object's own map and a key the verifier proved
            // to be key_size readable bytes.
            return HelperRet { value: unsafe { m.lookup(r2 as *const u8) } as u64, abort: 0 };
        }
        map_lookup_checked(inv, r1, r2)
    }
}
helper! {
    /// `bpf_map_update_elem(map, key, value, flags)`.
    fn map_update_elem(inv, r1, r2, r3, r4, _) {
        if inv.state.keys.is_none() {
            let Some(m) = own_map(inv, r1) else {
                return ret(-EINVAL);
            };
            // SAFETY: the object's own map; key and value the verifier
            // proved readable for the map's sizes.
            return ret(unsafe { m.update(r2 as *const u8, r3 as *const u8, r4) });
        }
        map_update_checked(inv, r1, r2, r3, r4)
    }
}
helper! {
    /// `bpf_map_delete_elem(map, key)`.
    fn map_delete_elem(inv, r1, r2, _, _, _) {
        if inv.state.keys.is_none() {
            let Some(m) = own_map(inv, r1) else {
                return ret(-EINVAL);
            };
            // SAFETY: the object's own map and a key the verifier proved
            // readable.
            return ret(unsafe { m.delete(r2 as *const u8) });
        }
        map_delete_checked(inv, r1, r2)
    }
}

/// The helpers JIT code may call directly (no stub, no env), for an object
/// that gets no protection keys (`no_keys`): the map operation itself, on
/// the map the verifier proved `r1` to be (a `CONST_PTR_TO_MAP` resolved by
/// the JIT to one of the object's maps, never a forged value), with the key
/// and value pointers it proved; and the guarded `probe_read*` copies into
/// the buffer it proved. Ids a host helper took over (`host_ids`) stay with
/// their helper.
pub(crate) fn direct_map_helpers(no_keys: bool, host_ids: &[u32]) -> BTreeMap<u32, DirectHelperFn> {
    if !no_keys {
        return BTreeMap::new();
    }
    let table: [(i32, DirectHelperFn); 7] = [
        (id::MAP_LOOKUP_ELEM, direct_map_lookup),
        (id::MAP_UPDATE_ELEM, direct_map_update),
        (id::MAP_DELETE_ELEM, direct_map_delete),
        (id::PROBE_READ, direct_probe_read),
        (id::PROBE_READ_USER, direct_probe_read),
        (id::PROBE_READ_STR, direct_probe_read_str),
        (id::PROBE_READ_USER_STR, direct_probe_read_str),
    ];
    table
        .into_iter()
        .map(|(i, f)| (i as u32, f))
        .filter(|(i, _)| !host_ids.contains(i))
        .collect()
}

/// `bpf_map_lookup_elem` called directly from JIT code (see
/// [`direct_map_helpers`]).
///
/// # Safety
/// `r1` is a map of the running object (its `RawMap`'s address), `r2` a
/// key of its key size, as the verifier proves for the call.
unsafe extern "C" fn direct_map_lookup(r1: u64, r2: u64, _: u64, _: u64, _: u64) -> u64 {
    // SAFETY: the caller's contract.
    unsafe { (*(r1 as *const RawMap)).lookup(r2 as *const u8) as u64 }
}

/// `bpf_map_update_elem` called directly from JIT code.
///
/// # Safety
/// As [`direct_map_lookup`], and `r3` is a value of the map's value size.
unsafe extern "C" fn direct_map_update(r1: u64, r2: u64, r3: u64, r4: u64, _: u64) -> u64 {
    // SAFETY: the caller's contract.
    unsafe { (*(r1 as *const RawMap)).update(r2 as *const u8, r3 as *const u8, r4) as u64 }
}

/// `bpf_map_delete_elem` called directly from JIT code.
///
/// # Safety
/// As [`direct_map_lookup`].
unsafe extern "C" fn direct_map_delete(r1: u64, r2: u64, _: u64, _: u64, _: u64) -> u64 {
    // SAFETY: the caller's contract.
    unsafe { (*(r1 as *const RawMap)).delete(r2 as *const u8) as u64 }
}

/// `bpf_probe_read(_user)(dst, size, src)` called directly from JIT code:
/// the same guarded copy as the helper, whose pointer check passes every
/// pointer when the object has no keys.
///
/// # Safety
/// `r1` points to `r2` writable bytes, as the verifier proves for the call.
unsafe extern "C" fn direct_probe_read(r1: u64, r2: u64, r3: u64, _: u64, _: u64) -> u64 {
    // SAFETY: the caller's contract.
    probe_read_into(unsafe { dst_buf(r1, r2) }, r3) as u64
}

/// `bpf_probe_read(_user)_str(dst, size, src)` called directly from JIT
/// code (see [`direct_probe_read`]).
///
/// # Safety
/// As [`direct_probe_read`].
unsafe extern "C" fn direct_probe_read_str(r1: u64, r2: u64, r3: u64, _: u64, _: u64) -> u64 {
    // SAFETY: the caller's contract.
    probe_read_str_into(unsafe { dst_buf(r1, r2) }, r3) as u64
}

/// `bpf_map_lookup_elem` for an object with keys: pointer checks and gate.
#[inline(never)]
fn map_lookup_checked(inv: &mut Invocation<'_>, r1: u64, r2: u64) -> HelperRet {
    let (m, _t) = map_call!(null: inv, r1, (r2, key_size, Access::Read));
    // SAFETY: the object's own map and a key of key_size checked bytes.
    let value = unsafe { m.lookup(r2 as *const u8) } as u64;
    HelperRet { value, abort: 0 }
}

/// `bpf_map_update_elem` for an object with keys: pointer checks and gate.
#[inline(never)]
fn map_update_checked(inv: &mut Invocation<'_>, r1: u64, r2: u64, r3: u64, r4: u64) -> HelperRet {
    let (m, _t) = map_call!(
        inv,
        r1,
        (r2, key_size, Access::Read),
        (r3, value_size, Access::Read)
    );
    // SAFETY: the object's own map, key and value of the map's sizes.
    ret(unsafe { m.update(r2 as *const u8, r3 as *const u8, r4) })
}

/// `bpf_map_delete_elem` for an object with keys: pointer checks and gate.
#[inline(never)]
fn map_delete_checked(inv: &mut Invocation<'_>, r1: u64, r2: u64) -> HelperRet {
    let (m, _t) = map_call!(inv, r1, (r2, key_size, Access::Read));
    // SAFETY: the object's own map and a checked key.
    ret(unsafe { m.delete(r2 as *const u8) })
}
helper! {
    /// `bpf_map_push_elem(map, value, flags)`.
    fn map_push_elem(inv, r1, r2, r3, _, _) {
        let (m, _t) = map_call!(inv, r1, (r2, value_size, Access::Read));
        // SAFETY: the object's own map and value_size checked bytes.
        ret(unsafe { m.push(r2 as *const u8, r3) })
    }
}
helper! {
    /// `bpf_map_pop_elem(map, value)`.
    fn map_pop_elem(inv, r1, r2, _, _, _) {
        let (m, _t) = map_call!(inv, r1, (r2, value_size, Access::Write));
        // SAFETY: the object's own map and value_size checked writable bytes.
        ret(unsafe { m.pop(r2 as *mut u8) })
    }
}
helper! {
    /// `bpf_map_peek_elem(map, value)`.
    fn map_peek_elem(inv, r1, r2, _, _, _) {
        let (m, _t) = map_call!(inv, r1, (r2, value_size, Access::Write));
        // SAFETY: the object's own map and value_size checked writable bytes.
        ret(unsafe { m.peek(r2 as *mut u8) })
    }
}

/// The verified destination buffer of a `probe_read*` call.
///
/// # Safety
/// `dst` must point to `size` writable bytes (the verifier's `PtrToUninitMem`
/// + size pair).
unsafe fn dst_buf<'b>(dst: u64, size: u64) -> &'b mut [u8] {
    if size == 0 {
        return &mut [];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, size as usize) }
}

/// `probe_read`: the guarded copy; on a fault the buffer is zeroed and the
/// result is `-EFAULT`.
fn probe_read_into(buf: &mut [u8], src: u64) -> i64 {
    match pkbpf_sandbox::copy_from_user(buf, src as usize) {
        Ok(()) => 0,
        Err(_) => {
            buf.fill(0);
            -EFAULT
        }
    }
}

/// `probe_read_str`: copies up to `buf.len() - 1` bytes or through the first
/// NUL, NUL-terminates, returns the length including the NUL; `-EFAULT` (and
/// a zeroed buffer) when the first byte is unreadable. Reads page by page,
/// so a string ending just before an unmapped page is fine. As in the
/// kernel, the bytes of `buf` after the terminator are left as they were:
/// the source is read through a scratch chunk, so whatever follows the
/// string in the target's memory never reaches the program's buffer.
fn probe_read_str_into(buf: &mut [u8], src: u64) -> i64 {
    const CHUNK: usize = 256;
    if buf.is_empty() {
        return 0;
    }
    let max = buf.len() - 1;
    let mut scratch = [0u8; CHUNK];
    let mut n = 0usize;
    while n < max {
        let addr = (src as usize).wrapping_add(n);
        let to_page_end = 4096 - (addr & 4095);
        let chunk = to_page_end.min(max - n).min(CHUNK);
        if pkbpf_sandbox::copy_from_user(&mut scratch[..chunk], addr).is_err() {
            if n == 0 {
                buf.fill(0);
                return -EFAULT;
            }
            break;
        }
        if let Some(z) = scratch[..chunk].iter().position(|&b| b == 0) {
            buf[n..=n + z].copy_from_slice(&scratch[..=z]);
            return (n + z + 1) as i64;
        }
        buf[n..n + chunk].copy_from_slice(&scratch[..chunk]);
        n += chunk;
    }
    buf[n] = 0;
    (n + 1) as i64
}

/// A string for `%s` (at most 256 bytes; unreadable gives empty).
fn read_c_string(addr: u64) -> Vec<u8> {
    let mut buf = [0u8; 257];
    let n = probe_read_str_into(&mut buf, addr);
    if n <= 0 {
        return Vec::new();
    }
    buf[..n as usize - 1].to_vec()
}

helper! {
    /// `bpf_probe_read(dst, size, src)` and `bpf_probe_read_user`.
    fn probe_read(inv, r1, r2, r3, _, _) {
        if !may_use(inv, r1, r2, Access::Write) {
            return ret(-EFAULT);
        }
        // SAFETY: verified destination of r2 bytes.
        ret(probe_read_into(unsafe { dst_buf(r1, r2) }, r3))
    }
}
helper! {
    /// `bpf_probe_read_str(dst, size, src)` and `bpf_probe_read_user_str`.
    fn probe_read_str(inv, r1, r2, r3, _, _) {
        if !may_use(inv, r1, r2, Access::Write) {
            return ret(-EFAULT);
        }
        // SAFETY: verified destination of r2 bytes.
        ret(probe_read_str_into(unsafe { dst_buf(r1, r2) }, r3))
    }
}
helper! {
    /// `bpf_probe_read_kernel(_str)`: there is no kernel memory here.
    fn probe_read_kernel(inv, r1, r2, _, _, _) {
        if !may_use(inv, r1, r2, Access::Write) {
            return ret(-EFAULT);
        }
        // SAFETY: verified destination of r2 bytes.
        unsafe { dst_buf(r1, r2) }.fill(0);
        ret(-EFAULT)
    }
}

/// Writes `data` to `dst` in this process without trusting `dst`: the
/// sandbox's fault-tolerant copy (in the extension's domain, so protection
/// keys apply) turns an unmapped, read-only or key-denied destination into
/// `-EFAULT`, never a crash. (`process_vm_writev` would ignore the keys, and
/// the hardened process refuses it.)
fn guarded_write(dst: u64, data: &[u8]) -> i64 {
    // SAFETY: the caller checked that `dst` is user memory the program may
    // write (no pkbpf key, not the object's region).
    match unsafe { pkbpf_sandbox::copy_to_user(dst as usize, data) } {
        Ok(()) => 0,
        Err(_) => -EFAULT,
    }
}

helper! {
    /// `bpf_probe_write_user(dst, src, size)`: refused (`-EFAULT`) for any
    /// destination inside the object's map region (programs write map
    /// values directly; the internals must never be reachable this way).
    fn probe_write_user(inv, r1, r2, r3, _, _) {
        let region = inv.state.region.as_range();
        let len = r3 as usize;
        let end = (r1 as usize).checked_add(len);
        if end.is_none_or(|e| e > region.addr && (r1 as usize) < region.addr + region.len) {
            return ret(-EFAULT);
        }
        // process_vm_writev ignores protection keys: no page carrying a
        // pkbpf key (R, or any extension's) may be its destination.
        if domain::overlaps_keyed(r1, r3) || !may_use(inv, r2, r3, Access::Read) {
            return ret(-EFAULT);
        }
        // SAFETY: verified readable source of r3 bytes.
        let src = unsafe { std::slice::from_raw_parts(r2 as *const u8, len) };
        ret(guarded_write(r1, src))
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

helper! {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    fn ktime_get_ns(inv, _, _, _, _, _) {
        ret(clock_ns(libc::CLOCK_MONOTONIC) as i64)
    }
}
helper! {
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME.
    fn ktime_get_boot_ns(inv, _, _, _, _, _) {
        ret(clock_ns(libc::CLOCK_BOOTTIME) as i64)
    }
}
helper! {
    /// `bpf_ktime_get_coarse_ns()`: CLOCK_MONOTONIC_COARSE.
    fn ktime_get_coarse_ns(inv, _, _, _, _, _) {
        ret(clock_ns(libc::CLOCK_MONOTONIC_COARSE) as i64)
    }
}

/// `(tgid << 32) | tid` of the calling thread, asked of the kernel each time
/// (so it is right after `fork`).
pub fn current_pid_tgid() -> u64 {
    // SAFETY: getpid and gettid have no preconditions.
    let (pid, tid) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid)) };
    ((pid as u64) << 32) | (tid as u64 & 0xffff_ffff)
}

/// The calling thread's name (`comm`, at most 15 bytes).
pub fn current_comm() -> [u8; 16] {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into `name`.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    name[15] = 0;
    name
}

helper! {
    /// `bpf_get_current_pid_tgid()`.
    fn get_current_pid_tgid(inv, _, _, _, _, _) {
        HelperRet { value: current_pid_tgid(), abort: 0 }
    }
}
helper! {
    /// `bpf_get_current_uid_gid()`: `gid << 32 | uid`.
    fn get_current_uid_gid(inv, _, _, _, _, _) {
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        HelperRet { value: ((gid as u64) << 32) | uid as u64, abort: 0 }
    }
}
helper! {
    /// `bpf_get_current_comm(buf, size)`.
    fn get_current_comm(inv, r1, r2, _, _, _) {
        if !may_use(inv, r1, r2, Access::Write) {
            return ret(-EFAULT);
        }
        // SAFETY: verified destination of r2 (> 0) bytes.
        let buf = unsafe { dst_buf(r1, r2) };
        let comm = current_comm();
        let n = buf.len().min(comm.len());
        buf[..n].copy_from_slice(&comm[..n]);
        if let Some(last) = buf.last_mut() {
            *last = 0;
        }
        ret(0)
    }
}
helper! {
    /// `bpf_get_smp_processor_id()`.
    fn get_smp_processor_id(inv, _, _, _, _, _) {
        ret(pkbpf_maps::cpu::current_cpu() as i64)
    }
}

thread_local! {
    static PRANDOM: std::cell::Cell<u64> = std::cell::Cell::new({
        let seed = clock_ns(libc::CLOCK_MONOTONIC) ^ current_pid_tgid().rotate_left(17);
        seed | 1
    });
}

helper! {
    /// `bpf_get_prandom_u32()`: a per-thread xorshift64* generator.
    fn get_prandom_u32(inv, _, _, _, _, _) {
        let v = PRANDOM.with(|s| {
            let mut x = s.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            s.set(x);
            x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32
        });
        ret(v as i64)
    }
}

fn emit_printk(inv: &Invocation<'_>, fmt: &[u8], args: &[u64], max: usize) -> i64 {
    match printk::format(fmt, args, max, &read_c_string) {
        Ok(msg) => {
            let comm = current_comm();
            let comm_len = comm.iter().position(|&b| b == 0).unwrap_or(16);
            let line = printk::trace_line(
                &String::from_utf8_lossy(&comm[..comm_len]),
                (current_pid_tgid() >> 32) as u32,
                pkbpf_maps::cpu::current_cpu(),
                clock_ns(libc::CLOCK_MONOTONIC),
                &msg,
            );
            (inv.state.printk)(&line);
            msg.len() as i64 + 1
        }
        Err(_) => -EINVAL,
    }
}

helper! {
    /// `bpf_trace_printk(fmt, fmt_size, a1, a2, a3)`.
    fn trace_printk(inv, r1, r2, r3, r4, r5) {
        if !may_use(inv, r1, r2, Access::Read) {
            return ret(-EFAULT);
        }
        // SAFETY: verified readable format of r2 bytes.
        let fmt = unsafe { std::slice::from_raw_parts(r1 as *const u8, r2 as usize) };
        ret(emit_printk(inv, fmt, &[r3, r4, r5], printk::TRACE_PRINTK_MAX_ARGS))
    }
}
helper! {
    /// `bpf_trace_vprintk(fmt, fmt_size, data, data_len)`: `data` is an
    /// array of u64 arguments.
    fn trace_vprintk(inv, r1, r2, r3, r4, _) {
        if !r4.is_multiple_of(8) || r4 / 8 > printk::TRACE_VPRINTK_MAX_ARGS as u64 || (r3 == 0 && r4 != 0) {
            return ret(-EINVAL);
        }
        if !may_use(inv, r1, r2, Access::Read) || !may_use(inv, r3, r4, Access::Read) {
            return ret(-EFAULT);
        }
        // SAFETY: verified readable format of r2 bytes.
        let fmt = unsafe { std::slice::from_raw_parts(r1 as *const u8, r2 as usize) };
        let args: Vec<u64> = (0..r4 / 8)
            // SAFETY: verified readable data of r4 bytes (PtrToMemOrNull + size).
            .map(|i| unsafe { std::ptr::read_unaligned((r3 as *const u64).add(i as usize)) })
            .collect();
        ret(emit_printk(inv, fmt, &args, printk::TRACE_VPRINTK_MAX_ARGS))
    }
}

helper! {
    /// `bpf_ringbuf_output(map, data, size, flags)`.
    fn ringbuf_output(inv, r1, r2, r3, r4, _) {
        let (m, _t) = map_call!(inv, r1,);
        if !may_use(inv, r2, r3, Access::Read) {
            return ret(-EFAULT);
        }
        // SAFETY: the object's own ringbuf map and r3 checked readable bytes.
        ret(unsafe { m.ringbuf_output(r2 as *const u8, r3, r4) })
    }
}
helper! {
    /// `bpf_ringbuf_reserve(map, size, flags)`.
    fn ringbuf_reserve(inv, r1, r2, r3, _, _) {
        let (m, _t) = map_call!(null: inv, r1,);
        HelperRet { value: m.ringbuf_reserve(r2, r3) as u64, abort: 0 }
    }
}
helper! {
    /// `bpf_ringbuf_submit(data, flags)`: the record is validated by the
    /// region (it finds the ringbuf from the pointer).
    fn ringbuf_submit(inv, r1, r2, _, _, _) {
        let _t = domain::helper_gate(inv.state.keys.as_ref());
        // SAFETY: the region checks that r1 is one of its reserved records;
        // the program gives the record up with this call.
        unsafe { inv.state.region.ringbuf_commit(r1 as *mut u8, r2, false) };
        ret(0)
    }
}
helper! {
    /// `bpf_ringbuf_discard(data, flags)`.
    fn ringbuf_discard(inv, r1, r2, _, _, _) {
        let _t = domain::helper_gate(inv.state.keys.as_ref());
        // SAFETY: as ringbuf_submit.
        unsafe { inv.state.region.ringbuf_commit(r1 as *mut u8, r2, true) };
        ret(0)
    }
}
helper! {
    /// `bpf_ringbuf_query(map, flags)`.
    fn ringbuf_query(inv, r1, r2, _, _, _) {
        let (m, _t) = map_call!(null: inv, r1,);
        HelperRet { value: m.ringbuf_query(r2), abort: 0 }
    }
}
helper! {
    /// `bpf_perf_event_output(ctx, map, flags, data, size)`.
    fn perf_event_output(inv, _, r2, r3, r4, r5) {
        let (m, _t) = map_call!(inv, r2,);
        if !may_use(inv, r4, r5, Access::Read) {
            return ret(-EFAULT);
        }
        // SAFETY: the object's own perf event array and r5 checked bytes.
        ret(unsafe { m.perf_event_output(r3, r4 as *const u8, r5) })
    }
}
helper! {
    /// `bpf_tail_call(ctx, prog_array, index)`: on success ends the program
    /// with [`HELPER_TAIL_CALL`] and the target's index; the runtime runs the
    /// target with the same context. Empty slot, a target with another
    /// context layout, or the 33-call limit: the program goes on.
    fn tail_call(inv, _, r2, r3, _, _) {
        let (m, _t) = map_call!(inv, r2,);
        let Some(target) = m.prog_array_get(r3 as u32).filter(|_| r3 <= u32::MAX as u64) else {
            return ret(-ENOENT);
        };
        let descs = &inv.state.ctx_descs;
        let ok = (target as usize) < descs.len()
            && descs[target as usize] == descs[inv.prog]
            && inv.tail_calls < MAX_TAIL_CALLS;
        if !ok {
            return ret(-ENOENT);
        }
        inv.tail_calls += 1;
        HelperRet { value: target as u64, abort: HELPER_TAIL_CALL }
    }
}
helper! {
    /// `bpf_get_func_ip(ctx)`: the hook's probed address, 0 without a hook.
    fn get_func_ip(inv, _, _, _, _, _) {
        HelperRet { value: inv.hook.as_ref().map_or(0, |h| h.func_ip), abort: 0 }
    }
}
helper! {
    /// `bpf_override_return(ctx, rc)`: records `rc` in the hook context;
    /// `-EINVAL` when not run by a hook.
    fn override_return(inv, _, r2, _, _, _) {
        match inv.hook.as_mut() {
            Some(h) => {
                h.override_return = Some(r2);
                ret(0)
            }
            None => ret(-EINVAL),
        }
    }
}

/// Calls host helper `N` of the invocation's object.
///
/// # Safety
///
/// As the built-in helpers: `env` is the live [`Invocation`].
unsafe extern "C" fn host_trampoline<const N: usize>(
    r1: u64,
    r2: u64,
    r3: u64,
    r4: u64,
    r5: u64,
    env: *mut c_void,
) -> HelperRet {
    // SAFETY: see the function's contract.
    let inv: &mut Invocation<'_> = unsafe { &mut *(env as *mut Invocation<'_>) };
    let Some(f) = inv.state.host.get(N) else {
        return HelperRet {
            value: 0,
            abort: ABORT_HOST_HELPER,
        };
    };
    let args = HelperArgs {
        args: [r1, r2, r3, r4, r5],
    };
    // A panic must not unwind into JIT code: it becomes an abort.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&args))) {
        Ok(Ok(v)) => HelperRet { value: v, abort: 0 },
        Ok(Err(e)) => {
            inv.abort_reason = Some(e.reason);
            HelperRet {
                value: 0,
                abort: ABORT_HOST_HELPER,
            }
        }
        Err(_) => {
            inv.abort_reason = Some("host helper panicked".into());
            HelperRet {
                value: 0,
                abort: ABORT_HOST_HELPER,
            }
        }
    }
}

macro_rules! trampolines {
    ($($n:literal)*) => { [$(host_trampoline::<$n> as HelperFn),*] };
}

/// The trampoline of host helper slot `slot` (< [`MAX_HOST_HELPERS`]).
pub(crate) fn host_trampoline_for(slot: usize) -> Option<HelperFn> {
    const T: [HelperFn; MAX_HOST_HELPERS] = trampolines!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    T.get(slot).copied()
}

/// The built-in helpers by id.
pub(crate) fn builtin() -> BTreeMap<u32, HelperFn> {
    let table: [(i32, HelperFn); 32] = [
        (id::MAP_LOOKUP_ELEM, map_lookup_elem),
        (id::MAP_UPDATE_ELEM, map_update_elem),
        (id::MAP_DELETE_ELEM, map_delete_elem),
        (id::MAP_PUSH_ELEM, map_push_elem),
        (id::MAP_POP_ELEM, map_pop_elem),
        (id::MAP_PEEK_ELEM, map_peek_elem),
        (id::PROBE_READ, probe_read),
        (id::PROBE_READ_USER, probe_read),
        (id::PROBE_READ_STR, probe_read_str),
        (id::PROBE_READ_USER_STR, probe_read_str),
        (id::PROBE_READ_KERNEL, probe_read_kernel),
        (id::PROBE_READ_KERNEL_STR, probe_read_kernel),
        (id::PROBE_WRITE_USER, probe_write_user),
        (id::KTIME_GET_NS, ktime_get_ns),
        (id::KTIME_GET_BOOT_NS, ktime_get_boot_ns),
        (id::KTIME_GET_COARSE_NS, ktime_get_coarse_ns),
        (id::GET_CURRENT_PID_TGID, get_current_pid_tgid),
        (id::GET_CURRENT_UID_GID, get_current_uid_gid),
        (id::GET_CURRENT_COMM, get_current_comm),
        (id::TRACE_PRINTK, trace_printk),
        (id::TRACE_VPRINTK, trace_vprintk),
        (id::GET_SMP_PROCESSOR_ID, get_smp_processor_id),
        (id::GET_PRANDOM_U32, get_prandom_u32),
        (id::RINGBUF_OUTPUT, ringbuf_output),
        (id::RINGBUF_RESERVE, ringbuf_reserve),
        (id::RINGBUF_SUBMIT, ringbuf_submit),
        (id::RINGBUF_DISCARD, ringbuf_discard),
        (id::RINGBUF_QUERY, ringbuf_query),
        (id::PERF_EVENT_OUTPUT, perf_event_output),
        (id::TAIL_CALL, tail_call),
        (id::GET_FUNC_IP, get_func_ip),
        (id::OVERRIDE_RETURN, override_return),
    ];
    table.into_iter().map(|(i, f)| (i as u32, f)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_read_str_conventions() {
        let src = b"hello\0world";
        let mut buf = [0xffu8; 4];
        assert_eq!(probe_read_str_into(&mut buf, src.as_ptr() as u64), 4);
        assert_eq!(&buf, b"hel\0");
        let mut buf = [0xffu8; 16];
        assert_eq!(probe_read_str_into(&mut buf, src.as_ptr() as u64), 6);
        assert_eq!(&buf[..6], b"hello\0");
        assert_eq!(
            buf[6..],
            [0xff; 10],
            "nothing past the terminator is copied"
        );
        // A string longer than one scratch chunk, ending mid-way through
        // the next: every byte up to the NUL, none after.
        let long: Vec<u8> = (0..300)
            .map(|i| b'a' + (i % 26) as u8)
            .chain([0, b'X', b'Y'])
            .collect();
        let mut buf = [0xffu8; 400];
        assert_eq!(probe_read_str_into(&mut buf, long.as_ptr() as u64), 301);
        assert_eq!(&buf[..301], &long[..301]);
        assert_eq!(buf[301..], [0xff; 99]);
        let mut buf = [0xffu8; 8];
        assert_eq!(probe_read_str_into(&mut buf, 8), -EFAULT);
        assert_eq!(buf, [0; 8]);
        assert_eq!(probe_read_into(&mut buf, 16), -EFAULT);
    }

    fn state(name: &str) -> ObjectState {
        let mut b = pkbpf_maps::RegionBuilder::new();
        b.add(pkbpf_maps::MapDef::new(
            name,
            pkbpf_maps::MapType::Array,
            4,
            8,
            2,
        ))
        .unwrap();
        ObjectState {
            region: b.build().unwrap(),
            ctx_descs: Vec::new(),
            host: Vec::new(),
            printk: Arc::new(|_| {}),
            keys: None,
        }
    }

    #[test]
    fn map_helpers_refuse_maps_of_other_objects() {
        let (mine, theirs) = (state("mine"), state("theirs"));
        let mut inv = Invocation::new(&mine, 0, None);
        let env = &mut inv as *mut Invocation<'_> as *mut c_void;
        let own = mine.region.raw(0).unwrap() as *const RawMap as u64;
        let other = theirs.region.raw(0).unwrap() as *const RawMap as u64;
        let key = 1u32;
        let value = 77u64;
        let (k, v) = (&key as *const u32 as u64, &value as *const u64 as u64);
        // SAFETY: `env` is a live invocation; key and value are readable
        // and of the map's sizes; forged map pointers are what is tested.
        unsafe {
            assert_eq!(map_update_elem(own, k, v, 0, 0, env).value, 0);
            let p = map_lookup_elem(own, k, 0, 0, 0, env).value;
            assert_eq!(std::ptr::read(p as *const u64), 77);
            assert_eq!(
                map_update_elem(other, k, v, 0, 0, env).value,
                -EINVAL as u64
            );
            assert_eq!(map_lookup_elem(other, k, 0, 0, 0, env).value, 0, "NULL");
            assert_eq!(map_lookup_elem(v, k, 0, 0, 0, env).value, 0, "NULL");
        }
        let got = theirs
            .region
            .map("theirs")
            .unwrap()
            .lookup(&key.to_ne_bytes());
        assert_eq!(got.unwrap(), Some(0u64.to_ne_bytes().to_vec()), "untouched");
    }

    #[test]
    fn guarded_write_refuses_bad_pointers() {
        let mut dst = [0u8; 4];
        assert_eq!(guarded_write(dst.as_mut_ptr() as u64, &[1, 2, 3, 4]), 0);
        assert_eq!(dst, [1, 2, 3, 4]);
        assert_eq!(guarded_write(8, &[1]), -EFAULT);
    }

    #[test]
    fn pid_tgid_matches_the_kernel() {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u64;
        let v = current_pid_tgid();
        assert_eq!(v >> 32, pid);
        let other = std::thread::spawn(current_pid_tgid).join().unwrap();
        assert_eq!(other >> 32, pid);
        assert_ne!(other & 0xffff_ffff, v & 0xffff_ffff, "tid is per thread");
    }
}
