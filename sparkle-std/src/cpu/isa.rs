//! Which kernel set runs: the best this CPU has ([`Kernel::best`], detected once by the core), or
//! the one `SPARKLE_ISA=generic|avx2|avx512|neon|avx512vnni|avxvnni|avx512bf16|armdsp|neondot|neoni8mm|amxint8|amxbf16|armfpu` forces (for tests
//! and benchmarks). Asking for an ISA this CPU lacks is an error, never a kernel that would
//! fault.
//!
//! The core detects x86 features itself (CPUID); aarch64's dot product and int8 matrix multiply
//! are published by the OS, which [`detect`] asks and tells the core. Every function here calls
//! it first.

use std::sync::OnceLock;

use sparkle_core::arch::bf16::BKernel;
use sparkle_core::arch::quant::QKernel;
use sparkle_core::arch::{Isa, Kernel};

/// Tells the core what this CPU runs that it cannot detect without an OS (aarch64's dot product
/// and int8 matrix multiply, from std's detection). Idempotent and cheap after the first call.
pub fn detect() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(target_arch = "aarch64")]
        #[allow(unsafe_code)] // the one declaration, from std's detection
        for (isa, has) in [
            (Isa::NeonDot, std::arch::is_aarch64_feature_detected!("dotprod")),
            (Isa::NeonI8mm, std::arch::is_aarch64_feature_detected!("i8mm")),
        ] {
            if has {
                // SAFETY: the OS reports that this CPU executes the ISA's instructions.
                unsafe { isa.declare_available() };
            }
        }
    });
}

/// Whether this CPU can run `isa` (the core's detection, after [`detect`]: the one authority a
/// [`Kernel`] checks).
pub fn supported(isa: Isa) -> bool {
    detect();
    isa.is_available()
}

/// Every kernel of this build that this CPU can run, best first.
pub fn available_kernels() -> Vec<&'static Kernel> {
    detect();
    Kernel::available().collect()
}

/// Every int8 kernel of this build that this CPU can run, best first.
pub fn available_qkernels() -> Vec<&'static QKernel> {
    detect();
    QKernel::available().collect()
}

/// Why a forced ISA could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsaError {
    /// `SPARKLE_ISA` named something unknown.
    #[error("SPARKLE_ISA={0} is not one of generic, avx2, avx512, neon, avx512vnni, avxvnni, avx512bf16, armdsp, neondot, neoni8mm, amxint8, amxbf16, armfpu")]
    Unknown(String),
    /// The named ISA has no kernel in this build or is not supported by this CPU.
    #[error("the {0} kernels cannot run here: this CPU or build lacks them")]
    Unsupported(&'static str),
}

/// The kernel for `isa`, if this build has one and this CPU runs it.
pub fn kernel_for_isa(isa: Isa) -> Result<&'static Kernel, IsaError> {
    detect();
    Kernel::for_isa(isa).ok_or(IsaError::Unsupported(isa.name()))
}

/// The ISA `SPARKLE_ISA` forces, if set.
fn forced() -> Result<Option<Isa>, IsaError> {
    match std::env::var("SPARKLE_ISA") {
        Ok(name) if !name.is_empty() => Isa::from_name(&name).map(Some).ok_or(IsaError::Unknown(name)),
        _ => Ok(None),
    }
}

/// The f32 kernels of a forced ISA: `avx512vnni`, `avx512bf16`, `amxint8` and `amxbf16` (which
/// only int8 and bf16 kernels use) mean AVX-512, `avxvnni` AVX2, `neondot` and `neoni8mm` NEON.
fn choose() -> Result<&'static Kernel, IsaError> {
    match forced()? {
        Some(isa @ (Isa::Avx512Vnni | Isa::AmxInt8 | Isa::AmxBf16)) if supported(isa) => kernel_for_isa(Isa::Avx512),
        Some(Isa::AvxVnni) if supported(Isa::AvxVnni) => kernel_for_isa(Isa::Avx2),
        Some(Isa::Avx512Bf16) if supported(Isa::Avx512Bf16) => kernel_for_isa(Isa::Avx512),
        Some(isa @ (Isa::NeonDot | Isa::NeonI8mm)) if supported(isa) => kernel_for_isa(Isa::Neon),
        Some(isa) => kernel_for_isa(isa),
        None => Ok(Kernel::best()),
    }
}

/// The int8 kernel for `isa`, if this build has one and this CPU runs it.
pub fn qkernel_for_isa(isa: Isa) -> Result<&'static QKernel, IsaError> {
    detect();
    QKernel::for_isa(isa).ok_or(IsaError::Unsupported(isa.name()))
}

/// The int8 kernel of a forced ISA: AVX-512F without VNNI has none of its own and runs AVX2's,
/// plain NEON the generic one.
fn choose_q() -> Result<&'static QKernel, IsaError> {
    match forced()? {
        Some(Isa::Avx512) if Isa::Avx512.is_available() => qkernel_for_isa(Isa::Avx2),
        Some(isa @ (Isa::Avx512Bf16 | Isa::AmxBf16)) if supported(isa) => {
            qkernel_for_isa(Isa::Avx512Vnni).or_else(|_| qkernel_for_isa(Isa::Avx2))
        }
        Some(Isa::Neon) if Isa::Neon.is_available() => Ok(QKernel::generic()),
        Some(isa) => qkernel_for_isa(isa),
        None => {
            detect();
            Ok(QKernel::best())
        }
    }
}

/// The int8 GEMM kernel used by default: detected once per process (honouring `SPARKLE_ISA`).
pub fn qgemm_kernel() -> Result<&'static QKernel, IsaError> {
    static CHOICE: OnceLock<Result<&'static QKernel, IsaError>> = OnceLock::new();
    CHOICE.get_or_init(choose_q).clone()
}

/// The bf16 kernel for `isa`, if this build has one and this CPU runs it.
pub fn bkernel_for_isa(isa: Isa) -> Result<&'static BKernel, IsaError> {
    detect();
    BKernel::for_isa(isa).ok_or(IsaError::Unsupported(isa.name()))
}

/// Every bf16 kernel of this build that this CPU can run, best first.
pub fn available_bkernels() -> Vec<&'static BKernel> {
    detect();
    BKernel::available().collect()
}

/// The bf16 kernel of a forced ISA: the VNNI ISAs and AMX-INT8 run the widening kernel of their vector width,
/// the Arm ones the generic kernel.
fn choose_b() -> Result<&'static BKernel, IsaError> {
    match forced()? {
        Some(isa @ (Isa::Avx512Vnni | Isa::AmxInt8)) if supported(isa) => bkernel_for_isa(Isa::Avx512),
        Some(Isa::AvxVnni) if supported(Isa::AvxVnni) => bkernel_for_isa(Isa::Avx2),
        Some(isa @ (Isa::Neon | Isa::NeonDot | Isa::NeonI8mm | Isa::ArmDsp | Isa::ArmFpu)) if supported(isa) => {
            Ok(BKernel::generic())
        }
        Some(isa) => bkernel_for_isa(isa),
        None => Ok(fastest_bkernel()),
    }
}

/// The fastest of the bf16 kernels this CPU runs, by measurement among the first three of the
/// table (AMX, `vdpbf16ps`, the AVX-512F widening kernel, as the CPU has them): `vdpbf16ps`
/// does twice an FMA's products per instruction, but some cores issue it at half the FMA rate (a
/// Sapphire Rapids-class Xeon: 0.5 per cycle), where the f32-widening kernel wins; a rule by
/// vendor or model would be guesswork. Each candidate runs a 128 x 128 x 1024 product (in cache,
/// 34 MFLOP) once to warm up, then five times alternating with the others; the best time decides.
/// About 5-10 milliseconds, once per process.
fn fastest_bkernel() -> &'static BKernel {
    use sparkle_core::bf16::{bf16, gemm_bf16_scratch_len, gemm_bf16_with, BWorkspace};
    use sparkle_core::gemm::driver::Sequential;
    use sparkle_core::{MatMut, MatRef};
    detect();
    let candidates: Vec<&'static BKernel> = BKernel::available().filter(|k| k.isa() != Isa::Generic).take(3).collect();
    if candidates.len() < 2 {
        return BKernel::best();
    }
    let (m, n, k) = (128, 128, 1024);
    let a: Vec<bf16> = (0..m * k).map(|i| bf16::from_f32((i % 7) as f32 - 3.0)).collect();
    let b: Vec<bf16> = (0..k * n).map(|i| bf16::from_f32((i % 5) as f32 - 2.0)).collect();
    let mut c = vec![0.0f32; m * n];
    let mut run = |kernel: &BKernel| -> Option<std::time::Duration> {
        let (av, bv) = (MatRef::row_major(&a, m, k).ok()?, MatRef::row_major(&b, k, n).ok()?);
        let mut scratch = vec![0u32; gemm_bf16_scratch_len(kernel, m, n, k, 1).ok()?];
        let t = std::time::Instant::now();
        let cv = MatMut::row_major(&mut c, m, n).ok()?;
        gemm_bf16_with(&av, &bv, cv, BWorkspace { kernel, exec: &Sequential, scratch: &mut scratch }).ok()?;
        Some(t.elapsed())
    };
    // A warm-up each (clocks, caches), then five alternating rounds; the best time of each.
    let mut best = vec![std::time::Duration::MAX; candidates.len()];
    for round in 0..6 {
        for (kernel, best) in candidates.iter().zip(best.iter_mut()) {
            match run(kernel) {
                Some(t) if round > 0 => *best = (*best).min(t),
                Some(_) => {}
                None => return BKernel::best(),
            }
        }
    }
    candidates
        .into_iter()
        .zip(best)
        .map(|(kernel, t)| (t, kernel))
        .min_by_key(|(t, _)| *t)
        .map_or(BKernel::best(), |(_, kernel)| kernel)
}

/// The bf16 GEMM kernel used by default: detected once per process (honouring `SPARKLE_ISA`).
pub fn bgemm_kernel() -> Result<&'static BKernel, IsaError> {
    static CHOICE: OnceLock<Result<&'static BKernel, IsaError>> = OnceLock::new();
    CHOICE.get_or_init(choose_b).clone()
}

/// The GEMM kernel used by default: detected once per process (honouring `SPARKLE_ISA`).
pub fn gemm_kernel() -> Result<&'static Kernel, IsaError> {
    static CHOICE: OnceLock<Result<&'static Kernel, IsaError>> = OnceLock::new();
    CHOICE.get_or_init(choose).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether Linux lists `flag` for this CPU.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fn cpuinfo_flag(flag: &str) -> bool {
        std::fs::read_to_string("/proc/cpuinfo")
            .is_ok_and(|c| c.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == flag)))
    }

    /// The core's `no_std` detection (CPUID + XGETBV) agrees with std's for every ISA (for AMX,
    /// whose std detection is not stable Rust, with the flags Linux lists).
    #[test]
    fn core_detection_agrees_with_std() {
        detect();
        // The core counts AVX-512F only with what `target_feature(enable = "avx512f")` implies.
        #[cfg(target_arch = "x86_64")]
        let avx512f = || {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        };
        for isa in Isa::ALL {
            let std_says = match isa {
                Isa::Generic => true,
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => avx512f(),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512Vnni => {
                    avx512f() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw")
                }
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512Bf16 => avx512f() && is_x86_feature_detected!("avx512bf16"),
                #[cfg(target_arch = "x86_64")]
                Isa::AvxVnni => {
                    is_x86_feature_detected!("avxvnni")
                        && is_x86_feature_detected!("avx2")
                        && is_x86_feature_detected!("fma")
                }
                // std's AMX detection is not stable Rust; Linux lists the flag only where it
                // supports the tile state (and this process may then always ask for it).
                #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
                Isa::AmxInt8 => avx512f() && cpuinfo_flag("amx_int8") && is_x86_feature_detected!("avx512bw"),
                #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
                Isa::AmxBf16 => avx512f() && cpuinfo_flag("amx_bf16"),
                #[cfg(target_arch = "aarch64")]
                Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
                #[cfg(target_arch = "aarch64")]
                Isa::NeonDot => std::arch::is_aarch64_feature_detected!("dotprod"),
                #[cfg(target_arch = "aarch64")]
                Isa::NeonI8mm => std::arch::is_aarch64_feature_detected!("i8mm"),
                _ => false,
            };
            assert_eq!(isa.is_available(), std_says, "{isa:?}");
        }
    }

    /// Asking for an ISA this CPU or build lacks is an error, not a kernel.
    #[test]
    fn a_missing_isa_is_an_error() {
        for isa in Isa::ALL {
            match kernel_for_isa(isa) {
                Ok(k) => assert!(supported(k.isa()) && k.isa() == isa),
                Err(e) => {
                    assert!(!supported(isa) || Kernel::compiled_ids().all(|(_, i)| i != isa));
                    assert!(e.to_string().contains(isa.name()));
                }
            }
        }
        // At least one ISA of the four is missing on any one machine (x86 has no NEON and the
        // reverse), so the error path above ran.
        assert!(Isa::ALL.iter().any(|&i| kernel_for_isa(i).is_err()));
    }
}
