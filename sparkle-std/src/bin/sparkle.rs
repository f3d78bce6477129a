//! The `sparkle` command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sparkle_std::demo;

#[derive(Parser)]
#[command(name = "sparkle", version, about = "Sparkle compute kernels: GEMM and conv2d on CPUs and any Vulkan GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a small conv-net slice, check every layer against the f64 oracle, and exercise every
    /// Vulkan device found.
    Demo,
    /// List the Vulkan devices.
    Devices,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => run_demo(),
        Command::Devices => list_devices(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sparkle: error: {e}");
            ExitCode::from(2)
        }
    }
}

type Failure = Box<dyn std::error::Error>;

fn list_devices() -> Result<ExitCode, Failure> {
    match sparkle_std::vk::devices() {
        Ok(devs) if devs.is_empty() => println!("no Vulkan device with a compute queue"),
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
            }
        }
        Err(e) => println!("no Vulkan: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_demo() -> Result<ExitCode, Failure> {
    println!("sparkle demo: conv + bias + ReLU layers on the CPU oracle, checked against f64\n");
    println!("{:<24} {:>12} {:>10} {:>10} {:>11} {:>11}  ok", "layer", "out", "ms", "GFLOPS", "max err", "tolerance");
    let reports = demo::run_cpu()?;
    let mut all_ok = true;
    for r in &reports {
        let g = &r.geometry;
        println!(
            "{:<24} {:>12} {:>10.3} {:>10.2} {:>11.2e} {:>11.2e}  {}",
            r.name,
            format!("{}x{}x{}", g.params().k, g.ho(), g.wo()),
            r.seconds * 1e3,
            r.gflops(),
            r.max_error,
            r.tolerance,
            if r.passed() { "PASS" } else { "FAIL" }
        );
        all_ok &= r.passed();
    }
    println!();
    match sparkle_std::vk::Context::best() {
        Ok(ctx) => {
            let x: Vec<f32> = (0..1000).map(|i| i as f32).collect();
            let mut y = vec![1.0f32; 1000];
            ctx.saxpy(2.0, &x, &mut y)?;
            let ok = y.iter().enumerate().all(|(i, &v)| v == 2.0 * i as f32 + 1.0);
            println!("vulkan: {} ran the smoke shader: {}", ctx.info().name, if ok { "PASS" } else { "FAIL" });
            all_ok &= ok;
        }
        Err(e) => println!("vulkan: skipped ({e})"),
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
