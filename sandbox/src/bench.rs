//! Gate costs for the benchmark harness, measured only where the numbers
//! mean something: real PKU hardware. Without PKU, or under an emulator
//! (QEMU's TCG, whose `WRPKRU` costs ~1 µs), the answer is
//! [`Unavailable`] with the reason, never an emulated timing.

use std::fmt;
use std::time::Instant;

use crate::{detect, Domain, DomainGuard, GateStub, PkuStatus};

/// Why gate timings cannot be taken here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// The reason, e.g. `no PKU: CPUID.7.0:ECX.PKU=0` or
    /// `emulated CPU (hypervisor "TCGTCGTCGTCG")`.
    pub reason: String,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unavailable: {}", self.reason)
    }
}

impl std::error::Error for Unavailable {}

/// Nanoseconds per operation, averaged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateCosts {
    /// `DomainGuard::enter` + drop (H → T → H): two checked `WRPKRU`s.
    pub domain_guard_ns: f64,
    /// An entry gate round trip (H → Xᵢ → H) around an empty target.
    pub entry_gate_ns: f64,
    /// A gate from H into H: the call path with two `WRPKRU`s that load the
    /// value PKRU already holds.
    pub entry_gate_same_domain_ns: f64,
}

/// The hypervisor vendor from CPUID leaf 0x4000_0000 when CPUID.1:ECX bit 31
/// (hypervisor present) is set, e.g. `KVMKVMKVM`, `TCGTCGTCGTCG`.
pub fn hypervisor_vendor() -> Option<String> {
    use core::arch::x86_64::__cpuid;
    if __cpuid(1).ecx & (1 << 31) == 0 {
        return None;
    }
    let r = __cpuid(0x4000_0000);
    let mut b = Vec::with_capacity(12);
    for w in [r.ebx, r.ecx, r.edx] {
        b.extend_from_slice(&w.to_le_bytes());
    }
    Some(
        String::from_utf8_lossy(&b)
            .trim_end_matches('\0')
            .to_string(),
    )
}

/// `Ok` when gate timings taken here reflect hardware: PKU is available and
/// the CPU is not emulated by TCG. (A KVM guest runs `WRPKRU` natively, so it
/// counts.)
pub fn timing_available() -> Result<(), Unavailable> {
    if let PkuStatus::Missing(m) = detect() {
        return Err(Unavailable {
            reason: m.to_string(),
        });
    }
    match hypervisor_vendor() {
        Some(v) if v.starts_with("TCG") => Err(Unavailable {
            reason: format!("emulated CPU (hypervisor {v:?})"),
        }),
        _ => Ok(()),
    }
}

unsafe extern "C" fn empty(_: usize) -> u64 {
    0
}

/// Measures the gates over `iterations` round trips each.
pub fn gate_costs(iterations: u32) -> Result<GateCosts, Unavailable> {
    timing_available()?;
    let err = |e: crate::SandboxError| Unavailable {
        reason: e.to_string(),
    };
    let key = crate::Keys::alloc_extension().map_err(err)?;
    let gate = GateStub::new(Domain::extension(key), Domain::host()).map_err(err)?;
    let plain = GateStub::new(Domain::host(), Domain::host()).map_err(err)?;
    let n = iterations.max(1);
    let _h = DomainGuard::enter(Domain::host());
    let per = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    let domain_guard_ns = per(&mut || drop(DomainGuard::enter(Domain::trusted())));
    let entry_gate_ns = per(&mut || {
        // SAFETY: `empty` touches no memory.
        let r = unsafe { gate.call(empty, 0) };
        let _ = std::hint::black_box(r);
    });
    let entry_gate_same_domain_ns = per(&mut || {
        // SAFETY: `empty` touches no memory.
        let r = unsafe { plain.call(empty, 0) };
        let _ = std::hint::black_box(r);
    });
    Ok(GateCosts {
        domain_guard_ns,
        entry_gate_ns,
        entry_gate_same_domain_ns,
    })
}
