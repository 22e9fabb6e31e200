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

/// Writes `value` to PKRU, then reads it back; aborts the process if the
/// register does not hold `value` afterwards (fail closed).
///
/// # Safety
///
/// The CPU must have PKU enabled by the OS. The caller must not rely on
/// access to memory that `value` denies until PKRU is restored, and must
/// restore it by structure (a guard's `Drop` or a gate epilogue).
#[inline]
pub(crate) unsafe fn write_checked(value: u32) {
    // SAFETY: OSPKE is guaranteed by the caller; WRPKRU with ECX = EDX = 0
    // writes only PKRU. It is not `nomem`: it changes which memory is
    // accessible, so the compiler must not move accesses across it.
    unsafe {
        core::arch::asm!(
            "wrpkru",
            in("eax") value,
            in("ecx") 0u32,
            in("edx") 0u32,
            options(nostack, preserves_flags),
        );
    }
    // SAFETY: as above, PKU is enabled.
    let now = unsafe { read() };
    if now != value {
        std::process::abort();
    }
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
