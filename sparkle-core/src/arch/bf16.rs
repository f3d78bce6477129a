//! The bf16 GEMM microkernels: an `mr x nr` tile of f32 sums of `bf16 x bf16` products over
//! panels packed by [`crate::bf16`]'s driver. A panel holds k in pairs: one `u32` per row (or
//! column) and pair, the even step in the low half, the odd one in the high half, zero past k.
//! Group `g`, row `i` of A at word `g * mr + i`; group `g`, column `j` of B at `g * nr + j`.
//! Kernels that widen to f32 take A already widened (`wide_a`): two f32 per row and pair, at
//! words `2 * (g * mr + i)` (even step) and `+ 1` (odd step), so that a row's values are plain
//! broadcasts; A's block is packed once and read by every B panel. The AMX kernel (`tiles`)
//! takes A in blocks of 16 pairs: block `q`, row `i`, pair `g` at word `(q * mr + i) * 16 + g`
//! (a block is `mr` rows of 64 bytes, as a tile loads them), and k padded to whole blocks.
//!
//! | kernel | ISA | tile | products per instruction |
//! |---|---|---|---|
//! | `amxbf16_gemm_bf16_32x32` | AMX-BF16 (Linux) | 32 x 32 | 16 384 (`tdpbf16ps`, 16 x 16 x 32) |
//! | `avx512bf16_gemm_bf16_8x32` | AVX-512F + AVX512_BF16 | 8 x 32 | 32 (`vdpbf16ps zmm`: 16 lanes x a pair) |
//! | `avx512_gemm_bf16_8x32` | AVX-512F | 8 x 32 | 16 (widened to f32: B by shift and mask, A packed wide; `vfmadd`) |
//! | `avx2_gemm_bf16_6x16` | AVX2 + FMA | 6 x 16 | 8 (widened likewise) |
//! | `generic_gemm_bf16_4x4` | any | 4 x 4 | 1 |
//!
//! A bf16 is the top half of an f32, so widening is exact and every product of two bf16 is exact
//! in f32 (8-bit significands); only the f32 sums round. `vdpbf16ps` sums each pair and adds it to
//! the accumulator with round-to-nearest-even and treats denormal inputs and outputs as zero
//! (Intel SDM), which the tolerance covers: the oracle sums the same rounded inputs in f64.
//!
//! Which is faster depends on the CPU: `vdpbf16ps` does twice an FMA's products, but some cores
//! issue it at half the FMA rate (measured on a Sapphire Rapids-class Xeon: 0.5 per cycle against
//! two FMAs), where the widening kernel wins. `sparkle-std` picks between them by measuring.
//!
//! A [`BKernel`] is proof that this CPU runs its ISA, as a [`super::Kernel`] is.

use super::{Isa, Session};

/// One microkernel call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BMicroArgs {
    /// Number of k-pairs.
    pub pairs: usize,
    /// A micro-panel (`pairs * mr` words).
    pub a: *const u32,
    /// B micro-panel (`pairs * nr` words).
    pub b: *const u32,
    /// The `mr x nr` tile, row-major (`nr` apart), overwritten with the sums.
    pub c: *mut f32,
}

/// A bf16 GEMM microkernel, obtainable only on a CPU that runs its ISA.
#[derive(Clone, Copy, Debug)]
pub struct BKernel {
    pub(crate) isa: Isa,
    /// `{isa}_gemm_bf16_{mr}x{nr}`.
    pub(crate) id: &'static str,
    pub(crate) mr: usize,
    pub(crate) nr: usize,
    /// A packed widened: two f32 words per row and pair (module docs).
    pub(crate) wide_a: bool,
    /// A packed in blocks of 16 pairs, each row's 16 words together (AMX's A tiles), and k
    /// padded to whole blocks (module docs).
    pub(crate) tiles: bool,
    /// Register state kept across calls (see [`Session`]).
    pub(crate) session: Option<Session>,
    /// # Safety
    /// The CPU must run `isa`; `a` must hold `pairs * mr` (twice that with `wide_a`) and `b`
    /// `pairs * nr` packed words, and `c` must be valid for writing `mr * nr` f32.
    pub(crate) run: unsafe fn(&BMicroArgs),
}

kernel_table_methods!(BKernel, B_KERNELS, GENERIC_B, "gemm_bf16");

/// The two bf16 of a packed word as f32: (even step, odd step).
#[inline(always)]
fn unpack(w: u32) -> (f32, f32) {
    (f32::from_bits(w << 16), f32::from_bits(w & 0xffff_0000))
}

/// # Safety
/// As [`BKernel::run`] with `mr = nr = 4`.
unsafe fn generic_gemm_bf16_4x4(p: &BMicroArgs) {
    const MR: usize = 4;
    const NR: usize = 4;
    let mut acc = [[0.0f32; NR]; MR];
    for g in 0..p.pairs {
        // SAFETY: pair `g` of each panel is readable (the caller's contract).
        let (a, b) = unsafe { (p.a.add(g * MR), p.b.add(g * NR)) };
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: `i < MR`: inside pair `g`.
            let (a0, a1) = unpack(unsafe { *a.add(i) });
            for (j, c) in row.iter_mut().enumerate() {
                // SAFETY: `j < NR`: inside pair `g`.
                let (b0, b1) = unpack(unsafe { *b.add(j) });
                *c += a0 * b0;
                *c += a1 * b1;
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            // SAFETY: the tile holds `MR * NR` values.
            unsafe { *p.c.add(i * NR + j) = v };
        }
    }
}

pub(crate) const GENERIC_B: BKernel = BKernel {
    isa: Isa::Generic,
    id: "generic_gemm_bf16_4x4",
    mr: 4,
    nr: 4,
    wide_a: false,
    tiles: false,
    session: None,
    run: generic_gemm_bf16_4x4,
};

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use core::arch::x86_64::*;

    use super::{BKernel, BMicroArgs, Isa};

    /// # Safety
    /// As [`BKernel::run`] with `mr = 6`, `nr = 16`, `wide_a`, on a CPU with AVX2 and FMA: each
    /// pair of 8 columns is widened to two f32 vectors (shift left 16, mask the high half), each
    /// row's two f32 broadcast; two FMAs per row, pair and vector.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_gemm_bf16_6x16(p: &BMicroArgs) {
        const MR: usize = 6;
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
        let (mut a, mut b) = (p.a.cast::<f32>(), p.b.cast::<__m256i>());
        for _ in 0..p.pairs {
            // SAFETY: one pair of B is 16 words (two ymm), of A 6 x 2 f32, inside the panels by
            // the caller's contract.
            unsafe {
                let (w0, w1) = (_mm256_loadu_si256(b), _mm256_loadu_si256(b.add(1)));
                let even =
                    [_mm256_castsi256_ps(_mm256_slli_epi32(w0, 16)), _mm256_castsi256_ps(_mm256_slli_epi32(w1, 16))];
                let odd =
                    [_mm256_castsi256_ps(_mm256_and_si256(w0, high)), _mm256_castsi256_ps(_mm256_and_si256(w1, high))];
                for (i, row) in acc.iter_mut().enumerate() {
                    let (a0, a1) = (_mm256_broadcast_ss(&*a.add(2 * i)), _mm256_broadcast_ss(&*a.add(2 * i + 1)));
                    for h in 0..2 {
                        row[h] = _mm256_fmadd_ps(a0, even[h], row[h]);
                        row[h] = _mm256_fmadd_ps(a1, odd[h], row[h]);
                    }
                }
                a = a.add(2 * MR);
                b = b.add(2);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: the tile holds 6 x 16 f32.
            unsafe {
                _mm256_storeu_ps(p.c.add(i * 16), row[0]);
                _mm256_storeu_ps(p.c.add(i * 16 + 8), row[1]);
            }
        }
    }

    /// # Safety
    /// As [`BKernel::run`] with `mr = 8`, `nr = 32`, `wide_a`, on a CPU with AVX-512F: the AVX2
    /// kernel's scheme on zmm (B's 32 columns widened to four vectors per pair).
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_gemm_bf16_8x32(p: &BMicroArgs) {
        const MR: usize = 8;
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
        let (mut a, mut b) = (p.a.cast::<f32>(), p.b.cast::<__m512i>());
        for _ in 0..p.pairs {
            // SAFETY: one pair of B is 32 words (two zmm), of A 8 x 2 f32, inside the panels by
            // the caller's contract.
            unsafe {
                let (w0, w1) = (_mm512_loadu_si512(b), _mm512_loadu_si512(b.add(1)));
                let even =
                    [_mm512_castsi512_ps(_mm512_slli_epi32(w0, 16)), _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16))];
                let odd =
                    [_mm512_castsi512_ps(_mm512_and_si512(w0, high)), _mm512_castsi512_ps(_mm512_and_si512(w1, high))];
                for (i, row) in acc.iter_mut().enumerate() {
                    let (a0, a1) = (_mm512_set1_ps(*a.add(2 * i)), _mm512_set1_ps(*a.add(2 * i + 1)));
                    for h in 0..2 {
                        row[h] = _mm512_fmadd_ps(a0, even[h], row[h]);
                        row[h] = _mm512_fmadd_ps(a1, odd[h], row[h]);
                    }
                }
                a = a.add(2 * MR);
                b = b.add(2);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: the tile holds 8 x 32 f32.
            unsafe {
                _mm512_storeu_ps(p.c.add(i * 32), row[0]);
                _mm512_storeu_ps(p.c.add(i * 32 + 16), row[1]);
            }
        }
    }

    /// # Safety
    /// As [`BKernel::run`] with `mr = 8`, `nr = 32`, on a CPU with AVX-512F and AVX512_BF16:
    /// per pair, B's 32 columns in two zmm, each row's pair broadcast, two `vdpbf16ps` per row.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn avx512bf16_gemm_bf16_8x32(p: &BMicroArgs) {
        const MR: usize = 8;
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (mut a, mut b) = (p.a, p.b.cast::<__m512i>());
        for _ in 0..p.pairs {
            // SAFETY: one pair of B is 32 words (two zmm), of A 8 words, inside the panels by the
            // caller's contract. The bf16 vector type is 32 x 16 bits like `__m512i`: the
            // transmutes reinterpret bits.
            unsafe {
                let b0: __m512bh = core::mem::transmute(_mm512_loadu_si512(b));
                let b1: __m512bh = core::mem::transmute(_mm512_loadu_si512(b.add(1)));
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai: __m512bh = core::mem::transmute(_mm512_set1_epi32(a.add(i).read_unaligned() as i32));
                    row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
                    row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
                }
                a = a.add(MR);
                b = b.add(2);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: the tile holds 8 x 32 f32.
            unsafe {
                _mm512_storeu_ps(p.c.add(i * 32), row[0]);
                _mm512_storeu_ps(p.c.add(i * 32 + 16), row[1]);
            }
        }
    }

    /// # Safety
    /// As [`BKernel::run`] with `mr = nr = 32`, `tiles`, on a CPU with AMX-TILE and AMX-BF16
    /// whose OS granted this process the tile state, inside the kernel's session on this
    /// thread, and `pairs` a multiple of 16: `tdpbf16ps` (16 x 16 x 32 products, f32 sums) on the
    /// 2 x 2 block of tiles of [`crate::arch::x86_64::amx`].
    unsafe fn amx_gemm_bf16_32x32(p: &BMicroArgs) {
        debug_assert!(p.pairs.is_multiple_of(16), "the driver pads k to whole blocks");
        if p.pairs == 0 {
            for i in 0..32 * 32 {
                // SAFETY: the tile holds 32 x 32 f32.
                unsafe { *p.c.add(i) = 0.0 };
            }
            return;
        }
        // SAFETY: the caller's contract: the CPU runs AMX, the tiles are configured; A and B
        // hold `pairs / 16` blocks of 2048 bytes (`pairs * mr` and `pairs * nr` words), C 4096
        // bytes; at least one block.
        unsafe { crate::arch::x86_64::amx::amx_block_loop!("tdpbf16ps", p.a, p.b, p.c, p.pairs / 16) }
    }

    pub(crate) const AMXBF16_B: BKernel = BKernel {
        isa: Isa::AmxBf16,
        id: "amxbf16_gemm_bf16_32x32",
        mr: 32,
        nr: 32,
        wide_a: false,
        tiles: true,
        session: Some(crate::arch::x86_64::amx::SESSION),
        run: amx_gemm_bf16_32x32,
    };

    pub(crate) const AVX512BF16_B: BKernel = BKernel {
        isa: Isa::Avx512Bf16,
        id: "avx512bf16_gemm_bf16_8x32",
        mr: 8,
        nr: 32,
        wide_a: false,
        tiles: false,
        session: None,
        run: avx512bf16_gemm_bf16_8x32,
    };

    pub(crate) const AVX512_B: BKernel = BKernel {
        isa: Isa::Avx512,
        id: "avx512_gemm_bf16_8x32",
        mr: 8,
        nr: 32,
        wide_a: true,
        tiles: false,
        session: None,
        run: avx512_gemm_bf16_8x32,
    };

    pub(crate) const AVX2_B: BKernel = BKernel {
        isa: Isa::Avx2,
        id: "avx2_gemm_bf16_6x16",
        mr: 6,
        nr: 16,
        wide_a: true,
        tiles: false,
        session: None,
        run: avx2_gemm_bf16_6x16,
    };
}

/// The registration list of the bf16 kernels, best first (`name => Isa (path of its const)`),
/// handed to `$callback!` like [`crate::for_each_kernel`]: the private table below and the
/// stamped tests of `tests/tests/bf16_gemm_cpu.rs` both come from it.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_bkernel {
    ($callback:ident) => {
        $callback! {
            #[cfg(target_arch = "x86_64")]
            amxbf16 => AmxBf16 ($crate::arch::bf16::x86::AMXBF16_B),
            #[cfg(target_arch = "x86_64")]
            avx512bf16 => Avx512Bf16 ($crate::arch::bf16::x86::AVX512BF16_B),
            #[cfg(target_arch = "x86_64")]
            avx512 => Avx512 ($crate::arch::bf16::x86::AVX512_B),
            #[cfg(target_arch = "x86_64")]
            avx2 => Avx2 ($crate::arch::bf16::x86::AVX2_B),
            generic => Generic ($crate::arch::bf16::GENERIC_B),
        }
    };
}

/// Stamps the private table from the registration list.
macro_rules! b_registration_table {
    ($($(#[$cfg:meta])* $name:ident => $isa:ident ($kernel:path)),* $(,)?) => {
        /// Every bf16 kernel compiled into this build, best first. Private: see [`BKernel`].
        const B_KERNELS: &[BKernel] = &[$($(#[$cfg])* $kernel),*];
    };
}
crate::for_each_bkernel!(b_registration_table);

#[cfg(test)]
mod tests {
    #[test]
    fn every_tile_fits_the_driver() {
        // bf16's driver keeps one tile on the stack: at most 32 x 32 (AMX's), at most 32 columns.
        assert!(super::B_KERNELS.iter().all(|k| k.mr * k.nr <= 32 * 32 && k.nr <= 32 && k.mr > 0 && k.nr > 0));
    }
}
