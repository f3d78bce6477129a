//! `sparkle devices`: the CPU (kernels, caches, measured peak), every Vulkan device, and where
//! the juggler would put small and large work.

use std::process::ExitCode;

use crate::cli;
use crate::Failure;

pub fn run() -> Result<ExitCode, Failure> {
    let cpu = sparkle_std::cpu::Cpu::new()?;
    let caches = sparkle_std::cpu::caches::cache_sizes();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernels: Vec<&str> = sparkle_std::cpu::isa::available_kernels().iter().map(|k| k.id()).collect();
    println!("cpu: {} ({cores} threads)", cli::cpu_brand());
    println!(
        "  caches: L1d {} KiB, L2 {} KiB, L3 {} MiB per the OS",
        caches.l1d >> 10,
        caches.l2 >> 10,
        caches.l3 >> 20
    );
    println!("  kernels this CPU runs: {}; picked: {}", kernels.join(", "), cpu.kernel.id());
    // What the GEMM and conv drivers block by, and why (issue 20 asks `devices` to say).
    let b = cpu.blocking;
    let forced = sparkle_std::cpu::backend::blocking_override().is_some();
    println!(
        "  blocking: mc {}, kc {}, nc {}, {}",
        b.mc,
        b.kc,
        b.nc,
        if forced {
            "from SPARKLE_BLOCKING"
        } else {
            "from the caches (B micro-panel <= L2/4, kc <= 512; A block <= L2/2; B block <= L3/2)"
        }
    );
    const FEW: &str = "few-row GEMMs (<= 64 rows, B in place, rows 4 KiB apart)";
    if forced {
        println!(
            "  {FEW}: kc {} on 1 thread, {} on more, from SPARKLE_BLOCKING",
            b.few_rows_kc(1, b.kc),
            b.few_rows_kc(2, b.kc)
        );
    } else {
        let t = sparkle_std::cpu::tune::tuning(cpu.kernel);
        for p in &t.few_rows {
            let why = if p.points.is_empty() {
                "not measured (this kernel does not read B in place, or runs too slowly to time)".to_string()
            } else {
                let each: Vec<String> = p.points.iter().map(|q| format!("kc {} {:.0}", q.kc, q.mean())).collect();
                format!(
                    "measured, GFLOPS (geometric mean of {} shapes): {}",
                    sparkle_std::cpu::tune::SHAPES.len(),
                    each.join(", ")
                )
            };
            println!("  {FEW} on {} thread(s): kc {}, {why}", p.threads, p.kc);
        }
    }
    println!("  {}", winograd_line(cpu.kernel, &cpu.blocking, forced));
    let qkernels: Vec<&str> = sparkle_std::cpu::isa::available_qkernels().iter().map(|k| k.id()).collect();
    println!("  int8 kernels this CPU runs: {}; picked: {}", qkernels.join(", "), cpu.qkernel.id());
    let bkernels: Vec<&str> = sparkle_std::cpu::isa::available_bkernels().iter().map(|k| k.id()).collect();
    println!("  bf16 kernels this CPU runs: {}; picked: {}", bkernels.join(", "), cpu.bkernel.id());
    println!(
        "  measured FMA peak: {:.0} GFLOPS on 1 thread, {:.0} on {cores}",
        sparkle_std::cpu::peak::peak_gflops(1),
        sparkle_std::cpu::peak::peak_gflops(cores)
    );
    match sparkle_std::vk::devices() {
        Ok(devs) if devs.is_empty() => println!("vulkan: no device with a compute queue"),
        Ok(devs) => {
            for d in devs {
                println!(
                    "vulkan:{} {} [{}] vendor {:#06x} driver {} api {} subgroup {} shared {} KiB local {} MiB",
                    d.index,
                    d.name,
                    d.device_type,
                    d.vendor_id,
                    d.driver_name.as_deref().unwrap_or("?"),
                    d.api_version,
                    d.subgroup_size.map_or("?".to_string(), |s| s.to_string()),
                    d.max_shared_memory / 1024,
                    d.device_local_bytes >> 20
                );
                println!(
                    "  half GEMM and conv2d: f16 on {}, bf16 on {}",
                    if d.cooperative_matrix2_f16 {
                        "workgroup cooperative matrices (VK_NV_cooperative_matrix2, f32 accumulation) for large GEMMs, 16x16x16 ones for the rest"
                    } else if d.cooperative_matrix_f16 {
                        "cooperative matrices (16x16x16, f32 accumulation)"
                    } else {
                        "shader cores (no usable cooperative matrices)"
                    },
                    if d.cooperative_matrix_bf16 {
                        "workgroup cooperative matrices (VK_KHR_shader_bfloat16) for GEMMs, 16x16x16 ones for conv2d"
                    } else if d.cooperative_matrix2_bf16 {
                        "workgroup cooperative matrices (VK_KHR_shader_bfloat16) for GEMMs, shader cores for conv2d"
                    } else {
                        "shader cores"
                    }
                );
                println!(
                    "  int8 GEMM: {}",
                    if d.cooperative_matrix_i8 {
                        "cooperative matrices (16x16x32, i32 accumulation)"
                    } else {
                        "shader cores (no usable int8 cooperative matrices)"
                    }
                );
                println!(
                    "  f32 GEMM at --precision high / medium: {}",
                    if d.cooperative_matrix_f16 {
                        "3 / 1 f16 products per f32 product on cooperative matrices"
                    } else {
                        "f32 on shader cores, as highest"
                    }
                );
                if let Ok(ctx) = sparkle_std::vk::Context::new(d.index) {
                    match ctx.tuning().min_vec4_tiles {
                        u32::MAX => println!("  GEMM kernel (autotuned): 64x64 tiles at every size"),
                        t => println!(
                            "  GEMM kernel (autotuned): 128x128 vec4 tiles from {t} tiles of C up, 64x64 below"
                        ),
                    }
                    let how = match sparkle_std::vk::TileRules::forced() {
                        true => "the rule, SPARKLE_VK_TILES=rule",
                        false => "autotuned",
                    };
                    for dtype in sparkle_std::vk::TileDtype::ALL {
                        if let Some(line) = tile_line(&ctx, dtype) {
                            println!("  {} GEMM tiles ({how}): {line}", dtype.name());
                        }
                    }
                }
            }
        }
        Err(e) => println!("vulkan: none ({e})"),
    }
    // What the handle every command uses would do (its learned model included), without running.
    let sparkle = sparkle_std::Sparkle::new()?;
    for (what, n) in [("small work (GEMM 64^3)", 64), ("large work (GEMM 4096^3)", 4096)] {
        let all = sparkle.predict_gemm(n, n, n);
        if let Some(p) = all.iter().min_by(|a, b| (a.run + a.wait).total_cmp(&(b.run + b.wait))) {
            let others: Vec<String> = all
                .iter()
                .map(|p| format!("{} {:.3} ms + {:.0} ms wait", p.device, p.run * 1e3, p.wait * 1e3))
                .collect();
            println!("juggler: {what} goes to {} ({})", p.device, others.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `dtype`'s measured tile rules choose on `ctx`'s device, or `None` where it has one kernel
/// and no split-K for it (int8 without cooperative matrices).
pub(crate) fn tile_line(ctx: &sparkle_std::vk::Context, dtype: sparkle_std::vk::TileDtype) -> Option<String> {
    use sparkle_std::vk::TileDtype;
    let (has_large, split) = ctx.tile_choices(dtype);
    let large = has_large.then_some(match dtype {
        TileDtype::F16 if !ctx.has_cooperative_matrix2_f16() => "128x128 cooperative-matrix tiles",
        TileDtype::Int8 => "128x128 cooperative-matrix tiles",
        _ => "workgroup cooperative matrices",
    });
    let r = ctx.tile_rules(dtype);
    let small = if dtype == TileDtype::Bf16 { "64x64 tiles on shader cores" } else { "64x64 tiles" };
    let mut parts = Vec::new();
    if let Some(large) = large {
        parts.push(match r.min_full_tiles {
            0 => format!("{large} at every size"),
            u32::MAX => format!("{small} at every size"),
            t => format!("{large} from {t} tiles of 128x128 up, {small} below"),
        });
        if dtype == TileDtype::F16 && !ctx.has_cooperative_matrix2_f16() && r.min_large_tiles != u32::MAX {
            parts.push(format!("128x256 tiles from {} of them", r.min_large_tiles));
        }
    }
    if split {
        parts.push(format!("split-K to {} workgroups where there are fewer tiles", r.split_k_groups));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Where 3x3 stride-1 convs of channel planes run as Winograd rather than direct, and why.
fn winograd_line(
    kernel: &'static sparkle_core::arch::Kernel,
    b: &sparkle_core::gemm::blocking::Blocking,
    forced: bool,
) -> String {
    use sparkle_std::cpu::tune;
    let what = format!(
        "3x3 stride-1 NCHW convs that Winograd and the direct conv both take: Winograd {}, direct on more threads (from 16 channels)",
        tune::winograd_from(b.winograd_min_channels)
    );
    if forced {
        return format!("{what} (the rule, with SPARKLE_BLOCKING)");
    }
    let t = tune::tuning(kernel);
    if t.convs.races.is_empty() {
        return format!("{what}; the rule (not measured: this kernel runs one of the two, or too slowly to time)");
    }
    let each: Vec<String> = t
        .convs
        .races
        .iter()
        .map(|r| {
            let by: Vec<String> = tune::CONVS
                .iter()
                .zip(r.winograd.iter().zip(&r.direct))
                .map(|((c, hw), (w, d))| format!("{c}@{hw} {w:.0}/{d:.0}"))
                .collect();
            format!("{} thread(s) {}", r.workers, by.join(", "))
        })
        .collect();
    format!("{what}; measured, GFLOPS Winograd/direct by channels@size: {}", each.join("; "))
}
