//! Map and output helpers through the runtime with assembled programs and
//! host-declared maps: queue push/peek, ringbuf output/reserve/discard/query,
//! perf_event_output, probe_write_user, probe_read_user_str; both engines.

use pkbpf::runtime::{CtxLayout, Engine, LoadedObject, Runtime};
use pkbpf::verifier::asm::assemble;
use pkbpf_maps::{MapDef, MapType, PerfConsumer, RingBufConsumer};

const ENGINES: [Engine; 2] = [Engine::Jit, Engine::Interpreter];
const EFAULT: u64 = (-14i64) as u64;
const E2BIG: u64 = (-7i64) as u64;

fn load(engine: Engine, src: &str, maps: &[MapDef], ctx_size: u32) -> LoadedObject {
    let insns = assemble(src).expect("assembles");
    Runtime::builder()
        .engine(engine)
        .build()
        .unwrap()
        .load_insns("prog", &insns, maps, &CtxLayout::writable(ctx_size))
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn ctx3(a: u64, b: u64, c: u64) -> [u8; 24] {
    let mut r = [0u8; 24];
    r[..8].copy_from_slice(&a.to_ne_bytes());
    r[8..16].copy_from_slice(&b.to_ne_bytes());
    r[16..].copy_from_slice(&c.to_ne_bytes());
    r
}

fn word(ctx: &[u8], i: usize) -> u64 {
    u64::from_ne_bytes(ctx[i * 8..i * 8 + 8].try_into().unwrap())
}

/// push(ctx[0]); ctx[1] = peek(); return push's result.
const QUEUE: &str = "
    r6 = r1
    r1 = *(u64 *)(r6 + 0)
    *(u64 *)(r10 - 8) = r1
    r1 = map[idx:0]
    r2 = r10
    r2 += -8
    r3 = 0
    call 87
    r7 = r0
    r1 = map[idx:0]
    r2 = r10
    r2 += -16
    call 89
    *(u64 *)(r6 + 16) = r0
    r1 = *(u64 *)(r10 - 16)
    *(u64 *)(r6 + 8) = r1
    r0 = r7
    exit
";

#[test]
fn queue_push_and_peek() {
    for engine in ENGINES {
        let q = MapDef::new("q", MapType::Queue, 0, 8, 4);
        let obj = load(engine, QUEUE, &[q], 24);
        let p = obj.program("prog").unwrap();
        for v in 1..=4u64 {
            let mut ctx = ctx3(v * 11, 0, 1);
            assert_eq!(p.call(&mut ctx).unwrap(), 0, "{engine:?}");
            assert_eq!(word(&ctx, 1), 11, "peek gives the oldest");
            assert_eq!(word(&ctx, 2), 0, "peek succeeded");
        }
        let mut ctx = ctx3(99, 0, 0);
        assert_eq!(p.call(&mut ctx).unwrap(), E2BIG, "full queue, no BPF_EXIST");
        let map = obj.map("q").unwrap();
        for v in 1..=4u64 {
            assert_eq!(map.pop().unwrap(), Some((v * 11).to_ne_bytes().to_vec()));
        }
        assert_eq!(map.pop().unwrap(), None);
    }
}

/// ringbuf_output(ctx[0], 8 bytes); reserve 16 and discard it; ctx[1] =
/// query(AVAIL_DATA); return output's result.
const RINGBUF: &str = "
    r6 = r1
    r1 = *(u64 *)(r6 + 0)
    *(u64 *)(r10 - 8) = r1
    r1 = map[idx:0]
    r2 = r10
    r2 += -8
    r3 = 8
    r4 = 0
    call 130
    r7 = r0
    r1 = map[idx:0]
    r2 = 16
    r3 = 0
    call 131
    if r0 == 0 goto out
    r1 = r0
    r2 = 0
    call 133
out:
    r1 = map[idx:0]
    r2 = 0
    call 134
    *(u64 *)(r6 + 8) = r0
    r0 = r7
    exit
";

#[test]
fn ringbuf_output_reserve_discard_query() {
    for engine in ENGINES {
        let rb = MapDef::new("rb", MapType::RingBuf, 0, 0, 4096);
        let obj = load(engine, RINGBUF, &[rb], 24);
        let p = obj.program("prog").unwrap();
        let mut ctx = ctx3(0x0102_0304_0506_0708, 0, 0);
        assert_eq!(p.call(&mut ctx).unwrap(), 0, "{engine:?}");
        assert!(word(&ctx, 1) >= 8, "query sees the unconsumed record");
        let mut ctx = ctx3(42, 0, 0);
        assert_eq!(p.call(&mut ctx).unwrap(), 0);
        let map = obj.map("rb").unwrap();
        let mut cons = RingBufConsumer::new(&map).unwrap();
        assert_eq!(
            cons.next_record(),
            Some(0x0102_0304_0506_0708u64.to_ne_bytes().to_vec())
        );
        assert_eq!(cons.next_record(), Some(42u64.to_ne_bytes().to_vec()));
        assert_eq!(cons.next_record(), None, "discarded records are skipped");
    }
}

/// perf_event_output(ctx, map, BPF_F_CURRENT_CPU, &ctx[0] copy, 8).
const PERF: &str = "
    r6 = r1
    r1 = *(u64 *)(r6 + 0)
    *(u64 *)(r10 - 8) = r1
    r1 = r6
    r2 = map[idx:0]
    r3 = 0xffffffff ll
    r4 = r10
    r4 += -8
    r5 = 8
    call 25
    exit
";

#[test]
fn perf_event_output_reaches_the_consumer() {
    for engine in ENGINES {
        let perf = MapDef::new("perf", MapType::PerfEventArray, 4, 4, 0);
        let obj = load(engine, PERF, &[perf], 8);
        let p = obj.program("prog").unwrap();
        assert_eq!(p.call(&mut 77u64.to_ne_bytes()).unwrap(), 0, "{engine:?}");
        let map = obj.map("perf").unwrap();
        let mut cons = PerfConsumer::new(&map).unwrap();
        let mut got = Vec::new();
        cons.poll(|_cpu, data| got.push(data.to_vec()));
        assert_eq!(got, vec![77u64.to_ne_bytes().to_vec()]);
    }
}

/// probe_write_user(ctx[0], &ctx[1] copy, 8).
const WRITE: &str = "
    r6 = r1
    r1 = *(u64 *)(r6 + 8)
    *(u64 *)(r10 - 8) = r1
    r1 = *(u64 *)(r6 + 0)
    r2 = r10
    r2 += -8
    r3 = 8
    call 36
    exit
";

static READ_ONLY: u64 = 5;

#[test]
fn probe_write_user_is_guarded() {
    for engine in ENGINES {
        let arr = MapDef::new("arr", MapType::Array, 4, 8, 4);
        let obj = load(engine, WRITE, &[arr], 24);
        let p = obj.program("prog").unwrap();
        let mut target = 0u64;
        let addr = &mut target as *mut u64 as u64;
        assert_eq!(p.call(&mut ctx3(addr, 1234, 0)).unwrap(), 0);
        // SAFETY: reading our own local after the program wrote it.
        assert_eq!(unsafe { std::ptr::read_volatile(&target) }, 1234);
        assert_eq!(p.call(&mut ctx3(8, 1, 0)).unwrap(), EFAULT, "unmapped");
        let ro = &READ_ONLY as *const u64 as u64;
        assert_eq!(p.call(&mut ctx3(ro, 1, 0)).unwrap(), EFAULT, "read-only");
        assert_eq!(READ_ONLY, 5);
        let values = obj.map("arr").unwrap().values_range().addr as u64;
        assert_eq!(
            p.call(&mut ctx3(values, 1, 0)).unwrap(),
            EFAULT,
            "the map region is off limits"
        );
    }
}

/// r0 = probe_read_user_str(fp-16, 16, ctx[0]); ctx[1..3] = the buffer.
const READ_STR: &str = "
    r6 = r1
    r1 = r10
    r1 += -16
    r2 = 16
    r3 = *(u64 *)(r6 + 0)
    call 114
    r1 = *(u64 *)(r10 - 16)
    *(u64 *)(r6 + 8) = r1
    r1 = *(u64 *)(r10 - 8)
    *(u64 *)(r6 + 16) = r1
    exit
";

#[test]
fn probe_read_user_str_conventions() {
    for engine in ENGINES {
        let obj = load(engine, READ_STR, &[], 24);
        let p = obj.program("prog").unwrap();
        let short = c"hello";
        let mut ctx = ctx3(short.as_ptr() as u64, u64::MAX, u64::MAX);
        assert_eq!(p.call(&mut ctx).unwrap(), 6, "{engine:?}: length with NUL");
        assert_eq!(&ctx[8..14], b"hello\0");
        let long = c"abcdefghijklmnopqrstuvwxyz";
        let mut ctx = ctx3(long.as_ptr() as u64, 0, 0);
        assert_eq!(p.call(&mut ctx).unwrap(), 16, "truncated to the buffer");
        assert_eq!(&ctx[8..24], b"abcdefghijklmno\0");
        let mut ctx = ctx3(8, u64::MAX, u64::MAX);
        assert_eq!(p.call(&mut ctx).unwrap(), EFAULT);
        assert_eq!(&ctx[8..24], &[0; 16], "zeroed on a fault");
    }
}

/// ctx[0] += 1; tail_call(ctx, prog_array, 0); return 0.
const SELF_TAIL: &str = "
    r6 = r1
    r1 = *(u64 *)(r6 + 0)
    r1 += 1
    *(u64 *)(r6 + 0) = r1
    r1 = r6
    r2 = map[idx:0]
    r3 = 0
    call 12
    r0 = 0
    exit
";

#[test]
fn tail_calls_stop_at_33() {
    for engine in ENGINES {
        let pa = MapDef::new("pa", MapType::ProgArray, 4, 4, 2);
        let obj = load(engine, SELF_TAIL, &[pa], 8);
        let p = obj.program("prog").unwrap();
        let mut ctx = [0u8; 8];
        assert_eq!(p.call(&mut ctx).unwrap(), 0);
        assert_eq!(u64::from_ne_bytes(ctx), 1, "empty slot: no tail call");
        // Slot 0 → the program itself (index 0 of its object).
        obj.map("pa")
            .unwrap()
            .update(&0u32.to_ne_bytes(), &0u32.to_ne_bytes(), 0)
            .unwrap();
        let mut ctx = [0u8; 8];
        assert_eq!(p.call(&mut ctx).unwrap(), 0);
        assert_eq!(
            u64::from_ne_bytes(ctx),
            34,
            "{engine:?}: first run + 33 tail calls"
        );
        // The count is per call.
        let mut ctx = [0u8; 8];
        p.call(&mut ctx).unwrap();
        assert_eq!(u64::from_ne_bytes(ctx), 34);
        // A slot naming a program the object does not have is an empty slot.
        obj.map("pa")
            .unwrap()
            .update(&0u32.to_ne_bytes(), &7u32.to_ne_bytes(), 0)
            .unwrap();
        let mut ctx = [0u8; 8];
        p.call(&mut ctx).unwrap();
        assert_eq!(u64::from_ne_bytes(ctx), 1);
    }
}
