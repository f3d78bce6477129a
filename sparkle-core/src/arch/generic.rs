//! Portable kernel: plain f32 arithmetic, one lane. This is what a Cortex-M4F runs (its FPU has
//! single-precision FMA, `vfma.f32`, which LLVM uses for `mul_add` when `+fp-armv8`/`+vfp4` is on).

use super::{column_by_tiles, gemm_body, DepthwiseKernel, GemmKernel, Isa, Kernel, MicroArgs, Simd};

/// One-lane "vector".
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar;

impl Simd for Scalar {
    type V = f32;
    const LANES: usize = 1;
    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller guarantees `p` is readable.
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the caller guarantees `p` is writable.
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn fmadd(a: f32, b: f32, c: f32) -> f32 {
        // Plain multiply-add, rounded twice (Rust does not contract it into an FMA): no libm
        // call on targets without an FMA instruction (Cortex-M0).
        a * b + c
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn max(a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn min(a: f32, b: f32) -> f32 {
        if a < b {
            a
        } else {
            b
        }
    }
}

/// # Safety
/// As [`crate::arch::GemmKernel::run`] with `mr = nr = 4`.
unsafe fn generic_gemm_f32_4x4(p: &MicroArgs) {
    // SAFETY: forwarded contract; the generic ISA runs on every CPU.
    unsafe { gemm_body::<Scalar, 4, 4>(p) }
}

/// # Safety
/// As [`crate::arch::GemmKernel::column`] with `mr = nr = 4`.
unsafe fn generic_gemm_f32_4x4_column(p: &MicroArgs, tiles: usize, a_step: usize) -> bool {
    // SAFETY: forwarded contract.
    unsafe { column_by_tiles(generic_gemm_f32_4x4, 4, p, tiles, a_step) }
}

/// # Safety
/// As [`crate::arch::depthwise::depthwise_body`].
unsafe fn generic_dwconv_f32(p: &crate::arch::depthwise::DepthwiseArgs) {
    // SAFETY: forwarded contract; the generic ISA runs on every CPU.
    unsafe { crate::arch::depthwise::depthwise_body::<Scalar>(p) }
}

/// # Safety
/// As [`crate::arch::small::small_body`].
unsafe fn generic_gemm_f32_small(p: &crate::arch::small::SmallArgs<'_>) {
    // SAFETY: forwarded contract; scalar code runs anywhere.
    unsafe { crate::arch::small::small_body::<Scalar>(p) }
}

/// The portable kernels; the GEMM tile is 4x4 (16 accumulators: fits the 32 single-precision registers of an M4F).
pub const GENERIC_KERNELS: Kernel = Kernel {
    isa: Isa::Generic,
    gemm: GemmKernel {
        id: "generic_gemm_f32_4x4",
        mr: 4,
        nr: 4,
        // The shared kernel body reads B through its row stride and tap table: so the direct
        // conv's channel planes run here too, and Miri checks them.
        b_in_place: true,
        edge: None,
        // On x86_64 and aarch64 only (where Miri runs it), not in the Cortex-M's flash.
        small: if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            Some(generic_gemm_f32_small)
        } else {
            None
        },
        tiles: None,
        rows: None,
        // So that the driver's column calls run on every host's tests (the Cortex-M4 has its own).
        column: Some(generic_gemm_f32_4x4_column),
        run: generic_gemm_f32_4x4,
    },
    depthwise: DepthwiseKernel { id: "generic_dwconv_f32", run: generic_dwconv_f32, lanes: <Scalar as Simd>::LANES },
};

#[cfg(test)]
mod tests {
    #[test]
    fn partial_loads_and_stores_touch_only_their_lanes() {
        // SAFETY: the portable type runs everywhere.
        unsafe { crate::arch::check_partial_lanes::<super::Scalar>() }
    }
}
