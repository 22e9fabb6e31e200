//! The machine code that must sit inside Syscall User Dispatch's allowed
//! range: the raw system call used to re-issue an intercepted call, the
//! clone variant whose child starts on its own stack, and the `rt_sigreturn`
//! restorer of the SIGSYS handler. All of it lives in one section,
//! `.text.pkbpf_sud`, between `pkbpf_sud_start` and `pkbpf_sud_end`, so the
//! range given to the kernel covers these few instructions and nothing else.

use std::arch::global_asm;

/// Size of the block the parent writes below a clone child's stack top:
/// `mode`, 14 general registers, rflags, the return address.
pub(crate) const CHILD_BLOCK: usize = 17 * 8;

global_asm!(
    ".pushsection .text.pkbpf_sud,\"ax\",@progbits",
    ".balign 16",
    ".globl pkbpf_sud_start",
    ".hidden pkbpf_sud_start",
    "pkbpf_sud_start:",
    // i64 pkbpf_sud_raw(nr, a1, a2, a3, a4, a5, a6): the system call `nr`
    // with six arguments (the sixth on the stack), issued from this range.
    ".globl pkbpf_sud_raw",
    ".hidden pkbpf_sud_raw",
    "pkbpf_sud_raw:",
    "mov rax, rdi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rdx, rcx",
    "mov r10, r8",
    "mov r8, r9",
    "mov r9, [rsp + 8]",
    "syscall",
    "ret",
    // i64 pkbpf_sud_clone(nr, a1, ..., a6): clone/clone3 with a new child
    // stack. The parent returns like pkbpf_sud_raw. The child starts here on
    // its new stack, whose top holds the block the parent wrote (see
    // CHILD_BLOCK): it calls the setup function with `mode`, reloads the
    // application's registers, sets rax = 0 and returns to the instruction
    // after the application's own `syscall`.
    ".globl pkbpf_sud_clone",
    ".hidden pkbpf_sud_clone",
    "pkbpf_sud_clone:",
    "mov rax, rdi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rdx, rcx",
    "mov r10, r8",
    "mov r8, r9",
    "mov r9, [rsp + 8]",
    "syscall",
    "test rax, rax",
    "jnz 2f",
    "lea rbx, [rsp - {block}]",
    "mov rdi, [rbx]",
    "mov rsp, rbx",
    "and rsp, -16",
    "call {setup}",
    "lea rsp, [rbx + 8]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rcx",
    "pop rdx",
    "pop rsi",
    "pop rdi",
    "xor eax, eax",
    "popfq",
    "ret",
    "2:",
    "ret",
    // The SIGSYS handler's sa_restorer: rt_sigreturn from inside the range,
    // so the handler's own return is never dispatched.
    ".globl pkbpf_sud_restorer",
    ".hidden pkbpf_sud_restorer",
    "pkbpf_sud_restorer:",
    "mov eax, 15",
    "syscall",
    "ud2",
    ".globl pkbpf_sud_end",
    ".hidden pkbpf_sud_end",
    "pkbpf_sud_end:",
    ".popsection",
    block = const CHILD_BLOCK,
    setup = sym super::clone_child_setup,
);

extern "C" {
    pub(crate) static pkbpf_sud_start: u8;
    pub(crate) static pkbpf_sud_end: u8;
    pub(crate) fn pkbpf_sud_raw(
        nr: u64,
        a1: u64,
        a2: u64,
        a3: u64,
        a4: u64,
        a5: u64,
        a6: u64,
    ) -> i64;
    pub(crate) fn pkbpf_sud_clone(
        nr: u64,
        a1: u64,
        a2: u64,
        a3: u64,
        a4: u64,
        a5: u64,
        a6: u64,
    ) -> i64;
    pub(crate) fn pkbpf_sud_restorer();
}
