//! The checked memory model: loads, stores, atomics and the errors they give.

mod interp_common;

use interp_common::*;
use pkbpf_jit::interp::{
    ExecErrorKind, Interpreter, Memory, NoHelpers, Options, Region, RegionKind,
};
use pkbpf_verifier::isa::{AtomicOp, Insn, MemSize};

fn atomic(size: MemSize, op: AtomicOp, fetch: bool, dst: u8, src: u8, off: i16) -> Insn {
    Insn::Atomic {
        size,
        op,
        fetch,
        dst: r(dst),
        src: r(src),
        off,
    }
}

#[test]
fn loads_of_every_size_and_sign() {
    let input = [0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88];
    let cases = [
        (ldx(MemSize::B, 0, 1, 0), 0x81),
        (ldx(MemSize::H, 0, 1, 0), 0x8281),
        (ldx(MemSize::W, 0, 1, 0), 0x8483_8281),
        (ldx(MemSize::DW, 0, 1, 0), 0x8887_8685_8483_8281),
        (ldx(MemSize::B, 0, 1, 7), 0x88),
        (ldxs(MemSize::B, 0, 1, 0), 0xffff_ffff_ffff_ff81),
        (ldxs(MemSize::H, 0, 1, 2), 0xffff_ffff_ffff_8483),
        (ldxs(MemSize::W, 0, 1, 4), 0xffff_ffff_8887_8685),
    ];
    for (insn, want) in cases {
        let (res, _) = run_with_input(&[insn, Insn::Exit], &input);
        assert_eq!(res.unwrap().r0, want, "{insn:?}");
    }
}

#[test]
fn stores_of_every_size() {
    let p = [
        st(MemSize::B, 1, 0, 0x11),
        st(MemSize::H, 1, 1, 0x2233),
        st(MemSize::W, 1, 3, -1),
        mov64(0, 0),
        Insn::Exit,
    ];
    let (res, buf) = run_with_input(&p, &[0; 12]);
    res.unwrap();
    assert_eq!(
        buf,
        [0x11, 0x33, 0x22, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0]
    );
    // stdw of an immediate sign-extends it; stx stores a register.
    let mut p = vec![st(MemSize::DW, 1, 0, -2)];
    p.extend(lddw(3, 0x0102_0304_0506_0708));
    p.extend([stx(MemSize::DW, 1, 8, 3), Insn::Exit]);
    let (res, buf) = run_with_input(&p, &[0; 16]);
    res.unwrap();
    assert_eq!(&buf[..8], &(-2i64).to_le_bytes());
    assert_eq!(&buf[8..], &0x0102_0304_0506_0708u64.to_le_bytes());
}

#[test]
fn stack_round_trip() {
    let mut p = lddw(1, 0xaabb_ccdd_eeff_0011).to_vec();
    p.extend([
        stx(MemSize::DW, 10, -8, 1),
        ldx(MemSize::W, 0, 10, -4),
        Insn::Exit,
    ]);
    assert_eq!(r0(&p), 0xaabb_ccdd);
    // the lowest byte of the 512-byte frame is accessible ...
    let p = [
        st(MemSize::B, 10, -512, 7),
        ldx(MemSize::B, 0, 10, -512),
        Insn::Exit,
    ];
    assert_eq!(r0(&p), 7);
}

#[test]
fn out_of_bounds_at_both_ends_of_a_region() {
    let input = [0u8; 8];
    // read one byte before the start
    let (res, _) = run_with_input(
        &[mov64(0, 0), ldx(MemSize::B, 0, 1, -1), Insn::Exit],
        &input,
    );
    let e = res.unwrap_err();
    assert_eq!(e.pc, 1);
    let ExecErrorKind::OutOfBounds { size, write, .. } = e.kind else {
        panic!("wrong error {e}");
    };
    assert_eq!((size, write), (1, false));
    // read that straddles the end
    let (res, _) = run_with_input(&[ldx(MemSize::W, 0, 1, 6), Insn::Exit], &input);
    let e = res.unwrap_err();
    assert_eq!(e.pc, 0);
    assert!(matches!(
        e.kind,
        ExecErrorKind::OutOfBounds {
            size: 4,
            write: false,
            ..
        }
    ));
    // write just past the end
    let (res, buf) = run_with_input(&[st(MemSize::B, 1, 8, 1), Insn::Exit], &input);
    assert!(matches!(
        res.unwrap_err().kind,
        ExecErrorKind::OutOfBounds {
            size: 1,
            write: true,
            ..
        }
    ));
    assert_eq!(buf, input, "nothing was written");
    // write that starts before the region and ends inside it
    let (res, buf) = run_with_input(&[st(MemSize::W, 1, -2, -1), Insn::Exit], &input);
    let e = res.unwrap_err();
    assert!(e.kind.is_memory_violation());
    assert!(matches!(
        e.kind,
        ExecErrorKind::OutOfBounds {
            size: 4,
            write: true,
            ..
        }
    ));
    assert_eq!(buf, input, "nothing was written");
    // the last byte and the first byte are fine
    let p = [
        st(MemSize::B, 1, 0, 1),
        st(MemSize::B, 1, 7, 2),
        ldx(MemSize::DW, 0, 1, 0),
        Insn::Exit,
    ];
    let (res, _) = run_with_input(&p, &input);
    assert_eq!(res.unwrap().r0, 0x0200_0000_0000_0001);
}

#[test]
fn stack_bytes_show_what_the_run_wrote() {
    let p = [
        st(MemSize::H, 10, -2, 0x0102),
        st(MemSize::B, 10, -512, 9),
        mov64(0, 0),
        Insn::Exit,
    ];
    let mut mem = Memory::new();
    Interpreter::new(&p)
        .run(&mut mem, &mut NoHelpers, [0; 5])
        .unwrap();
    let bytes = mem.stack_bytes(0);
    assert_eq!(bytes.len(), 512);
    assert_eq!(bytes[0], Some(9));
    assert_eq!(&bytes[510..], &[Some(2), Some(1)]);
    assert_eq!(bytes.iter().filter(|b| b.is_some()).count(), 3);
    assert!(mem.stack_bytes(1).iter().all(|b| b.is_none()));
}

#[test]
fn memory_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Memory<'static>>();
}

#[test]
fn out_of_bounds_reports_the_exact_address() {
    let input = [0u8; 4];
    let mut buf = input;
    let mut mem = Memory::new();
    let addr = mem.add_slice_mut(&mut buf, RegionKind::Input);
    let p = [ldx(MemSize::H, 0, 1, 3), Insn::Exit];
    let e = Interpreter::new(&p)
        .run(&mut mem, &mut NoHelpers, [addr, 0, 0, 0, 0])
        .unwrap_err();
    assert_eq!(
        e.kind,
        ExecErrorKind::OutOfBounds {
            addr: addr + 3,
            size: 2,
            write: false
        }
    );
    assert_eq!(e.pc, 0);
    assert_eq!(e.insns, 1);
}

#[test]
fn stack_bounds() {
    // above the frame pointer
    let e = run(&[st(MemSize::B, 10, 0, 1), Insn::Exit]).unwrap_err();
    assert!(matches!(
        e.kind,
        ExecErrorKind::OutOfBounds { write: true, .. }
    ));
    // below the 512-byte frame
    let e = run(&[st(MemSize::B, 10, -513, 1), Insn::Exit]).unwrap_err();
    assert!(matches!(
        e.kind,
        ExecErrorKind::OutOfBounds { write: true, .. }
    ));
    // a null pointer
    let e = run(&[mov64(0, 0), ldx(MemSize::DW, 0, 0, 0), Insn::Exit]).unwrap_err();
    assert_eq!(
        (e.pc, e.kind),
        (
            1,
            ExecErrorKind::OutOfBounds {
                addr: 0,
                size: 8,
                write: false
            }
        )
    );
}

#[test]
fn writes_to_read_only_regions_fail() {
    let data = [1u8, 2, 3, 4];
    let mut mem = Memory::new();
    let addr = mem.add_slice(&data, RegionKind::Ctx);
    let p = [
        ldx(MemSize::B, 0, 1, 3),
        st(MemSize::B, 1, 0, 9),
        Insn::Exit,
    ];
    let e = Interpreter::new(&p)
        .run(&mut mem, &mut NoHelpers, [addr, 0, 0, 0, 0])
        .unwrap_err();
    assert_eq!(e.pc, 1);
    assert_eq!(
        e.kind,
        ExecErrorKind::OutOfBounds {
            addr,
            size: 1,
            write: true
        }
    );
    assert_eq!(data, [1, 2, 3, 4]);
    // atomics write too
    let p = [
        mov64(2, 1),
        atomic(MemSize::W, AtomicOp::Add, false, 1, 2, 0),
        Insn::Exit,
    ];
    let e = Interpreter::new(&p)
        .run(&mut mem, &mut NoHelpers, [addr, 0, 0, 0, 0])
        .unwrap_err();
    assert_eq!(e.pc, 1);
    assert!(matches!(
        e.kind,
        ExecErrorKind::OutOfBounds { write: true, .. }
    ));
}

#[test]
fn access_straddling_two_adjacent_regions_fails() {
    let buf = [0u8; 16];
    let (a, b) = buf.split_at(8);
    let mut mem = Memory::new();
    let addr_a = mem.add_slice(a, RegionKind::Input);
    let addr_b = mem.add_slice(b, RegionKind::Other);
    assert_eq!(addr_a + 8, addr_b);
    let p = [ldx(MemSize::DW, 0, 1, 4), Insn::Exit];
    let e = Interpreter::new(&p)
        .run(&mut mem, &mut NoHelpers, [addr_a, 0, 0, 0, 0])
        .unwrap_err();
    assert_eq!(
        e.kind,
        ExecErrorKind::OutOfBounds {
            addr: addr_a + 4,
            size: 8,
            write: false
        }
    );
    // each half alone is fine
    let p = [ldx(MemSize::DW, 0, 1, 8), Insn::Exit];
    let out = Interpreter::new(&p)
        .run(&mut mem, &mut NoHelpers, [addr_a, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(out.r0, 0);
}

#[test]
fn uninitialised_stack_reads() {
    let p = [
        st(MemSize::W, 10, -8, 1),
        ldx(MemSize::DW, 0, 10, -8),
        Insn::Exit,
    ];
    let e = run(&p).unwrap_err();
    assert_eq!(e.pc, 1);
    assert_eq!(
        e.kind,
        ExecErrorKind::UninitRead {
            frame: 0,
            offset: -4
        }
    );
    // with the check off, the read succeeds (the buffer is zeroed)
    let mut mem = Memory::new();
    let out = Interpreter::new(&p)
        .with_options(Options {
            check_uninit: false,
            ..Options::default()
        })
        .run(&mut mem, &mut NoHelpers, [0; 5])
        .unwrap();
    assert_eq!(out.r0, 1);
    // a second run starts with an uninitialised stack again
    let p2 = [ldx(MemSize::B, 0, 10, -8), Insn::Exit];
    let e = Interpreter::new(&p2)
        .run(&mut mem, &mut NoHelpers, [0; 5])
        .unwrap_err();
    assert_eq!(
        e.kind,
        ExecErrorKind::UninitRead {
            frame: 0,
            offset: -8
        }
    );
}

#[test]
fn atomics_64() {
    let mut buf = 10u64.to_le_bytes().to_vec();
    buf.extend(5u64.to_le_bytes());
    let p = [
        mov64(2, 3),
        atomic(MemSize::DW, AtomicOp::Add, false, 1, 2, 0), // 13, r2 stays 3
        atomic(MemSize::DW, AtomicOp::Add, true, 1, 2, 0),  // 16, r2 = 13
        mov64(3, 0xff),
        atomic(MemSize::DW, AtomicOp::Xchg, true, 1, 3, 8), // [8]=0xff, r3 = 5
        mov64(0, 16),
        mov64(4, 100),
        atomic(MemSize::DW, AtomicOp::CmpXchg, true, 1, 4, 0), // equal: [0]=100, r0=16
        mov64(5, 7),
        atomic(MemSize::DW, AtomicOp::CmpXchg, true, 1, 5, 8), // r0=16 != 0xff: r0=0xff
        alu64r(pkbpf_verifier::isa::AluOp::Lsh, 0, 2),         // r0 = 0xff << 13
        alu64r(pkbpf_verifier::isa::AluOp::Add, 0, 3),         // + 5
        Insn::Exit,
    ];
    let (res, buf) = run_with_input(&p, &buf);
    assert_eq!(res.unwrap().r0, (0xff << 13) + 5);
    assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), 100);
    assert_eq!(u64::from_le_bytes(buf[8..].try_into().unwrap()), 0xff);
}

#[test]
fn atomics_32_and_bitwise() {
    let buf = [0xf0, 0, 0, 0, 0x0f, 0, 0, 0];
    let mut p = lddw(2, 0xffff_ffff_0000_000f).to_vec();
    p.extend([
        atomic(MemSize::W, AtomicOp::Or, true, 1, 2, 0), // [0]=0xff, r2 = 0xf0
        mov64(3, 0x3c),
        atomic(MemSize::W, AtomicOp::And, false, 1, 3, 4), // [4]=0x0c
        mov64(4, 0x01),
        atomic(MemSize::W, AtomicOp::Xor, true, 1, 4, 4), // [4]=0x0d, r4 = 0x0c
                                                          // cmpxchg compares only the low 32 bits of r0
    ]);
    p.extend(lddw(0, 0x1234_5678_0000_00ff));
    p.extend([
        mov64(5, 1),
        atomic(MemSize::W, AtomicOp::CmpXchg, true, 1, 5, 0), // [0]=1, r0=0xff
        alu64r(pkbpf_verifier::isa::AluOp::Add, 0, 2),        // 0xff + 0xf0
        alu64r(pkbpf_verifier::isa::AluOp::Add, 0, 4),        // + 0x0c
        Insn::Exit,
    ]);
    let (res, buf) = run_with_input(&p, &buf);
    assert_eq!(res.unwrap().r0, 0xff + 0xf0 + 0x0c);
    assert_eq!(buf, [1, 0, 0, 0, 0x0d, 0, 0, 0]);
}

#[test]
fn atomic_add_32_wraps_and_fetch_zero_extends() {
    let buf = u32::MAX.to_le_bytes();
    let p = [
        mov64(2, 2),
        atomic(MemSize::W, AtomicOp::Add, true, 1, 2, 0),
        ldx(MemSize::W, 0, 1, 0),
        alu64r(pkbpf_verifier::isa::AluOp::Lsh, 0, 0), // r0 = 1 << 1 (mask 63)
        alu64r(pkbpf_verifier::isa::AluOp::Add, 0, 2),
        Insn::Exit,
    ];
    let (res, buf) = run_with_input(&p, &buf);
    assert_eq!(res.unwrap().r0, 2 + 0xffff_ffff);
    assert_eq!(buf, 1u32.to_le_bytes());
}

#[test]
fn atomics_on_the_stack_need_initialised_bytes() {
    let p = [
        mov64(2, 1),
        atomic(MemSize::DW, AtomicOp::Add, false, 10, 2, -8),
        Insn::Exit,
    ];
    let e = run(&p).unwrap_err();
    assert_eq!(e.pc, 1);
    assert_eq!(
        e.kind,
        ExecErrorKind::UninitRead {
            frame: 0,
            offset: -8
        }
    );
    let p = [
        st(MemSize::DW, 10, -8, 41),
        mov64(2, 1),
        atomic(MemSize::DW, AtomicOp::Add, false, 10, 2, -8),
        ldx(MemSize::DW, 0, 10, -8),
        Insn::Exit,
    ];
    assert_eq!(r0(&p), 42);
}

#[test]
fn raw_regions_and_listing() {
    let mut backing = vec![0u64; 2];
    let start = backing.as_mut_ptr() as u64;
    let mut mem = Memory::new();
    // SAFETY: `backing` outlives `mem` and is not touched while the program runs.
    unsafe {
        mem.add_region(Region {
            start,
            len: 16,
            writable: true,
            kind: RegionKind::MapValue { map: 3 },
        })
    };
    assert_eq!(mem.regions().len(), 1);
    // SAFETY: the same region again; registering it twice is a no-op.
    unsafe {
        mem.add_region(Region {
            start,
            len: 16,
            writable: true,
            kind: RegionKind::MapValue { map: 3 },
        })
    };
    assert_eq!(mem.regions().len(), 1);
    let p = [
        st(MemSize::DW, 1, 8, 77),
        ldx(MemSize::DW, 0, 1, 8),
        Insn::Exit,
    ];
    let out = Interpreter::new(&p)
        .run(&mut mem, &mut NoHelpers, [start, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(out.r0, 77);
    drop(mem);
    assert_eq!(backing[1], 77);
}
