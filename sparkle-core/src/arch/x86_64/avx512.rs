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

/// The AVX-512F kernels.
pub const AVX512_KERNELS: Kernel = Kernel {
    isa: Isa::Avx512,
    gemm: GemmKernel {
        id: "avx512_gemm_f32_12x32",
        mr: 12,
        nr: 32,
        b_in_place: true,
        edge: Some(avx512_gemm_f32_edge),
        run: avx512_gemm_f32_12x32,
    },
    depthwise: DepthwiseKernel { id: "avx512_dwconv_f32", run: avx512_dwconv_f32, lanes: <Avx512 as Simd>::LANES },
};
