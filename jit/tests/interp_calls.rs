//! Calls (helpers, callx, bpf-to-bpf), the budget, and unsupported forms.

mod interp_common;

use interp_common::*;
use pkbpf_jit::interp::{
    ExecErrorKind, HelperError, HelperTable, Helpers, Interpreter, Memory, NoHelpers, Options,
    Region, RegionKind,
};
use pkbpf_verifier::isa::{AluOp, CallTarget, Insn, LdPseudo, MemSize, MAX_CALL_DEPTH};

fn call_local(off: i32) -> Insn {
    Insn::Call(CallTarget::Local(off))
}

#[test]
fn helper_gets_r1_to_r5_and_sets_r0() {
    let mut t = HelperTable::new();
    t.insert(7, |a, _| {
        Ok(a[0] * 10_000 + a[1] * 1000 + a[2] * 100 + a[3] * 10 + a[4])
    });
    let p = [
        mov64(1, 1),
        mov64(2, 2),
        mov64(3, 3),
        mov64(4, 4),
        mov64(5, 5),
        Insn::Call(CallTarget::Helper(7)),
        Insn::Exit,
    ];
    let mut mem = Memory::new();
    let out = Interpreter::new(&p).run(&mut mem, &mut t, [0; 5]).unwrap();
    assert_eq!(out.r0, 12345);
}

#[test]
fn unknown_helper_is_an_error_with_pc() {
    let p = [mov64(0, 0), Insn::Call(CallTarget::Helper(99)), Insn::Exit];
    let e = run(&p).unwrap_err();
    assert_eq!(e.pc, 1);
    assert_eq!(
        e.kind,
        ExecErrorKind::Helper {
            id: 99,
            source: HelperError::Unknown { id: 99 }
        }
    );
}

#[test]
fn callx_takes_the_id_from_a_register() {
    let mut t = HelperTable::new();
    t.insert(3, |a, _| Ok(a[0] + 1));
    let p = [
        mov64(1, 41),
        mov64(6, 3),
        Insn::CallX { reg: r(6) },
        Insn::Exit,
    ];
    let mut mem = Memory::new();
    assert_eq!(
        Interpreter::new(&p)
            .run(&mut mem, &mut t, [0; 5])
            .unwrap()
            .r0,
        42
    );
}

#[test]
fn conformance_unwind_helper() {
    // r1 != 0: returns r1 and goes on
    let p = [
        mov64(1, -1),
        Insn::Call(CallTarget::Helper(5)),
        alu64(AluOp::Add, 0, 3),
        Insn::Exit,
    ];
    let mut mem = Memory::new();
    let out = Interpreter::new(&p)
        .run(&mut mem, &mut HelperTable::conformance(), [0; 5])
        .unwrap();
    assert_eq!(out.r0, 2);
    // r1 == 0: the program ends at once with 0
    let p = [
        mov64(0, 9),
        mov64(1, 0),
        Insn::Call(CallTarget::Helper(5)),
        mov64(0, 2),
        Insn::Exit,
    ];
    let out = Interpreter::new(&p)
        .run(&mut mem, &mut HelperTable::conformance(), [0; 5])
        .unwrap();
    assert_eq!(out.r0, 0);
    assert_eq!(out.stats.insns, 3);
}

/// A helper like `bpf_map_lookup_elem` that registers the value it returns,
/// and one that writes through a pointer the program passes.
struct MapLike {
    value: Box<[u8; 8]>,
}

impl Helpers for MapLike {
    fn call(
        &mut self,
        id: u32,
        args: [u64; 5],
        ctx: &mut pkbpf_jit::interp::HelperCtx<'_, '_>,
    ) -> Result<u64, HelperError> {
        match id {
            1 => {
                let start = self.value.as_mut_ptr() as u64;
                // SAFETY: `self.value` is boxed and lives as long as the
                // helper table, which outlives the run; the test does not
                // touch it while the program runs.
                unsafe {
                    ctx.add_region(Region {
                        start,
                        len: 8,
                        writable: true,
                        kind: RegionKind::MapValue { map: 0 },
                    })
                };
                Ok(start)
            }
            2 => {
                ctx.write(args[0], &[0xab; 4])?;
                Ok(0)
            }
            _ => Err(HelperError::Unknown { id }),
        }
    }

    fn resolve_pseudo(&mut self, kind: LdPseudo, imm: i32, _: i32) -> Result<u64, HelperError> {
        match kind {
            LdPseudo::MapFd => Ok(0x1000 + imm as u64),
            _ => Err(HelperError::UnsupportedPseudo { kind, imm }),
        }
    }
}

#[test]
fn helpers_register_regions_and_write_checked_memory() {
    let mut h = MapLike {
        value: Box::new([0; 8]),
    };
    let p = [
        Insn::Call(CallTarget::Helper(1)),
        st(MemSize::DW, 0, 0, 5),
        ldx(MemSize::DW, 6, 0, 0),
        // helper 2 writes 4 bytes at fp-4: initialises them
        alu64r(AluOp::Mov, 1, 10),
        alu64(AluOp::Add, 1, -4),
        Insn::Call(CallTarget::Helper(2)),
        ldx(MemSize::W, 0, 10, -4),
        alu64r(AluOp::Add, 0, 6),
        Insn::Exit,
    ];
    let mut mem = Memory::new();
    let out = Interpreter::new(&p).run(&mut mem, &mut h, [0; 5]).unwrap();
    assert_eq!(out.r0, 0xabab_abab + 5);
    drop(mem);
    assert_eq!(h.value[0], 5);
    // a helper writing out of bounds fails the call
    let p = [mov64(1, 16), Insn::Call(CallTarget::Helper(2)), Insn::Exit];
    let mut mem = Memory::new();
    let e = Interpreter::new(&p)
        .run(&mut mem, &mut h, [0; 5])
        .unwrap_err();
    assert_eq!(e.pc, 1);
    assert!(matches!(
        e.kind,
        ExecErrorKind::Helper {
            id: 2,
            source: HelperError::Access(_)
        }
    ));
}

#[test]
fn lddw_pseudo_goes_through_the_helpers() {
    let p = [
        Insn::LdPseudo {
            dst: r(0),
            kind: LdPseudo::MapFd,
            imm: 7,
            next_imm: 0,
        },
        Insn::LdImm64Hi,
        Insn::Exit,
    ];
    let mut h = MapLike {
        value: Box::new([0; 8]),
    };
    let mut mem = Memory::new();
    assert_eq!(
        Interpreter::new(&p)
            .run(&mut mem, &mut h, [0; 5])
            .unwrap()
            .r0,
        0x1007
    );
    let e = Interpreter::new(&p)
        .run(&mut mem, &mut NoHelpers, [0; 5])
        .unwrap_err();
    assert!(matches!(e.kind, ExecErrorKind::Pseudo { .. }));
}

#[test]
fn local_call_gets_a_new_frame_and_preserves_r6_to_r9() {
    let p = [
        mov64(6, 6),
        mov64(9, 9),
        st(MemSize::DW, 10, -8, 100),
        alu64r(AluOp::Mov, 1, 10),   // pass a pointer to the caller's stack
        call_local(4),               // -> 9
        ldx(MemSize::DW, 2, 10, -8), // caller's slot untouched by callee's own stack
        alu64r(AluOp::Add, 0, 6),
        alu64r(AluOp::Add, 0, 9),
        Insn::Exit, // r0 = callee + 6 + 9
        // callee:
        mov64(6, 1000),
        mov64(9, 1000),
        st(MemSize::DW, 10, -8, 1), // its own frame
        ldx(MemSize::DW, 0, 1, -8), // caller's frame, through the pointer
        alu64r(AluOp::Mov, 3, 10),
        alu64r(AluOp::Sub, 3, 1), // fp distance between frames
        alu64r(AluOp::Add, 0, 3),
        Insn::Exit,
    ];
    let out = run(&p).unwrap();
    assert_eq!(out.r0, (100i64 - 512 + 6 + 9) as u64);
    assert_eq!(out.stats.max_frames, 2);
}

#[test]
fn callee_stack_starts_uninitialised() {
    let p = [
        st(MemSize::DW, 10, -8, 1),
        call_local(1),
        Insn::Exit,
        ldx(MemSize::DW, 0, 10, -8),
        Insn::Exit,
    ];
    let e = run(&p).unwrap_err();
    assert_eq!(e.pc, 3);
    assert_eq!(
        e.kind,
        ExecErrorKind::UninitRead {
            frame: 1,
            offset: -8
        }
    );
}

#[test]
fn dead_callee_frames_are_not_accessible() {
    // the callee returns its frame pointer; the caller then writes through it.
    let p = [
        call_local(2),
        st(MemSize::DW, 0, -8, 1),
        Insn::Exit,
        alu64r(AluOp::Mov, 0, 10),
        Insn::Exit,
    ];
    let e = run(&p).unwrap_err();
    assert_eq!(e.pc, 1);
    assert!(matches!(
        e.kind,
        ExecErrorKind::OutOfBounds { write: true, .. }
    ));
}

/// A chain of `depth` functions each calling the next.
fn call_chain(depth: usize) -> Vec<Insn> {
    let mut p = Vec::new();
    for _ in 1..depth {
        p.push(call_local(1));
        p.push(Insn::Exit);
    }
    p.push(mov64(0, depth as i32));
    p.push(Insn::Exit);
    p
}

#[test]
fn call_depth_eight_is_fine_nine_fails() {
    let out = run(&call_chain(MAX_CALL_DEPTH)).unwrap();
    assert_eq!(out.r0, MAX_CALL_DEPTH as u64);
    assert_eq!(out.stats.max_frames, MAX_CALL_DEPTH);
    let e = run(&call_chain(MAX_CALL_DEPTH + 1)).unwrap_err();
    assert_eq!(e.kind, ExecErrorKind::CallDepth { max: 8 });
    assert_eq!(e.pc, 2 * (MAX_CALL_DEPTH - 1), "the 8th frame's call fails");
}

#[test]
fn unbounded_recursion_hits_the_depth_limit() {
    let p = [call_local(-1), Insn::Exit];
    let e = run(&p).unwrap_err();
    assert_eq!(e.pc, 0);
    assert_eq!(e.kind, ExecErrorKind::CallDepth { max: 8 });
}

#[test]
fn budget() {
    let p = [Insn::Ja {
        off: -1,
        long: false,
    }];
    let mut mem = Memory::new();
    let e = Interpreter::new(&p)
        .with_options(Options {
            budget: 1000,
            ..Options::default()
        })
        .run(&mut mem, &mut NoHelpers, [0; 5])
        .unwrap_err();
    assert_eq!(e.kind, ExecErrorKind::BudgetExhausted { budget: 1000 });
    assert_eq!(e.insns, 1000);
    // exactly the budget is allowed
    let p = [mov64(0, 1), mov64(0, 2), Insn::Exit];
    let out = Interpreter::new(&p)
        .with_options(Options {
            budget: 3,
            ..Options::default()
        })
        .run(&mut mem, &mut NoHelpers, [0; 5])
        .unwrap();
    assert_eq!((out.r0, out.stats.insns), (2, 3));
    let e = Interpreter::new(&p)
        .with_options(Options {
            budget: 2,
            ..Options::default()
        })
        .run(&mut mem, &mut NoHelpers, [0; 5])
        .unwrap_err();
    assert_eq!(e.pc, 2);
}

#[test]
fn unsupported_and_malformed_programs() {
    let e = run(&[Insn::LdAbs {
        size: MemSize::W,
        imm: 0,
    }])
    .unwrap_err();
    assert_eq!(e.kind, ExecErrorKind::Unsupported { what: "ldabs" });
    let e = run(&[Insn::LdInd {
        size: MemSize::B,
        src: r(1),
        imm: 0,
    }])
    .unwrap_err();
    assert_eq!(e.kind, ExecErrorKind::Unsupported { what: "ldind" });
    let e = run(&[Insn::Call(CallTarget::Kfunc(1))]).unwrap_err();
    assert_eq!(e.kind, ExecErrorKind::Unsupported { what: "kfunc call" });
    // falling off the end
    let e = run(&[mov64(0, 0)]).unwrap_err();
    assert_eq!((e.pc, e.kind), (1, ExecErrorKind::PcOutOfRange { len: 1 }));
    // empty program
    let e = run(&[]).unwrap_err();
    assert_eq!((e.pc, e.kind), (0, ExecErrorKind::PcOutOfRange { len: 0 }));
    // a jump before the start
    let e = run(&[Insn::Ja {
        off: -5,
        long: true,
    }])
    .unwrap_err();
    assert_eq!(e.kind, ExecErrorKind::PcOutOfRange { len: 1 });
    // jumping into the second half of lddw
    let mut p = vec![Insn::Ja {
        off: 1,
        long: false,
    }];
    p.extend(lddw(0, 1));
    p.push(Insn::Exit);
    let e = run(&p).unwrap_err();
    assert_eq!((e.pc, e.kind), (2, ExecErrorKind::LddwHalf));
    // writing r10
    let e = run(&[mov64(10, 0), Insn::Exit]).unwrap_err();
    assert_eq!((e.pc, e.kind), (0, ExecErrorKind::WriteR10));
}

#[test]
fn callx_with_an_id_above_u32_is_an_error() {
    let mut p = lddw(2, 1 << 32).to_vec();
    p.extend([Insn::CallX { reg: r(2) }, Insn::Exit]);
    let e = run(&p).unwrap_err();
    assert_eq!(e.pc, 2);
    assert_eq!(
        e.kind,
        ExecErrorKind::Invalid {
            field: "callx helper id",
            value: 1 << 32
        }
    );
}
