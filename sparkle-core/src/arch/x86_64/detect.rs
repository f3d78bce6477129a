//! Run-time feature detection without `std`: CPUID says what the CPU has, XGETBV whether the OS
//! saves the registers those instructions use (an AVX-512 CPU under an OS that does not save
//! the zmm state must not run AVX-512). The same rules as `std::is_x86_feature_detected!`,
//! which a test in sparkle-std compares against. Cached after the first call. AMX also needs
//! the OS's grant of the tile state, asked for only when an AMX ISA is asked about (see
//! [`amx_int8`]).

use core::sync::atomic::{AtomicU16, AtomicU8, Ordering};

const PROBED: u16 = 1;
const AVX2_FMA: u16 = 2;
const AVX512F: u16 = 4;
const AVX512VNNI: u16 = 8;
const AVXVNNI: u16 = 16;
const AVX512BF16: u16 = 32;
const AMXINT8: u16 = 64;
const AMXBF16: u16 = 128;
const AVX512BW: u16 = 256;

static FEATURES: AtomicU16 = AtomicU16::new(0);

fn features() -> u16 {
    let f = FEATURES.load(Ordering::Relaxed);
    if f & PROBED != 0 {
        return f;
    }
    let f = probe() | PROBED;
    FEATURES.store(f, Ordering::Relaxed);
    f
}

/// AVX2 and FMA, with the OS saving the ymm state.
pub(crate) fn avx2_fma() -> bool {
    features() & AVX2_FMA != 0
}

/// AVX-512F, with the OS saving the zmm and opmask state, and AVX2, FMA and F16C (which
/// `target_feature(enable = "avx512f")` implies).
pub(crate) fn avx512f() -> bool {
    features() & AVX512F != 0
}

/// AVX-512F and AVX512_VNNI (`vpdpbusd`), with the OS saving the zmm and opmask state, and AVX2
/// with FMA and AVX512BW (the int8 path's write-out and packing use them beside the VNNI kernel;
/// every such CPU has them, but a hypervisor might mask them).
pub(crate) fn avx512vnni() -> bool {
    let need = AVX512F | AVX512VNNI | AVX2_FMA | AVX512BW;
    features() & need == need
}

/// AVX-VNNI (the VEX-encoded `vpdpbusd` on ymm) with AVX2 and FMA, the OS saving the ymm state.
pub(crate) fn avxvnni() -> bool {
    let need = AVXVNNI | AVX2_FMA;
    features() & need == need
}

/// AVX-512F and AVX512_BF16 (`vdpbf16ps`), with the OS saving the zmm and opmask state.
pub(crate) fn avx512bf16() -> bool {
    let need = AVX512F | AVX512BF16;
    features() & need == need
}

/// AMX-TILE and AMX-INT8 (`tdpbusd` on 16 x 64-byte tiles), with the OS saving the tile state
/// and having granted this process its use, and AVX-512F (the int8 path's packing and write-out
/// beside the tile kernel; every AMX CPU has it). Linux only: there a process must ask for the
/// tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which this does the first time it finds the
/// CPU and XCR0 ready. The grant is process-wide and lasts: Linux then refuses alternate signal
/// stacks too small for the tile state, so it is asked for only here, when an AMX kernel is
/// asked about, never by the other ISAs' checks. Elsewhere the tile instructions are not counted.
/// AVX512BW too: the write-out the tile kernel shares with the VNNI one packs bytes with it.
pub(crate) fn amx_int8() -> bool {
    let need = AMXINT8 | AVX512F | AVX512BW;
    features() & need == need && tiles_granted()
}

/// AMX-TILE and AMX-BF16 (`tdpbf16ps`), with the tile state granted and AVX-512F, as
/// [`amx_int8`] says.
pub(crate) fn amx_bf16() -> bool {
    let need = AMXBF16 | AVX512F;
    features() & need == need && tiles_granted()
}

/// Whether the OS granted this process the tile state: asked once ([`request_tile_state`]),
/// then cached (0: not asked, 1: granted, 2: refused).
fn tiles_granted() -> bool {
    static GRANT: AtomicU8 = AtomicU8::new(0);
    match GRANT.load(Ordering::Relaxed) {
        0 => {
            let granted = request_tile_state();
            GRANT.store(if granted { 1 } else { 2 }, Ordering::Relaxed);
            granted
        }
        g => g == 1,
    }
}

#[cfg(miri)]
fn probe() -> u16 {
    // Miri runs no CPUID (nor these kernels' intrinsics): only the statically enabled ISAs.
    0
}

#[cfg(not(miri))]
fn probe() -> u16 {
    use core::arch::x86_64::CpuidResult;
    // CPUID is available on every x86_64 CPU; Rust before 1.94 marks the intrinsics unsafe.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU and has no preconditions.
    let __cpuid = |leaf| unsafe { core::arch::x86_64::__cpuid(leaf) };
    #[allow(unused_unsafe)]
    // SAFETY: as above.
    let __cpuid_count = |leaf, sub| unsafe { core::arch::x86_64::__cpuid_count(leaf, sub) };
    let bit = |r: u32, b: u32| r & (1 << b) != 0;
    let CpuidResult { eax: max_leaf, .. } = __cpuid(0);
    if max_leaf < 7 {
        return 0;
    }
    let leaf1 = __cpuid(1);
    // OSXSAVE (the OS enabled XGETBV) and AVX.
    if !bit(leaf1.ecx, 27) || !bit(leaf1.ecx, 28) {
        return 0;
    }
    // SAFETY: OSXSAVE is set, so XGETBV is enabled.
    let xcr0 = unsafe { xgetbv0() };
    let os_ymm = xcr0 & 0b110 == 0b110; // SSE + AVX state
    let os_zmm = os_ymm && xcr0 & 0b1110_0000 == 0b1110_0000; // opmask, ZMM_Hi256, Hi16_ZMM
    let leaf7 = __cpuid_count(7, 0);
    let mut f = 0;
    if os_ymm && bit(leaf7.ebx, 5) && bit(leaf1.ecx, 12) {
        f |= AVX2_FMA;
        // Leaf 7 sub-leaf 1 exists when sub-leaf 0's EAX says so; its EAX bit 4 is AVX-VNNI.
        if leaf7.eax >= 1 && bit(__cpuid_count(7, 1).eax, 4) {
            f |= AVXVNNI;
        }
    }
    // `#[target_feature(enable = "avx512f")]` implies AVX2, FMA and F16C in Rust (as on every CPU
    // with AVX-512F), so AVX-512F counts only with them: a hypervisor might mask them.
    if os_zmm && bit(leaf7.ebx, 16) && f & AVX2_FMA != 0 && bit(leaf1.ecx, 29) {
        f |= AVX512F;
        if bit(leaf7.ecx, 11) {
            f |= AVX512VNNI;
        }
        if bit(leaf7.ebx, 30) {
            f |= AVX512BW;
        }
        // Leaf 7 sub-leaf 1, EAX bit 5.
        if leaf7.eax >= 1 && bit(__cpuid_count(7, 1).eax, 5) {
            f |= AVX512BF16;
        }
        // AMX-TILE (leaf 7 EDX bit 24) with AMX-INT8 (bit 25) or AMX-BF16 (bit 22), and XCR0's
        // XTILECFG and XTILEDATA (bits 17 and 18); the OS's grant is asked for later, lazily.
        let tiles = bit(leaf7.edx, 24) && xcr0 & (0b11 << 17) == 0b11 << 17;
        if tiles && bit(leaf7.edx, 25) {
            f |= AMXINT8;
        }
        if tiles && bit(leaf7.edx, 22) {
            f |= AMXBF16;
        }
    }
    f
}

/// Asks Linux for the AMX tile data state for this process (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`, Linux 5.16+; the kernel's `Documentation/arch/x86/xstate.rst`): until
/// a process has it, a tile instruction faults. Idempotent; the grant covers every thread. A raw
/// system call, so that the `no_std` core needs no libc.
#[cfg(all(target_os = "linux", not(miri)))]
fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: `arch_prctl` with this code only changes which state components the kernel lets
    // this process use; it reads no memory of ours. `syscall` clobbers rcx and r11.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack, preserves_flags)
        );
    }
    ret == 0
}

/// Outside Linux (and under Miri) the tile state's permission is not asked for, so AMX is not
/// used.
#[cfg(not(all(target_os = "linux", not(miri))))]
fn request_tile_state() -> bool {
    false
}

/// XCR0, the register-state components the OS saves.
///
/// # Safety
/// CPUID.1:ECX.OSXSAVE must be set.
#[cfg(not(miri))]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: the caller checked OSXSAVE, and xsave is enabled for this function.
    unsafe { core::arch::x86_64::_xgetbv(0) }
}
