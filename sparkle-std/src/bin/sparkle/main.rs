//! The `sparkle` command-line tool.

mod bench;
mod cli;

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
    /// The main job: the ResNet-50 layers (conv + bias + ReLU, batch 1) on the fast CPU path,
    /// every layer checked against the f64 oracle, and every Vulkan device exercised.
    Demo {
        /// A scaled-down layer set that runs in well under a second.
        #[arg(long)]
        small: bool,
    },
    /// The CPU (brand, cores, caches, kernels, measured peak) and every Vulkan device.
    Devices,
    /// conv2d on .npy files: output = act(conv2d(input, weight) + bias).
    Conv2d(cli::Conv2dArgs),
    /// GEMM on .npy files: output = alpha * A @ B + beta * C.
    Gemm(cli::GemmArgs),
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
        /// `cpu`, or `vulkan` (the preferred Vulkan device, operands resident on it).
        #[arg(long, value_enum, default_value_t = BenchDevice::Cpu)]
        device: BenchDevice,
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
        /// `cpu`, or `vulkan` (the preferred Vulkan device, tensors resident on it).
        #[arg(long, value_enum, default_value_t = BenchDevice::Cpu)]
        device: BenchDevice,
        /// Batch size for every layer (overrides the layer's own n).
        #[arg(long)]
        batch: Option<usize>,
    },
    /// The measured FMA peak of this CPU, on one thread and on all.
    Peak {
        /// Threads for the all-threads figure (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
}

fn main() -> ExitCode {
    // A bug must still end in one line and exit code 2, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let text = info.to_string().replace('\n', " ");
        eprintln!("sparkle: internal error (please report): {text}");
        std::process::exit(2);
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            eprintln!("sparkle: {} (see --help)", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Demo { small } => run_demo(small),
        Command::Devices => list_devices(),
        Command::Conv2d(args) => cli::conv2d(&args),
        Command::Gemm(args) => cli::gemm(&args),
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

/// Where `sparkle bench` runs Sparkle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BenchDevice {
    Cpu,
    Vulkan,
}

fn run_bench(cmd: BenchCommand) -> Result<ExitCode, Failure> {
    match cmd {
        BenchCommand::Gemm { shapes, seconds, json, device: BenchDevice::Vulkan, .. } => {
            let shapes: Vec<[usize; 3]> = shapes.split(',').map(bench::parse_shape).collect::<Result<_, _>>()?;
            let (name, records) = bench::gemm_vulkan(&shapes, seconds)?;
            if !json {
                println!("device: {name} (Vulkan; operands resident, upload excluded)");
            }
            bench::print(&records, json, None);
        }
        BenchCommand::Gemm { shapes, threads, peers, json, seconds, device: BenchDevice::Cpu } => {
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
        BenchCommand::Conv2d { layers, threads, peers, json, seconds, device, batch } => {
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
            let mut layers = layers;
            if let Some(n) = batch {
                if n == 0 {
                    return Err("--batch must be at least 1".into());
                }
                layers.iter_mut().for_each(|l| l.params.n = n);
            }
            if device == BenchDevice::Vulkan {
                let (name, records) = bench::conv2d_vulkan(&layers, seconds)?;
                if !json {
                    println!("device: {name} (Vulkan; tensors resident, upload excluded)");
                }
                bench::print_conv(&records, json, None);
                return Ok(ExitCode::SUCCESS);
            }
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
    let cpu = sparkle_std::cpu::Cpu::new()?;
    let caches = sparkle_std::cpu::caches::cache_sizes();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernels: Vec<&str> = sparkle_std::cpu::isa::available_kernels().iter().map(|k| k.id).collect();
    println!("cpu: {} ({cores} threads)", cli::cpu_brand());
    println!(
        "  caches: L1d {} KiB, L2 {} KiB, L3 {} MiB per the OS",
        caches.l1d >> 10,
        caches.l2 >> 10,
        caches.l3 >> 20
    );
    println!("  kernels this CPU runs: {}; picked: {}", kernels.join(", "), cpu.kernel.id);
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
            }
        }
        Err(e) => println!("vulkan: none ({e})"),
    }
    println!("work placement: all ops on the CPU (the Vulkan GEMM/conv2d pipelines and the juggler are not in yet)");
    Ok(ExitCode::SUCCESS)
}

fn run_demo(small: bool) -> Result<ExitCode, Failure> {
    let cpu = sparkle_std::cpu::Cpu::new()?;
    let which = if small { demo::Layers::Small } else { demo::Layers::ResNet50 };
    println!("sparkle demo: conv + bias + ReLU at batch 1, every layer checked against the f64 oracle\n");
    println!(
        "{:<24} {:<14} {:<26} {:>9} {:>8} {:>10} {:>10}  ok",
        "layer", "path", "device", "ms", "GFLOPS", "max err", "tolerance"
    );
    let reports = demo::run_cpu(&cpu, which)?;
    let mut all_ok = true;
    let mut total = 0.0;
    for r in &reports {
        println!(
            "{:<24} {:<14} {:<26} {:>9.3} {:>8.1} {:>10.2e} {:>10.2e}  {}",
            r.name,
            r.path.name(),
            r.device,
            r.seconds * 1e3,
            r.gflops(),
            r.max_error,
            r.tolerance,
            if r.passed() { "PASS" } else { "FAIL" }
        );
        all_ok &= r.passed();
        total += r.seconds;
    }
    println!("\ntotal {:.2} ms on the CPU with {} thread(s)", total * 1e3, cpu.threads);
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
