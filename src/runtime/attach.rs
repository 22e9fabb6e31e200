//! Attaching loaded programs to uprobes and uretprobes in this process.
//!
//! The hooks layer (`pkbpf_hooks`) patches a function entry and calls a
//! handler with a kernel-layout `struct pt_regs`; this module's handler runs
//! the program on that frame through the object's normal call path (the same
//! gate, helpers and fault recovery as [`Program::call`](super::Program::call)),
//! and applies `bpf_override_return` when the program asked for it.
//!
//! The hooks layer never frees a handler (a thread may still be inside one
//! after detach), so a handler keeps its object alive: an object that was
//! attached once lives until the process ends, even after every link is gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pkbpf_hooks::{
    attach, attach_target, AttachOptions, Handler, HookFrame, ProbeKind, ProbeLink, ProbeTarget,
    PtRegs,
};

use super::{LoadedObject, RuntimeError};
use crate::helpers::HookCtx;
use crate::object::ProgramKind;

/// Where to attach a program.
#[derive(Clone, Debug)]
pub enum AttachPoint {
    /// The target its section names (`SEC("uprobe/PATH:FUNC")`).
    Section,
    /// A `BINARY:SYMBOL[+OFFSET]` / `BINARY:OFFSET` target.
    Target(ProbeTarget),
    /// A function's address in this process.
    ///
    /// The address must be the first byte of an instruction of a function
    /// that stays mapped while the probe is attached.
    Address(usize),
}

/// An attached program. Dropping it detaches the probe (failures are
/// logged); [`UprobeLink::detach`] reports them.
#[derive(Debug)]
pub struct UprobeLink {
    link: ProbeLink,
    program: String,
    stats: Arc<HitStats>,
}

#[derive(Debug, Default)]
struct HitStats {
    hits: AtomicU64,
    errors: AtomicU64,
    /// The probed function's address, for `bpf_get_func_ip` in return
    /// probes (whose frame holds the return address instead).
    func_ip: AtomicU64,
}

impl UprobeLink {
    /// The program's name.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The probed address.
    pub fn address(&self) -> usize {
        self.link.address()
    }

    /// Entry or return probe.
    pub fn kind(&self) -> ProbeKind {
        self.link.kind()
    }

    /// Runs of the program that returned normally.
    pub fn hits(&self) -> u64 {
        self.stats.hits.load(Ordering::Relaxed)
    }

    /// Runs of the program that ended in an error (a fault, an aborting
    /// helper); the probed function ran normally each time.
    pub fn errors(&self) -> u64 {
        self.stats.errors.load(Ordering::Relaxed)
    }

    /// Detaches the probe, restoring the function's original bytes.
    pub fn detach(self) -> Result<(), RuntimeError> {
        let program = self.program;
        self.link
            .detach()
            .map_err(|source| RuntimeError::Attach { program, source })
    }
}

impl LoadedObject {
    /// Attaches `program` as its kind says: a `uprobe` program as an entry
    /// probe, a `uretprobe` program as a return probe.
    #[doc(alias = "bpf_program__attach_uprobe")]
    pub fn attach(
        self: &Arc<Self>,
        program: &str,
        at: AttachPoint,
    ) -> Result<UprobeLink, RuntimeError> {
        let kind = match self.program(program)?.kind() {
            ProgramKind::Uprobe { .. } => ProbeKind::Entry,
            ProgramKind::Uretprobe { .. } => ProbeKind::Return,
            other => {
                return Err(RuntimeError::NotAttachable {
                    program: program.to_string(),
                    kind: other.name().to_string(),
                    wanted: "uprobe",
                })
            }
        };
        self.attach_as(program, at, kind)
    }

    /// Attaches `program` as an entry or return probe. Besides `uprobe` and
    /// `uretprobe` programs (which must match `kind`), this accepts an
    /// embedded program whose context is exactly a `struct pt_regs`.
    pub fn attach_as(
        self: &Arc<Self>,
        program: &str,
        at: AttachPoint,
        kind: ProbeKind,
    ) -> Result<UprobeLink, RuntimeError> {
        let prog = self.program(program)?;
        let regs_size = std::mem::size_of::<PtRegs>();
        let not_attachable = |what: &str| RuntimeError::NotAttachable {
            program: program.to_string(),
            kind: what.to_string(),
            wanted: match kind {
                ProbeKind::Entry => "uprobe",
                ProbeKind::Return => "uretprobe",
            },
        };
        let section_target = match (prog.kind(), kind) {
            (ProgramKind::Uprobe { target }, ProbeKind::Entry)
            | (ProgramKind::Uretprobe { target }, ProbeKind::Return) => target.clone(),
            (ProgramKind::Embedded, _) if prog.ctx_size() as usize == regs_size => None,
            (ProgramKind::Embedded, _) => {
                return Err(not_attachable(&format!(
                    "embedded (context of {} bytes, not pt_regs)",
                    prog.ctx_size()
                )))
            }
            (other, _) => return Err(not_attachable(other.name())),
        };
        let attach_err = |source| RuntimeError::Attach {
            program: program.to_string(),
            source,
        };

        let stats = Arc::new(HitStats::default());
        let handler = {
            let obj = Arc::clone(self);
            let stats = Arc::clone(&stats);
            let name = program.to_string();
            // Resolved once here, not by name on every hit.
            let index = prog.index();
            Handler::from_fn(move |frame: &mut HookFrame| {
                run_on_frame(&obj, index, &name, kind, frame, &stats);
            })
        };
        let opts = AttachOptions::default();
        let link = match at {
            AttachPoint::Address(addr) => {
                // SAFETY: the caller gives the entry of a function that stays
                // mapped while attached (AttachPoint::Address's contract); the
                // hooks layer checks the bytes it relocates.
                unsafe { attach(addr, None, kind, handler, &opts) }.map_err(attach_err)?
            }
            AttachPoint::Target(target) => {
                // SAFETY: the target resolves to a symbol of a mapped binary;
                // the hooks layer decodes its prologue before patching.
                unsafe { attach_target(&target, kind, handler, &opts) }.map_err(attach_err)?
            }
            AttachPoint::Section => {
                let t = section_target.ok_or_else(|| RuntimeError::NoAttachTarget {
                    program: program.to_string(),
                    section: prog.section().to_string(),
                })?;
                let target = ProbeTarget::parse(&t.to_string()).map_err(attach_err)?;
                // SAFETY: as for AttachPoint::Target.
                unsafe { attach_target(&target, kind, handler, &opts) }.map_err(attach_err)?
            }
        };
        stats
            .func_ip
            .store(link.address() as u64, Ordering::Relaxed);
        Ok(UprobeLink {
            link,
            program: program.to_string(),
            stats,
        })
    }
}

/// The handler body: run the program on the probe's registers.
#[inline]
fn run_on_frame(
    obj: &LoadedObject,
    index: usize,
    name: &str,
    kind: ProbeKind,
    frame: &mut HookFrame,
    stats: &HitStats,
) {
    // The program's helpers make system calls (printk, ring buffer
    // wake-ups): never traced by syscall tracepoint programs.
    let _untraced = pkbpf_hooks::syscall::Untraced::new();
    let prog = obj.program_at(index);
    let func_ip = match kind {
        ProbeKind::Entry => frame.regs.ip,
        ProbeKind::Return => stats.func_ip.load(Ordering::Relaxed),
    };
    let regs = (&mut frame.regs as *mut PtRegs).cast::<u8>();
    // SAFETY: `regs` points at the frame's `PtRegs` (`repr(C)`, plain u64
    // fields), which is live and exclusively ours while the handler runs.
    let ctx = unsafe { std::slice::from_raw_parts_mut(regs, std::mem::size_of::<PtRegs>()) };
    let mut hook = HookCtx {
        func_ip,
        override_return: None,
    };
    match prog.call_hooked(ctx, &mut hook) {
        Ok(_) => {
            stats.hits.fetch_add(1, Ordering::Relaxed);
            if let (Some(v), ProbeKind::Entry) = (hook.override_return, kind) {
                frame.override_return(v);
            }
        }
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(program = name, error = %e, "probe run failed");
        }
    }
}
