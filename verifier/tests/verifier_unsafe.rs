//! The unsafe suite: programs in assembler text that must be rejected, each
//! with the reason, asserting the rejection's reason variant (and so its
//! category), not merely that it was rejected.

use pkbpf_verifier::asm::assemble;
use pkbpf_verifier::isa::{Insn, Reg};
use pkbpf_verifier::verifier::ctx::CtxDesc;
use pkbpf_verifier::{verify, Category, MapDesc, ProgramEnv, Reason};

#[derive(Clone, Copy, Debug)]
enum Env {
    /// uprobe (`struct pt_regs`) with the maps below.
    P,
    /// Like `P` without loops.
    N,
    /// conformance: 16 bytes of memory.
    M,
    /// conformance with no memory (`r1 = 0`).
    M0,
    /// 32-byte buffer context, writable at 8..16.
    B,
    /// syscall entry tracepoint.
    S,
    /// syscall exit tracepoint.
    X,
    /// raw syscall tracepoint.
    R,
}

fn env(e: Env) -> ProgramEnv {
    let maps = |env: ProgramEnv| {
        env.with_map(MapDesc::new(1, 4, 8, 16)) // 0: hash u32 -> u64
            .with_map(MapDesc::new(2, 4, 16, 4)) // 1: array u32 -> 16 bytes
            .with_map(MapDesc::new(27, 0, 0, 4096)) // 2: ringbuf
            .with_map(MapDesc::new(3, 4, 4, 4)) // 3: prog array
            .with_map(MapDesc {
                read_only: true,
                ..MapDesc::new(2, 4, 8, 1)
            }) // 4: .rodata
            .with_map(MapDesc::new(22, 0, 8, 16)) // 5: queue
            .with_map(MapDesc::new(4, 4, 4, 0)) // 6: perf event array
    };
    match e {
        Env::P => maps(ProgramEnv::new(CtxDesc::PtRegs)),
        Env::N => maps(ProgramEnv::new(CtxDesc::PtRegs)).with_loops(false),
        Env::M => ProgramEnv::conformance(16),
        Env::M0 => ProgramEnv::conformance(0),
        Env::B => maps(ProgramEnv::new(CtxDesc::Buffer {
            size: 32,
            writable: std::iter::once(8..16).collect(),
        })),
        Env::S => ProgramEnv::new(CtxDesc::SyscallEnter),
        Env::X => ProgramEnv::new(CtxDesc::SyscallExit),
        Env::R => ProgramEnv::new(CtxDesc::RawSyscall),
    }
}

/// Key at fp-4, `r0 = lookup(map N, fp-4)`; the map index is spliced in.
macro_rules! lookup {
    ($map:literal) => {
        concat!(
            "*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:",
            $map,
            "]\ncall bpf_map_lookup_elem#1\n"
        )
    };
}

/// Reserve 16 bytes of ringbuf: `r0` = record or null.
const RESERVE: &str = "r1 = map[idx:2]\nr2 = 16\nr3 = 0\ncall bpf_ringbuf_reserve#131\n";

/// (name, environment, program, expected reason variant, why it is unsafe)
type Case = (&'static str, Env, String, &'static str, &'static str);

fn s(x: &str) -> String {
    x.to_string()
}

fn cases() -> Vec<Case> {
    use Env::*;
    let mut v: Vec<Case> = vec![
        // ---- uninitialised registers
        ("r0 never set", P, s("exit"), "UninitReg", "the return value would be garbage"),
        ("read r2 in uprobe", P, s("r0 = r2\nexit"), "UninitReg", "only r1 and r10 are set on entry"),
        ("add uninit", P, s("r0 = 0\nr0 += r3\nexit"), "UninitReg", "operand never written"),
        ("store uninit", P, s("*(u64 *)(r10 - 8) = r4\nr0 = 0\nexit"), "UninitReg", "stores an unknown register"),
        ("load base uninit", P, s("r0 = *(u64 *)(r5 + 0)\nexit"), "UninitReg", "base never written"),
        ("branch on uninit", P, s("if r6 > 0x0 goto +0\nr0 = 0\nexit"), "UninitReg", "compares garbage"),
        ("r1 after helper", P, s("call bpf_ktime_get_ns#5\nr0 = *(u64 *)(r1 + 0)\nexit"), "UninitReg", "helpers clobber r1-r5"),
        ("r2 after local call", P, s("r2 = 1\ncall local f\nr0 = r2\nexit\nf:\nr0 = 0\nexit"), "UninitReg", "calls clobber r1-r5"),
        ("callee reads caller r6", P, s("r6 = 1\ncall local f\nexit\nf:\nr0 = r6\nexit"), "UninitReg", "r6-r9 start uninitialised in a callee"),
        ("neg uninit", P, s("r7 = -r7\nr0 = 0\nexit"), "UninitReg", "operand never written"),
        ("byte swap uninit", P, s("r8 = be16 r8\nr0 = 0\nexit"), "UninitReg", "operand never written"),
        ("helper size uninit", P, s("r1 = r10\nr1 += -16\ncall bpf_get_current_comm#16\nr0 = 0\nexit"), "UninitReg", "r2 is the size argument"),
        ("subprog returns uninit", P, s("call local f\nexit\nf:\nexit"), "UninitReg", "the caller reads the r0 the callee never set"),
        ("cmpxchg uninit r0", P, s("*(u64 *)(r10 - 8) = 0\nr1 = 1\nr0 = cmpxchg_64(r10 - 8, r0, r1)\nexit"), "UninitReg", "cmpxchg compares with r0"),
        ("atomic operand uninit", P, s("*(u64 *)(r10 - 8) = 0\nlock *(u64 *)(r10 - 8) += r3\nr0 = 0\nexit"), "UninitReg", "adds garbage"),
        ("r0 set on one path", P, s("r1 = *(u64 *)(r1 + 0)\nif r1 == 0x0 goto +1\nr0 = 1\nexit"), "UninitReg", "the taken path never sets r0"),
        ("callx uninit", P, s("callx r3\nr0 = 0\nexit"), "UninitReg", "helper id never written"),
        ("jmp32 uninit", P, s("w0 = 0\nif w0 > w4 goto +0\nexit"), "UninitReg", "compares garbage"),
        ("use after ringbuf submit", P, format!("{RESERVE}if r0 == 0x0 goto +6\nr6 = r0\nr1 = r6\nr2 = 0\ncall bpf_ringbuf_submit#132\n*(u64 *)(r6 + 0) = 1\nr0 = 0\nexit"), "UninitReg", "the record is gone after submit"),
        ("use after ringbuf discard", P, format!("{RESERVE}if r0 == 0x0 goto +6\nr6 = r0\nr1 = r6\nr2 = 0\ncall bpf_ringbuf_discard#133\nr0 = *(u64 *)(r6 + 0)\nr0 = 0\nexit"), "UninitReg", "the record is gone after discard"),
        // ---- uninitialised stack
        ("read empty stack", P, s("r0 = *(u64 *)(r10 - 8)\nexit"), "UninitStackRead", "nothing was written there"),
        ("read half-written slot", P, s("*(u32 *)(r10 - 8) = 1\nr0 = *(u64 *)(r10 - 8)\nexit"), "UninitStackRead", "upper 4 bytes never written"),
        ("read byte next to written", P, s("*(u32 *)(r10 - 8) = 1\nr0 = *(u8 *)(r10 - 1)\nexit"), "UninitStackRead", "byte -1 never written"),
        ("lookup key uninit", P, s("r2 = r10\nr2 += -4\nr1 = map[idx:0]\ncall bpf_map_lookup_elem#1\nr0 = 0\nexit"), "UninitStackRead", "the helper reads the key"),
        ("update value uninit", P, s("*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr3 = r10\nr3 += -16\nr1 = map[idx:0]\nr4 = 0\ncall bpf_map_update_elem#2\nr0 = 0\nexit"), "UninitStackRead", "the helper copies the value"),
        ("printk fmt uninit", P, s("r1 = r10\nr1 += -8\nr2 = 8\ncall bpf_trace_printk#6\nr0 = 0\nexit"), "UninitStackRead", "the helper reads the format"),
        ("ringbuf output uninit", P, s("r1 = map[idx:2]\nr2 = r10\nr2 += -16\nr3 = 16\nr4 = 0\ncall bpf_ringbuf_output#130\nr0 = 0\nexit"), "UninitStackRead", "copies stack garbage out"),
        ("atomic on uninit stack", P, s("r1 = 1\nlock *(u64 *)(r10 - 8) += r1\nr0 = 0\nexit"), "UninitStackRead", "reads the old value"),
        ("callee stack uninit", P, s("call local f\nexit\nf:\nr0 = *(u64 *)(r10 - 8)\nexit"), "UninitStackRead", "each frame starts empty"),
        ("caller stack uninit via pointer", P, s("r1 = r10\nr1 += -8\ncall local f\nexit\nf:\nr0 = *(u64 *)(r1 + 0)\nexit"), "UninitStackRead", "the caller never wrote it"),
        ("stack written on one path", P, s("r2 = *(u64 *)(r1 + 0)\nif r2 == 0x0 goto +1\n*(u64 *)(r10 - 8) = 0\nr0 = *(u64 *)(r10 - 8)\nexit"), "UninitStackRead", "the taken path skips the store"),
        ("probe_write_user src uninit", P, s("r1 = 0\nr2 = r10\nr2 += -8\nr3 = 8\ncall bpf_probe_write_user#36\nr0 = 0\nexit"), "UninitStackRead", "writes stack garbage to the user"),
        ("perf output uninit", P, s("r2 = map[idx:6]\nr3 = 0\nr4 = r10\nr4 += -8\nr5 = 8\ncall bpf_perf_event_output#25\nr0 = 0\nexit"), "UninitStackRead", "copies stack garbage out"),
        ("queue push uninit", P, s("r1 = map[idx:5]\nr2 = r10\nr2 += -8\nr3 = 0\ncall bpf_map_push_elem#87\nr0 = 0\nexit"), "UninitStackRead", "the helper copies the value"),
        ("ldxw from fp-4 after stb", P, s("*(u8 *)(r10 - 4) = 1\nr0 = *(u32 *)(r10 - 4)\nexit"), "UninitStackRead", "3 bytes never written"),
        // ---- comparisons that depend on where memory is placed
        ("fp against a number", P, s("r0 = 0\nif r10 > 0x1000 goto +1\nr0 = 1\nexit"), "PointerComparison", "leaks the stack address into control flow"),
        ("32-bit half of fp", P, s("w0 = 1\nif w10 s<= -0x2 goto +1\nw0 = 2\nexit"), "PointerComparison", "fuzz crash-787963bf: interpreter and JIT disagreed"),
        ("ctx against fp", P, s("r2 = r10\nr0 = 0\nif r1 > r2 goto +1\nr0 = 1\nexit"), "PointerComparison", "two regions' relative placement is arbitrary"),
        ("null check of ctx in 32 bits", P, s("r0 = 0\nif w1 == 0x0 goto +1\nr0 = 1\nexit"), "PointerComparison", "the low half of an address is not a null check"),
        ("maybe-null ordered against itself", P, format!("{}r1 = r0\nif r0 > r1 goto +1\nr0 = 0\nexit", lookup!("0")), "PointerComparison", "an unchecked lookup result is not a place"),
        // ---- frame pointer
        ("mov to r10", P, s("r10 = 0\nr0 = 0\nexit"), "FramePointerWrite", "r10 is read-only"),
        ("add to r10", P, s("r10 += 8\nr0 = 0\nexit"), "FramePointerWrite", "r10 is read-only"),
        ("load into r10", P, s("r10 = *(u64 *)(r1 + 0)\nr0 = 0\nexit"), "FramePointerWrite", "r10 is read-only"),
        ("mov32 to r10", P, s("w10 = w1\nr0 = 0\nexit"), "FramePointerWrite", "r10 is read-only"),
        ("neg r10", P, s("r10 = -r10\nr0 = 0\nexit"), "FramePointerWrite", "r10 is read-only"),
        ("lddw to r10", P, s("r10 = 0x1 ll\nr0 = 0\nexit"), "FramePointerWrite", "r10 is read-only"),
        ("bswap r10", P, s("r10 = be64 r10\nr0 = 0\nexit"), "FramePointerWrite", "r10 is read-only"),
        ("xchg into r10", P, s("*(u64 *)(r10 - 8) = 0\nr10 = xchg_64(r10 - 8, r10)\nr0 = 0\nexit"), "FramePointerWrite", "xchg writes its operand register"),
        // ---- dereferences of non-pointers, maybe-null pointers, map pointers
        ("deref scalar", P, s("r1 = 0\nr0 = *(u64 *)(r1 + 0)\nexit"), "InvalidMemAccess", "a number is not a pointer"),
        ("store through scalar", P, s("r2 = 100\n*(u64 *)(r2 + 0) = 1\nr0 = 0\nexit"), "InvalidMemAccess", "a number is not a pointer"),
        ("lookup without null check", P, format!("{}r0 = *(u64 *)(r0 + 0)\nexit", lookup!("0")), "InvalidMemAccess", "the lookup may return null"),
        ("write lookup without null check", P, format!("{}*(u64 *)(r0 + 0) = 1\nr0 = 0\nexit", lookup!("0")), "InvalidMemAccess", "the lookup may return null"),
        ("deref map pointer", P, s("r1 = map[idx:0]\nr0 = *(u64 *)(r1 + 0)\nexit"), "InvalidMemAccess", "a map is not memory the program may touch"),
        ("ringbuf record without null check", P, format!("{RESERVE}*(u64 *)(r0 + 0) = 1\nr0 = 0\nexit"), "InvalidMemAccess", "reserve may fail"),
        ("deref in the null branch", P, format!("{}if r0 != 0x0 goto +2\nr1 = *(u64 *)(r0 + 0)\nr0 = 0\nexit", lookup!("0")), "InvalidMemAccess", "r0 is null there"),
        ("deref helper integer", P, s("call bpf_get_current_pid_tgid#14\nr0 = *(u64 *)(r0 + 0)\nexit"), "InvalidMemAccess", "a number is not a pointer"),
        ("deref user pointer from ctx", P, s("r1 = *(u64 *)(r1 + 0)\nr0 = *(u64 *)(r1 + 0)\nexit"), "InvalidMemAccess", "user memory needs probe_read"),
        ("atomic on scalar base", P, s("r1 = 8\nr2 = 1\nlock *(u64 *)(r1 + 0) += r2\nr0 = 0\nexit"), "InvalidMemAccess", "a number is not a pointer"),
        ("no memory in conformance", M0, s("r0 = *(u8 *)(r1 + 0)\nexit"), "InvalidMemAccess", "r1 is null without input memory"),
        ("copy of maybe-null", P, format!("{}r6 = r0\nr0 = *(u32 *)(r6 + 0)\nexit", lookup!("0")), "InvalidMemAccess", "the copy may be null too"),
        // Array lookups are non-null only for a constant key below max_entries.
        ("array key past max_entries unchecked", P, s("*(u32 *)(r10 - 4) = 4\nr2 = r10\nr2 += -4\nr1 = map[idx:1]\ncall bpf_map_lookup_elem#1\nr0 = *(u32 *)(r0 + 0)\nexit"), "InvalidMemAccess", "index 4 of a 4-entry array is not there: the lookup returns null"),
        ("array key unknown unchecked", P, s("r6 = *(u32 *)(r1 + 0)\n*(u32 *)(r10 - 4) = r6\nr2 = r10\nr2 += -4\nr1 = map[idx:1]\ncall bpf_map_lookup_elem#1\nr0 = *(u32 *)(r0 + 0)\nexit"), "InvalidMemAccess", "a key read from the context may be out of range"),
        ("array key bounded but not constant", P, s("r6 = *(u32 *)(r1 + 0)\nr6 &= 3\n*(u32 *)(r10 - 4) = r6\nr2 = r10\nr2 += -4\nr1 = map[idx:1]\ncall bpf_map_lookup_elem#1\nr0 = *(u32 *)(r0 + 0)\nexit"), "InvalidMemAccess", "only a constant key is proven (as the kernel); a bounded one still needs the check"),
        ("array key 0 on one path only", P, s("r6 = *(u32 *)(r1 + 0)\n*(u32 *)(r10 - 4) = r6\nif r6 == 0x5 goto +1\n*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:1]\ncall bpf_map_lookup_elem#1\nr0 = *(u32 *)(r0 + 0)\nexit"), "InvalidMemAccess", "on the path that skips the store the key is 5: pruning must not merge it with the key-0 path"),
        ("array key in a map value unchecked", P, format!("{}if r0 == 0x0 goto +6\nr2 = r0\nr1 = map[idx:1]\ncall bpf_map_lookup_elem#1\nr0 = *(u32 *)(r0 + 0)\nexit\nr0 = 0\nexit", lookup!("1")), "InvalidMemAccess", "a key read from a map value is whatever the map holds, not a proven index"),
        ("array key 0 on the other path only", P, s("r6 = *(u32 *)(r1 + 0)\n*(u32 *)(r10 - 4) = r6\nif r6 != 0x5 goto +1\n*(u32 *)(r10 - 4) = 0\nr2 = r10\nr2 += -4\nr1 = map[idx:1]\ncall bpf_map_lookup_elem#1\nr0 = *(u32 *)(r0 + 0)\nexit"), "InvalidMemAccess", "the mirror of the case above: whichever path is explored first, the unknown key is not pruned"),
        ("array key 0 spilled on one path only", P, s("r6 = *(u64 *)(r1 + 0)\n*(u64 *)(r10 - 8) = r6\nif r6 == 0x5 goto +2\nr7 = 0\n*(u64 *)(r10 - 8) = r7\nr2 = r10\nr2 += -8\nr1 = map[idx:1]\ncall bpf_map_lookup_elem#1\nr0 = *(u32 *)(r0 + 0)\nexit"), "InvalidMemAccess", "a spilled constant key on one path, an unknown spilled key on the other"),
        ("array key 0 hash map unchecked", P, format!("{}r0 = *(u32 *)(r0 + 0)\nexit", lookup!("0")), "InvalidMemAccess", "a hash map may lack any key"),
        ("array key 0 ringbuf record still needs check", P, format!("{}r6 = *(u32 *)(r0 + 0)\n{}r0 = *(u32 *)(r0 + 0)\nexit", lookup!("1"), RESERVE), "InvalidMemAccess", "the ringbuf record may be null whatever the array lookup proved"),
        ("null check of another value", P, format!("{}r6 = r0\n{}if r0 == 0x0 goto +2\nr0 = *(u8 *)(r6 + 0)\nexit\nr0 = 0\nexit", lookup!("0"), lookup!("0")), "InvalidMemAccess", "checking the second lookup says nothing about the first"),
        // ---- map values
        ("map value read past end", P, format!("{}if r0 == 0x0 goto +1\nr0 = *(u64 *)(r0 + 8)\nr0 = 0\nexit", lookup!("0")), "MapValueOutOfBounds", "value_size is 8"),
        ("map value write straddles end", P, format!("{}if r0 == 0x0 goto +1\n*(u32 *)(r0 + 6) = 1\nr0 = 0\nexit", lookup!("0")), "MapValueOutOfBounds", "bytes 8 and 9 are outside"),
        ("map value negative offset", P, format!("{}if r0 == 0x0 goto +1\nr1 = *(u8 *)(r0 - 1)\nr0 = 0\nexit", lookup!("0")), "MapValueOutOfBounds", "before the value"),
        ("map value unbounded index", P, format!("r6 = *(u64 *)(r1 + 0)\n{}if r0 == 0x0 goto +2\nr0 += r6\nr1 = *(u8 *)(r0 + 0)\nr0 = 0\nexit", lookup!("1")), "MapValueOutOfBounds", "the index is unbounded"),
        ("map value masked index too wide", P, format!("r6 = *(u64 *)(r1 + 0)\n{}if r0 == 0x0 goto +3\nr6 &= 15\nr0 += r6\nr1 = *(u64 *)(r0 + 0)\nr0 = 0\nexit", lookup!("1")), "MapValueOutOfBounds", "index 15 plus 8 bytes passes 16"),
        ("map value bound off by one", P, format!("r6 = *(u64 *)(r1 + 0)\n{}if r0 == 0x0 goto out\nif r6 > 0x10 goto out\nr0 += r6\nr1 = *(u8 *)(r0 + 0)\nout:\nr0 = 0\nexit", lookup!("1")), "MapValueOutOfBounds", "index 16 is allowed by the check"),
        ("map value signed bound only", P, format!("r6 = *(u64 *)(r1 + 0)\n{}if r0 == 0x0 goto out\nif r6 s> 0xa goto out\nr0 += r6\nr1 = *(u8 *)(r0 + 0)\nout:\nr0 = 0\nexit", lookup!("1")), "MapValueOutOfBounds", "the index may be negative"),
        ("rodata offset plus read", P, s("r1 = map[idx:4]+4\nr0 = *(u64 *)(r1 + 0)\nexit"), "MapValueOutOfBounds", "4 + 8 > 8"),
        ("atomic past map value", P, format!("{}if r0 == 0x0 goto +2\nr1 = 1\nlock *(u64 *)(r0 + 4) += r1\nr0 = 0\nexit", lookup!("0")), "MapValueOutOfBounds", "4 + 8 > 8"),
        ("loop one past the end", P, format!("{}if r0 == 0x0 goto +6\nr1 = 0\nr2 = r0\nr2 += r1\n*(u8 *)(r2 + 0) = 0\nr1 += 1\nif r1 <= 0x10 goto -5\nr0 = 0\nexit", lookup!("1")), "MapValueOutOfBounds", "the loop writes index 16"),
        ("map value pointer moved back", P, format!("{}if r0 == 0x0 goto +2\nr0 += -1\nr1 = *(u8 *)(r0 + 0)\nr0 = 0\nexit", lookup!("0")), "MapValueOutOfBounds", "before the value"),
        ("key from short map value", P, s("r2 = map[idx:4]+6\nr1 = map[idx:0]\ncall bpf_map_lookup_elem#1\nr0 = 0\nexit"), "MapValueOutOfBounds", "the 4-byte key runs past the 8-byte value"),
        ("map value read after 32-bit index", P, format!("r6 = *(u32 *)(r1 + 0)\n{}if r0 == 0x0 goto +2\nr0 += r6\nr1 = *(u8 *)(r0 + 0)\nr0 = 0\nexit", lookup!("1")), "MapValueOutOfBounds", "a u32 index is up to 4G"),
        ("array value write past end", P, format!("{}if r0 == 0x0 goto +1\n*(u64 *)(r0 + 12) = 0\nr0 = 0\nexit", lookup!("1")), "MapValueOutOfBounds", "12 + 8 > 16"),
        // ---- memory regions (conformance input, ringbuf records)
        ("mem read past end", M, s("r0 = *(u64 *)(r1 + 16)\nexit"), "MemOutOfBounds", "16-byte input"),
        ("mem read before start", M, s("r0 = *(u8 *)(r1 - 1)\nexit"), "MemOutOfBounds", "before the input"),
        ("mem pointer plus length", M, s("r1 += r2\nr0 = *(u8 *)(r1 + 0)\nexit"), "MemOutOfBounds", "r1 + len is one past the end"),
        ("ringbuf record past end", P, format!("{RESERVE}if r0 == 0x0 goto out\n*(u64 *)(r0 + 16) = 1\nr1 = r0\nr2 = 0\ncall bpf_ringbuf_submit#132\nout:\nr0 = 0\nexit"), "MemOutOfBounds", "16-byte record"),
        ("mem write straddles end", M, s("*(u64 *)(r1 + 12) = 0\nr0 = 0\nexit"), "MemOutOfBounds", "12 + 8 > 16"),
        ("mem index from data", M, s("r3 = *(u8 *)(r1 + 0)\nr1 += r3\nr0 = *(u8 *)(r1 + 0)\nexit"), "MemOutOfBounds", "index up to 255"),
        ("mem masked index u16", M, s("r3 = *(u8 *)(r1 + 0)\nr3 &= 15\nr1 += r3\nr0 = *(u16 *)(r1 + 0)\nexit"), "MemOutOfBounds", "15 + 2 > 16"),
        ("mem loop over length", M, s("r3 = 0\nr4 = r1\nr4 += r3\nr0 = *(u8 *)(r4 + 0)\nr3 += 1\nif r3 <= r2 goto -5\nexit"), "MemOutOfBounds", "reads index len"),
        ("mem negative index", M, s("r3 = *(u8 *)(r1 + 0)\nr1 -= r3\nr0 = *(u8 *)(r1 + 0)\nexit"), "MemOutOfBounds", "moves before the input"),
        // ---- stack bounds
        ("stack read at fp", P, s("r0 = *(u64 *)(r10 + 0)\nexit"), "StackOutOfBounds", "the frame is below fp"),
        ("stack below 512", P, s("*(u64 *)(r10 - 520) = 0\nr0 = 0\nexit"), "StackOutOfBounds", "frames are 512 bytes"),
        ("stack straddles fp", P, s("*(u32 *)(r10 - 2) = 0\nr0 = 0\nexit"), "StackOutOfBounds", "2 bytes above fp"),
        ("stack pointer moved far", P, s("r1 = r10\nr1 += -600\n*(u64 *)(r1 + 0) = 0\nr0 = 0\nexit"), "StackOutOfBounds", "below the frame"),
        ("helper buffer past fp", P, s("r1 = r10\nr1 += -8\nr2 = 16\ncall bpf_get_current_comm#16\nr0 = 0\nexit"), "StackOutOfBounds", "16 bytes from fp-8"),
        ("stack store above fp", P, s("*(u64 *)(r10 + 8) = 0\nr0 = 0\nexit"), "StackOutOfBounds", "above the frame"),
        ("key straddles fp", P, s("*(u16 *)(r10 - 2) = 0\nr2 = r10\nr2 += -2\nr1 = map[idx:0]\ncall bpf_map_lookup_elem#1\nr0 = 0\nexit"), "StackOutOfBounds", "a 4-byte key at fp-2"),
        ("probe_read size above buffer", P, s("r3 = *(u64 *)(r1 + 0)\nr2 = *(u64 *)(r1 + 8)\nr2 &= 63\nr1 = r10\nr1 += -16\ncall bpf_probe_read_user#112\nr0 = 0\nexit"), "StackOutOfBounds", "up to 63 bytes into 16"),
        ("stack byte at -513", P, s("*(u8 *)(r10 - 513) = 0\nr0 = 0\nexit"), "StackOutOfBounds", "frames are 512 bytes"),
        ("callee stack below 512", P, s("call local f\nexit\nf:\n*(u64 *)(r10 - 1024) = 0\nr0 = 0\nexit"), "StackOutOfBounds", "each frame is 512 bytes"),
        // ---- variable offsets where constant ones are required
        ("variable stack write past the frame", P, s("r2 = r10\nr3 = *(u64 *)(r1 + 0)\nr3 &= 15\nr2 += r3\n*(u8 *)(r2 - 8) = 0\nr0 = 0\nexit"), "StackOutOfBounds", "fp-8+15 is above the frame"),
        ("variable stack write unbounded", P, s("r2 = r10\nr3 = *(u64 *)(r1 + 0)\nr2 += r3\n*(u8 *)(r2 - 8) = 0\nr0 = 0\nexit"), "StackOutOfBounds", "any offset"),
        ("variable stack read uninit", P, s("*(u64 *)(r10 - 16) = 0\nr2 = r10\nr3 = *(u64 *)(r1 + 0)\nr3 &= 7\nr2 -= r3\nr0 = *(u8 *)(r2 - 12)\nexit"), "UninitStackRead", "fp-19..fp-17 never written"),
        ("variable stack read after variable write", P, s("r2 = r10\nr3 = *(u64 *)(r1 + 0)\nr3 &= 7\nr2 -= r3\n*(u8 *)(r2 - 1) = 1\nr0 = *(u8 *)(r10 - 1)\nexit"), "UninitStackRead", "the write may have gone elsewhere"),
        ("variable stack pointer spill", P, s("r2 = r10\nr3 = *(u64 *)(r1 + 0)\nr3 &= 8\nr2 -= r3\n*(u64 *)(r2 - 8) = r10\nr0 = 0\nexit"), "PartialPointerSpill", "a pointer needs a known slot"),
        ("variable stack write over spilled pointer", P, s("*(u64 *)(r10 - 16) = r1\nr2 = r10\nr3 = *(u64 *)(r1 + 0)\nr3 &= 8\nr2 -= r3\n*(u64 *)(r2 - 8) = 0\nr0 = 0\nexit"), "PartialPointerSpill", "may corrupt the spilled ctx"),
        ("variable stack read of spilled pointer", P, s("*(u64 *)(r10 - 16) = r1\n*(u64 *)(r10 - 8) = 0\nr2 = r10\nr3 = *(u64 *)(r1 + 0)\nr3 &= 8\nr2 -= r3\nr0 = *(u64 *)(r2 - 8)\nexit"), "PartialPointerFill", "may read the spilled ctx"),
        ("variable stack atomic", P, s("*(u64 *)(r10 - 16) = 0\n*(u64 *)(r10 - 8) = 0\nr2 = r10\nr3 = *(u64 *)(r1 + 0)\nr3 &= 8\nr2 -= r3\nr4 = 1\nlock *(u64 *)(r2 - 8) += r4\nr0 = 0\nexit"), "VariableStackAccess", "atomics need a known slot"),
        ("variable ctx read", P, s("r2 = *(u64 *)(r1 + 0)\nr2 &= 8\nr1 += r2\nr0 = *(u64 *)(r1 + 0)\nexit"), "VariableCtxAccess", "context fields are checked by constant offset"),
        ("variable buffer ctx write", B, s("r2 = *(u64 *)(r1 + 0)\nr2 &= 4\nr1 += r2\n*(u32 *)(r1 + 8) = 0\nr0 = 0\nexit"), "VariableCtxAccess", "context fields are checked by constant offset"),
        // ---- context layouts
        ("pt_regs past end", P, s("r0 = *(u64 *)(r1 + 168)\nexit"), "CtxAccess", "pt_regs is 168 bytes"),
        ("pt_regs write", P, s("*(u64 *)(r1 + 0) = 0\nr0 = 0\nexit"), "CtxAccess", "uprobe context is read-only"),
        ("pt_regs negative", P, s("r0 = *(u64 *)(r1 - 8)\nexit"), "CtxAccess", "before the context"),
        ("pt_regs across fields", P, s("r0 = *(u64 *)(r1 + 4)\nexit"), "CtxAccess", "spans two registers"),
        (
            "pt_regs misaligned",
            P,
            s("r0 = *(u32 *)(r1 + 2)\nexit"),
            "CtxAccess",
            "context fields are read naturally aligned, as in the kernel",
        ),
        ("sys_enter past end", S, s("r0 = *(u64 *)(r1 + 64)\nexit"), "CtxAccess", "the record is 64 bytes"),
        ("sys_exit past end", X, s("r0 = *(u64 *)(r1 + 24)\nexit"), "CtxAccess", "the record is 24 bytes"),
        ("sys_exit write", X, s("*(u64 *)(r1 + 16) = 0\nr0 = 0\nexit"), "CtxAccess", "tracepoint records are read-only"),
        ("raw syscall past end", R, s("r0 = *(u64 *)(r1 + 16)\nexit"), "CtxAccess", "two u64 arguments"),
        ("buffer write outside range", B, s("*(u64 *)(r1 + 0) = 0\nr0 = 0\nexit"), "CtxAccess", "only 8..16 is writable"),
        ("buffer write crosses range", B, s("*(u64 *)(r1 + 12) = 0\nr0 = 0\nexit"), "CtxAccess", "12..20 leaves 8..16"),
        ("buffer read past end", B, s("r0 = *(u8 *)(r1 + 32)\nexit"), "CtxAccess", "32-byte buffer"),
        ("moved ctx past end", P, s("r1 += 8\nr0 = *(u64 *)(r1 + 160)\nexit"), "CtxAccess", "8 + 160 = 168"),
        ("ctx store of register", S, s("r2 = 1\n*(u64 *)(r1 + 8) = r2\nr0 = 0\nexit"), "CtxAccess", "tracepoint records are read-only"),
        // ---- read-only memory
        ("rodata write", P, s("r1 = map[idx:4]+0\n*(u64 *)(r1 + 0) = 1\nr0 = 0\nexit"), "ReadOnlyWrite", "frozen .rodata"),
        ("rodata write after lookup", P, format!("{}if r0 == 0x0 goto +1\n*(u32 *)(r0 + 0) = 1\nr0 = 0\nexit", lookup!("4")), "ReadOnlyWrite", "frozen .rodata"),
        ("helper writes rodata", P, s("r1 = map[idx:4]+0\nr2 = 8\nr3 = 0\ncall bpf_probe_read_kernel#113\nr0 = 0\nexit"), "ReadOnlyWrite", "the helper would write frozen memory"),
        ("pop into rodata", P, s("r1 = map[idx:5]\nr2 = map[idx:4]+0\ncall bpf_map_pop_elem#88\nr0 = 0\nexit"), "ReadOnlyWrite", "the helper would write frozen memory"),
        ("atomic on rodata", P, s("r1 = map[idx:4]+0\nr2 = 1\nlock *(u64 *)(r1 + 0) += r2\nr0 = 0\nexit"), "ReadOnlyWrite", "frozen .rodata"),
        // ---- pointer leaks
        ("ctx pointer into map", P, format!("r6 = r1\n{}if r0 == 0x0 goto +1\n*(u64 *)(r0 + 0) = r6\nr0 = 0\nexit", lookup!("0")), "PointerStore", "maps are visible to user space"),
        ("stack pointer into map", P, format!("{}if r0 == 0x0 goto +1\n*(u64 *)(r0 + 0) = r10\nr0 = 0\nexit", lookup!("0")), "PointerStore", "maps are visible to user space"),
        ("pointer into ringbuf", P, format!("{RESERVE}if r0 == 0x0 goto out\n*(u64 *)(r0 + 0) = r0\nr1 = r0\nr2 = 0\ncall bpf_ringbuf_submit#132\nout:\nr0 = 0\nexit"), "PointerStore", "records go to user space"),
        ("pointer into input memory", M, s("*(u64 *)(r1 + 0) = r1\nr0 = 0\nexit"), "PointerStore", "the host reads its memory back"),
        ("pointer into buffer ctx", B, s("*(u64 *)(r1 + 8) = r10\nr0 = 0\nexit"), "PointerStore", "the host reads its buffer back"),
        ("spilled pointer in update value", P, s("*(u32 *)(r10 - 4) = 0\n*(u64 *)(r10 - 16) = r1\nr2 = r10\nr2 += -4\nr3 = r10\nr3 += -16\nr1 = map[idx:0]\nr4 = 0\ncall bpf_map_update_elem#2\nr0 = 0\nexit"), "PointerStore", "the value copied into the map holds a pointer"),
        ("spilled pointer in ringbuf output", P, s("*(u64 *)(r10 - 8) = r10\nr1 = map[idx:2]\nr2 = r10\nr2 += -8\nr3 = 8\nr4 = 0\ncall bpf_ringbuf_output#130\nr0 = 0\nexit"), "PointerStore", "the record holds a pointer"),
        ("atomic add of pointer", P, format!("{}if r0 == 0x0 goto +1\nlock *(u64 *)(r0 + 0) += r10\nr0 = 0\nexit", lookup!("0")), "PointerStore", "adds an address into a map"),
        ("xchg pointer into map", P, format!("{}if r0 == 0x0 goto +2\nr1 = r10\nr1 = xchg_64(r0 + 0, r1)\nr0 = 0\nexit", lookup!("0")), "PointerStore", "swaps an address into a map"),
        ("map value pointer into map", P, format!("{}if r0 == 0x0 goto +1\n*(u64 *)(r0 + 0) = r0\nr0 = 0\nexit", lookup!("0")), "PointerStore", "maps are visible to user space"),
        ("return stack pointer", P, s("r0 = r10\nexit"), "PointerReturn", "the return value is visible to the host"),
        ("return ctx", P, s("r0 = r1\nexit"), "PointerReturn", "the return value is visible to the host"),
        ("return map value", P, format!("{}if r0 == 0x0 goto +1\nexit\nr0 = 0\nexit", lookup!("0")), "PointerReturn", "the return value is visible to the host"),
        ("return map pointer", P, s("r0 = map[idx:0]\nexit"), "PointerReturn", "the return value is visible to the host"),
        ("return input memory", M, s("r0 = r1\nexit"), "PointerReturn", "the return value is visible to the host"),
        // ---- spills and fills of pointers
        ("4-byte pointer spill", P, s("*(u32 *)(r10 - 8) = r1\nr0 = 0\nexit"), "PartialPointerSpill", "half a pointer"),
        ("misaligned pointer spill", P, s("*(u64 *)(r10 - 12) = r1\nr0 = 0\nexit"), "PartialPointerSpill", "spills are slot-aligned"),
        ("4-byte fill of pointer", P, s("*(u64 *)(r10 - 8) = r1\nr0 = *(u32 *)(r10 - 8)\nexit"), "PartialPointerFill", "reads half a pointer"),
        ("byte fill of pointer", P, s("*(u64 *)(r10 - 8) = r10\nr0 = *(u8 *)(r10 - 1)\nexit"), "PartialPointerFill", "reads a pointer byte"),
        // ---- pointer arithmetic
        ("multiply ctx", P, s("r1 *= 2\nr0 = 0\nexit"), "PointerArith", "only add/sub move a pointer"),
        ("or ctx", P, s("r1 |= 1\nr0 = 0\nexit"), "PointerArith", "only add/sub move a pointer"),
        ("32-bit add to pointer", P, s("w1 += 1\nr0 = 0\nexit"), "PointerArith", "truncates the pointer"),
        ("mov32 of pointer", P, s("w0 = w1\nexit"), "PointerArith", "truncates the pointer"),
        ("arith on maybe-null", P, format!("{}r0 += 4\nif r0 == 0x0 goto +1\nr0 = *(u32 *)(r0 + 0)\nr0 = 0\nexit", lookup!("0")), "PointerArith", "null + 4 is not null"),
        ("arith on map pointer", P, s("r1 = map[idx:0]\nr1 += 8\nr0 = 0\nexit"), "PointerArith", "a map pointer is opaque"),
        ("pointer plus pointer", P, s("r1 += r10\nr0 = 0\nexit"), "PointerArith", "meaningless"),
        ("pointer minus other region", P, s("r1 -= r10\nr0 = r1\nexit"), "PointerArith", "unrelated regions"),
        ("shift pointer", P, s("r0 = r10\nr0 <<= 1\nr0 = 0\nexit"), "PointerArith", "only add/sub move a pointer"),
        ("negate pointer", P, s("r1 = -r1\nr0 = 0\nexit"), "PointerArith", "negation of an address"),
        ("byte swap pointer", P, s("r1 = be64 r1\nr0 = 0\nexit"), "PointerArith", "byte swap of an address"),
        ("scalar minus pointer", P, s("r0 = 0\nr0 -= r1\nexit"), "PointerArith", "leaks the address as a number"),
        ("sign-extend pointer", P, s("r0 = (s32)r1\nexit"), "PointerArith", "truncates the pointer"),
        ("divide pointer", P, s("r1 /= 2\nr0 = 0\nexit"), "PointerArith", "only add/sub move a pointer"),
        ("arsh frame pointer copy", P, s("r2 = r10\nr2 s>>= 1\nr0 = 0\nexit"), "PointerArith", "only add/sub move a pointer"),
        ("xor pointer", M, s("r1 ^= r2\nr0 = 0\nexit"), "PointerArith", "only add/sub move a pointer"),
        ("and pointer", P, s("r1 &= -8\nr0 = 0\nexit"), "PointerArith", "only add/sub move a pointer"),
        // ---- atomics
        ("atomic on ctx", P, s("r2 = 1\nlock *(u64 *)(r1 + 0) += r2\nr0 = 0\nexit"), "InvalidAtomic", "the context is not memory to modify"),
        ("cmpxchg with pointer in r0", P, s("*(u64 *)(r10 - 8) = 0\nr0 = r10\nr2 = 1\nr0 = cmpxchg_64(r10 - 8, r0, r2)\nr0 = 0\nexit"), "InvalidAtomic", "compares an address"),
        ("atomic on spilled pointer", P, s("*(u64 *)(r10 - 8) = r1\nr2 = 1\nlock *(u64 *)(r10 - 8) += r2\nr0 = 0\nexit"), "InvalidAtomic", "modifies a pointer"),
        // ---- helper calls
        ("unknown helper", P, s("call #999\nr0 = 0\nexit"), "UnknownHelper", "no such helper"),
        ("helper zero", P, s("call #0\nr0 = 0\nexit"), "UnknownHelper", "id 0 is unspec"),
        ("callx unknown id", P, s("r2 = 999\ncallx r2\nr0 = 0\nexit"), "UnknownHelper", "no such helper"),
        ("helper not in table", M, s("call bpf_map_lookup_elem#1\nr0 = 0\nexit"), "HelperArgType", "r1 is input memory, not a map"),
        ("lookup with scalar map", P, s("*(u32 *)(r10 - 4) = 0\nr1 = 0\nr2 = r10\nr2 += -4\ncall bpf_map_lookup_elem#1\nr0 = 0\nexit"), "HelperArgType", "r1 must be a map"),
        ("lookup with scalar key", P, s("r1 = map[idx:0]\nr2 = 0\ncall bpf_map_lookup_elem#1\nr0 = 0\nexit"), "HelperArgType", "r2 must point to the key"),
        ("tail call without ctx", P, s("r1 = r10\nr2 = map[idx:3]\nr3 = 0\ncall bpf_tail_call#12\nr0 = 0\nexit"), "HelperArgType", "r1 must be the context"),
        ("func ip of moved ctx", P, s("r1 += 8\ncall bpf_get_func_ip#173\nr0 = 0\nexit"), "HelperArgType", "r1 must be the unmodified context"),
        ("printk fmt in ctx", P, s("r2 = 8\ncall bpf_trace_printk#6\nr0 = 0\nexit"), "HelperArgType", "the context is not a buffer"),
        ("ringbuf output from scalar", P, s("r1 = map[idx:2]\nr2 = 0\nr3 = 8\nr4 = 0\ncall bpf_ringbuf_output#130\nr0 = 0\nexit"), "HelperArgType", "r2 must point to data"),
        ("pointer as flags", P, s("r1 = map[idx:2]\nr2 = 8\nr3 = r10\ncall bpf_ringbuf_reserve#131\nr0 = 0\nexit"), "HelperArgType", "flags are a number"),
        ("override return with pointer", P, s("r2 = r10\ncall bpf_override_return#58\nr0 = 0\nexit"), "HelperArgType", "the return code is a number"),
        ("vprintk data scalar", P, s("*(u64 *)(r10 - 8) = 0\nr1 = r10\nr1 += -8\nr2 = 8\nr3 = 1\nr4 = 8\ncall bpf_trace_vprintk#177\nr0 = 0\nexit"), "HelperArgType", "r3 must be null or memory"),
        ("map value as map", P, s("*(u32 *)(r10 - 4) = 0\nr1 = map[idx:4]+0\nr2 = r10\nr2 += -4\ncall bpf_map_lookup_elem#1\nr0 = 0\nexit"), "HelperArgType", "a value is not a map"),
        ("lookup key is a map", P, s("r1 = map[idx:0]\nr2 = map[idx:0]\ncall bpf_map_lookup_elem#1\nr0 = 0\nexit"), "InvalidMemAccess", "a map pointer is not memory"),
        ("ringbuf reserve on hash", P, s("r1 = map[idx:0]\nr2 = 8\nr3 = 0\ncall bpf_ringbuf_reserve#131\nr0 = 0\nexit"), "HelperMapType", "needs a ringbuf"),
        ("lookup on ringbuf", P, s("*(u32 *)(r10 - 4) = 0\nr1 = map[idx:2]\nr2 = r10\nr2 += -4\ncall bpf_map_lookup_elem#1\nr0 = 0\nexit"), "HelperMapType", "ringbufs have no elements"),
        ("tail call on array", P, s("r2 = map[idx:1]\nr3 = 0\ncall bpf_tail_call#12\nr0 = 0\nexit"), "HelperMapType", "needs a prog array"),
        ("push on hash", P, s("*(u64 *)(r10 - 8) = 0\nr1 = map[idx:0]\nr2 = r10\nr2 += -8\nr3 = 0\ncall bpf_map_push_elem#87\nr0 = 0\nexit"), "HelperMapType", "needs a queue or stack"),
        ("perf output on array", P, s("*(u64 *)(r10 - 8) = 0\nr2 = map[idx:1]\nr3 = 0\nr4 = r10\nr4 += -8\nr5 = 8\ncall bpf_perf_event_output#25\nr0 = 0\nexit"), "HelperMapType", "needs a perf event array"),
        ("lookup on prog array", P, s("*(u32 *)(r10 - 4) = 0\nr1 = map[idx:3]\nr2 = r10\nr2 += -4\ncall bpf_map_lookup_elem#1\nr0 = 0\nexit"), "HelperMapType", "programs are not values"),
        ("ringbuf query on queue", P, s("r1 = map[idx:5]\nr2 = 0\ncall bpf_ringbuf_query#134\nr0 = 0\nexit"), "HelperMapType", "needs a ringbuf"),
        ("comm size unbounded", P, s("r2 = *(u64 *)(r1 + 0)\nr1 = r10\nr1 += -16\ncall bpf_get_current_comm#16\nr0 = 0\nexit"), "HelperSizeUnbounded", "size unknown"),
        ("probe_read size may be negative", P, s("r3 = *(u64 *)(r1 + 0)\nr2 = *(u64 *)(r1 + 8)\nif r2 s> 0x10 goto out\nr1 = r10\nr1 += -16\ncall bpf_probe_read_user#112\nout:\nr0 = 0\nexit"), "HelperSizeUnbounded", "size may be negative"),
        ("comm size zero", P, s("r1 = r10\nr1 += -16\nr2 = 0\ncall bpf_get_current_comm#16\nr0 = 0\nexit"), "HelperSizeZero", "the size must be positive"),
        ("printk size maybe zero", P, s("*(u64 *)(r10 - 16) = 0\n*(u64 *)(r10 - 8) = 0\nr2 = *(u64 *)(r1 + 0)\nr2 &= 15\nr1 = r10\nr1 += -16\ncall bpf_trace_printk#6\nr0 = 0\nexit"), "HelperSizeZero", "the size must be positive"),
        ("reserve size variable", P, s("r2 = *(u64 *)(r1 + 0)\nr2 &= 63\nr1 = map[idx:2]\nr3 = 0\ncall bpf_ringbuf_reserve#131\nr0 = 0\nexit"), "HelperSizeNotConst", "the record size must be known"),
        ("reserve size zero", P, s("r1 = map[idx:2]\nr2 = 0\nr3 = 0\ncall bpf_ringbuf_reserve#131\nr0 = 0\nexit"), "HelperSizeNotConst", "an empty record"),
        ("submit scalar", P, s("r1 = 0\nr2 = 0\ncall bpf_ringbuf_submit#132\nr0 = 0\nexit"), "ReleaseUnreferenced", "nothing was reserved"),
        ("submit map value", P, format!("{}if r0 == 0x0 goto +3\nr1 = r0\nr2 = 0\ncall bpf_ringbuf_submit#132\nr0 = 0\nexit", lookup!("0")), "ReleaseUnreferenced", "not a ringbuf record"),
        ("submit stack", P, s("r1 = r10\nr1 += -8\nr2 = 0\ncall bpf_ringbuf_discard#133\nr0 = 0\nexit"), "ReleaseUnreferenced", "not a ringbuf record"),
        ("submit moved record", P, format!("{RESERVE}if r0 == 0x0 goto +4\nr1 = r0\nr1 += 8\nr2 = 0\ncall bpf_ringbuf_submit#132\nr0 = 0\nexit"), "HelperArgType", "the record must be submitted from its start"),
        ("submit unchecked record", P, format!("{RESERVE}r1 = r0\nr2 = 0\ncall bpf_ringbuf_submit#132\nr0 = 0\nexit"), "ReleaseUnreferenced", "the record may be null"),
        // ---- references
        ("reserve never submitted", P, format!("{RESERVE}if r0 == 0x0 goto +0\nr0 = 0\nexit"), "UnreleasedReference", "the record leaks"),
        ("reserve result dropped", P, format!("{RESERVE}r0 = 0\nexit"), "UnreleasedReference", "the record leaks"),
        ("submit on one path", P, format!("r6 = *(u64 *)(r1 + 0)\n{RESERVE}if r0 == 0x0 goto +5\nif r6 == 0x0 goto +3\nr1 = r0\nr2 = 0\ncall bpf_ringbuf_submit#132\nr0 = 0\nexit"), "UnreleasedReference", "leaks when r6 is 0"),
        ("two reserves one submit", P, format!("{RESERVE}r6 = r0\n{RESERVE}if r0 == 0x0 goto +3\nr1 = r0\nr2 = 0\ncall bpf_ringbuf_submit#132\nr0 = 0\nexit"), "UnreleasedReference", "the first record leaks"),
        // ---- maps in lddw
        ("map index out of range", P, s("r1 = map[idx:7]\nr0 = 0\nexit"), "InvalidMap", "7 maps"),
        ("map index far out", P, s("r1 = map[idx:100]\nr0 = 0\nexit"), "InvalidMap", "7 maps"),
        ("map in env without maps", M, s("r1 = map[idx:0]\nr0 = 0\nexit"), "InvalidMap", "no maps"),
        ("map value offset at end", P, s("r1 = map[idx:0]+8\nr0 = 0\nexit"), "InvalidMapValueOffset", "value_size is 8"),
        ("map value offset far", P, s("r1 = map[idx:1]+100\nr0 = 0\nexit"), "InvalidMapValueOffset", "value_size is 16"),
        // ---- termination
        ("loop without loops", N, s("r0 = 0\nr0 += 1\nif r0 < 0xa goto -2\nexit"), "BackEdge", "loops are off"),
        ("self loop without loops", N, s("r0 = 0\nl:\nif r0 == 0x0 goto l\nexit"), "BackEdge", "loops are off"),
        ("loop forever", P, s("r0 = 0\nl:\nif r0 == 0x0 goto l\nexit"), "InfiniteLoop", "r0 never changes"),
        ("unknown counter", P, s("r1 = *(u64 *)(r1 + 0)\nl:\nr1 += 1\nif r1 != 0x0 goto l\nr0 = 0\nexit"), "InfiniteLoop", "no progress the verifier can see"),
        ("goto self", P, s("r0 = 0\nl:\ngoto l"), "InfiniteLoop", "never leaves"),
        ("counter not updated", P, s("r1 = 0\nl:\nr2 = 1\nif r1 < 0xa goto l\nr0 = 0\nexit"), "InfiniteLoop", "the counter never moves"),
        ("loop to 2^31", P, s("r1 = 0\nl:\nr1 += 1\nif r1 < 0x7fffffff goto l\nr0 = 0\nexit"), "TooComplex", "two billion iterations"),
        ("million countdown", P, s("r1 = 1000000\nl:\nr1 -= 1\nif r1 != 0x0 goto l\nr0 = 0\nexit"), "TooComplex", "past the budget"),
        // ---- control flow shape
        ("code after exit", P, s("r0 = 0\nexit\nr0 = 1\nexit"), "Unreachable", "dead code"),
        ("jumped over", P, s("r0 = 0\ngoto +1\nr0 = 1\nexit"), "Unreachable", "dead code"),
        ("dead tail", P, s("r0 = 0\nl:\ngoto l\nexit"), "Unreachable", "exit is never reached"),
        ("jump past end", P, s("goto +5\nexit"), "JumpOutOfRange", "target outside the program"),
        ("jump before start", P, s("if r1 == 0x0 goto -5\nr0 = 0\nexit"), "JumpOutOfRange", "target outside the program"),
        ("jump into function", P, s("r0 = 0\nif r1 == 0x0 goto f\ncall local f\nexit\nf:\nr0 = 1\nexit"), "JumpOutOfRange", "functions are entered by call"),
        ("call past end", P, s("call pc+10\nexit"), "JumpOutOfRange", "target outside the program"),
        ("jump into lddw", P, s("goto +1\nr0 = 0x1 ll\nexit"), "JumpIntoLddw", "the second half is data"),
        ("conditional jump into lddw", P, s("if r1 == 0x0 goto +1\nr0 = 0x1 ll\nexit"), "JumpIntoLddw", "the taken edge lands on the second half"),
        ("backward jump into lddw", P, s("r0 = 0x1 ll\nif r0 == 0x0 goto -2\nexit"), "JumpIntoLddw", "a back edge to the second half"),
        ("no exit", P, s("r0 = 0"), "FallThrough", "runs off the end"),
        ("function falls through", P, s("r0 = 0\ncall local f\nexit\nf:\nr0 = 1"), "FallThrough", "runs off the end"),
        ("main falls into function", P, s("r0 = 0\ncall local f\nf:\nr0 = 1\nexit"), "FallThrough", "runs into the next function"),
        ("self recursion", P, s("call local f\nexit\nf:\ncall local f\nexit"), "RecursiveCall", "unbounded depth"),
        ("mutual recursion", P, s("call local f\nexit\nf:\ncall local g\nexit\ng:\ncall local f\nexit"), "RecursiveCall", "unbounded depth"),
        ("main calls itself", P, s("l:\nr0 = 0\ncall local l\nexit"), "RecursiveCall", "unbounded depth"),
        ("deep call chain", P, s("call local f1\nexit\nf1:\ncall local f2\nexit\nf2:\ncall local f3\nexit\nf3:\ncall local f4\nexit\nf4:\ncall local f5\nexit\nf5:\ncall local f6\nexit\nf6:\ncall local f7\nexit\nf7:\ncall local f8\nexit\nf8:\nr0 = 0\nexit"), "CallTooDeep", "9 frames"),
        ("combined stack main full", P, s("*(u64 *)(r10 - 512) = 0\ncall local f\nexit\nf:\n*(u64 *)(r10 - 8) = 0\nr0 = 0\nexit"), "CombinedStackTooLarge", "512 + 32"),
        ("combined stack three frames", P, s("*(u64 *)(r10 - 200) = 0\ncall local f\nexit\nf:\n*(u64 *)(r10 - 200) = 0\ncall local g\nexit\ng:\n*(u64 *)(r10 - 200) = 0\nr0 = 0\nexit"), "CombinedStackTooLarge", "3 x 224"),
        ("combined stack halves", P, s("*(u64 *)(r10 - 256) = 0\ncall local f\nexit\nf:\n*(u64 *)(r10 - 256) = 0\ncall local g\nexit\ng:\n*(u8 *)(r10 - 1) = 0\nr0 = 0\nexit"), "CombinedStackTooLarge", "256 + 256 + 32"),
        ("return callee stack", P, s("call local f\nr0 = 0\nexit\nf:\nr0 = r10\nr0 += -8\nexit"), "StackPointerEscape", "the frame dies"),
        ("leave callee stack in caller", P, s("*(u64 *)(r10 - 8) = 0\nr1 = r10\nr1 += -8\ncall local f\nr0 = 0\nexit\nf:\nr2 = r10\n*(u64 *)(r1 + 0) = r2\nr0 = 0\nexit"), "StackPointerEscape", "the frame dies"),
        // ---- unsupported
        ("legacy packet load", P, s("r0 = *(u8 *)skb[5]\nexit"), "Unsupported", "no socket buffers"),
        ("kfunc", P, s("call kfunc#7\nr0 = 0\nexit"), "Unsupported", "no kernel functions"),
        ("callx variable", P, s("r2 = *(u64 *)(r1 + 0)\ncallx r2\nr0 = 0\nexit"), "Unsupported", "helper unknown"),
        ("btf id load", P, s("r1 = btf_id:5 ll\nr0 = 0\nexit"), "Unsupported", "no kernel variables"),
        ("bpf_loop through callx", P, s("r1 = 1\nr2 = func f\nr3 = 0\nr4 = 0\nr5 = 181\ncallx r5\nr0 = 0\nexit\nf:\nr0 = 0\nexit"), "Unsupported", "the callback needs the direct call's rule"),
        // ---- bpf_loop and callbacks
        ("func pointer arithmetic", P, s("r2 = func f\nr2 += 8\nr0 = 0\nexit\nf:\nr0 = 0\nexit"), "PointerArith", "a code address is no data"),
        ("func pointer dereference", P, s("r2 = func f\nr0 = *(u64 *)(r2 + 0)\nexit\nf:\nr0 = 0\nexit"), "InvalidMemAccess", "code is not readable memory"),
        ("func pointer returned", P, s("r0 = func f\nexit\nf:\nr0 = 0\nexit"), "PointerReturn", "leaks a code address"),
        ("func pointer into map", P, format!("{}if r0 == 0 goto out\nr1 = func f\n*(u64 *)(r0 + 0) = r1\nout:\nr0 = 0\nexit\nf:\nr0 = 0\nexit", lookup!("0")), "PointerStore", "leaks a code address"),
        ("func pointers ordered", P, s("r2 = func f\nr3 = func f\nr0 = 0\nif r2 > r3 goto out\nr0 = 1\nout:\nexit\nf:\nr0 = 0\nexit"), "PointerComparison", "code placement differs per engine"),
        ("callback is the main program", P, s("main:\nr2 = func main\nr0 = 0\nexit"), "InvalidCallbackTarget", "the main program is no callback"),
        ("bpf_loop stack pointer as callback", P, s("r1 = 1\nr2 = r10\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit"), "HelperArgType", "r2 must be a func"),
        ("bpf_loop scalar as callback", P, s("r1 = 1\nr2 = 64\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit"), "HelperArgType", "r2 must be a func"),
        ("bpf_loop ctx pointer as callback ctx", P, s("r3 = r1\nr1 = 1\nr2 = func f\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr0 = 0\nexit"), "HelperArgType", "ctx is stack, map value or null"),
        ("bpf_loop pointer count", P, s("r1 = r10\nr2 = func f\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr0 = 0\nexit"), "HelperArgType", "the count is a scalar"),
        ("bpf_loop constant flags", P, s("r1 = 1\nr2 = func f\nr3 = 0\nr4 = 2\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr0 = 0\nexit"), "InvalidFlags", "flags must be 0"),
        ("bpf_loop uninit flags", P, s("r1 = 1\nr2 = func f\nr3 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr0 = 0\nexit"), "UninitReg", "r4 never written"),
        ("callback returns 2", P, s("r1 = 1\nr2 = func f\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr0 = 2\nexit"), "CallbackReturn", "0 continues, 1 stops"),
        ("callback returns any scalar", P, s("r1 = 1\nr2 = func f\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr0 = r1\nexit"), "CallbackReturn", "the index can be 2"),
        ("callback returns -1", P, s("r1 = 1\nr2 = func f\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr0 = -1\nexit"), "CallbackReturn", "0 continues, 1 stops"),
        ("callback returns a pointer", P, s("r1 = 1\nr2 = func f\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr0 = r10\nexit"), "PointerReturn", "the result is a number"),
        ("callback writes past stack ctx", P, s("*(u64 *)(r10 - 8) = 0\nr1 = 1\nr2 = func f\nr3 = r10\nr3 += -8\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\n*(u64 *)(r2 + 8) = r1\nr0 = 0\nexit"), "StackOutOfBounds", "fp+0 is above the caller's frame"),
        ("callback writes past map value ctx", P, format!("{}if r0 == 0 goto out\nr1 = 1\nr2 = func f\nr3 = r0\nr4 = 0\ncall bpf_loop#181\nout:\nr0 = 0\nexit\nf:\n*(u64 *)(r2 + 8) = r1\nr0 = 0\nexit", lookup!("0")), "MapValueOutOfBounds", "8-byte value"),
        ("callback dereferences null ctx", P, s("r1 = 1\nr2 = func f\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr0 = *(u64 *)(r2 + 0)\nr0 = 0\nexit"), "InvalidMemAccess", "ctx is null"),
        ("callback reads uninit ctx", P, s("r1 = 1\nr2 = func f\nr3 = r10\nr3 += -8\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr0 = *(u64 *)(r2 + 0)\nr0 = 0\nexit"), "UninitStackRead", "fp-8 never written"),
        ("callback reads caller registers", P, s("r6 = 1\nr1 = 1\nr2 = func f\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr0 = r6\nr0 &= 1\nexit"), "UninitReg", "a callback gets r1 and r2 only"),
        ("callback r3 uninit", P, s("r1 = 1\nr2 = func f\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr0 = r3\nexit"), "UninitReg", "a callback gets r1 and r2 only"),
        ("caller r1 after bpf_loop", P, s("r1 = 1\nr2 = func f\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = r1\nexit\nf:\nr0 = 0\nexit"), "UninitReg", "r1-r5 are clobbered"),
        ("callback leaves its stack in caller", P, s("*(u64 *)(r10 - 8) = 0\nr1 = 1\nr2 = func f\nr3 = r10\nr3 += -8\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr3 = r10\n*(u64 *)(r2 + 0) = r3\nr0 = 0\nexit"), "StackPointerEscape", "the callback frame dies"),
        ("callback infinite loop", P, s("r1 = 1\nr2 = func f\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr0 = 0\nl:\ngoto l"), "InfiniteLoop", "one iteration never ends"),
        ("callback combined stack", P, s("*(u64 *)(r10 - 300) = 0\nr1 = 1\nr2 = func f\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\n*(u64 *)(r10 - 300) = 0\nr0 = 0\nexit"), "CombinedStackTooLarge", "320 + 320"),
        ("callback recursion", P, s("r1 = 1\nr2 = func f\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr1 = 1\nr2 = func f\nr3 = 0\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit"), "CallTooDeep", "nests without end"),
        ("later iteration out of bounds", P, s("*(u64 *)(r10 - 8) = r10\nr1 = 100\nr2 = func f\nr3 = r10\nr3 += -8\nr4 = 0\ncall bpf_loop#181\nr0 = 0\nexit\nf:\nr3 = *(u64 *)(r2 + 0)\nr3 += -8\n*(u64 *)(r3 + 0) = 0\n*(u64 *)(r2 + 0) = r3\nr0 = 0\nexit"), "StackOutOfBounds", "iteration 65 writes below the frame"),
    ];
    // Families: every access size just past each fixed context layout.
    let sizes = [("u8", 1), ("u16", 2), ("u32", 4), ("u64", 8)];
    for (envk, end, name) in [
        (P, 168, "pt_regs"),
        (S, 64, "sys_enter"),
        (X, 24, "sys_exit"),
        (R, 16, "raw"),
    ] {
        for (ty, n) in sizes {
            v.push((
                leak(format!("{name} {ty} read at end")),
                envk,
                format!("r0 = *({ty} *)(r1 + {})\nexit", end - n + 1),
                "CtxAccess",
                "the last bytes lie past the layout",
            ));
        }
    }
    // Every size, one past the end of a 16-byte array value and of input memory.
    for (ty, n) in sizes {
        v.push((
            leak(format!("array value {ty} at {}", 17 - n)),
            P,
            format!(
                "{}if r0 == 0x0 goto +1\nr1 = *({ty} *)(r0 + {})\nr0 = 0\nexit",
                lookup!("1"),
                17 - n
            ),
            "MapValueOutOfBounds",
            "one byte past the value",
        ));
        v.push((
            leak(format!("mem {ty} at {}", 17 - n)),
            M,
            format!("r0 = *({ty} *)(r1 + {})\nexit", 17 - n),
            "MemOutOfBounds",
            "one byte past the input",
        ));
        v.push((
            leak(format!("stack {ty} uninit")),
            P,
            format!("r0 = *({ty} *)(r10 - {n})\nexit"),
            "UninitStackRead",
            "never written",
        ));
    }
    v
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn variant(r: &Reason) -> String {
    let d = format!("{r:?}");
    d.split([' ', '{', '(']).next().unwrap_or("").to_string()
}

#[test]
fn unsafe_programs_are_rejected_for_their_reason() {
    let cases = cases();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    let mut failures = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, e, src, want, why) in &cases {
        let prog = match assemble(src) {
            Ok(p) => p,
            Err(err) => {
                failures.push(format!("{name}: does not assemble: {err}\n{src}"));
                continue;
            }
        };
        match verify(&prog, &env(*e)) {
            Ok(_) => failures.push(format!("{name}: accepted ({why})")),
            Err(err) => {
                let got = variant(&err.reason);
                if got != *want {
                    failures.push(format!(
                        "{name}: want {want}, got {got} at insn {}: {err}",
                        err.insn
                    ));
                }
                assert_eq!(err.category, err.reason.category());
                seen.insert(err.category);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Every category has at least one case.
    for c in [
        Category::MemorySafety,
        Category::Uninit,
        Category::InvalidHelperCall,
        Category::ControlFlow,
        Category::Termination,
        Category::PointerLeak,
        Category::TypeMismatch,
        Category::ResourceLeak,
        Category::Limits,
        Category::Unsupported,
    ] {
        assert!(seen.contains(&c), "no case of {c}");
    }
}

#[test]
fn messages_read_like_the_kernel() {
    let check = |e: Env, src: &str, msg: &str| {
        let err = verify(&assemble(src).unwrap(), &env(e)).unwrap_err();
        assert_eq!(err.to_string(), msg, "{src}");
    };
    check(Env::P, "r0 = r2\nexit", "R2 !read_ok");
    check(
        Env::P,
        "r1 = 0\nr0 = *(u64 *)(r1 + 0)\nexit",
        "R1 invalid mem access 'scalar'",
    );
    check(
        Env::P,
        &format!("{}r0 = *(u64 *)(r0 + 0)\nexit", lookup!("0")),
        "R0 invalid mem access 'map_value_or_null'",
    );
    check(
        Env::P,
        &format!(
            "{}if r0 == 0x0 goto +1\nr0 = *(u32 *)(r0 + 8)\nr0 = 0\nexit",
            lookup!("0")
        ),
        "invalid access to map value, value_size=8 off=8 size=4",
    );
    check(
        Env::P,
        "r10 = 0\nr0 = 0\nexit",
        "frame pointer is read only",
    );
    check(Env::P, "r0 = 0\nexit\nr0 = 1\nexit", "unreachable insn 2");
    check(
        Env::P,
        "goto +7\nexit",
        "jump out of range from insn 0 to 8",
    );
    check(
        Env::N,
        "r0 = 0\nr0 += 1\nif r0 < 0xa goto -2\nexit",
        "back-edge from insn 2 to 1",
    );
    check(
        Env::P,
        &format!("{RESERVE}r0 = 0\nexit"),
        "Unreleased reference id=1 alloc_insn=4",
    );
    check(
        Env::P,
        "r0 = *(u64 *)(r10 - 8)\nexit",
        "invalid read from stack off -8+0 size 8",
    );
}

#[test]
fn structural_errors_without_assembler() {
    // An lddw missing its second slot cannot be written in assembler text.
    let prog = [
        Insn::LdImm64 {
            dst: Reg::R0,
            imm: 1,
        },
        Insn::Exit,
    ];
    let err = verify(&prog, &env(Env::P)).unwrap_err();
    assert_eq!(err.reason, Reason::IncompleteLddw);
    assert_eq!(err.insn, 0);
    let err = verify(&[], &env(Env::P)).unwrap_err();
    assert_eq!(err.reason, Reason::EmptyProgram);
}

#[test]
fn a_copy_overwritten_before_the_check_does_not_narrow() {
    // r1 = r6, then r1 is changed: checking r1 says nothing about r6.
    let src = format!(
        "r6 = *(u64 *)(r1 + 0)\n{}if r0 == 0x0 goto out\nr1 = r6\nr1 += 0\nif r1 > 0xf goto out\nr0 += r6\nr0 = *(u8 *)(r0 + 0)\nout:\nr0 = 0\nexit",
        lookup!("1")
    );
    let err = verify(&assemble(&src).unwrap(), &env(Env::P)).unwrap_err();
    assert!(
        matches!(err.reason, Reason::MapValueOutOfBounds { .. }),
        "{err}"
    );
    // A 32-bit copy is not the same 64-bit value either.
    let src = format!(
        "r6 = *(u64 *)(r1 + 0)\n{}if r0 == 0x0 goto out\nw1 = w6\nif r1 > 0xf goto out\nr0 += r6\nr0 = *(u8 *)(r0 + 0)\nout:\nr0 = 0\nexit",
        lookup!("1")
    );
    let err = verify(&assemble(&src).unwrap(), &env(Env::P)).unwrap_err();
    assert!(
        matches!(err.reason, Reason::MapValueOutOfBounds { .. }),
        "{err}"
    );
}
