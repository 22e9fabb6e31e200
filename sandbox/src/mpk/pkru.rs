//! The PKRU register: the only module that executes or emits `RDPKRU` and
//! `WRPKRU` (house rule 2).
//!
//! ```text
//!  bit: 31 30 29 28 ...  5  4  3  2  1  0
//!      WD15 AD15 ...   WD2 AD2 WD1 AD1 WD0 AD0
//! ```
//!
//! Two bits per key `k` (Intel SDM vol. 3A §4.6.2, "Protection Keys"):
//! bit `2k` is AD (access disable: no data reads or writes through pages
//! tagged `k`) and bit `2k + 1` is WD (write disable). Instruction fetches are
//! never checked. `RDPKRU` (`0F 01 EE`) reads it into EAX with ECX = 0 and
//! clobbers EDX; `WRPKRU` (`0F 01 EF`) writes EAX with ECX = EDX = 0. Both
//! raise #UD without CR4.PKE, so nothing here may run unless
//! [`super::detect`] found PKU.

/// The machine code of `WRPKRU`.
pub(crate) const WRPKRU_BYTES: [u8; 3] = [0x0f, 0x01, 0xef];

/// Access-disable bit of `key`.
pub(crate) const fn ad_bit(key: u32) -> u32 {
    1 << (2 * key)
}

/// Write-disable bit of `key`.
pub(crate) const fn wd_bit(key: u32) -> u32 {
    1 << (2 * key + 1)
}

/// Reads this thread's PKRU.
///
/// # Safety
///
/// The CPU must have PKU enabled by the OS (CPUID OSPKE), else `#UD`.
#[inline]
pub(crate) unsafe fn read() -> u32 {
    let eax: u32;
    // SAFETY: the caller guarantees OSPKE, so RDPKRU is defined; with ECX = 0
    // it only writes EAX and EDX, both declared as outputs.
    unsafe {
        core::arch::asm!(
            "rdpkru",
            in("ecx") 0u32,
            out("eax") eax,
            out("edx") _,
            options(nomem, nostack, preserves_flags),
        );
    }
    eax
}

/// PKRU of the host domain H: access-disable on every key but 0 (the
/// kernel's own initial value).
pub(crate) const fn host_value() -> u32 {
    let mut v = 0;
    let mut k = 1;
    while k < super::KEY_COUNT {
        v |= ad_bit(k);
        k += 1;
    }
    v
}

/// PKRU of the extension domain of key `k`: H plus key `k`.
pub(crate) const fn extension_value(k: u32) -> u32 {
    host_value() & !(ad_bit(k) | wd_bit(k))
}

/// PKRU of the trusted domain T.
pub(crate) const TRUSTED_VALUE: u32 = 0;

/// One ERIM switch with the constant `V` in the code: `mov eax, V; xor ecx,
/// ecx; xor edx, edx; wrpkru; cmp eax, V; jne abort` (the compare is forced
/// to its `3D imm32` form so scanners recognise it).
///
/// # Safety
///
/// As [`switch`].
#[inline(always)]
unsafe fn switch_const<const V: u32>() {
    // SAFETY: OSPKE is guaranteed by the caller; WRPKRU with ECX = EDX = 0
    // writes only PKRU; the clobbered registers are declared. Not `nomem`:
    // it changes which memory is accessible.
    unsafe {
        core::arch::asm!(
            "mov eax, {v}",
            "xor ecx, ecx",
            "xor edx, edx",
            "wrpkru",
            ".byte 0x3d",
            ".long {v}",
            "jne 2f",
            "jmp 3f",
            "2:",
            "ud2",
            "3:",
            v = const V,
            out("eax") _,
            out("ecx") _,
            out("edx") _,
            options(nostack),
        );
    }
}

/// Loads `value` into PKRU. Every `WRPKRU` this crate executes is one of
/// the 17 constant switches below (H, T, and Xₖ for k = 1..=15), each in ERIM
/// form, so no `WRPKRU` with a variable `EAX` exists in the binary for a
/// jump to land on. Any other value aborts the process: pkbpf owns PKRU on
/// the threads that pass its gates (a host that loads its own PKRU values
/// there is not supported).
///
/// # Safety
///
/// The CPU must have PKU enabled by the OS. The caller must not rely on
/// access to memory that `value` denies until PKRU is restored, and must
/// restore it by structure (a guard's `Drop` or a gate epilogue).
pub(crate) unsafe fn switch(value: u32) {
    macro_rules! extension_keys {
        ($($k:literal)*) => {
            $(
                if value == extension_value($k) {
                    // SAFETY: the caller's contract.
                    return unsafe { switch_const::<{ extension_value($k) }>() };
                }
            )*
        };
    }
    if value == host_value() {
        // SAFETY: the caller's contract.
        return unsafe { switch_const::<{ host_value() }>() };
    }
    if value == TRUSTED_VALUE {
        // SAFETY: the caller's contract.
        return unsafe { switch_const::<TRUSTED_VALUE>() };
    }
    extension_keys!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    eprintln!("pkbpf: refusing to load PKRU {value:#010x}: not a pkbpf domain");
    std::process::abort();
}

/// Appends the ERIM switch sequence that loads the code constant `value`
/// into PKRU and fails closed:
///
/// ```text
/// B8 imm32        mov eax, value
/// 31 C9           xor ecx, ecx
/// 31 D2           xor edx, edx
/// 0F 01 EF        wrpkru
/// 3D imm32        cmp eax, value     ; a jump to the wrpkru with another
/// 0F 85 rel32     jne abort          ; EAX lands here and aborts
/// ```
///
/// Returns the offset of the `WRPKRU` and of the `jne`'s rel32 field, which
/// the caller patches to reach its `abort` label.
pub(crate) fn emit_switch(buf: &mut Vec<u8>, value: u32) -> (usize, usize) {
    buf.push(0xb8);
    buf.extend_from_slice(&value.to_le_bytes());
    buf.extend_from_slice(&[0x31, 0xc9, 0x31, 0xd2]);
    let wrpkru_at = buf.len();
    buf.extend_from_slice(&WRPKRU_BYTES);
    buf.push(0x3d);
    buf.extend_from_slice(&value.to_le_bytes());
    buf.extend_from_slice(&[0x0f, 0x85]);
    let rel_at = buf.len();
    buf.extend_from_slice(&[0, 0, 0, 0]);
    (wrpkru_at, rel_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_the_sdm_layout() {
        assert_eq!(ad_bit(0), 0b01);
        assert_eq!(wd_bit(0), 0b10);
        assert_eq!(ad_bit(15), 1 << 30);
        assert_eq!(wd_bit(15), 1 << 31);
    }

    #[test]
    fn domain_values_follow_the_design_table() {
        assert_eq!(host_value(), 0x5555_5554);
        assert_eq!(extension_value(1), 0x5555_5550);
        assert_eq!(extension_value(15), 0x1555_5554);
        assert_eq!(TRUSTED_VALUE, 0);
    }

    #[test]
    fn switch_sequence_checks_the_constant_it_loads() {
        let mut buf = vec![0x90];
        let (w, rel) = emit_switch(&mut buf, 0x1234_5678);
        assert_eq!(&buf[w..w + 3], &WRPKRU_BYTES);
        assert_eq!(buf[1], 0xb8);
        assert_eq!(&buf[2..6], &0x1234_5678u32.to_le_bytes());
        // cmp eax, imm32 right after the wrpkru, same constant.
        assert_eq!(buf[w + 3], 0x3d);
        assert_eq!(&buf[w + 4..w + 8], &0x1234_5678u32.to_le_bytes());
        assert_eq!(&buf[w + 8..w + 10], &[0x0f, 0x85]);
        assert_eq!(rel, w + 10);
        assert_eq!(buf.len(), rel + 4);
    }
}
