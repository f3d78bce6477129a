//! Run-time ISA detection, done once and cached, with `SPARKLE_ISA=generic|avx2|avx512|neon`
//! to force one (for tests and benchmarks).

use std::sync::OnceLock;

use sparkle_core::arch::{kernel_for, Isa, Kernel};

/// Whether this CPU can run `isa`.
pub fn supported(isa: Isa) -> bool {
    match isa {
        Isa::Generic => true,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => is_x86_feature_detected!("avx512f"),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
        _ => false,
    }
}

/// Every kernel of this build that this CPU can run, best first.
pub fn available_kernels() -> Vec<&'static Kernel> {
    sparkle_core::arch::KERNELS.iter().filter(|k| supported(k.isa)).collect()
}

/// Why a forced ISA could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsaError {
    /// `SPARKLE_ISA` named something unknown.
    Unknown(String),
    /// The named ISA has no kernel in this build or is not supported by this CPU.
    Unsupported(&'static str),
}

impl std::fmt::Display for IsaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IsaError::Unknown(s) => write!(f, "SPARKLE_ISA={s} is not one of generic, avx2, avx512, neon"),
            IsaError::Unsupported(s) => write!(f, "SPARKLE_ISA={s} is not supported by this CPU or build"),
        }
    }
}

impl std::error::Error for IsaError {}

/// The kernel for a forced ISA, if usable here.
pub fn kernel_for_isa(isa: Isa) -> Result<&'static Kernel, IsaError> {
    kernel_for(isa).filter(|k| supported(k.isa)).ok_or(IsaError::Unsupported(isa.name()))
}

fn choose() -> Result<&'static Kernel, IsaError> {
    match std::env::var("SPARKLE_ISA") {
        Ok(name) if !name.is_empty() => {
            let isa = Isa::from_name(&name).ok_or(IsaError::Unknown(name))?;
            kernel_for_isa(isa)
        }
        _ => Ok(available_kernels().first().copied().unwrap_or(&sparkle_core::arch::generic::GENERIC_GEMM_F32_4X4)),
    }
}

/// The GEMM kernel used by default: detected once per process (honouring `SPARKLE_ISA`).
pub fn gemm_kernel() -> Result<&'static Kernel, IsaError> {
    static CHOICE: OnceLock<Result<&'static Kernel, IsaError>> = OnceLock::new();
    CHOICE.get_or_init(choose).clone()
}
