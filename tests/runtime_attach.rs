//! Attaching loaded programs to uprobes/uretprobes in this process through
//! `LoadedObject::attach`/`attach_as`: the programs see the arguments and
//! return values, `bpf_override_return` takes effect, detach stops the runs,
//! and programs that are not probes are refused with a typed error.

use std::sync::Arc;

use pkbpf::maps::{MapDef, MapType};
use pkbpf::runtime::{
    AttachPoint, CtxLayout, Engine, LoadedObject, Runtime, RuntimeError, Sandbox,
};
use pkbpf::verifier::asm;
use pkbpf_hooks::{ProbeKind, PtRegs};

#[inline(never)]
#[no_mangle]
pub extern "C" fn pkbpf_test_attach_add(a: u64, b: u64) -> u64 {
    std::hint::black_box(a.wrapping_mul(3).wrapping_add(b))
}

#[inline(never)]
#[no_mangle]
pub extern "C" fn pkbpf_test_attach_override(a: u64) -> u64 {
    std::hint::black_box(a + 1)
}

fn runtime(engine: Engine) -> Runtime {
    Runtime::builder()
        .sandbox(Sandbox::None)
        .engine(engine)
        .build()
        .unwrap()
}

fn load(rt: &Runtime, name: &str, text: &str, maps: &[MapDef]) -> Arc<LoadedObject> {
    let insns = asm::assemble(text).unwrap();
    let ctx = CtxLayout::read_only(std::mem::size_of::<PtRegs>() as u32);
    Arc::new(rt.load_insns(name, &insns, maps, &ctx).unwrap())
}

fn slot(obj: &LoadedObject, map: &str, key: u32) -> u64 {
    let v = obj
        .map(map)
        .unwrap()
        .lookup(&key.to_le_bytes())
        .unwrap()
        .unwrap();
    u64::from_le_bytes(v[..8].try_into().unwrap())
}

/// Entry: `args[0] += PARM1; args[1] += PARM2`; return: `ret[0] += RC`.
const ARGS_ASM: &str = "\
r6 = *(u64 *)(r1 + 112)
r7 = *(u64 *)(r1 + 104)
*(u32 *)(r10 - 4) = 0
r2 = r10
r2 += -4
r1 = map[idx:0]
call bpf_map_lookup_elem#1
if r0 == 0 goto out
lock *(u64 *)(r0 + 0) += r6
lock *(u64 *)(r0 + 8) += r7
out:
r0 = 0
exit
";

const RET_ASM: &str = "\
r6 = *(u64 *)(r1 + 80)
*(u32 *)(r10 - 4) = 0
r2 = r10
r2 += -4
r1 = map[idx:0]
call bpf_map_lookup_elem#1
if r0 == 0 goto out
lock *(u64 *)(r0 + 0) += r6
out:
r0 = 0
exit
";

#[test]
fn probes_see_arguments_and_return_values_on_both_engines() {
    for engine in [Engine::Jit, Engine::Interpreter] {
        let rt = runtime(engine);
        let args = load(
            &rt,
            "args",
            ARGS_ASM,
            &[MapDef::new("args", MapType::Array, 4, 16, 1)],
        );
        let ret = load(
            &rt,
            "ret",
            RET_ASM,
            &[MapDef::new("ret", MapType::Array, 4, 8, 1)],
        );
        let addr = pkbpf_test_attach_add as *const () as usize;
        let e = args
            .attach_as("args", AttachPoint::Address(addr), ProbeKind::Entry)
            .unwrap();
        let r = ret
            .attach_as("ret", AttachPoint::Address(addr), ProbeKind::Return)
            .unwrap();
        assert_eq!(e.address(), addr);
        let (mut sa, mut sb, mut sr) = (0u64, 0u64, 0u64);
        for i in 0..1000u64 {
            let (a, b) = (i * 7, i ^ 0x55);
            sr += pkbpf_test_attach_add(std::hint::black_box(a), std::hint::black_box(b));
            sa += a;
            sb += b;
        }
        assert_eq!((e.hits(), e.errors()), (1000, 0), "{engine:?}");
        assert_eq!((r.hits(), r.errors()), (1000, 0), "{engine:?}");
        e.detach().unwrap();
        r.detach().unwrap();
        // Detached: further calls are not seen.
        pkbpf_test_attach_add(1, 2);
        let args_map = args.map("args").unwrap();
        let v = args_map.lookup(&0u32.to_le_bytes()).unwrap().unwrap();
        assert_eq!(u64::from_le_bytes(v[..8].try_into().unwrap()), sa);
        assert_eq!(u64::from_le_bytes(v[8..16].try_into().unwrap()), sb);
        assert_eq!(slot(&ret, "ret", 0), sr, "{engine:?}");
    }
}

#[test]
fn override_return_skips_the_function() {
    let rt = runtime(Engine::Jit);
    // bpf_override_return(ctx, 4242) when PARM1 == 7.
    let obj = load(
        &rt,
        "ovr",
        "\
r2 = *(u64 *)(r1 + 112)
if r2 != 7 goto out
r2 = 4242
call bpf_override_return#58
out:
r0 = 0
exit
",
        &[],
    );
    let addr = pkbpf_test_attach_override as *const () as usize;
    let link = obj
        .attach_as("ovr", AttachPoint::Address(addr), ProbeKind::Entry)
        .unwrap();
    assert_eq!(pkbpf_test_attach_override(std::hint::black_box(6)), 7);
    assert_eq!(pkbpf_test_attach_override(std::hint::black_box(7)), 4242);
    drop(link);
    assert_eq!(pkbpf_test_attach_override(std::hint::black_box(7)), 8);
}

#[test]
fn programs_that_are_not_probes_are_refused() {
    let rt = runtime(Engine::Jit);
    // An embedded program whose context is not a pt_regs.
    let insns = asm::assemble("r0 = 0\nexit").unwrap();
    let obj = Arc::new(
        rt.load_insns("small", &insns, &[], &CtxLayout::writable(16))
            .unwrap(),
    );
    let addr = pkbpf_test_attach_override as *const () as usize;
    let err = obj
        .attach_as("small", AttachPoint::Address(addr), ProbeKind::Entry)
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NotAttachable { .. }), "{err}");
    // `attach` derives the probe kind from the program kind: embedded is none.
    let err = obj.attach("small", AttachPoint::Address(addr)).unwrap_err();
    assert!(matches!(err, RuntimeError::NotAttachable { .. }), "{err}");
    let err = obj
        .attach("missing", AttachPoint::Address(addr))
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NoSuchProgram { .. }), "{err}");
    // The function was never patched.
    assert_eq!(pkbpf_test_attach_override(1), 2);
}
