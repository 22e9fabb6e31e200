//! Helpers through the runtime with assembled programs: probe_read on bad
//! pointers, printk formats, host-defined helpers (type-checked, aborting a
//! call without harming the next), the hook context (get_func_ip,
//! override_return); each run on both engines.

use std::sync::{Arc, Mutex};

use pkbpf::runtime::{
    ArgType, CallError, CtxLayout, Engine, HelperProto, HookCtx, HostHelperError, LoadedObject,
    RetType, Runtime, RuntimeBuilder, RuntimeError,
};
use pkbpf::verifier::asm::assemble;

const ENGINES: [Engine; 2] = [Engine::Jit, Engine::Interpreter];
const EFAULT: u64 = (-14i64) as u64;
const EINVAL: u64 = (-22i64) as u64;

fn load(b: RuntimeBuilder, src: &str, ctx: &CtxLayout) -> Result<LoadedObject, RuntimeError> {
    let insns = assemble(src).expect("assembles");
    b.build().unwrap().load_insns("prog", &insns, &[], ctx)
}

fn ctx_u64(v: u64) -> [u8; 8] {
    v.to_ne_bytes()
}

/// Reads 8 bytes from the address in ctx[0..8] with probe_read into the
/// stack, stores what it read back into ctx, returns the helper's result.
const PROBE: &str = "
    r6 = r1
    r1 = r10
    r1 += -8
    r2 = 8
    r3 = *(u64 *)(r6 + 0)
    call 4
    r1 = *(u64 *)(r10 - 8)
    *(u64 *)(r6 + 0) = r1
    exit
";

#[test]
fn probe_read_bad_pointer_is_efault_and_host_lives() {
    for engine in ENGINES {
        let obj = load(
            Runtime::builder().engine(engine),
            PROBE,
            &CtxLayout::writable(8),
        )
        .unwrap();
        let p = obj.program("prog").unwrap();
        for bad in [0u64, 8, 0xdead_0000_0000, u64::MAX - 3] {
            let mut ctx = ctx_u64(bad);
            assert_eq!(p.call(&mut ctx).unwrap(), EFAULT, "{engine:?} {bad:#x}");
            assert_eq!(ctx, [0; 8], "destination zeroed on a fault");
        }
        let secret = 0x1122_3344_5566_7788u64;
        let mut ctx = ctx_u64(&secret as *const u64 as u64);
        assert_eq!(p.call(&mut ctx).unwrap(), 0);
        assert_eq!(u64::from_ne_bytes(ctx), secret);
    }
}

#[test]
fn probe_read_kernel_is_efault() {
    let src = "
        r1 = r10
        r1 += -8
        r2 = 8
        r3 = r10
        call 113
        exit
    ";
    for engine in ENGINES {
        let obj = load(
            Runtime::builder().engine(engine),
            src,
            &CtxLayout::writable(8),
        )
        .unwrap();
        assert_eq!(
            obj.program("prog").unwrap().call(&mut [0; 8]).unwrap(),
            EFAULT
        );
    }
}

/// Stores the 8 format bytes `fmt` at fp-8, calls trace_printk(fp-8, 8,
/// ctx[0], ctx[1], ctx[2]) where ctx holds three u64.
fn printk_prog(fmt: &[u8; 8]) -> String {
    format!(
        "
        r6 = r1
        r1 = {:#x} ll
        *(u64 *)(r10 - 8) = r1
        r1 = r10
        r1 += -8
        r2 = 8
        r3 = *(u64 *)(r6 + 0)
        r4 = *(u64 *)(r6 + 8)
        r5 = *(u64 *)(r6 + 16)
        call 6
        exit
        ",
        u64::from_le_bytes(*fmt)
    )
}

fn printk_lines(engine: Engine, fmt: &[u8; 8], args: [u64; 3]) -> (u64, Vec<String>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let b = Runtime::builder()
        .engine(engine)
        .printk(move |l| sink.lock().unwrap().push(l.to_string()));
    let obj = load(b, &printk_prog(fmt), &CtxLayout::read_only(24)).unwrap();
    let mut ctx = [0u8; 24];
    for (i, a) in args.iter().enumerate() {
        ctx[i * 8..i * 8 + 8].copy_from_slice(&a.to_ne_bytes());
    }
    let r0 = obj.program("prog").unwrap().call(&mut ctx).unwrap();
    let l = lines.lock().unwrap().clone();
    (r0, l)
}

#[test]
fn printk_formats_and_line_shape() {
    let word = c"hey".as_ptr() as u64;
    for engine in ENGINES {
        let (r0, lines) = printk_lines(engine, b"%d|%s|\0\0", [(-7i64) as u64, word, 0]);
        assert_eq!(lines.len(), 1);
        let msg = "-7|hey|";
        assert_eq!(r0, msg.len() as u64 + 1);
        let line = &lines[0];
        let (head, tail) = line.split_once(": bpf_trace_printk: ").unwrap();
        assert_eq!(tail, msg);
        let task = head.split_whitespace().next().unwrap();
        assert!(
            task.ends_with(&format!("-{}", std::process::id())),
            "{line}"
        );
        assert!(head.contains("] .... "), "{line}");

        let (r0, lines) = printk_lines(engine, b"%lx%c%%\0", [0xbeef, b'!' as u64, 0]);
        assert_eq!(lines, vec![lines[0].clone()]);
        assert!(
            lines[0].ends_with(": bpf_trace_printk: beef!%"),
            "{}",
            lines[0]
        );
        assert_eq!(r0, 7);

        // Bad %s pointers print empty, unsupported conversions are refused.
        let (_, lines) = printk_lines(engine, b"<%s>\0\0\0\0", [16, 0, 0]);
        assert!(lines[0].ends_with(": bpf_trace_printk: <>"), "{}", lines[0]);
        let (r0, lines) = printk_lines(engine, b"%q\0\0\0\0\0\0", [1, 2, 3]);
        assert_eq!((r0, lines.len()), (EINVAL, 0));
        let (r0, lines) = printk_lines(engine, b"%d%d%d%d", [1, 2, 3]);
        assert_eq!((r0, lines.len()), (EINVAL, 0), "no NUL: refused");
    }
}

const HOST_ID: i32 = 0x1000;

fn host_builder(engine: Engine) -> RuntimeBuilder {
    Runtime::builder()
        .engine(engine)
        .helper(
            HOST_ID,
            HelperProto::new(
                "scale_add",
                &[ArgType::Scalar, ArgType::Scalar],
                RetType::Integer,
            ),
            |a| {
                if a.args[0] == 0 {
                    return Err(HostHelperError {
                        reason: "zero is not allowed".into(),
                    });
                }
                Ok(a.args[0] * 10 + a.args[1])
            },
        )
        .helper(
            HOST_ID + 1,
            HelperProto::new(
                "sum_bytes",
                &[ArgType::PtrToMem { readonly: true }, ArgType::ConstSize],
                RetType::Integer,
            ),
            |a| {
                let mut buf = vec![0u8; a.args[1] as usize];
                a.read(a.args[0], &mut buf)?;
                Ok(buf.iter().map(|&b| b as u64).sum())
            },
        )
}

#[test]
fn host_helper_is_called_and_aborts_one_call_only() {
    let src = format!(
        "
        r2 = *(u64 *)(r1 + 0)
        r1 = r2
        r2 = 2
        call {HOST_ID}
        exit
        "
    );
    for engine in ENGINES {
        let obj = load(host_builder(engine), &src, &CtxLayout::read_only(8)).unwrap();
        let p = obj.program("prog").unwrap();
        assert_eq!(p.call(&mut ctx_u64(4)).unwrap(), 42);
        match p.call(&mut ctx_u64(0)).unwrap_err() {
            CallError::HelperAbort {
                program, reason, ..
            } => {
                assert_eq!(program, "prog");
                assert_eq!(reason.as_deref(), Some("zero is not allowed"));
            }
            other => panic!("{engine:?}: expected an abort, got {other:?}"),
        }
        assert_eq!(p.call(&mut ctx_u64(7)).unwrap(), 72, "next call works");
    }
}

#[test]
fn host_helper_reads_program_memory() {
    let src = format!(
        "
        r2 = *(u64 *)(r1 + 0)
        *(u64 *)(r10 - 8) = r2
        r1 = r10
        r1 += -8
        r2 = 8
        call {}
        exit
        ",
        HOST_ID + 1
    );
    for engine in ENGINES {
        let obj = load(host_builder(engine), &src, &CtxLayout::read_only(8)).unwrap();
        let mut ctx = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(obj.program("prog").unwrap().call(&mut ctx).unwrap(), 36);
    }
}

#[test]
fn host_helper_arguments_are_type_checked() {
    // sum_bytes wants a pointer; a scalar is rejected at load.
    let src = format!(
        "
        r1 = 5
        r2 = 8
        call {}
        exit
        ",
        HOST_ID + 1
    );
    let err = load(host_builder(Engine::Jit), &src, &CtxLayout::read_only(8)).unwrap_err();
    assert!(matches!(err, RuntimeError::Verify { .. }), "{err:?}");
    // An unregistered id is rejected too.
    let src = "call 4242\nexit";
    let err = load(Runtime::builder(), src, &CtxLayout::read_only(8)).unwrap_err();
    assert!(matches!(err, RuntimeError::Verify { .. }), "{err:?}");
}

#[test]
fn hook_context_func_ip_and_override_return() {
    // r7 = get_func_ip(ctx); override_return(ctx, 99); return r7
    let src = "
        r6 = r1
        call 173
        r7 = r0
        r1 = r6
        r2 = 99
        call 58
        r0 = r7
        exit
    ";
    for engine in ENGINES {
        let obj = load(
            Runtime::builder().engine(engine),
            src,
            &CtxLayout::read_only(168),
        )
        .unwrap();
        let p = obj.program("prog").unwrap();
        let mut regs = [0u8; 168];
        let mut hook = HookCtx {
            func_ip: 0x40_1234,
            override_return: None,
        };
        assert_eq!(p.call_hooked(&mut regs, &mut hook).unwrap(), 0x40_1234);
        assert_eq!(hook.override_return, Some(99));
        // Without a hook: no address, nothing to override.
        assert_eq!(p.call(&mut regs).unwrap(), 0);
    }
}

#[test]
fn identity_helpers_answer_like_the_kernel() {
    // ctx[0] = pid_tgid, ctx[1] = uid_gid, ctx[2] = ktime delta >= 0 check.
    let src = "
        r6 = r1
        call 14
        *(u64 *)(r6 + 0) = r0
        call 15
        *(u64 *)(r6 + 8) = r0
        call 5
        r7 = r0
        call 5
        r0 -= r7
        *(u64 *)(r6 + 16) = r0
        call 7
        *(u64 *)(r6 + 24) = r0
        r0 = 0
        exit
    ";
    for engine in ENGINES {
        let obj = load(
            Runtime::builder().engine(engine),
            src,
            &CtxLayout::writable(32),
        )
        .unwrap();
        let mut ctx = [0u8; 32];
        obj.program("prog").unwrap().call(&mut ctx).unwrap();
        let w = |i: usize| u64::from_ne_bytes(ctx[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(w(0), pkbpf::helpers::current_pid_tgid());
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!(w(1), ((gid as u64) << 32) | uid as u64);
        assert!(w(2) < 1_000_000_000, "monotonic, small delta");
        assert!(w(3) <= u32::MAX as u64);
    }
}

#[test]
fn pid_tgid_is_right_after_fork() {
    let src = "call 14\nexit";
    let obj = load(Runtime::builder(), src, &CtxLayout::read_only(8)).unwrap();
    let p = obj.program("prog").unwrap();
    let parent = p.call(&mut [0; 8]).unwrap();
    // SAFETY: fork in a test; the child only runs the program, writes to a
    // pipe and _exits.
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: see above.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let v = p.call(&mut [0; 8]).unwrap_or(0);
        // SAFETY: writing 8 bytes from a local to the pipe, then exiting
        // without running destructors.
        unsafe {
            libc::write(fds[1], &v as *const u64 as *const libc::c_void, 8);
            libc::_exit(0);
        }
    }
    let mut buf = [0u8; 8];
    // SAFETY: reading 8 bytes into `buf`.
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr() as *mut libc::c_void, 8) };
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    assert_eq!(n, 8);
    let in_child = u64::from_ne_bytes(buf);
    assert_eq!(in_child >> 32, child as u64, "the child's own tgid");
    assert_ne!(in_child >> 32, parent >> 32);
}

#[test]
fn isolation_reports_the_selected_mode() {
    use pkbpf::runtime::{Sandbox, SandboxMode};
    let none = Runtime::builder().sandbox(Sandbox::None).build().unwrap();
    let iso = none.isolation();
    assert_eq!(iso.mode, SandboxMode::None { missing: None });
    assert!(!iso.protected && iso.runtime_key.is_none() && iso.extension_keys.is_empty());
    let auto = Runtime::builder().sandbox(Sandbox::Auto).build().unwrap();
    let want = pkbpf_sandbox::select(Sandbox::Auto).unwrap();
    assert_eq!(auto.isolation().mode, want);
    // Mpk fails closed without PKU; with it, calls run in key domains.
    let mpk = Runtime::builder().sandbox(Sandbox::Mpk).build();
    if pkbpf_sandbox::detect().is_available() {
        assert!(mpk.unwrap().isolation().protected);
    } else {
        let err = mpk.unwrap_err();
        assert!(matches!(err, RuntimeError::Sandbox { .. }), "{err:?}");
    }
}

#[test]
fn host_helper_limit_is_a_typed_error() {
    let mut b = Runtime::builder();
    for i in 0..=pkbpf::helpers::MAX_HOST_HELPERS as i32 {
        b = b.helper(
            0x2000 + i,
            HelperProto::new("h", &[], RetType::Integer),
            |_| Ok(0),
        );
    }
    let err = b.build().unwrap_err();
    assert!(
        matches!(err, RuntimeError::TooManyHostHelpers { max: 16 }),
        "{err:?}"
    );
}

#[test]
fn bad_ctx_layout_is_a_typed_error() {
    let layout = CtxLayout {
        size: 8,
        writable: vec![0..2, 4..12],
    };
    let err = load(Runtime::builder(), "r0 = 0\nexit", &layout).unwrap_err();
    assert_eq!(
        err.to_string(),
        "context layout: writable range 4..12 is outside its 8 bytes"
    );
    let empty = Runtime::builder()
        .build()
        .unwrap()
        .load_insns("e", &[], &[], &CtxLayout::writable(8))
        .unwrap_err();
    assert!(
        matches!(empty, RuntimeError::EmptyProgram { .. }),
        "{empty:?}"
    );
}

/// trace_vprintk("%d%d%d%d", [1, 2, 3, 4], data_len).
fn vprintk_prog(data_len: u32) -> String {
    format!(
        "
        r1 = {:#x} ll
        *(u64 *)(r10 - 16) = r1
        r1 = 0
        *(u64 *)(r10 - 8) = r1
        r1 = 1
        *(u64 *)(r10 - 48) = r1
        r1 = 2
        *(u64 *)(r10 - 40) = r1
        r1 = 3
        *(u64 *)(r10 - 32) = r1
        r1 = 4
        *(u64 *)(r10 - 24) = r1
        r1 = r10
        r1 += -16
        r2 = 9
        r3 = r10
        r3 += -48
        r4 = {data_len}
        call 177
        exit
        ",
        u64::from_le_bytes(*b"%d%d%d%d")
    )
}

#[test]
fn trace_vprintk_takes_an_argument_array() {
    for engine in ENGINES {
        for (len, want_r0, want_lines) in [
            (32, 5, vec!["1234"]),
            (12, EINVAL, vec![]),
            (24, EINVAL, vec![]),
        ] {
            let lines = Arc::new(Mutex::new(Vec::<String>::new()));
            let sink = lines.clone();
            let b = Runtime::builder()
                .engine(engine)
                .printk(move |l| sink.lock().unwrap().push(l.to_string()));
            let obj = load(b, &vprintk_prog(len), &CtxLayout::read_only(8)).unwrap();
            let r0 = obj.program("prog").unwrap().call(&mut [0; 8]).unwrap();
            assert_eq!(r0, want_r0, "{engine:?} data_len {len}");
            let msgs: Vec<String> = lines
                .lock()
                .unwrap()
                .iter()
                .map(|l| l.split_once(": bpf_trace_printk: ").unwrap().1.to_string())
                .collect();
            assert_eq!(msgs, want_lines, "{engine:?} data_len {len}");
        }
    }
}
