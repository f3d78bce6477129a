//! The `sparkle` command-line tool.

mod bench;

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
    /// Measure Sparkle beside its peers.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// GEMM f32 GFLOPS per shape: sparkle, and with --peers matrixmultiply, the gemm crate and
    /// numpy/OpenBLAS (through python3, when numpy is installed).
    Gemm {
        /// Comma-separated shapes, `MxNxK` or `N` for square.
        #[arg(long, default_value = bench::DEFAULT_SHAPES)]
        shapes: String,
        /// Threads for every implementation.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Also measure the peers, in the same run.
        #[arg(long)]
        peers: bool,
        /// Print one JSON array of records instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds of timed repetitions per implementation and shape.
        #[arg(long, default_value_t = 0.5)]
        seconds: f64,
    },
    /// conv2d f32 + ReLU GFLOPS per layer: sparkle (fused), and with --peers sparkle's unfused
    /// im2col + GEMM and PyTorch/oneDNN (through python3, when torch is installed).
    Conv2d {
        /// `resnet50` (the ResNet-50 layer set at batch 1 and a depthwise layer), or a file with
        /// one layer a line: `name c=64 h=56 w=56 k=64 r=3 s=3 pad=1 [n= stride= dilation= groups= layout=]`.
        #[arg(long, default_value = "resnet50")]
        layers: String,
        /// Threads for every implementation.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Also measure the peers, in the same run.
        #[arg(long)]
        peers: bool,
        /// Print one JSON array of records instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds of timed repetitions per implementation and layer.
        #[arg(long, default_value_t = 0.5)]
        seconds: f64,
    },
    /// The measured FMA peak of this CPU, on one thread and on all.
    Peak {
        /// Threads for the all-threads figure (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => run_demo(),
        Command::Devices => list_devices(),
        Command::Bench(b) => run_bench(b),
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

fn run_bench(cmd: BenchCommand) -> Result<ExitCode, Failure> {
    match cmd {
        BenchCommand::Gemm { shapes, threads, peers, json, seconds } => {
            if threads == 0 {
                return Err("--threads must be at least 1".into());
            }
            if !(seconds.is_finite() && seconds > 0.0) {
                return Err("--seconds must be a positive number".into());
            }
            let shapes: Vec<[usize; 3]> = shapes.split(',').map(bench::parse_shape).collect::<Result<_, _>>()?;
            // matrixmultiply reads its thread count once, from the environment, on first use;
            // no other thread exists yet at this point.
            std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
            let records = bench::gemm(&shapes, threads, peers, seconds)?;
            let peak = (!json).then(|| sparkle_std::cpu::peak::peak_gflops(threads));
            bench::print(&records, json, peak);
        }
        BenchCommand::Conv2d { layers, threads, peers, json, seconds } => {
            if threads == 0 {
                return Err("--threads must be at least 1".into());
            }
            if !(seconds.is_finite() && seconds > 0.0) {
                return Err("--seconds must be a positive number".into());
            }
            let layers = if layers == "resnet50" {
                bench::resnet50_layers()
            } else {
                let text = std::fs::read_to_string(&layers).map_err(|e| format!("cannot read {layers}: {e}"))?;
                bench::parse_layers(&text)?
            };
            let records = bench::conv2d(&layers, threads, peers, seconds)?;
            let peak = (!json).then(|| sparkle_std::cpu::peak::peak_gflops(threads));
            bench::print_conv(&records, json, peak);
        }
        BenchCommand::Peak { threads } => {
            bench::peak(threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())))
        }
    }
    Ok(ExitCode::SUCCESS)
}

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
