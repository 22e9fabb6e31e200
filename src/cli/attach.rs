//! `pkbpf attach PID [--session NAME]`: injects the agent into a running
//! process and connects it to a running `pkbpf load`.
//!
//! How: `PTRACE_SEIZE` + `PTRACE_INTERRUPT` stop the process's main thread;
//! its registers are saved; `dlopen` is found among the target's mapped
//! libraries (`libc.so.6` exports it since glibc 2.34, `libdl.so.2` before)
//! from `/proc/PID/maps` and the library's ELF symbol table; the agent's
//! path and the session's description are written onto the thread's stack,
//! below the red zone; the thread is made to call `dlopen(agent,
//! RTLD_NOW)` with a return address of 0, so the call ends in a SIGSEGV
//! at address 0 that the tracer catches (and never delivers). The agent's
//! constructor does nothing without `PKBPF_AGENT_FD` in the environment;
//! a second call, to the agent's exported
//! `pkbpf_agent_attach(const char *session)`, hands it the session
//! description: it connects to the loader's socket and loads and attaches
//! the object as the preload agent does. Then the stack bytes and every
//! register are restored and the process is detached.
//!
//! A thread stopped inside a blocking system call (`read`, `poll`, ...)
//! was interrupted with `-ERESTARTSYS` (or a sibling code): the restored
//! registers restart the call (instruction pointer back over the 2-byte
//! `syscall`, `rax` = the call number), so the process never sees the
//! interruption. A thread stopped in user code inside the C library or
//! the dynamic loader (say halfway through `malloc`) is let run on until it
//! is stopped elsewhere: `dlopen` there would work on half-updated heap or
//! loader state. The floating-point and vector registers (the XSAVE area)
//! are saved and restored with the others. Limits: a thread blocked in a
//! system call made while holding a lock `dlopen` needs (e.g. an `mmap`
//! inside `malloc`) would deadlock, as with any injector; the injection
//! runs on the main thread (or the first live one); an `exec` after the
//! attach drops the agent (the environment does not carry it).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use pkbpf::session;
use pkbpf_hooks::resolve::{parse_maps, ElfIndex, MapEntry};

use super::run::{agent_path, AGENT_LIB};

/// Arguments of `pkbpf attach`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The process to inject the agent into.
    pub pid: i32,
    /// The session (`pkbpf load --name`); needed when several run.
    #[arg(long)]
    pub session: Option<String>,
}

/// The agent's entry point for an injected start.
const ATTACH_FN: &str = "pkbpf_agent_attach";
/// Where injected calls return to: an address that faults.
const RETURN_ADDR: u64 = 0;

/// Runs the subcommand.
pub fn run(a: Args) -> Result<i32> {
    let pid = a.pid;
    if pid <= 0 || process_maps(pid).is_err() {
        bail!("no process with pid {pid}");
    }
    if pid as u32 == std::process::id() {
        bail!("pkbpf cannot attach to itself");
    }
    let s = session::find_session(&session::runtime_dir(), a.session.as_deref())?;
    let agent = std::fs::canonicalize(agent_path()?).context("locating the agent library")?;
    // The maps as a live thread sees them (a zombie main thread has none).
    let tid = live_thread(pid)?;
    let maps = process_maps(tid)?;
    // An agent already mapped (preloaded without a loader, or injected
    // before) is only started: it answers -3 when it runs already.
    let loaded: Option<std::path::PathBuf> = maps
        .iter()
        .filter_map(|m| m.path.as_deref())
        .find(|p| Path::new(p).file_name().is_some_and(|f| f == AGENT_LIB))
        .map(std::path::PathBuf::from);
    let dlopen = find_function(&maps, "dlopen").with_context(|| {
        format!(
            "pid {pid} maps no libc.so or libdl.so exporting dlopen (statically linked?): the agent cannot be injected"
        )
    })?;
    let dlerror = find_function(&maps, "dlerror");

    // Ctrl-C halfway would leave the target running injected code with
    // nobody to put its registers back: hold the usual stop signals until
    // it is restored.
    stop_signals(libc::SIG_BLOCK);
    let mut t = Tracee::seize(tid)?;
    if let Err(e) = t.reach_safe_point(&libc_code(&maps)) {
        let _ = t.restore();
        return Err(e);
    }
    let result = inject(
        &mut t,
        &agent,
        loaded.as_deref(),
        dlopen,
        dlerror,
        &s.encode(),
    );
    let restored = t.restore();
    stop_signals(libc::SIG_UNBLOCK);
    let code = result?;
    restored?;
    match code {
        0 => {
            eprintln!("pkbpf: attached to pid {pid} (session {})", s.name);
            Ok(0)
        }
        1 => {
            eprintln!(
                "pkbpf: error: the agent in pid {pid} reported errors (see the loader of session {})",
                s.name
            );
            Ok(1)
        }
        -2 => bail!(
            "the agent in pid {pid} could not connect to {}",
            s.socket.display()
        ),
        -3 => bail!("the pkbpf agent in pid {pid} is already running (a pkbpf session traces it)"),
        c => bail!("the agent in pid {pid} refused the session description (code {c})"),
    }
}

/// Blocks or unblocks (`how`) SIGINT, SIGTERM, SIGHUP and SIGQUIT.
fn stop_signals(how: libc::c_int) {
    // SAFETY: the set is initialised by sigemptyset before use; changing
    // this thread's mask has no memory preconditions.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Loads the agent in the stopped process (unless `loaded` names the copy
/// it maps already) and starts it; the agent's
/// answer (0: attached, 1: errors sent to the loader, < 0: not started).
fn inject(
    t: &mut Tracee,
    agent: &Path,
    loaded: Option<&Path>,
    dlopen: u64,
    dlerror: Option<u64>,
    session_text: &str,
) -> Result<i64> {
    let path = agent.to_string_lossy();
    let mut data = Vec::new();
    data.extend_from_slice(path.as_bytes());
    data.push(0);
    let text_off = data.len() as u64;
    data.extend_from_slice(session_text.as_bytes());
    data.push(0);
    let base = t.write_scratch(&data)?;
    if let Some(lib) = loaded {
        let attach = function_in(&process_maps(t.pid)?, lib, ATTACH_FN)
            .with_context(|| format!("finding {ATTACH_FN} of the agent in pid {}", t.pid))?;
        return Ok(t.call(attach, &[base + text_off])? as i32 as i64);
    }
    let handle = t.call(dlopen, &[base, libc::RTLD_NOW as u64])?;
    if handle == 0 {
        let why = match dlerror {
            Some(f) => {
                let msg = t.call(f, &[])?;
                t.read_cstr(msg)
                    .unwrap_or_else(|| "(no dlerror message)".into())
            }
            None => "(dlerror not found)".into(),
        };
        bail!("dlopen({}) failed in pid {}: {why}", agent.display(), t.pid);
    }
    let maps = process_maps(t.pid)?;
    let attach = function_in(&maps, agent, ATTACH_FN)
        .with_context(|| format!("finding {ATTACH_FN} of the agent in pid {}", t.pid))?;
    Ok(t.call(attach, &[base + text_off])? as i32 as i64)
}

/// The thread to run the injected calls on: the main thread, or the first
/// live one when the main thread has exited (`pthread_exit` in `main`
/// leaves it a zombie that never stops for a tracer).
fn live_thread(pid: i32) -> Result<i32> {
    let zombie = |tid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = &s[s.rfind(')')? + 1..];
                rest.split_ascii_whitespace().next().map(|st| st == "Z")
            })
            .unwrap_or(true)
    };
    if !zombie(pid) {
        return Ok(pid);
    }
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("listing the threads of pid {pid}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids.into_iter()
        .find(|&t| !zombie(t))
        .with_context(|| format!("pid {pid} has no live thread"))
}

/// The mappings of thread (or process) `pid`.
fn process_maps(pid: i32) -> Result<Vec<MapEntry>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("reading /proc/{pid}/maps"))?;
    Ok(parse_maps(&text))
}

/// The address of function `name` of the target's C library (or libdl,
/// which exported `dlopen` before glibc 2.34). Only shared libraries count:
/// a static executable may hold a `dlopen` of its own, which cannot load a
/// shared library into it.
fn find_function(maps: &[MapEntry], name: &str) -> Option<u64> {
    let mut files: Vec<&str> = Vec::new();
    for m in maps {
        if let Some(p) = m.path.as_deref() {
            let f = Path::new(p)
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default();
            let lib = f.starts_with("libc.so") || f.starts_with("libdl.so");
            if lib && p.starts_with('/') && !files.contains(&p) {
                files.push(p);
            }
        }
    }
    files
        .into_iter()
        .find_map(|p| function_in(maps, Path::new(p), name).ok())
}

/// The runtime address of function `name` of the mapped file `binary`.
fn function_in(maps: &[MapEntry], binary: &Path, name: &str) -> Result<u64> {
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let index = ElfIndex::parse(binary, &bytes)?;
    let spec = pkbpf_hooks::SymbolSpec::Symbol {
        name: name.to_string(),
        offset: 0,
    };
    let r = pkbpf_hooks::resolve::resolve_with(binary, &index, &spec, maps)?;
    Ok(r.address as u64)
}

/// A ptrace-stopped process (its main thread), restored on [`restore`].
struct Tracee {
    pid: i32,
    saved: libc::user_regs_struct,
    /// The saved x87/SSE/AVX state: (regset note type, bytes). The injected
    /// calls clobber vector registers the interrupted code may have live.
    saved_fp: Option<(u64, Vec<u8>)>,
    mem: File,
    /// Stack bytes overwritten: (address, original bytes).
    scratch: Option<(u64, Vec<u8>)>,
    /// The stack pointer injected calls start with.
    call_sp: u64,
    detached: bool,
}

fn ptrace(req: libc::c_uint, pid: i32, addr: u64, data: u64) -> std::io::Result<libc::c_long> {
    // SAFETY: the requests used here either take no pointer, or one to a
    // live `user_regs_struct` or to a live `iovec` over a buffer of the
    // length it states, passed by the caller in `data`.
    let r = unsafe {
        libc::ptrace(
            req,
            pid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Why a ptrace attach was refused, with what to do.
fn explain_eperm(pid: i32) -> String {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .map(|s| s.trim().to_string());
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    match scope.as_deref() {
        Some("3") => format!(
            "ptrace of pid {pid} refused: kernel.yama.ptrace_scope is 3 (no attaching at all until reboot)"
        ),
        Some(s @ ("1" | "2")) if !root => format!(
            "ptrace of pid {pid} refused: kernel.yama.ptrace_scope is {s}; run pkbpf attach as root (or with CAP_SYS_PTRACE)"
        ),
        _ if !root => format!(
            "ptrace of pid {pid} refused: it belongs to another user or is not dumpable; run pkbpf attach as root"
        ),
        _ => format!("ptrace of pid {pid} refused (already traced, or a seccomp/LSM policy forbids it)"),
    }
}

impl Tracee {
    fn seize(pid: i32) -> Result<Tracee> {
        if let Err(e) = ptrace(libc::PTRACE_SEIZE, pid, 0, 0) {
            if e.raw_os_error() == Some(libc::EPERM) {
                bail!("{}", explain_eperm(pid));
            }
            return Err(e).with_context(|| format!("PTRACE_SEIZE of pid {pid}"));
        }
        let mem = File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"));
        let mut t = Tracee {
            pid,
            // SAFETY: plain integers; all-zero is valid (replaced below).
            saved: unsafe { std::mem::zeroed() },
            saved_fp: None,
            mem: match mem {
                Ok(m) => m,
                Err(e) => {
                    let _ = ptrace(libc::PTRACE_DETACH, pid, 0, 0);
                    return Err(e).with_context(|| format!("opening /proc/{pid}/mem"));
                }
            },
            scratch: None,
            call_sp: 0,
            detached: false,
        };
        t.interrupt()?;
        Ok(t)
    }

    /// Stops the running thread with `PTRACE_INTERRUPT` (signals arriving
    /// first go through to it) and saves its registers.
    fn interrupt(&mut self) -> Result<()> {
        ptrace(libc::PTRACE_INTERRUPT, self.pid, 0, 0).context("PTRACE_INTERRUPT")?;
        loop {
            let (sig, event) = self.wait()?;
            if event == libc::PTRACE_EVENT_STOP {
                break;
            }
            ptrace(libc::PTRACE_CONT, self.pid, 0, sig as u64).context("PTRACE_CONT")?;
        }
        self.saved = self.regs()?;
        self.saved_fp = self.fp_state();
        Ok(())
    }

    /// Lets the thread run on until it is stopped outside `unsafe_code`
    /// (the C library and the dynamic loader, whose state `dlopen` uses:
    /// stopped in the middle of `malloc`, the thread would corrupt its own
    /// heap) or inside a system call. The thread runs a little (a
    /// millisecond, then longer) between looks, so it makes progress; a
    /// thread that never leaves the C library is an error, the process
    /// untouched.
    fn reach_safe_point(&mut self, unsafe_code: &[(u64, u64)]) -> Result<()> {
        let mut pause = std::time::Duration::from_millis(1);
        for _ in 0..200 {
            if at_safe_point(&self.saved, unsafe_code) {
                return Ok(());
            }
            ptrace(libc::PTRACE_CONT, self.pid, 0, 0).context("PTRACE_CONT")?;
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(20));
            self.interrupt()?;
        }
        bail!(
            "pid {} stayed inside the C library or the dynamic loader, where dlopen cannot run safely; try again",
            self.pid
        )
    }

    /// Waits for the next stop: (signal, ptrace event).
    fn wait(&mut self) -> Result<(i32, i32)> {
        let mut st = 0;
        loop {
            // SAFETY: `st` is a live int for waitpid to fill.
            let r = unsafe { libc::waitpid(self.pid, &mut st, libc::__WALL) };
            if r >= 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("waitpid");
            }
        }
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            self.detached = true;
            bail!("pid {} ended while pkbpf was injecting the agent", self.pid);
        }
        Ok((libc::WSTOPSIG(st), st >> 16))
    }

    fn regs(&self) -> Result<libc::user_regs_struct> {
        // SAFETY: plain integers; all-zero is valid, and GETREGS fills it.
        let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        ptrace(
            libc::PTRACE_GETREGS,
            self.pid,
            0,
            &mut r as *mut libc::user_regs_struct as u64,
        )
        .context("PTRACE_GETREGS")?;
        Ok(r)
    }

    /// The floating-point and vector state: the whole XSAVE area where the
    /// kernel offers it, else the x87/SSE area.
    fn fp_state(&self) -> Option<(u64, Vec<u8>)> {
        const NT_X86_XSTATE: u64 = 0x202;
        for note in [NT_X86_XSTATE, libc::NT_PRFPREG as u64] {
            let mut buf = vec![0u8; 64 * 1024];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let got = ptrace(
                libc::PTRACE_GETREGSET,
                self.pid,
                note,
                &mut iov as *mut libc::iovec as u64,
            );
            if got.is_ok() {
                buf.truncate(iov.iov_len);
                return Some((note, buf));
            }
        }
        None
    }

    fn set_fp_state(&self, note: u64, state: &[u8]) -> Result<()> {
        let mut iov = libc::iovec {
            iov_base: state.as_ptr() as *mut libc::c_void,
            iov_len: state.len(),
        };
        ptrace(
            libc::PTRACE_SETREGSET,
            self.pid,
            note,
            &mut iov as *mut libc::iovec as u64,
        )
        .context("PTRACE_SETREGSET (floating-point state)")?;
        Ok(())
    }

    fn set_regs(&self, r: &libc::user_regs_struct) -> Result<()> {
        ptrace(
            libc::PTRACE_SETREGS,
            self.pid,
            0,
            r as *const libc::user_regs_struct as u64,
        )
        .context("PTRACE_SETREGS")?;
        Ok(())
    }

    /// Writes `data` on the stack below the red zone (saving what was
    /// there) and sets the stack pointer for calls below it; returns the
    /// data's address.
    fn write_scratch(&mut self, data: &[u8]) -> Result<u64> {
        // 128 bytes of red zone, and a margin.
        let top = self.saved.rsp.wrapping_sub(128 + 256) & !15;
        let start = top.wrapping_sub(data.len() as u64) & !15;
        // The return address sits just below: rsp % 16 == 8 at entry, as
        // after a `call`.
        let sp = start - 8;
        let len = (top - sp) as usize;
        let mut old = vec![0u8; len];
        self.mem
            .read_exact_at(&mut old, sp)
            .with_context(|| format!("reading the stack of pid {}", self.pid))?;
        self.scratch = Some((sp, old));
        let mut new = RETURN_ADDR.to_ne_bytes().to_vec();
        new.resize(len, 0);
        new[8..8 + data.len()].copy_from_slice(data);
        self.mem
            .write_all_at(&new, sp)
            .with_context(|| format!("writing the stack of pid {}", self.pid))?;
        self.call_sp = sp;
        Ok(start)
    }

    /// Calls `func(args...)` in the stopped thread and returns `rax`.
    fn call(&mut self, func: u64, args: &[u64]) -> Result<u64> {
        let mut r = self.saved;
        r.rip = func;
        r.rsp = self.call_sp;
        r.rax = 0;
        // Not in a system call: the kernel must not "restart" anything
        // over the injected call.
        r.orig_rax = u64::MAX;
        let slots = [
            &mut r.rdi, &mut r.rsi, &mut r.rdx, &mut r.rcx, &mut r.r8, &mut r.r9,
        ];
        for (slot, a) in slots.into_iter().zip(args) {
            *slot = *a;
        }
        // (Rewritten for each call: the callee owns its frame and may have
        // reused the slot.)
        self.mem
            .write_all_at(&RETURN_ADDR.to_ne_bytes(), self.call_sp)
            .context("writing the return address")?;
        self.set_regs(&r)?;
        ptrace(libc::PTRACE_CONT, self.pid, 0, 0).context("PTRACE_CONT")?;
        loop {
            let (sig, event) = self.wait()?;
            if event == libc::PTRACE_EVENT_STOP {
                // A group stop or a stray interrupt: keep going.
                ptrace(libc::PTRACE_CONT, self.pid, 0, 0).context("PTRACE_CONT")?;
                continue;
            }
            if sig == libc::SIGSEGV {
                let now = self.regs()?;
                if now.rip == RETURN_ADDR {
                    return Ok(now.rax);
                }
                bail!(
                    "the injected call crashed in pid {} (SIGSEGV at {:#x})",
                    self.pid,
                    now.rip
                );
            }
            // Anything else is the target's: deliver it.
            ptrace(libc::PTRACE_CONT, self.pid, 0, sig as u64).context("PTRACE_CONT")?;
        }
    }

    /// A NUL-terminated string of the target (at most 4 KiB).
    fn read_cstr(&self, addr: u64) -> Option<String> {
        if addr == 0 {
            return None;
        }
        let mut buf = vec![0u8; 4096];
        let n = self.mem.read_at(&mut buf, addr).ok()?;
        let end = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
        Some(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    /// Puts back the stack bytes and the registers (restarting an
    /// interrupted system call) and detaches.
    fn restore(&mut self) -> Result<()> {
        if self.detached {
            return Ok(());
        }
        self.detached = true;
        let mut first_err = None;
        if let Some((addr, old)) = self.scratch.take() {
            if let Err(e) = self.mem.write_all_at(&old, addr) {
                first_err = Some(anyhow::Error::new(e).context("restoring the stack"));
            }
        }
        if let Some((note, fp)) = self.saved_fp.take() {
            if let Err(e) = self.set_fp_state(note, &fp) {
                first_err.get_or_insert(e);
            }
        }
        let r = restart_regs(self.saved);
        if let Err(e) = self.set_regs(&r) {
            first_err.get_or_insert(e);
        }
        if let Err(e) = ptrace(libc::PTRACE_DETACH, self.pid, 0, 0) {
            first_err.get_or_insert(anyhow::Error::new(e).context("PTRACE_DETACH"));
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!("pkbpf: error: restoring pid {}: {e:#}", self.pid);
        }
    }
}

/// The executable ranges of the C library and the dynamic loader.
fn libc_code(maps: &[MapEntry]) -> Vec<(u64, u64)> {
    maps.iter()
        .filter(|m| m.executable())
        .filter(|m| {
            m.path.as_deref().is_some_and(|p| {
                let f = Path::new(p)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                f.starts_with("libc.so") || f.starts_with("ld-linux") || f.starts_with("libdl.so")
            })
        })
        .map(|m| (m.start as u64, m.end as u64))
        .collect()
}

/// Whether a thread stopped with registers `r` may run `dlopen`: inside a
/// system call (`orig_rax` is its number), or in code outside
/// `unsafe_code`.
fn at_safe_point(r: &libc::user_regs_struct, unsafe_code: &[(u64, u64)]) -> bool {
    (r.orig_rax as i64) >= 0 || !unsafe_code.iter().any(|&(s, e)| (s..e).contains(&r.rip))
}

/// Registers to resume with: `saved`, but when the thread was stopped
/// inside a system call that the kernel would restart (`rax` one of
/// -ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND, -ERESTART_RESTARTBLOCK
/// with `orig_rax` the call), set up the restart by hand: back over the
/// 2-byte `syscall` instruction with `rax` = the call (or
/// `restart_syscall`), and `orig_rax` = -1 so the kernel does not do it a
/// second time.
fn restart_regs(saved: libc::user_regs_struct) -> libc::user_regs_struct {
    const ERESTARTSYS: i64 = 512;
    const ERESTARTNOINTR: i64 = 513;
    const ERESTARTNOHAND: i64 = 514;
    const ERESTART_RESTARTBLOCK: i64 = 516;
    let mut r = saved;
    if (saved.orig_rax as i64) < 0 {
        return r;
    }
    match -(saved.rax as i64) {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
            r.rax = saved.orig_rax;
            r.rip = saved.rip.wrapping_sub(2);
            r.orig_rax = u64::MAX;
        }
        ERESTART_RESTARTBLOCK => {
            r.rax = libc::SYS_restart_syscall as u64;
            r.rip = saved.rip.wrapping_sub(2);
            r.orig_rax = u64::MAX;
        }
        _ => {}
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlopen_resolves_where_the_dynamic_linker_put_it() {
        let maps = process_maps(std::process::id() as i32).unwrap();
        for name in ["dlopen", "dlerror"] {
            let c = std::ffi::CString::new(name).unwrap();
            // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name.
            let want = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) } as u64;
            assert_ne!(want, 0);
            assert_eq!(find_function(&maps, name), Some(want), "{name}");
        }
        // Only the C library (or libdl) counts.
        assert_eq!(find_function(&maps, "no_such_function_here"), None);
        let no_libc: Vec<MapEntry> = maps
            .iter()
            .filter(|m| {
                !m.path
                    .as_deref()
                    .is_some_and(|p| p.contains("libc.so") || p.contains("libdl.so"))
            })
            .cloned()
            .collect();
        assert_eq!(find_function(&no_libc, "dlopen"), None);
    }

    #[test]
    fn safe_points_are_syscalls_or_code_outside_libc() {
        let maps = process_maps(std::process::id() as i32).unwrap();
        let code = libc_code(&maps);
        assert!(!code.is_empty());
        // SAFETY: plain integers; all-zero is valid.
        let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        r.orig_rax = u64::MAX;
        r.rip = libc::malloc as *const () as usize as u64;
        assert!(!at_safe_point(&r, &code), "in malloc");
        r.orig_rax = 0;
        assert!(at_safe_point(&r, &code), "in read()");
        r.orig_rax = u64::MAX;
        r.rip = safe_points_are_syscalls_or_code_outside_libc as *const () as usize as u64;
        assert!(at_safe_point(&r, &code), "in our own code");
    }

    #[test]
    fn interrupted_syscalls_restart() {
        // SAFETY: plain integers; all-zero is valid.
        let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        r.rip = 0x1002;
        r.orig_rax = 0; // read
        r.rax = (-512i64) as u64;
        let back = restart_regs(r);
        assert_eq!((back.rip, back.rax, back.orig_rax), (0x1000, 0, u64::MAX));
        r.rax = (-516i64) as u64;
        let back = restart_regs(r);
        assert_eq!(back.rax, libc::SYS_restart_syscall as u64);
        // A finished call (or none) is left alone.
        r.rax = 5;
        assert_eq!(restart_regs(r).rip, 0x1002);
        r.orig_rax = u64::MAX;
        r.rax = (-512i64) as u64;
        assert_eq!(restart_regs(r).rip, 0x1002);
    }
}
