//! AVX2 + FMA: 6 x 16 register tile (12 ymm accumulators, 2 for B, 1 broadcast of A).

use core::arch::x86_64::*;

use crate::arch::{gemm_body, DepthwiseKernel, GemmKernel, Isa, Kernel, MicroArgs, Simd};

/// 8-lane ymm vectors.
#[derive(Clone, Copy, Debug)]
pub struct Avx2;

impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: caller guarantees AVX2 and FMA.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: caller guarantees AVX2 and FMA.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: caller guarantees AVX2 and FMA and 8 readable floats at `p`.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: caller guarantees AVX2 and FMA and 8 writable floats at `p`.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: caller guarantees AVX2 and FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: caller guarantees AVX2 and FMA.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: caller guarantees AVX2 and FMA.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        // SAFETY: caller guarantees AVX2 and FMA. (vmaxps returns the second operand on NaN.)
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn prefetch(p: *const f32) {
        // SAFETY: prefetch is a hint that never faults, whatever the address; SSE is baseline on x86_64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        // SAFETY: caller guarantees AVX2 and FMA. (vminps returns the second operand on NaN.)
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn deinterleave(a: __m256, b: __m256) -> (__m256, __m256) {
        // SAFETY: caller guarantees AVX2. Within each 128-bit half, shufps takes two floats of
        // `a` then two of `b` ([a0 a2 b0 b2 | a4 a6 b4 b6]); the 64-bit permute orders the halves'
        // pairs as [a0 a2 a4 a6 b0 b2 b4 b6].
        unsafe {
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let odd = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
            (
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(even))),
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(odd))),
            )
        }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m256 {
        // SAFETY: caller guarantees AVX2 and `n` readable floats; masked-off lanes read nothing
        // (no fault).
        unsafe { _mm256_maskload_ps(p, mask8(n)) }
    }
    #[inline(always)]
    unsafe fn load_window(p: *const f32, lo: usize, hi: usize) -> __m256 {
        // SAFETY: caller guarantees AVX2 and lanes `lo..hi` readable; masked-off lanes read
        // nothing (no fault).
        unsafe { _mm256_maskload_ps(p, _mm256_andnot_si256(mask8(lo), mask8(hi))) }
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, n: usize, v: __m256) {
        // SAFETY: caller guarantees AVX2 and `n` writable floats; masked-off lanes write nothing.
        unsafe { _mm256_maskstore_ps(p, mask8(n), v) }
    }
}

/// The first `n` of 8 lanes as a `vmaskmovps` mask (sign bits), all of them from 8 on.
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn mask8(n: usize) -> __m256i {
    // SAFETY: the caller's AVX2.
    unsafe { _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)) }
}

/// # Safety
/// As [`crate::arch::GemmKernel::run`] with `mr = 6`, `nr = 16`, on a CPU with AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_gemm_f32_6x16(p: &MicroArgs) {
    // SAFETY: forwarded contract; AVX2 and FMA are enabled for this function.
    unsafe { gemm_body::<Avx2, 6, 2>(p) }
}

/// The kernel's edge tiles ([`crate::arch::GemmKernel`]'s `edge`): 3 or 6 rows of 8 or 16
/// columns, the smallest that covers the tile's valid ones.
///
/// # Safety
/// As [`crate::arch::GemmKernel::run`] with `mr = 6`, `nr = 16`, on a CPU with AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_gemm_f32_edge(p: &MicroArgs) {
    // SAFETY: forwarded contract (a smaller tile reads and writes a subset); the ISA is enabled.
    unsafe {
        match (p.m, p.n <= 8) {
            (0..=3, true) => gemm_body::<Avx2, 3, 1>(p),
            (0..=3, false) => gemm_body::<Avx2, 3, 2>(p),
            (_, true) => gemm_body::<Avx2, 6, 1>(p),
            _ => gemm_body::<Avx2, 6, 2>(p),
        }
    }
}

/// # Safety
/// As [`crate::arch::depthwise::depthwise_body`].
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_dwconv_f32(p: &crate::arch::depthwise::DepthwiseArgs) {
    // SAFETY: forwarded contract; the ISA is enabled for this function.
    unsafe { crate::arch::depthwise::depthwise_body::<Avx2>(p) }
}

/// # Safety
/// As [`crate::arch::small::small_body`], on a CPU with AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_gemm_f32_small(p: &crate::arch::small::SmallArgs<'_>) {
    // SAFETY: forwarded contract; AVX2 and FMA is enabled for this function.
    unsafe { crate::arch::small::small_body::<Avx2>(p) }
}

/// Small problems in register tiles of 6 x 16, 4 x 16 and 2 x 16 (15 of the 16 ymm at most: 12 sums, two of B, one of A).
///
/// # Safety
/// As [`crate::arch::tiles::tiles_body`], on a CPU with AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_gemm_f32_tiles(p: &crate::arch::small::SmallArgs<'_>) {
    // SAFETY: forwarded contract; the ISA is enabled for this function.
    unsafe { crate::arch::tiles::tiles_body::<Avx2, Avx2, 6, 4, 2, 2>(p) }
}

/// The AVX2 + FMA kernels.
pub const AVX2_KERNELS: Kernel = Kernel {
    isa: Isa::Avx2,
    gemm: GemmKernel {
        id: "avx2_gemm_f32_6x16",
        mr: 6,
        nr: 16,
        b_in_place: true,
        edge: Some(avx2_gemm_f32_edge),
        small: Some(avx2_gemm_f32_small),
        tiles: Some(avx2_gemm_f32_tiles),
        rows: None,
        column: None,
        run: avx2_gemm_f32_6x16,
    },
    depthwise: DepthwiseKernel { id: "avx2_dwconv_f32", run: avx2_dwconv_f32, lanes: <Avx2 as Simd>::LANES },
};

#[cfg(test)]
mod tests {
    extern crate std;

    /// # Safety
    /// The CPU runs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn partial_lanes() {
        // SAFETY: the caller's.
        unsafe { crate::arch::check_partial_lanes::<super::Avx2>() }
    }

    #[test]
    fn partial_loads_and_stores_touch_only_their_lanes() {
        if !crate::arch::Isa::Avx2.is_available() {
            std::eprintln!("SKIP partial lanes: no AVX2 on this CPU");
            return;
        }
        // SAFETY: just checked.
        unsafe { partial_lanes() }
    }
}
