//! Helper prototypes: argument and return types by linux/bpf.h id.

use std::collections::BTreeMap;

/// What a helper argument must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgType {
    /// Any initialised value.
    Anything,
    /// An initialised scalar.
    Scalar,
    /// A map pointer (`lddw` of a map).
    ConstMapPtr,
    /// A pointer to `key_size` readable bytes (the map of the previous map arg).
    PtrToMapKey,
    /// A pointer to `value_size` readable bytes.
    PtrToMapValue,
    /// A pointer to `value_size` bytes the helper writes.
    PtrToUninitMapValue,
    /// A pointer to memory whose size is the next argument.
    PtrToMem {
        /// The helper only reads it.
        readonly: bool,
    },
    /// Like `PtrToMem { readonly: true }` or null (then the size must be 0).
    PtrToMemOrNull,
    /// A pointer to memory the helper fills (may be uninitialised); size is the next argument.
    PtrToUninitMem,
    /// Size of the previous memory argument, greater than zero.
    ConstSize,
    /// Size of the previous memory argument, possibly zero.
    ConstSizeOrZero,
    /// A constant allocation size (`ringbuf_reserve`).
    ConstAllocSize,
    /// The context pointer, unmodified.
    PtrToCtx,
    /// A pointer into the stack.
    PtrToStack,
    /// A ringbuf record from `ringbuf_reserve`, released by the call.
    RingbufMem,
}

/// What a helper returns in `r0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetType {
    /// An unknown scalar.
    Integer,
    /// Nothing useful: `r0` is an unknown scalar.
    Void,
    /// A pointer to the value of the map argument, or null.
    MapValueOrNull,
    /// A ringbuf record of the size given by the allocation-size argument, or null.
    RingbufMemOrNull,
}

/// A helper's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperProto {
    /// Name without the `bpf_` prefix.
    pub name: &'static str,
    /// Types of `r1..` (at most 5).
    pub args: Vec<ArgType>,
    /// Type of `r0` after the call.
    pub ret: RetType,
}

impl HelperProto {
    /// A prototype.
    pub fn new(name: &'static str, args: &[ArgType], ret: RetType) -> HelperProto {
        HelperProto {
            name,
            args: args.to_vec(),
            ret,
        }
    }
}

/// Helper ids (linux/bpf.h `enum bpf_func_id`).
#[allow(missing_docs)]
pub mod id {
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    pub const MAP_UPDATE_ELEM: i32 = 2;
    pub const MAP_DELETE_ELEM: i32 = 3;
    pub const PROBE_READ: i32 = 4;
    pub const KTIME_GET_NS: i32 = 5;
    pub const TRACE_PRINTK: i32 = 6;
    pub const GET_PRANDOM_U32: i32 = 7;
    pub const GET_SMP_PROCESSOR_ID: i32 = 8;
    pub const TAIL_CALL: i32 = 12;
    pub const GET_CURRENT_PID_TGID: i32 = 14;
    pub const GET_CURRENT_UID_GID: i32 = 15;
    pub const GET_CURRENT_COMM: i32 = 16;
    pub const PERF_EVENT_OUTPUT: i32 = 25;
    pub const PROBE_WRITE_USER: i32 = 36;
    pub const PROBE_READ_STR: i32 = 45;
    pub const OVERRIDE_RETURN: i32 = 58;
    pub const MAP_PUSH_ELEM: i32 = 87;
    pub const MAP_POP_ELEM: i32 = 88;
    pub const MAP_PEEK_ELEM: i32 = 89;
    pub const PROBE_READ_USER: i32 = 112;
    pub const PROBE_READ_KERNEL: i32 = 113;
    pub const PROBE_READ_USER_STR: i32 = 114;
    pub const PROBE_READ_KERNEL_STR: i32 = 115;
    pub const KTIME_GET_BOOT_NS: i32 = 125;
    pub const RINGBUF_OUTPUT: i32 = 130;
    pub const RINGBUF_RESERVE: i32 = 131;
    pub const RINGBUF_SUBMIT: i32 = 132;
    pub const RINGBUF_DISCARD: i32 = 133;
    pub const RINGBUF_QUERY: i32 = 134;
    pub const KTIME_GET_COARSE_NS: i32 = 160;
    pub const GET_FUNC_IP: i32 = 173;
    pub const TRACE_VPRINTK: i32 = 177;
    pub const LOOP: i32 = 181;
    /// The conformance suite's "unwind" helper (replaces id 5 there).
    pub const CONFORMANCE_UNWIND: i32 = 5;
}

/// Map types (kernel numbering) a helper's map argument may have; `None`: any
/// map type with keys and values (not ringbuf, prog array, perf array).
pub fn allowed_map_types(helper: i32) -> Option<&'static [u32]> {
    const HASHLIKE: &[u32] = &[1, 2, 5, 6, 9, 10, 11];
    Some(match helper {
        id::MAP_LOOKUP_ELEM | id::MAP_UPDATE_ELEM | id::MAP_DELETE_ELEM => HASHLIKE,
        id::MAP_PUSH_ELEM | id::MAP_POP_ELEM | id::MAP_PEEK_ELEM => &[22, 23],
        id::RINGBUF_OUTPUT | id::RINGBUF_RESERVE | id::RINGBUF_QUERY => &[27],
        id::TAIL_CALL => &[3],
        id::PERF_EVENT_OUTPUT => &[4],
        _ => return None,
    })
}

/// The helpers a program may call, by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperTable {
    protos: BTreeMap<i32, HelperProto>,
}

impl Default for HelperTable {
    fn default() -> Self {
        HelperTable::builtin()
    }
}

impl HelperTable {
    /// No helpers.
    pub fn empty() -> HelperTable {
        HelperTable {
            protos: BTreeMap::new(),
        }
    }

    /// The built-in helpers with kernel-like prototypes.
    pub fn builtin() -> HelperTable {
        use ArgType::*;
        let mut t = HelperTable::empty();
        let mem_ro = PtrToMem { readonly: true };
        let entries: Vec<(i32, HelperProto)> = vec![
            (
                id::MAP_LOOKUP_ELEM,
                HelperProto::new(
                    "map_lookup_elem",
                    &[ConstMapPtr, PtrToMapKey],
                    RetType::MapValueOrNull,
                ),
            ),
            (
                id::MAP_UPDATE_ELEM,
                HelperProto::new(
                    "map_update_elem",
                    &[ConstMapPtr, PtrToMapKey, PtrToMapValue, Scalar],
                    RetType::Integer,
                ),
            ),
            (
                id::MAP_DELETE_ELEM,
                HelperProto::new(
                    "map_delete_elem",
                    &[ConstMapPtr, PtrToMapKey],
                    RetType::Integer,
                ),
            ),
            (
                id::MAP_PUSH_ELEM,
                HelperProto::new(
                    "map_push_elem",
                    &[ConstMapPtr, PtrToMapValue, Scalar],
                    RetType::Integer,
                ),
            ),
            (
                id::MAP_POP_ELEM,
                HelperProto::new(
                    "map_pop_elem",
                    &[ConstMapPtr, PtrToUninitMapValue],
                    RetType::Integer,
                ),
            ),
            (
                id::MAP_PEEK_ELEM,
                HelperProto::new(
                    "map_peek_elem",
                    &[ConstMapPtr, PtrToUninitMapValue],
                    RetType::Integer,
                ),
            ),
            (
                id::PROBE_READ,
                HelperProto::new(
                    "probe_read",
                    &[PtrToUninitMem, ConstSizeOrZero, Anything],
                    RetType::Integer,
                ),
            ),
            (
                id::PROBE_READ_STR,
                HelperProto::new(
                    "probe_read_str",
                    &[PtrToUninitMem, ConstSizeOrZero, Anything],
                    RetType::Integer,
                ),
            ),
            (
                id::PROBE_READ_USER,
                HelperProto::new(
                    "probe_read_user",
                    &[PtrToUninitMem, ConstSizeOrZero, Anything],
                    RetType::Integer,
                ),
            ),
            (
                id::PROBE_READ_KERNEL,
                HelperProto::new(
                    "probe_read_kernel",
                    &[PtrToUninitMem, ConstSizeOrZero, Anything],
                    RetType::Integer,
                ),
            ),
            (
                id::PROBE_READ_USER_STR,
                HelperProto::new(
                    "probe_read_user_str",
                    &[PtrToUninitMem, ConstSizeOrZero, Anything],
                    RetType::Integer,
                ),
            ),
            (
                id::PROBE_READ_KERNEL_STR,
                HelperProto::new(
                    "probe_read_kernel_str",
                    &[PtrToUninitMem, ConstSizeOrZero, Anything],
                    RetType::Integer,
                ),
            ),
            (
                id::PROBE_WRITE_USER,
                HelperProto::new(
                    "probe_write_user",
                    &[Anything, mem_ro, ConstSize],
                    RetType::Integer,
                ),
            ),
            (
                id::KTIME_GET_NS,
                HelperProto::new("ktime_get_ns", &[], RetType::Integer),
            ),
            (
                id::KTIME_GET_BOOT_NS,
                HelperProto::new("ktime_get_boot_ns", &[], RetType::Integer),
            ),
            (
                id::KTIME_GET_COARSE_NS,
                HelperProto::new("ktime_get_coarse_ns", &[], RetType::Integer),
            ),
            (
                id::GET_CURRENT_PID_TGID,
                HelperProto::new("get_current_pid_tgid", &[], RetType::Integer),
            ),
            (
                id::GET_CURRENT_UID_GID,
                HelperProto::new("get_current_uid_gid", &[], RetType::Integer),
            ),
            (
                id::GET_CURRENT_COMM,
                HelperProto::new(
                    "get_current_comm",
                    &[PtrToUninitMem, ConstSize],
                    RetType::Integer,
                ),
            ),
            (
                id::TRACE_PRINTK,
                HelperProto::new("trace_printk", &[mem_ro, ConstSize], RetType::Integer),
            ),
            (
                id::TRACE_VPRINTK,
                HelperProto::new(
                    "trace_vprintk",
                    &[mem_ro, ConstSize, PtrToMemOrNull, ConstSizeOrZero],
                    RetType::Integer,
                ),
            ),
            (
                id::GET_SMP_PROCESSOR_ID,
                HelperProto::new("get_smp_processor_id", &[], RetType::Integer),
            ),
            (
                id::GET_PRANDOM_U32,
                HelperProto::new("get_prandom_u32", &[], RetType::Integer),
            ),
            (
                id::RINGBUF_OUTPUT,
                HelperProto::new(
                    "ringbuf_output",
                    &[ConstMapPtr, mem_ro, ConstSizeOrZero, Scalar],
                    RetType::Integer,
                ),
            ),
            (
                id::RINGBUF_RESERVE,
                HelperProto::new(
                    "ringbuf_reserve",
                    &[ConstMapPtr, ConstAllocSize, Scalar],
                    RetType::RingbufMemOrNull,
                ),
            ),
            (
                id::RINGBUF_SUBMIT,
                HelperProto::new("ringbuf_submit", &[RingbufMem, Scalar], RetType::Void),
            ),
            (
                id::RINGBUF_DISCARD,
                HelperProto::new("ringbuf_discard", &[RingbufMem, Scalar], RetType::Void),
            ),
            (
                id::RINGBUF_QUERY,
                HelperProto::new("ringbuf_query", &[ConstMapPtr, Scalar], RetType::Integer),
            ),
            (
                id::PERF_EVENT_OUTPUT,
                HelperProto::new(
                    "perf_event_output",
                    &[PtrToCtx, ConstMapPtr, Scalar, mem_ro, ConstSizeOrZero],
                    RetType::Integer,
                ),
            ),
            (
                id::TAIL_CALL,
                HelperProto::new(
                    "tail_call",
                    &[PtrToCtx, ConstMapPtr, Scalar],
                    RetType::Integer,
                ),
            ),
            (
                id::GET_FUNC_IP,
                HelperProto::new("get_func_ip", &[PtrToCtx], RetType::Integer),
            ),
            (
                // The argument types are checked by the verifier's own
                // `bpf_loop` rule (a callback `func`, a context that is a
                // stack pointer, a map value or null, flags 0).
                id::LOOP,
                HelperProto::new(
                    "loop",
                    &[Scalar, Anything, Anything, Scalar],
                    RetType::Integer,
                ),
            ),
            (
                id::OVERRIDE_RETURN,
                HelperProto::new("override_return", &[PtrToCtx, Scalar], RetType::Integer),
            ),
        ];
        for (i, p) in entries {
            t.register(i, p);
        }
        t
    }

    /// The conformance suite's table: the built-ins with id 5 replaced by
    /// "unwind" (one scalar in, a scalar out).
    pub fn conformance() -> HelperTable {
        let mut t = HelperTable::builtin();
        t.register(
            id::CONFORMANCE_UNWIND,
            HelperProto::new("unwind", &[ArgType::Scalar], RetType::Integer),
        );
        t
    }

    /// Adds or replaces the helper `id`.
    pub fn register(&mut self, id: i32, proto: HelperProto) -> &mut Self {
        self.protos.insert(id, proto);
        self
    }

    /// The prototype of helper `id`.
    pub fn get(&self, id: i32) -> Option<&HelperProto> {
        self.protos.get(&id)
    }
}
