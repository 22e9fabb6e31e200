//! Attaching syscall tracepoint programs in this process.
//!
//! `tracepoint/syscalls/sys_enter_NAME` and `sys_exit_NAME` programs, and
//! `raw_tracepoint/sys_enter` / `sys_exit`, run on the system calls of this
//! process's traced threads (see [`pkbpf_hooks::syscall`] for which threads
//! those are and how the calls are caught). The contexts are the kernel's:
//!
//! | program | context |
//! |---|---|
//! | `sys_enter_NAME` | `struct trace_event_raw_sys_enter`: the 8-byte common header (`common_type` 0, `common_pid` the thread id), `int __syscall_nr` at 8, `unsigned long args[6]` at 16 (64 bytes) |
//! | `sys_exit_NAME` | `struct trace_event_raw_sys_exit`: header, `__syscall_nr` at 8, `long ret` at 16 (24 bytes) |
//! | raw `sys_enter` | `u64 args[2]`: a `struct pt_regs *` (read it with `bpf_probe_read`) and the number |
//! | raw `sys_exit` | `u64 args[2]`: the `struct pt_regs *` and the return value |
//!
//! The first attach installs the interception and rewrites libc's
//! `mov eax, NR; syscall` sites to call the dispatcher directly (the fast
//! path; unless [`NO_REWRITE_ENV`] is set); calls from other sites take the
//! SIGSYS path.
//!
//! Enter programs run before the kernel runs the call, exit programs after
//! it returned (none for `exit`/`exit_group`, and none in a new thread for
//! its `clone`). Programs run with the thread untraced: their helpers'
//! system calls are not seen.

use std::sync::atomic::AtomicPtr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use pkbpf_hooks::syscall::{self, Interest, SyscallFrame, SyscallHandler, SyscallPhase};
use pkbpf_hooks::HookError;

pub use pkbpf_hooks::syscall::{trace_current_thread, Untraced};

use super::{LoadedObject, RuntimeError};
use crate::helpers::HookCtx;
use crate::object::ProgramKind;

/// What a syscall program is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Site {
    /// `sys_enter_NAME` (number) or raw `sys_enter` (`None`: every call).
    Enter(Option<u64>),
    /// `sys_exit_NAME` or raw `sys_exit`.
    Exit(Option<u64>),
}

#[derive(Clone)]
struct Entry {
    id: u64,
    obj: Arc<LoadedObject>,
    index: usize,
    site: Site,
    raw: bool,
    stats: Arc<Stats>,
}

#[derive(Debug, Default)]
struct Stats {
    hits: AtomicU64,
    errors: AtomicU64,
}

/// The attached programs (the source of truth, changed under the lock);
/// every change publishes a new immutable [`Table`] for the hot path.
static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
/// The published table; tables are never freed (a thread may still be
/// reading an old one), one small allocation per attach or detach.
static TABLE: AtomicPtr<Table> = AtomicPtr::new(std::ptr::null_mut());

/// An immutable snapshot of the attached programs.
struct Table {
    entries: Vec<Entry>,
    enter: Interest,
    exit: Interest,
}

/// Publishes `entries` as the new table (called with REGISTRY held).
fn publish(entries: &[Entry]) {
    let mut t = Table {
        entries: entries.to_vec(),
        enter: Interest::NONE,
        exit: Interest::NONE,
    };
    for e in entries {
        match e.site {
            Site::Enter(nr) => t.enter.add(nr),
            Site::Exit(nr) => t.exit.add(nr),
        }
    }
    syscall::set_interest(&t.enter, &t.exit);
    TABLE.store(Box::into_raw(Box::new(t)), Ordering::Release);
}
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

/// Set (to anything) to keep libc's `syscall` sites as they are: every
/// traced call then takes the SIGSYS path.
pub const NO_REWRITE_ENV: &str = "PKBPF_NO_SYSCALL_REWRITE";

/// An attached syscall tracepoint program. Dropping it detaches.
#[derive(Debug)]
pub struct SyscallLink {
    id: u64,
    program: String,
    tracepoint: String,
    stats: Arc<Stats>,
}

impl SyscallLink {
    /// The program's name.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The tracepoint: `syscalls/sys_enter_openat`, `sys_enter`, ...
    pub fn tracepoint(&self) -> &str {
        &self.tracepoint
    }

    /// Runs of the program that returned normally.
    pub fn hits(&self) -> u64 {
        self.stats.hits.load(Ordering::Relaxed)
    }

    /// Runs that ended in an error (a fault, an aborting helper); the
    /// system call ran normally each time.
    pub fn errors(&self) -> u64 {
        self.stats.errors.load(Ordering::Relaxed)
    }

    /// Detaches the program (the same as dropping the link).
    pub fn detach(self) {}
}

impl Drop for SyscallLink {
    fn drop(&mut self) {
        let _untraced = syscall::Untraced::new();
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        reg.retain(|e| e.id != self.id);
        publish(&reg);
    }
}

/// Where a syscall program attaches, from its kind.
fn site_of(program: &str, kind: &ProgramKind) -> Result<(Site, bool, String), RuntimeError> {
    let bad = |kind: String| RuntimeError::NotAttachable {
        program: program.to_string(),
        kind,
        wanted: "syscall tracepoint",
    };
    let by_name = |name: &str| -> Result<u64, RuntimeError> {
        syscall::syscall_nr(name)
            .map(u64::from)
            .ok_or_else(|| RuntimeError::Attach {
                program: program.to_string(),
                source: HookError::UnknownSyscall {
                    name: name.to_string(),
                },
            })
    };
    match kind {
        ProgramKind::Tracepoint { category, name } if category == "syscalls" => {
            let tp = format!("{category}/{name}");
            if let Some(call) = name.strip_prefix("sys_enter_") {
                Ok((Site::Enter(Some(by_name(call)?)), false, tp))
            } else if let Some(call) = name.strip_prefix("sys_exit_") {
                Ok((Site::Exit(Some(by_name(call)?)), false, tp))
            } else {
                Err(bad(format!("tracepoint {tp}")))
            }
        }
        ProgramKind::RawTracepoint { name } if name == "sys_enter" => {
            Ok((Site::Enter(None), true, name.clone()))
        }
        ProgramKind::RawTracepoint { name } if name == "sys_exit" => {
            Ok((Site::Exit(None), true, name.clone()))
        }
        other => Err(bad(format!("{} {}", other.name(), other.target_string()))),
    }
}

fn install_once() -> Result<(), RuntimeError> {
    let r = INSTALLED.get_or_init(|| {
        if !syscall::is_supported() {
            return Err(String::new());
        }
        syscall::install(SyscallHandler::from_fn(on_syscall)).map_err(|e| e.to_string())?;
        if std::env::var_os(NO_REWRITE_ENV).is_none() {
            // The fast path; sites it cannot take stay with the SIGSYS path.
            if let Err(e) = syscall::rewrite_libc() {
                tracing::debug!(error = %e, "rewriting libc's syscall sites failed");
            }
        }
        Ok(())
    });
    match r {
        Ok(()) => Ok(()),
        Err(_) => Err(RuntimeError::Attach {
            program: String::new(),
            source: HookError::NoSyscallDispatch,
        }),
    }
}

impl LoadedObject {
    /// Attaches a `tracepoint/syscalls/sys_{enter,exit}_NAME` or
    /// `raw_tracepoint/sys_{enter,exit}` program to this process's system
    /// calls. The first attach turns on Syscall User Dispatch for the
    /// calling thread (untraced until
    /// [`pkbpf_hooks::syscall::trace_current_thread`]`(true)`); threads it
    /// then creates are traced.
    #[doc(alias = "bpf_program__attach_tracepoint")]
    #[doc(alias = "bpf_program__attach_raw_tracepoint")]
    pub fn attach_syscall(self: &Arc<Self>, program: &str) -> Result<SyscallLink, RuntimeError> {
        let prog = self.program(program)?;
        let (site, raw, tracepoint) = site_of(program, prog.kind())?;
        let index = self
            .programs()
            .position(|p| p.name() == program)
            .ok_or_else(|| RuntimeError::NoSuchProgram {
                name: program.to_string(),
            })?;
        install_once().map_err(|e| match e {
            RuntimeError::Attach { source, .. } => RuntimeError::Attach {
                program: program.to_string(),
                source,
            },
            e => e,
        })?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::new(Stats::default());
        let entry = Entry {
            id,
            obj: Arc::clone(self),
            index,
            site,
            raw,
            stats: Arc::clone(&stats),
        };
        {
            let _untraced = syscall::Untraced::new();
            let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
            reg.push(entry);
            publish(&reg);
        }
        Ok(SyscallLink {
            id,
            program: program.to_string(),
            tracepoint,
            stats,
        })
    }
}

/// The handler: every matching program on this call.
fn on_syscall(frame: &mut SyscallFrame, phase: SyscallPhase) {
    let t = TABLE.load(Ordering::Acquire);
    if t.is_null() {
        return;
    }
    // SAFETY: published tables are leaked boxes, never freed or changed.
    let t = unsafe { &*t };
    let interest = match phase {
        SyscallPhase::Enter => &t.enter,
        SyscallPhase::Exit => &t.exit,
    };
    if !interest.wants(frame.nr) {
        return;
    }
    for e in t.entries.iter() {
        let wanted = match (e.site, phase) {
            (Site::Enter(nr), SyscallPhase::Enter) | (Site::Exit(nr), SyscallPhase::Exit) => nr,
            _ => continue,
        };
        if wanted.is_some_and(|n| n != frame.nr) {
            continue;
        }
        run_one(e, frame, phase);
    }
}

fn run_one(e: &Entry, frame: &mut SyscallFrame, phase: SyscallPhase) {
    let Some(prog) = e.obj.programs().nth(e.index) else {
        return;
    };
    let mut hook = HookCtx {
        func_ip: frame.regs.ip,
        override_return: None,
    };
    // The contexts as little-endian words (x86-64): the 8-byte
    // `struct trace_entry` (type 0, flags 0, preempt_count 0, pid at bytes
    // 4..8), `__syscall_nr` in the low half of the next word, then the
    // arguments or the return value; raw: the regs pointer and id/ret.
    let mut words = [0u64; 8];
    let len = if e.raw {
        words[0] = &frame.regs as *const _ as u64;
        words[1] = match phase {
            SyscallPhase::Enter => frame.nr,
            SyscallPhase::Exit => frame.ret as u64,
        };
        2
    } else {
        words[0] = u64::from(syscall::current_tid() as u32) << 32;
        words[1] = u64::from(frame.nr as u32);
        match phase {
            SyscallPhase::Enter => {
                words[2..8].copy_from_slice(&frame.args);
                8
            }
            SyscallPhase::Exit => {
                words[2] = frame.ret as u64;
                3
            }
        }
    };
    // SAFETY: `words` is a live local array of at least `len` u64s, viewed
    // as its bytes for the call.
    let ctx = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len * 8) };
    match prog.call_hooked(ctx, &mut hook) {
        Ok(_) => {
            e.stats.hits.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            e.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
