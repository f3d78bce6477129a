//! Shared helpers of the cross-backend tests.
#![deny(missing_docs)]

pub use sparkle_std::demo::fill;

mod skip;
pub use skip::{required, skip};

/// A context on every Vulkan device here (its tile rules pinned to the rule), or none with a loud
/// skip (`SPARKLE_REQUIRE_VULKAN=1` makes that a failure).
#[cfg(feature = "vulkan")]
pub fn vk_contexts() -> Vec<sparkle_vk::Context> {
    match sparkle_vk::devices() {
        Ok(d) if !d.is_empty() => {
            d.iter().map(|i| pinned(sparkle_vk::Context::new(i.index).expect("open device"))).collect()
        }
        Ok(_) => {
            skip("VULKAN", "no Vulkan device with a compute queue");
            Vec::new()
        }
        Err(e) => {
            skip("VULKAN", &format!("no Vulkan: {e}"));
            Vec::new()
        }
    }
}

#[cfg(feature = "vulkan")]
/// `ctx` with every dtype's tile rules pinned to [`sparkle_vk::TileRules::rule`]: the tests pick
/// their shapes to cover each kernel's tiles and split-K under the rule (a device's measured
/// rules are tested apart, in `half_vk.rs`).
fn pinned(ctx: sparkle_vk::Context) -> sparkle_vk::Context {
    for dtype in sparkle_vk::TileDtype::ALL {
        ctx.set_tile_rules(dtype, sparkle_vk::TileRules::rule(dtype));
    }
    ctx
}

/// The int8 side of the stamped tests (`qgemm_cpu.rs`, `qconv_cpu.rs`, `qgemm_vk.rs`).
pub mod quant;

/// The bf16 side of the stamped tests (`bf16_gemm_cpu.rs`).
pub mod bf16 {
    use sparkle_core::arch::bf16::BKernel;
    use sparkle_core::arch::Isa;
    use sparkle_std::cpu::isa::bkernel_for_isa;
    use sparkle_std::cpu::Cpu;

    /// The bf16 kernel for `isa` if this CPU runs it; otherwise a loud skip (a failure when
    /// `SPARKLE_REQUIRE_<ISA>=1`).
    pub fn kernel(isa: Isa) -> Option<&'static BKernel> {
        match bkernel_for_isa(isa) {
            Ok(k) => Some(k),
            Err(_) => {
                let why = format!("this CPU or build cannot run the {} bf16 kernel", isa.name());
                crate::skip(&isa.name().to_uppercase(), &why);
                None
            }
        }
    }

    /// The CPU path with bf16 kernel `k` on `threads` threads, even for tiny problems.
    pub fn cpu(k: &'static BKernel, threads: usize) -> Cpu {
        Cpu { bkernel: k, parallel_min_fmas: 0.0, ..Cpu::new().unwrap().threads(threads) }
    }
}
