//! AVX-512F: 12 x 32 register tile (24 zmm accumulators, 2 for B, 1 broadcast of A).

use core::arch::x86_64::*;

use crate::arch::{gemm_body, DepthwiseKernel, GemmKernel, Isa, Kernel, MicroArgs, Simd};

/// 16-lane zmm vectors.
#[derive(Clone, Copy, Debug)]
pub struct Avx512;

impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;
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
