//! In-process checks of the dispatch path: counts, results, threads,
//! fork, signals and the application's own SIGSYS handler. Everything runs
//! in one test (the handler is process-wide), on a thread of its own.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::*;

static ENTER_GETPPID: AtomicU64 = AtomicU64::new(0);
static EXIT_GETPPID: AtomicU64 = AtomicU64::new(0);
static LAST_READ_RET: AtomicI64 = AtomicI64::new(0);
static ENTER_ANY: AtomicU64 = AtomicU64::new(0);
static APP_SIGSYS_HITS: AtomicU64 = AtomicU64::new(0);
static USR1_HITS: AtomicU64 = AtomicU64::new(0);

fn handler(frame: &mut SyscallFrame, phase: SyscallPhase) {
    let getppid = libc::SYS_getppid as u64;
    match phase {
        SyscallPhase::Enter => {
            ENTER_ANY.fetch_add(1, Ordering::Relaxed);
            assert_eq!(frame.regs.orig_ax, frame.nr);
            if frame.nr == getppid {
                ENTER_GETPPID.fetch_add(1, Ordering::Relaxed);
            }
        }
        SyscallPhase::Exit => {
            if frame.nr == getppid {
                EXIT_GETPPID.fetch_add(1, Ordering::Relaxed);
            }
            if frame.nr == libc::SYS_read as u64 {
                LAST_READ_RET.store(frame.ret, Ordering::Relaxed);
            }
        }
    }
}

extern "C" fn on_usr1(_: libc::c_int) {
    // A system call inside the application's handler: traced, and the
    // handler's rt_sigreturn is emulated.
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() };
    USR1_HITS.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn on_app_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut c_void) {
    // SAFETY: a valid siginfo from the kernel (through our chain).
    assert_eq!(unsafe { (*info).si_signo }, libc::SIGSYS);
    APP_SIGSYS_HITS.fetch_add(1, Ordering::Relaxed);
}

fn getppid_n(n: usize) -> i32 {
    let mut last = 0;
    for _ in 0..n {
        // SAFETY: getppid has no preconditions.
        last = unsafe { libc::syscall(libc::SYS_getppid) } as i32;
    }
    last
}

fn run_all() {
    // SAFETY: getppid has no preconditions.
    let real_ppid = unsafe { libc::getppid() };
    install(SyscallHandler::from_fn(handler)).expect("install");
    trace_current_thread(true);

    // Counts and results on this thread.
    let before = ENTER_GETPPID.load(Ordering::Relaxed);
    let got = getppid_n(10);
    trace_current_thread(false);
    assert_eq!(got, real_ppid);
    assert_eq!(ENTER_GETPPID.load(Ordering::Relaxed) - before, 10);
    assert_eq!(EXIT_GETPPID.load(Ordering::Relaxed) - before, 10);

    // Exit values: read() of 5 bytes from a pipe.
    let mut fds = [0; 2];
    // SAFETY: valid out-array for pipe.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: writing 5 bytes from a static buffer to our pipe.
    unsafe { libc::write(fds[1], b"hello".as_ptr().cast(), 5) };
    let mut buf = [0u8; 16];
    trace_current_thread(true);
    // SAFETY: reading into a local buffer of 16 bytes.
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
    trace_current_thread(false);
    assert_eq!(n, 5);
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(LAST_READ_RET.load(Ordering::Relaxed), 5);

    // Threads created while traced are traced.
    trace_current_thread(true);
    let before = ENTER_GETPPID.load(Ordering::Relaxed);
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| (current_thread_enabled(), getppid_n(25))))
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    trace_current_thread(false);
    for (enabled, ppid) in results {
        assert!(enabled, "new thread has SUD on");
        assert_eq!(ppid, real_ppid);
    }
    assert_eq!(ENTER_GETPPID.load(Ordering::Relaxed) - before, 100);

    // Signals: the application's handler runs, and its system calls are
    // traced; its rt_sigreturn resumes the interrupted code.
    // SAFETY: installing a plain handler for SIGUSR1.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    trace_current_thread(true);
    let before = ENTER_GETPPID.load(Ordering::Relaxed);
    for _ in 0..20 {
        // SAFETY: raising a handled signal on this thread.
        unsafe { libc::raise(libc::SIGUSR1) };
    }
    trace_current_thread(false);
    assert_eq!(USR1_HITS.load(Ordering::Relaxed), 20);
    assert_eq!(ENTER_GETPPID.load(Ordering::Relaxed) - before, 20);

    // The application's own SIGSYS handler: installed (emulated) and called
    // for a SIGSYS that is not a dispatch.
    trace_current_thread(true);
    // SAFETY: a zeroed sigaction filled in with an SA_SIGINFO handler.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_app_sigsys as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO;
        assert_eq!(libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()), 0);
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGSYS, std::ptr::null(), &mut old), 0);
        assert_eq!(old.sa_sigaction, on_app_sigsys as *const () as usize);
        libc::raise(libc::SIGSYS);
    }
    let after_raise = getppid_n(1);
    trace_current_thread(false);
    assert_eq!(after_raise, real_ppid, "dispatch still works");
    assert_eq!(APP_SIGSYS_HITS.load(Ordering::Relaxed), 1);

    // A mask the application sets while traced stays set (the handler's
    // rt_sigreturn restores the mask the call left), and SIGSYS is never
    // blocked.
    trace_current_thread(true);
    // SAFETY: plain signal-set manipulation on local sets.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::sigaddset(&mut set, libc::SIGSYS);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
    }
    trace_current_thread(false);
    // SAFETY: as above.
    unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur),
            0
        );
        assert_eq!(
            libc::sigismember(&cur, libc::SIGUSR2),
            1,
            "SIGUSR2 stays blocked"
        );
        assert_eq!(
            libc::sigismember(&cur, libc::SIGSYS),
            0,
            "SIGSYS never blocked"
        );
    }

    // fork: the child is traced too (it counts its own calls in its copy).
    trace_current_thread(true);
    // SAFETY: the child only makes system calls and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let before = ENTER_GETPPID.load(Ordering::Relaxed);
        let ok = current_thread_enabled() && getppid_n(7) > 0;
        let n = ENTER_GETPPID.load(Ordering::Relaxed) - before;
        // SAFETY: leaving the child at once.
        unsafe { libc::_exit(if ok && n == 7 { 0 } else { 1 }) };
    }
    trace_current_thread(false);
    let mut status = 0;
    // SAFETY: waiting for our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );

    // vfork + exec (the child is a copy; the parent waits).
    trace_current_thread(true);
    let st = std::process::Command::new("/bin/true").status();
    trace_current_thread(false);
    assert!(st.expect("spawn /bin/true").success());

    // The fast path: libc's `mov eax, NR; syscall` sites rewritten. getppid
    // is one (glibc's getppid is exactly that pair).
    let stats = rewrite_libc().expect("rewrite libc");
    assert!(stats.rewritten > 50, "{stats:?}");
    assert!(rewritten_sites() >= stats.rewritten);
    trace_current_thread(true);
    let before = ENTER_GETPPID.load(Ordering::Relaxed);
    let before_exit = EXIT_GETPPID.load(Ordering::Relaxed);
    let mut last = 0;
    for _ in 0..10 {
        // SAFETY: getppid has no preconditions.
        last = unsafe { libc::getppid() };
    }
    trace_current_thread(false);
    assert_eq!(last, real_ppid);
    assert_eq!(ENTER_GETPPID.load(Ordering::Relaxed) - before, 10);
    assert_eq!(EXIT_GETPPID.load(Ordering::Relaxed) - before_exit, 10);
    // Untraced: the fast path only issues the call.
    let before = ENTER_GETPPID.load(Ordering::Relaxed);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getppid() }, real_ppid);
    assert_eq!(ENTER_GETPPID.load(Ordering::Relaxed), before);
    // Threads and signals still counted exactly with the fast path (the
    // application has handlers now, so the fast path masks signals).
    trace_current_thread(true);
    let before = ENTER_GETPPID.load(Ordering::Relaxed);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..25 {
                    // SAFETY: as above.
                    unsafe { libc::getppid() };
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for _ in 0..5 {
        // SAFETY: raising a handled signal on this thread.
        unsafe { libc::raise(libc::SIGUSR1) };
    }
    trace_current_thread(false);
    assert_eq!(ENTER_GETPPID.load(Ordering::Relaxed) - before, 105);

    // Interest: only getppid's entry reaches the handler, on both paths.
    let mut enter = Interest::NONE;
    enter.add(Some(libc::SYS_getppid as u64));
    set_interest(&enter, &Interest::NONE);
    let (before, before_exit, before_any) = (
        ENTER_GETPPID.load(Ordering::Relaxed),
        EXIT_GETPPID.load(Ordering::Relaxed),
        ENTER_ANY.load(Ordering::Relaxed),
    );
    trace_current_thread(true);
    // SAFETY: getppid/getpid have no preconditions.
    unsafe {
        libc::getppid();
        libc::syscall(libc::SYS_getppid);
        libc::getpid();
    }
    trace_current_thread(false);
    assert_eq!(ENTER_GETPPID.load(Ordering::Relaxed) - before, 2);
    assert_eq!(EXIT_GETPPID.load(Ordering::Relaxed), before_exit);
    assert_eq!(ENTER_ANY.load(Ordering::Relaxed) - before_any, 2);
    set_interest(&Interest::ALL, &Interest::ALL);

    uninstall();
}

#[test]
fn dispatch_end_to_end() {
    if !is_supported() {
        println!("skipped: dispatch_end_to_end: no Syscall User Dispatch in this kernel");
        return;
    }
    std::thread::spawn(run_all).join().expect("dispatch checks");
}
