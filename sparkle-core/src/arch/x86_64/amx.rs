//! AMX (Advanced Matrix Extensions) tiles, shared by the int8 (`tdpbusd`) and bf16
//! (`tdpbf16ps`) kernels: one tile configuration, the session that loads and releases it, and
//! the 32 x 32 block loop both kernels run (and the int8 direct conv's loop over taps).
//! Inline assembly: the AMX intrinsics are not stable
//! Rust.
//!
//! The configuration (palette 1) makes all eight tiles 16 rows of 64 bytes: `tmm0..3` hold C's
//! 2 x 2 blocks of 16 x 16 32-bit sums, `tmm4, 5` A's two 16-row halves of one 64-byte-deep
//! block, `tmm6, 7` B's two 16-column halves of it (16 rows of 16 columns x 4 bytes: four int8
//! steps or two bf16 steps per column). One block of a panel is 2048 bytes for A (32 rows of 64
//! bytes) and for B (16 rows of 32 columns x 4 bytes, so a tile's rows are 128 bytes apart).

use crate::arch::Session;

#[repr(C, align(64))]
struct TileConfig([u8; 64]);

static TILES: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1; // palette 1
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (a little-endian u16)
        c[48 + t] = 16; // rows
        t += 1;
    }
    TileConfig(c)
};

/// Loads the configuration.
///
/// # Safety
/// The CPU runs AMX-TILE and the OS granted this process the tile state.
unsafe fn configure() {
    // SAFETY: the caller's contract; the operand is the 64-byte configuration.
    unsafe { core::arch::asm!("ldtilecfg [{}]", in(reg) TILES.0.as_ptr(), options(nostack, readonly)) }
}

/// Releases the tiles (their state returns to its initial, unsaved form).
///
/// # Safety
/// As [`configure`].
unsafe fn release() {
    // SAFETY: the caller's contract.
    unsafe { core::arch::asm!("tilerelease", options(nostack, nomem)) }
}

/// The session of both AMX kernels: the configuration loaded before a worker's first call,
/// released after its last.
pub(crate) const SESSION: Session = Session { begin: configure, end: release };

/// `C (32 x 32, 32-bit, rows 128 bytes apart) = sum over blocks of A_block . B_block` with
/// `$dot` (`tdpbusd` or `tdpbf16ps`), C zeroed first; `$blocks` is at least 1.
///
/// The tile registers are renamed little if at all: a load into a tile that a product still
/// reads waits for it, hence the order, each load as late as its first use.
///
/// # Safety (of the expansion)
/// The CPU runs the instruction, inside a session on this thread; `$a` holds `$blocks` blocks
/// of 2048 bytes, `$b` likewise, `$c` 4096 bytes. Every tile access stays inside them: a tile
/// load reads 16 rows of 64 bytes from its base at the given row stride.
macro_rules! amx_block_loop {
    ($dot:literal, $a:expr, $b:expr, $c:expr, $blocks:expr) => {
        core::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a} + {s64}*1]",
            "tileloadd tmm6, [{b} + {s128}*1]",
            concat!($dot, " tmm0, tmm4, tmm6"),
            "tileloadd tmm7, [{b} + {s128}*1 + 64]",
            concat!($dot, " tmm1, tmm4, tmm7"),
            "tileloadd tmm5, [{a} + {s64}*1 + 1024]",
            concat!($dot, " tmm2, tmm5, tmm6"),
            concat!($dot, " tmm3, tmm5, tmm7"),
            "add {a}, 2048",
            "add {b}, 2048",
            "dec {n}",
            "jnz 2b",
            "tilestored [{c} + {s128}*1], tmm0",
            "tilestored [{c} + {s128}*1 + 64], tmm1",
            "tilestored [{c} + {s128}*1 + 2048], tmm2",
            "tilestored [{c} + {s128}*1 + 2112], tmm3",
            a = inout(reg) $a => _,
            b = inout(reg) $b => _,
            n = inout(reg) $blocks => _,
            c = in(reg) $c,
            s64 = in(reg) 64usize,
            s128 = in(reg) 128usize,
            options(nostack)
        )
    };
}
pub(crate) use amx_block_loop;

/// The direct conv's loop (`tdpbusd` only): `C (32 x 32) = sum over taps t, channel blocks cb of
/// A_t,cb . B_block`, where A_t,cb's row `i` is the 64 bytes at `$a + $taps[t] + i * $stride +
/// cb * 64` (the staged image: row `i` is a pixel, `$stride` bytes from the previous one) and
/// B's blocks follow in that order (tap-major), 2048 bytes each, as [`amx_block_loop`]'s.
///
/// # Safety (of the expansion)
/// The CPU runs AMX-INT8, inside a session on this thread; `$ntaps` and `$blocks` are at least
/// 1; for every tap `t < $ntaps` the 32 rows of `$blocks * 64` bytes from `$a + $taps[t]`,
/// `$stride` apart, are readable; `$taps` holds `$ntaps` non-negative `i32`; `$b` holds `$ntaps * $blocks`
/// blocks of 2048 bytes; `$c` is 4096 writable bytes.
macro_rules! amx_direct_loop {
    ($a:expr, $stride:expr, $taps:expr, $ntaps:expr, $blocks:expr, $b:expr, $c:expr) => {
        core::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "mov {a0:e}, dword ptr [{t}]",
            "add {a0}, {a}",
            "lea {a1}, [{a0} + {s16}]",
            "mov {n}, {blocks}",
            "3:",
            "tileloadd tmm4, [{a0} + {st}*1]",
            "tileloadd tmm6, [{b} + {s128}*1]",
            "tdpbusd tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b} + {s128}*1 + 64]",
            "tdpbusd tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {st}*1]",
            "tdpbusd tmm2, tmm5, tmm6",
            "tdpbusd tmm3, tmm5, tmm7",
            "add {a0}, 64",
            "add {a1}, 64",
            "add {b}, 2048",
            "dec {n}",
            "jnz 3b",
            "add {t}, 4",
            "dec {nt}",
            "jnz 2b",
            "tilestored [{c} + {s128}*1], tmm0",
            "tilestored [{c} + {s128}*1 + 64], tmm1",
            "tilestored [{c} + {s128}*1 + 2048], tmm2",
            "tilestored [{c} + {s128}*1 + 2112], tmm3",
            a = in(reg) $a,
            st = in(reg) $stride,
            s16 = in(reg) 16 * $stride,
            t = inout(reg) $taps => _,
            nt = inout(reg) $ntaps => _,
            blocks = in(reg) $blocks,
            b = inout(reg) $b => _,
            c = in(reg) $c,
            s128 = in(reg) 128usize,
            a0 = out(reg) _,
            a1 = out(reg) _,
            n = out(reg) _,
            options(nostack)
        )
    };
}
pub(crate) use amx_direct_loop;
