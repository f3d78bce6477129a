//! AVX-512F: 12 x 32 register tile (24 zmm accumulators, 2 for B, 1 broadcast of A).

use core::arch::x86_64::*;

use crate::arch::{gemm_body, DepthwiseKernel, GemmKernel, Isa, Kernel, MicroArgs, RowsKernel, Simd};

/// 16-lane zmm vectors.
#[derive(Clone, Copy, Debug)]
pub struct Avx512;

impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;
    /// 8 steps (1 KiB of a 32-column panel): on one Xeon (Sapphire Rapids) thread +5-7% at
    /// 1024^3-2048^3, where the 64 KiB panel of `kc = 512` does not fit the 48 KiB L1; no change
    /// on a Zen 4 (16 steps alike, packed A prefetched too no better).
    const B_PANEL_AHEAD: usize = 8;
    /// On one Zen 4 core, GFLOPS: 12544x64x147 107 -> 111, 3136x64x576 113.3 -> 114.0, 1500^3
    /// and 2000^3 level (BENCHMARKS.md). The AVX2 set's 6 x 16 tile lost 2-5% with it (a step is
    /// half the FMAs, the prefetch's bookkeeping the same), so it has none.
    const A_NEXT_TILE: bool = true;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: caller guarantees AVX-512F.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: caller guarantees AVX-512F.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: caller guarantees AVX-512F and 16 readable floats at `p`.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: caller guarantees AVX-512F and 16 writable floats at `p`.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: caller guarantees AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: caller guarantees AVX-512F.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: caller guarantees AVX-512F.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        // SAFETY: caller guarantees AVX-512F. (vmaxps returns the second operand on NaN.)
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m512 {
        // SAFETY: caller guarantees AVX-512F and `n` readable floats; masked-off lanes read
        // nothing (no fault).
        unsafe { _mm512_maskz_loadu_ps(mask16(n), p) }
    }
    #[inline(always)]
    unsafe fn load_window(p: *const f32, lo: usize, hi: usize) -> __m512 {
        // SAFETY: caller guarantees AVX-512F and lanes `lo..hi` readable; masked-off lanes read
        // nothing (no fault).
        unsafe { _mm512_maskz_loadu_ps(mask16(hi) & !mask16(lo), p) }
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, n: usize, v: __m512) {
        // SAFETY: caller guarantees AVX-512F and `n` writable floats; masked-off lanes write
        // nothing.
        unsafe { _mm512_mask_storeu_ps(p, mask16(n), v) }
    }
    #[inline(always)]
    unsafe fn deinterleave(a: __m512, b: __m512) -> (__m512, __m512) {
        // SAFETY: caller guarantees AVX-512F. Indices 0-15 pick from `a`, 16-31 from `b`.
        unsafe {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            (_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b))
        }
    }
    #[inline(always)]
    fn prefetch(p: *const f32) {
        // SAFETY: prefetch is a hint that never faults, whatever the address; SSE is baseline on x86_64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        // SAFETY: caller guarantees AVX-512F. (vminps returns the second operand on NaN.)
        unsafe { _mm512_min_ps(a, b) }
    }
}

/// The first `n` of 16 lanes (all of them from 16 on).
#[inline(always)]
fn mask16(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// # Safety
/// As [`crate::arch::GemmKernel::run`] with `mr = 12`, `nr = 32`, on a CPU with AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn avx512_gemm_f32_12x32(p: &MicroArgs) {
    // SAFETY: forwarded contract; AVX-512F is enabled for this function.
    unsafe { gemm_body::<Avx512, 12, 2>(p) }
}

/// The kernel's edge tiles ([`crate::arch::GemmKernel`]'s `edge`): 4, 8 or 12 rows of 16 or 32
/// columns, the smallest that covers the tile's valid ones.
///
/// # Safety
/// As [`crate::arch::GemmKernel::run`] with `mr = 12`, `nr = 32`, on a CPU with AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn avx512_gemm_f32_edge(p: &MicroArgs) {
    // SAFETY: forwarded contract (a smaller tile reads and writes a subset); AVX-512F is enabled.
    unsafe {
        match (p.m, p.n <= 16) {
            (0..=4, true) => gemm_body::<Avx512, 4, 1>(p),
            (0..=4, false) => gemm_body::<Avx512, 4, 2>(p),
            (5..=8, true) => gemm_body::<Avx512, 8, 1>(p),
            (5..=8, false) => gemm_body::<Avx512, 8, 2>(p),
            (_, true) => gemm_body::<Avx512, 12, 1>(p),
            _ => gemm_body::<Avx512, 12, 2>(p),
        }
    }
}

/// # Safety
/// As [`crate::arch::depthwise::depthwise_body`].
#[target_feature(enable = "avx512f")]
unsafe fn avx512_dwconv_f32(p: &crate::arch::depthwise::DepthwiseArgs) {
    // SAFETY: forwarded contract; the ISA is enabled for this function.
    unsafe { crate::arch::depthwise::depthwise_body::<Avx512>(p) }
}

/// # Safety
/// As [`crate::arch::small::small_body`], on a CPU with AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn avx512_gemm_f32_small(p: &crate::arch::small::SmallArgs<'_>) {
    // SAFETY: forwarded contract; AVX-512F is enabled for this function.
    unsafe { crate::arch::small::small_body::<Avx512>(p) }
}

/// Small problems in register tiles of 12 x 32, 8 x 32 and 4 x 32 (27 of the 32 zmm at most: 24 sums, two of B, one of A);
/// a last strip of at most 8 columns in ymm (AVX2's vectors).
///
/// # Safety
/// As [`crate::arch::tiles::tiles_body`], on a CPU with AVX-512F (which implies AVX2 and FMA).
#[target_feature(enable = "avx512f")]
unsafe fn avx512_gemm_f32_tiles(p: &crate::arch::small::SmallArgs<'_>) {
    // SAFETY: forwarded contract; the ISAs are enabled for this function.
    unsafe { crate::arch::tiles::tiles_body::<Avx512, super::avx2::Avx2, 12, 8, 4, 2>(p) }
}

#[cfg(feature = "direct")]
crate::arch::rows_kernel!(
    /// The direct conv's row tiles ([`crate::arch::rows_acc`]): 1 to 14 pixels by 16 or 32
    /// output channels (at most 28 zmm accumulators, the broadcasts folded into the FMAs), from
    /// channel planes or (`PIXELS`) from pixels.
    ///
    /// # Safety
    /// As [`crate::arch::rows_acc`] and [`crate::arch::GemmKernel::run`] with `m <= 14`,
    /// `n <= 32`, on a CPU with AVX-512F.
    #[target_feature(enable = "avx512f")]
    avx512_conv_rows, Avx512, write_rows, [1 2 3 4 5 6 7 8 9 10 11 12 13 14]
);

/// The AVX-512 row tiles' write-out. Into an NCHW output (a tile's pixels consecutive, its
/// channels a plane apart: `rs_c == 1`) each 16 channels' block is transposed in registers, so
/// that a channel's pixels go out as one masked store with the bias and activation applied in
/// vectors (element by element, the write-out was 4-5% of 256->256 3x3 @14); otherwise, and
/// with `beta != 0` or a bias per pixel, the GEMM kernel's write-out.
///
/// # Safety
/// As [`crate::arch::write_tile`], with `MR <= 16`; a CPU with AVX-512F.
#[cfg(feature = "direct")]
#[inline(always)]
unsafe fn write_rows<const MR: usize, const NV: usize>(p: &MicroArgs, acc: [[__m512; NV]; MR]) {
    // SAFETY: (whole body) the caller's contract: every (i < m, j < n) of C and the bias valid.
    unsafe {
        let row_bias = matches!(p.bias, crate::arch::TileBias::Row(_));
        if p.rs_c != 1 || p.cs_c == 1 || p.beta != 0.0 || row_bias || MR > 16 {
            return crate::arch::write_tile::<Avx512, MR, NV>(p, acc);
        }
        let (alpha, mask) = (_mm512_set1_ps(p.alpha), mask16(p.m));
        for v in 0..NV {
            let mut rows = [_mm512_setzero_ps(); 16];
            for (i, row) in acc.iter().enumerate() {
                rows[i] = row[v];
            }
            let cols = transpose16(rows);
            for (j, &x) in cols.iter().enumerate().take(p.n.saturating_sub(16 * v).min(16)) {
                let ch = 16 * v + j;
                let mut y = _mm512_mul_ps(x, alpha);
                if let crate::arch::TileBias::Col(bias) = p.bias {
                    y = _mm512_add_ps(y, _mm512_set1_ps(*bias.add(ch)));
                }
                let y = crate::arch::act_simd::<Avx512>(p.act, y).unwrap_or(y);
                _mm512_mask_storeu_ps(p.c.add(ch * p.cs_c), mask, y);
            }
        }
        if crate::arch::act_is_scalar(p.act) {
            crate::arch::activate(p.c, p.rs_c, p.cs_c, p.m, p.n, p.act);
        }
    }
}
/// The transpose of a 16 x 16 block of floats held as 16 row vectors: vector `j` of the result
/// is column `j`.
#[cfg(feature = "direct")]
#[inline(always)]
unsafe fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // SAFETY: (whole body) caller guarantees AVX-512F.
    unsafe {
        let (ps, pd) = (_mm512_castpd_ps, _mm512_castps_pd);
        // Pairs of rows interleaved within each 128-bit lane: t[2i] = (a0 b0 a1 b1 | a4 b4 ..),
        // t[2i+1] = (a2 b2 a3 b3 | ..) for rows a = 2i, b = 2i + 1.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // Four rows' column c in each lane: u[4i + c'] holds columns c', c' + 4, c' + 8, c' + 12
        // of rows 4i..4i+4.
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
            u[4 * i] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
            u[4 * i + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
            u[4 * i + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(d)));
            u[4 * i + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(d)));
        }
        // Lanes gathered across rows 0..8 and 8..16, then across all 16.
        let mut v = [_mm512_setzero_ps(); 16];
        for h in 0..2 {
            for c in 0..4 {
                let (a, b) = (u[8 * h + c], u[8 * h + 4 + c]);
                v[8 * h + c] = _mm512_shuffle_f32x4::<0x88>(a, b);
                v[8 * h + 4 + c] = _mm512_shuffle_f32x4::<0xdd>(a, b);
            }
        }
        let mut out = [_mm512_setzero_ps(); 16];
        for c in 0..8 {
            out[c] = _mm512_shuffle_f32x4::<0x88>(v[c], v[8 + c]);
            out[8 + c] = _mm512_shuffle_f32x4::<0xdd>(v[c], v[8 + c]);
        }
        out
    }
}

/// Packs `n <= 32` runs of `len` floats (run `l` at `src + l * stride`) transposed into `len`
/// groups of 32 (`dst[q * 32 + l]`), zero past `n`: the direct conv's weight panel for the row
/// tiles. 16 x 16 blocks are transposed in registers, one half of the runs after the other (16
/// streams read at a time), each run's line 16 blocks on prefetched into L2. The weights come
/// from L3 or memory (512->512 3x3 @7: 9 MiB a call): the GEMM's scalar transpose took 28% of
/// that layer on one Zen 4 thread, this one about 22%.
///
/// # Safety
/// The runs readable; `len * 32` floats writable at `dst`; a CPU with AVX-512F.
#[cfg(feature = "direct")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_rows_pack(src: *const f32, stride: usize, n: usize, len: usize, dst: *mut f32) {
    // SAFETY: (whole body) reads run l < n's floats q0..q0+m < len, writes groups q0..q0+m.
    unsafe {
        for half in 0..2 {
            for q0 in (0..len).step_by(16) {
                let m = 16.min(len - q0);
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, row) in r.iter_mut().enumerate() {
                    let l = 16 * half + i;
                    if l < n {
                        let from = src.add(l * stride + q0);
                        // A hint (never faults): the run's line 16 blocks on, into L2 (into
                        // L1, or 4-8 blocks on, measured slower at 512->512 3x3 @7).
                        _mm_prefetch::<_MM_HINT_T1>(from.wrapping_add(256).cast());
                        *row = _mm512_maskz_loadu_ps(mask16(m), from);
                    }
                }
                let cols = transpose16(r);
                for (q, col) in cols.iter().enumerate().take(m) {
                    _mm512_storeu_ps(dst.add((q0 + q) * 32 + 16 * half), *col);
                }
            }
        }
    }
}

#[cfg(feature = "direct")]
const ROWS: Option<RowsKernel> = Some(RowsKernel {
    run: avx512_conv_rows::<false>,
    pixels: avx512_conv_rows::<true>,
    pixels_mr: 12,
    pack: avx512_rows_pack,
    mr: 14,
    nr: 32,
});
#[cfg(not(feature = "direct"))]
const ROWS: Option<RowsKernel> = None;

/// The AVX-512F kernels.
pub const AVX512_KERNELS: Kernel = Kernel {
    isa: Isa::Avx512,
    gemm: GemmKernel {
        id: "avx512_gemm_f32_12x32",
        mr: 12,
        nr: 32,
        b_in_place: true,
        edge: Some(avx512_gemm_f32_edge),
        small: Some(avx512_gemm_f32_small),
        tiles: Some(avx512_gemm_f32_tiles),
        rows: ROWS,
        column: None,
        run: avx512_gemm_f32_12x32,
    },
    depthwise: DepthwiseKernel { id: "avx512_dwconv_f32", run: avx512_dwconv_f32, lanes: <Avx512 as Simd>::LANES },
};

#[cfg(test)]
mod tests {
    extern crate std;

    /// # Safety
    /// The CPU runs AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn partial_lanes() {
        // SAFETY: the caller's.
        unsafe { crate::arch::check_partial_lanes::<super::Avx512>() }
    }

    /// The row tiles' weight panels: every run count (below, at and past one 16-run half) and
    /// run length (below, at and past one 16-float block) against the transpose element by
    /// element, the lanes past the runs zero.
    #[cfg(feature = "direct")]
    #[test]
    fn row_tile_panels_are_the_runs_transposed() {
        if !crate::arch::Isa::Avx512.is_available() {
            std::eprintln!("SKIP row tile panels: no AVX-512F on this CPU");
            return;
        }
        let stride = 45;
        let src: std::vec::Vec<f32> = (0..32 * stride).map(|i| i as f32 + 0.5).collect();
        for n in [1, 15, 16, 17, 32] {
            for len in [1, 9, 16, 17, 40, 45] {
                let mut dst = std::vec![f32::NAN; len * 32];
                // SAFETY: just checked; n runs of len floats stride apart in src; len * 32 at dst.
                unsafe { super::avx512_rows_pack(src.as_ptr(), stride, n, len, dst.as_mut_ptr()) };
                for q in 0..len {
                    for l in 0..32 {
                        let want = if l < n { src[l * stride + q] } else { 0.0 };
                        assert_eq!(dst[q * 32 + l], want, "n {n} len {len}: q {q} l {l}");
                    }
                }
            }
        }
    }

    #[test]
    fn partial_loads_and_stores_touch_only_their_lanes() {
        if !crate::arch::Isa::Avx512.is_available() {
            std::eprintln!("SKIP partial lanes: no AVX-512F on this CPU");
            return;
        }
        // SAFETY: just checked.
        unsafe { partial_lanes() }
    }
}
