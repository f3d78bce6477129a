//! NEON: 8 x 12 register tile (24 q-register accumulators, 3 for B, 1 broadcast of A).

use core::arch::aarch64::*;

use crate::arch::{gemm_body, DepthwiseKernel, GemmKernel, Isa, Kernel, MicroArgs, Simd};

/// 4-lane q vectors.
#[derive(Clone, Copy, Debug)]
pub struct Neon;

impl Simd for Neon {
    type V = float32x4_t;
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn deinterleave(a: float32x4_t, b: float32x4_t) -> (float32x4_t, float32x4_t) {
        // SAFETY: caller guarantees NEON.
        unsafe { (vuzp1q_f32(a, b), vuzp2q_f32(a, b)) }
    }
    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        // SAFETY: caller guarantees NEON.
        unsafe { vdupq_n_f32(0.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        // SAFETY: caller guarantees NEON.
        unsafe { vdupq_n_f32(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        // SAFETY: caller guarantees NEON and 4 readable floats at `p`.
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        // SAFETY: caller guarantees NEON and 4 writable floats at `p`.
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: caller guarantees NEON. vfmaq_f32(c, a, b) = c + a * b, fused.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: caller guarantees NEON.
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: caller guarantees NEON.
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: caller guarantees NEON. (fmax propagates NaN from either operand.)
        unsafe { vmaxq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: caller guarantees NEON. (fmin propagates NaN from either operand.)
        unsafe { vminq_f32(a, b) }
    }
}

/// # Safety
/// As [`crate::arch::GemmKernel::run`] with `mr = 8`, `nr = 12`, on a CPU with NEON.
#[target_feature(enable = "neon")]
unsafe fn neon_gemm_f32_8x12(p: &MicroArgs) {
    // SAFETY: forwarded contract; NEON is enabled for this function.
    unsafe { gemm_body::<Neon, 8, 3>(p) }
}

/// The kernel's edge tiles ([`crate::arch::GemmKernel`]'s `edge`): 4 or 8 rows of 4, 8 or 12
/// columns, the smallest that covers the tile's valid ones.
///
/// # Safety
/// As [`crate::arch::GemmKernel::run`] with `mr = 8`, `nr = 12`, on a CPU with NEON.
#[target_feature(enable = "neon")]
unsafe fn neon_gemm_f32_edge(p: &MicroArgs) {
    // SAFETY: forwarded contract (a smaller tile reads and writes a subset); NEON is enabled.
    unsafe {
        match (p.m <= 4, p.n.div_ceil(4)) {
            (true, 0..=1) => gemm_body::<Neon, 4, 1>(p),
            (true, 2) => gemm_body::<Neon, 4, 2>(p),
            (true, _) => gemm_body::<Neon, 4, 3>(p),
            (false, 0..=1) => gemm_body::<Neon, 8, 1>(p),
            (false, 2) => gemm_body::<Neon, 8, 2>(p),
            _ => gemm_body::<Neon, 8, 3>(p),
        }
    }
}

/// # Safety
/// As [`crate::arch::depthwise::depthwise_body`].
#[target_feature(enable = "neon")]
unsafe fn neon_dwconv_f32(p: &crate::arch::depthwise::DepthwiseArgs) {
    // SAFETY: forwarded contract; the ISA is enabled for this function.
    unsafe { crate::arch::depthwise::depthwise_body::<Neon>(p) }
}

/// # Safety
/// As [`crate::arch::small::small_body`], on a CPU with NEON.
#[target_feature(enable = "neon")]
unsafe fn neon_gemm_f32_small(p: &crate::arch::small::SmallArgs<'_>) {
    // SAFETY: forwarded contract; NEON is enabled for this function.
    unsafe { crate::arch::small::small_body::<Neon>(p) }
}

/// The NEON kernels.
pub const NEON_KERNELS: Kernel = Kernel {
    isa: Isa::Neon,
    gemm: GemmKernel {
        id: "neon_gemm_f32_8x12",
        mr: 8,
        nr: 12,
        b_in_place: true,
        edge: Some(neon_gemm_f32_edge),
        small: Some(neon_gemm_f32_small),
        tiles: None,
        rows: None,
        column: None,
        run: neon_gemm_f32_8x12,
    },
    depthwise: DepthwiseKernel { id: "neon_dwconv_f32", run: neon_dwconv_f32, lanes: <Neon as Simd>::LANES },
};

#[cfg(test)]
mod tests {
    #[test]
    fn partial_loads_and_stores_touch_only_their_lanes() {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { crate::arch::check_partial_lanes::<super::Neon>() }
    }
}
