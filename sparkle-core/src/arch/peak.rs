//! The FMA burst behind every "percent of peak": independent FMA chains on the widest vectors a
//! [`Kernel`]'s ISA has (AVX-512, AVX2, NEON, or scalar). sparkle-std times it on one thread and
//! on all to report the measured peak that GFLOPS figures and the juggler's CPU prior use.

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::Isa;
use super::{Kernel, Simd};

/// Independent accumulator chains: enough to cover FMA latency x throughput on current cores
/// (4-cycle latency x 2 pipes = 8; 12 leaves margin).
const CHAINS: usize = 12;

/// `iters` rounds of [`CHAINS`] independent FMAs on `S`'s vectors; returns a value that depends
/// on every one of them, so nothing is optimised away.
///
/// # Safety
/// The CPU supports `S`'s ISA.
#[inline(always)]
unsafe fn chains<S: Simd>(iters: u64) -> f32 {
    // SAFETY: (whole body) the caller runs on a CPU with S's ISA.
    unsafe {
        let mut acc = [S::zero(); CHAINS];
        let x = S::splat(0.999_999);
        let y = S::splat(1e-7);
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = S::fmadd(*a, x, y);
            }
        }
        let mut out = [0.0f32; 16];
        let mut sum = S::zero();
        for a in acc {
            sum = S::add(sum, a);
        }
        S::store(out.as_mut_ptr(), sum);
        out[0]
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains_avx512(iters: u64) -> f32 {
    // SAFETY: AVX-512F is enabled for this function and guaranteed by the caller.
    unsafe { chains::<super::x86_64::Avx512>(iters) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(iters: u64) -> f32 {
    // SAFETY: AVX2 and FMA are enabled for this function and guaranteed by the caller.
    unsafe { chains::<super::x86_64::Avx2>(iters) }
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn chains_neon(iters: u64) -> f32 {
    // SAFETY: NEON is enabled for this function and guaranteed by the caller.
    unsafe { chains::<super::aarch64::Neon>(iters) }
}

/// Runs `iters` rounds of independent FMA chains on the widest vectors of `kernel`'s ISA.
/// Returns `(flops, a value to keep alive)`; time it to get a peak.
pub fn fma_burst(kernel: &Kernel, iters: u64) -> (f64, f32) {
    let flops = |lanes: u64| (iters.saturating_mul(CHAINS as u64 * lanes * 2)) as f64;
    match kernel.isa {
        // SAFETY: a `Kernel` is obtainable only on a CPU that runs its ISA (AVX-512F here).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (flops(16), unsafe { chains_avx512(iters) }),
        // SAFETY: as above (AVX2 + FMA).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => (flops(8), unsafe { chains_avx2(iters) }),
        // SAFETY: as above (NEON).
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => (flops(4), unsafe { chains_neon(iters) }),
        _ => {
            // SAFETY: the scalar "ISA" runs everywhere.
            let v = unsafe { chains::<super::generic::Scalar>(iters) };
            (flops(1), v)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn burst_counts_its_flops() {
        let k = super::Kernel::generic();
        let (flops, v) = super::fma_burst(k, 10);
        assert_eq!(flops, (10 * super::CHAINS * 2) as f64);
        assert!(v.is_finite() && v > 0.0);
    }
}
