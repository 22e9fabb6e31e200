//! pkbpf's rows, measured in process: the victim's functions in a shared
//! library, pkbpf's own inline uprobes/uretprobes (`pkbpf_hooks`) on them,
//! and the runtime (`pkbpf::runtime`: verifier, JIT, maps, helpers) running
//! the same `.bpf.o` programs the kernel rows use.
//!
//! The timing loop is the victim's (`N` calls of each function through a
//! function pointer with `(buffer, i % 4, i)`), run by the harness itself
//! because pkbpf's probes live in the probed process. Each program's hits are
//! counted; a row whose probes fired fewer times than the function was
//! called is an error, as in the kernel rows. Each function gets [`WARMUP`]
//! untimed calls first.
//!
//! The syscall-tracepoint row (`syscall_write`): `bench_sys_exit_write` on
//! `tracepoint/syscalls/sys_exit_write`, attached with
//! `LoadedObject::attach_syscall`, and `N` one-byte `write()`s to
//! `/dev/null` from the harness thread, traced only around the timed loop.
//! The calls go through libc's `write`, whose `syscall` site the attach
//! rewrote (the fast path); with `PKBPF_BENCH_SYSCALL_PATH=sigsys` they go
//! through `syscall(SYS_write, ...)`, a site that is never rewritten, so the
//! row measures the Syscall User Dispatch (SIGSYS) path instead.

use std::collections::BTreeMap;
use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use pkbpf::object::ProgramKind;
use pkbpf::runtime::{Engine, HookCtx, LoadedObject, Runtime, Sandbox};
use pkbpf_hooks::{
    attach_target, AttachOptions, Handler, HookFrame, ProbeKind, ProbeLink, ProbeTarget,
};

use crate::engines::error_chain;
use crate::env::{
    mpk_unavailable_reason, target_rows, Cell, Environment, PkbpfSandbox, Readiness, Setup,
};
use crate::pkrun::load_object;
use crate::tools::{build_kernel_objects, run_checked, write_source, TARGET_C};
use crate::workload::{kernel_programs, SYSCALL_ROW, TARGET_FUNCTIONS};
use crate::BenchError;

/// A target function: `uint64_t f(char *a, int b, uint64_t c)`.
type TargetFn = unsafe extern "C" fn(*mut u8, i32, u64) -> u64;

/// Untimed calls of each function before its timed loop.
pub const WARMUP: u64 = 100;

/// Why the syscall row has no pkbpf number (before it is prepared).
pub const SYSCALL_PENDING: &str = "pkbpf syscall tracepoint not attached";

/// Environment variable choosing the syscall row's path: `sigsys` for
/// Syscall User Dispatch, anything else (or unset) for the rewritten site.
pub const SYSCALL_PATH_ENV: &str = "PKBPF_BENCH_SYSCALL_PATH";

/// pkbpf in process, with `--sandbox=none` or `--sandbox=mpk` (the latter
/// only where the CPU has protection keys: elsewhere it is `unavailable`,
/// never emulated).
pub struct PkbpfInProcess {
    sandbox: PkbpfSandbox,
    lib: Option<*mut c_void>,
    funcs: BTreeMap<String, TargetFn>,
    /// Loaded objects; leaked so the handlers (which outlive detach) may
    /// borrow their programs for the rest of the process.
    objects: Vec<&'static LoadedObject>,
    links: Vec<ProbeLink>,
    /// Hit counters by row.
    hits: BTreeMap<String, Vec<Arc<AtomicU64>>>,
    /// Rows whose programs could not be loaded or attached, with why.
    broken: BTreeMap<String, String>,
    /// The syscall row's attached program, or why there is none.
    syscall: Option<Result<pkbpf::runtime::SyscallLink, String>>,
}

impl std::fmt::Debug for PkbpfInProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PkbpfInProcess")
            .field("sandbox", &self.sandbox)
            .field("funcs", &self.funcs.keys().collect::<Vec<_>>())
            .field("links", &self.links.len())
            .field("broken", &self.broken)
            .finish()
    }
}

/// Compiles the victim as a shared library (`cc -O2 -fno-inline -shared
/// -fPIC`) into `dir/lib<name>.so` (one file per environment, so each loads
/// its own copy and probes only that).
pub fn build_target_lib(dir: &Path, name: &str) -> Result<PathBuf, BenchError> {
    let src = write_source(dir, "bench_target.c", TARGET_C)?;
    let lib = dir.join(format!("lib{name}.so"));
    run_checked(
        Command::new("cc")
            .args(["-O2", "-fno-inline", "-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(&src),
    )?;
    Ok(lib)
}

fn fail(why: impl Into<String>) -> BenchError {
    BenchError::Run {
        program: "bench_target".into(),
        engine: "pkbpf".into(),
        reason: why.into(),
    }
}

impl Default for PkbpfInProcess {
    fn default() -> Self {
        Self::new(PkbpfSandbox::None)
    }
}

impl PkbpfInProcess {
    /// Not prepared yet.
    pub fn new(sandbox: PkbpfSandbox) -> Self {
        Self {
            sandbox,
            lib: None,
            funcs: BTreeMap::new(),
            objects: Vec::new(),
            links: Vec::new(),
            hits: BTreeMap::new(),
            broken: BTreeMap::new(),
            syscall: None,
        }
    }

    fn setup(&mut self, setup: &Setup) -> Result<(), BenchError> {
        let lib = build_target_lib(&setup.workdir, &format!("bench_target_{}", self.name()))?;
        let c = CString::new(lib.to_string_lossy().as_bytes())
            .map_err(|_| fail("library path has a NUL"))?;
        // SAFETY: `c` is a NUL-terminated path to the library just built from
        // our own C (no constructors).
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(fail(format!("dlopen {} failed", lib.display())));
        }
        self.lib = Some(handle);
        for f in TARGET_FUNCTIONS {
            let sym = CString::new(f).map_err(|_| fail("symbol has a NUL"))?;
            // SAFETY: `handle` is open; `sym` is NUL-terminated.
            let p = unsafe { libc::dlsym(handle, sym.as_ptr()) };
            if p.is_null() {
                return Err(fail(format!("{f} not found in {}", lib.display())));
            }
            // SAFETY: every target function is `uint64_t f(char *, int,
            // uint64_t)` (TARGET in bench_target.c).
            let fp = unsafe { std::mem::transmute::<*mut c_void, TargetFn>(p) };
            self.funcs.insert(f.to_string(), fp);
        }
        let mode = match self.sandbox {
            PkbpfSandbox::None => Sandbox::None,
            PkbpfSandbox::Mpk => Sandbox::Mpk,
        };
        let rt = Runtime::builder()
            .sandbox(mode)
            .engine(Engine::Jit)
            .build()
            .map_err(|e| fail(format!("runtime: {}", error_chain(&e))))?;
        for obj_path in build_kernel_objects(&setup.workdir)? {
            let parsed = load_object(&obj_path)?;
            let loaded = match rt.load_file(&obj_path) {
                Ok(o) => &*Box::leak(Box::new(o)),
                Err(e) => {
                    let why = format!("pkbpf refused {}: {}", obj_path.display(), error_chain(&e));
                    for def in parsed.programs() {
                        for row in rows_of(&def.name) {
                            self.broken.entry(row).or_insert_with(|| why.clone());
                        }
                    }
                    continue;
                }
            };
            self.objects.push(loaded);
            for def in parsed.programs() {
                for row in rows_of(&def.name) {
                    if let Err(why) = self.attach_one(loaded, &lib, &def.name, &def.kind, &row) {
                        self.broken.entry(row).or_insert(why);
                    }
                }
            }
        }
        self.syscall = Some(attach_syscall_row(&rt, &setup.workdir));
        Ok(())
    }

    fn attach_one(
        &mut self,
        obj: &'static LoadedObject,
        lib: &Path,
        prog_name: &str,
        kind: &ProgramKind,
        row: &str,
    ) -> Result<(), String> {
        let probe_kind = match kind {
            ProgramKind::Uprobe { .. } => ProbeKind::Entry,
            ProgramKind::Uretprobe { .. } => ProbeKind::Return,
            other => {
                return Err(format!(
                    "{prog_name}: {} programs are not attached in process",
                    other.name()
                ))
            }
        };
        let prog = obj.program(prog_name).map_err(|e| error_chain(&e))?;
        let func_ip = *self
            .funcs
            .get(row)
            .ok_or_else(|| format!("no function {row}"))? as usize as u64;
        let counter = Arc::new(AtomicU64::new(0));
        let hits = counter.clone();
        let handler = Handler::from_fn(move |frame: &mut HookFrame| {
            let regs = (&mut frame.regs as *mut pkbpf_hooks::PtRegs).cast::<u8>();
            // SAFETY: `regs` is the frame's `pt_regs` (168 bytes, `repr(C)`),
            // live and exclusively ours for the duration of the handler.
            let ctx = unsafe {
                std::slice::from_raw_parts_mut(regs, std::mem::size_of::<pkbpf_hooks::PtRegs>())
            };
            let mut hook = HookCtx {
                func_ip,
                override_return: None,
            };
            if prog.call_hooked(ctx, &mut hook).is_ok() {
                hits.fetch_add(1, Ordering::Relaxed);
            }
        });
        let target =
            ProbeTarget::parse(&format!("{}:{row}", lib.display())).map_err(|e| error_chain(&e))?;
        // SAFETY: the target is a function entry in the library we built and
        // keep loaded for the life of the process (never dlclosed).
        let link =
            unsafe { attach_target(&target, probe_kind, handler, &AttachOptions::default()) }
                .map_err(|e| format!("attach {prog_name} to {row}: {}", error_chain(&e)))?;
        self.links.push(link);
        self.hits.entry(row.to_string()).or_default().push(counter);
        Ok(())
    }
}

/// Loads `bench_syscall.bpf.o` and attaches its `sys_exit_write` program
/// to this process's system calls (this thread stays untraced until the
/// timed loop).
fn attach_syscall_row(rt: &Runtime, dir: &Path) -> Result<pkbpf::runtime::SyscallLink, String> {
    let path = dir.join("bench_syscall.bpf.o");
    let obj = rt
        .load_file(&path)
        .map_err(|e| format!("pkbpf refused {}: {}", path.display(), error_chain(&e)))?;
    Arc::new(obj)
        .attach_syscall("bench_sys_exit_write")
        .map_err(|e| format!("attach bench_sys_exit_write: {}", error_chain(&e)))
}

/// `n` one-byte writes to `/dev/null` with this thread traced; ns per call.
fn time_syscall_row(link: &pkbpf::runtime::SyscallLink, n: u64) -> Result<f64, BenchError> {
    let sigsys = std::env::var(SYSCALL_PATH_ENV).is_ok_and(|v| v == "sigsys");
    // SAFETY: opening /dev/null with a NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY) };
    if fd < 0 {
        return Err(fail("open /dev/null failed"));
    }
    let byte = b'x';
    let write = |fd: i32| -> isize {
        if sigsys {
            // SAFETY: a one-byte write from a live local.
            unsafe { libc::syscall(libc::SYS_write, fd, &byte as *const u8, 1usize) as isize }
        } else {
            // SAFETY: as above.
            unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) }
        }
    };
    pkbpf::runtime::trace_current_thread(true);
    for _ in 0..WARMUP.min(n) {
        write(fd);
    }
    let before = link.hits();
    let start = Instant::now();
    let mut bad = 0u64;
    for _ in 0..n {
        if write(fd) != 1 {
            bad += 1;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / n.max(1) as f64;
    let fired = link.hits() - before;
    pkbpf::runtime::trace_current_thread(false);
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    if bad > 0 {
        return Err(fail(format!("{bad} of {n} writes to /dev/null failed")));
    }
    if fired < n {
        return Err(fail(format!(
            "{SYSCALL_ROW}: the pkbpf program ran {fired} times for {n} writes \
             (was the timed loop run on the thread that attached?)"
        )));
    }
    Ok(ns)
}

/// The rows a kernel program name belongs to.
fn rows_of(prog: &str) -> Vec<String> {
    TARGET_FUNCTIONS
        .iter()
        .filter(|r| kernel_programs(r).iter().any(|p| p == prog))
        .map(|r| r.to_string())
        .collect()
}

impl Environment for PkbpfInProcess {
    fn name(&self) -> &'static str {
        match self.sandbox {
            PkbpfSandbox::None => "pkbpf-none",
            PkbpfSandbox::Mpk => "pkbpf-mpk",
        }
    }

    fn rows(&self) -> Vec<String> {
        target_rows()
    }

    fn prepare(&mut self, setup: &Setup) -> Readiness {
        if self.sandbox == PkbpfSandbox::Mpk {
            if let Some(reason) = mpk_unavailable_reason() {
                return Readiness::Unavailable(reason);
            }
        }
        match self.setup(setup) {
            Ok(()) => Readiness::Ready,
            Err(e) => Readiness::Skipped(format!("pkbpf rows: {}", error_chain(&e))),
        }
    }

    fn run_once(&mut self, setup: &Setup) -> Result<BTreeMap<String, Cell>, BenchError> {
        let n = setup.iterations;
        let mut buffer = *b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\0";
        let mut cells = BTreeMap::new();
        let mut sink = 0u64;
        for row in TARGET_FUNCTIONS {
            if let Some(why) = self.broken.get(row) {
                cells.insert(row.to_string(), Cell::NotRun(why.clone()));
                continue;
            }
            let f = self.funcs[row];
            let counters = self.hits.get(row).cloned().unwrap_or_default();
            // Warm-up (first-hit costs: the hook's per-thread state, first
            // JIT entry, page faults), not timed.
            for i in 0..WARMUP.min(n) {
                // SAFETY: as in the timed loop below.
                sink = sink.wrapping_add(unsafe { f(buffer.as_mut_ptr(), (i % 4) as i32, i) });
            }
            let before: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            let start = Instant::now();
            for i in 0..n {
                // SAFETY: `f` is `return a[b] + c` with b in 0..4 and `buffer`
                // 64 bytes (the probes may write its first 8).
                sink = sink.wrapping_add(unsafe { f(buffer.as_mut_ptr(), (i % 4) as i32, i) });
            }
            let ns = start.elapsed().as_nanos() as f64 / n.max(1) as f64;
            for (c, b) in counters.iter().zip(before) {
                let fired = c.load(Ordering::Relaxed) - b;
                if fired < n {
                    return Err(fail(format!(
                        "{row}: a pkbpf probe ran {fired} times (successfully) for {n} calls"
                    )));
                }
            }
            cells.insert(row.to_string(), Cell::Ns(ns));
        }
        std::hint::black_box(sink);
        let syscall_cell = match &self.syscall {
            None => Cell::NotRun(SYSCALL_PENDING.into()),
            Some(Err(why)) => Cell::NotRun(why.clone()),
            Some(Ok(link)) => Cell::Ns(time_syscall_row(link, n)?),
        };
        cells.insert(SYSCALL_ROW.to_string(), syscall_cell);
        Ok(cells)
    }

    fn finish(&mut self) {
        // Detach before the next environment runs the victim: its probes
        // must not fire there. Handlers may outlive this (the objects are
        // leaked for that), the library stays loaded.
        self.links.clear();
        self.syscall = None;
    }
}
