//! `pkbpf demo`: runs a built-in eBPF program on the reference interpreter.
//!
//! For now the program is assembled from text compiled into the binary and
//! counts the primes below a bound by trial division, using the stack for its
//! counter and a bpf-to-bpf call for the primality test. Later issues turn
//! this into the uprobe demo.

use anyhow::{Context, Result};

use pkbpf::verifier::{asm, isa};
use pkbpf_jit::interp::{Interpreter, Memory, NoHelpers, RegionKind};

/// Arguments of `pkbpf demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Count the primes below this number.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
    pub below: u32,
}

/// The built-in program: `r1` points at a little-endian `u32` bound; returns
/// the number of primes below it.
pub const PRIMES_ASM: &str = "\
# r1 = &bound (u32). Counts primes n in [2, bound).
ldxw %r6, [%r1]
stdw [%r10-8], 0          # count
mov %r7, 2                # n
outer:
jge %r7, %r6, done
mov %r1, %r7
call local is_prime
jeq %r0, 0, next
ldxdw %r2, [%r10-8]
add %r2, 1
stxdw [%r10-8], %r2
next:
add %r7, 1
ja outer
done:
ldxdw %r0, [%r10-8]
exit
# is_prime(r1 = n >= 2) -> r0 = 1 if prime
is_prime:
mov %r0, 1
mov %r2, 2
loop:
mov %r3, %r2
mul %r3, %r2
jgt %r3, %r1, prime
mov %r4, %r1
mod %r4, %r2
jeq %r4, 0, composite
add %r2, 1
ja loop
composite:
mov %r0, 0
prime:
exit
";

/// Assembles and runs the demo program; returns (primes, instructions).
pub fn count_primes(below: u32) -> Result<(u64, u64)> {
    let insns = asm::assemble(PRIMES_ASM).context("assembling the built-in program")?;
    let prog = isa::decode_program(&isa::encode_program(&insns))
        .context("decoding the built-in program")?;
    let bound = below.to_le_bytes();
    let mut mem = Memory::new();
    let addr = mem.add_slice(&bound, RegionKind::Ctx);
    let out = Interpreter::new(&prog)
        .run(&mut mem, &mut NoHelpers, [addr, 0, 0, 0, 0])
        .context("running the built-in program")?;
    Ok((out.r0, out.stats.insns))
}

/// Runs the demo.
pub fn run(args: Args) -> Result<i32> {
    let (primes, insns) = count_primes(args.below)?;
    println!(
        "primes below {}: {primes} (interpreter, {insns} instructions executed)",
        args.below
    );
    Ok(0)
}
