//! Faults that are not pkbpf's reach the handler installed before it.
//! (Its own binary: the handler chain is process-wide.)

mod common;

extern "C" fn host_handler(_sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    // SAFETY: _exit is async-signal-safe; 42 means "the host's handler ran
    // for the address we faulted on".
    unsafe { libc::_exit(if addr == 0x10 { 42 } else { 43 }) };
}

#[test]
fn foreign_faults_go_to_the_previous_handler() {
    let status = common::in_child(|| {
        // SAFETY: a zeroed sigaction is valid; the handler has the
        // SA_SIGINFO signature.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = host_handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        }
        pkbpf_sandbox::fault::install().expect("install");
        // Our handler is in place and still recovers its own faults.
        let mut b = [0u8; 1];
        assert!(pkbpf_sandbox::copy_from_user(&mut b, 0x10).is_err());
        // SAFETY: faults on purpose at 0x10, outside pkbpf's ranges.
        unsafe { std::ptr::read_volatile(0x10 as *const u8) };
        // SAFETY: not reached.
        unsafe { libc::_exit(3) };
    });
    assert_eq!(common::exit_code(status), Some(42), "status {status:#x}");
}
