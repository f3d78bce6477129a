//! The `sparkle` command-line tool.

mod bench;
mod cli;
mod plot;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sparkle_std::demo;
use sparkle_std::juggler::{store, DeviceId};

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
    /// The demo's layers as a stream over the CPU and every Vulkan device at once (GPU layers
    /// asynchronous, weights resident): each layer measured on each device, then the stream
    /// always on each device, with the best fixed assignment, and with the juggler; every
    /// output checked against the f64 oracle.
    Stream {
        /// Images per layer.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Times the layer sequence runs.
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// The scaled-down layer set.
        #[arg(long)]
        small: bool,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// conv2d on .npy files: output = act(conv2d(input, weight) + bias).
    Conv2d(cli::Conv2dArgs),
    /// GEMM on .npy files: output = alpha * A @ B + beta * C.
    Gemm(cli::GemmArgs),
    /// Measure Sparkle beside its peers.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Measure GEMMs and the demo's conv layers on every device so the juggler starts from a good
    /// model (progress bar; Ctrl-C stops and keeps what was measured).
    Calibrate {
        /// Largest GEMM size.
        #[arg(long, default_value_t = 1024)]
        max: usize,
        /// Only the small conv layers (seconds instead of a minute on slow devices).
        #[arg(long)]
        small: bool,
    },
    /// The juggler's learned model: where it is, what it holds, or start over.
    #[command(subcommand)]
    Model(ModelCommand),
    /// The juggler's replay benchmark and the recordings it replays.
    #[command(subcommand)]
    Juggler(JugglerCommand),
}

#[derive(Subcommand)]
enum JugglerCommand {
    /// Measure square GEMMs on the CPU and the preferred Vulkan device (host tensors, copies
    /// included) and write a recording for `replay`.
    Record {
        /// Output CSV.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Largest GEMM size to measure.
        #[arg(long, default_value_t = 512)]
        max: usize,
    },
    /// Replay a recording through every policy (oracle, fixed rules, StarPU-like dmda,
    /// epsilon-greedy, Sparkle) on traces T1-T4.
    Replay {
        /// Recording CSV (from `record`).
        #[arg(long)]
        samples: std::path::PathBuf,
        /// T1, T2, T3, T4 or all.
        #[arg(long, default_value = "all")]
        trace: String,
        /// One JSON array of records instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Print the model file's path.
    Path,
    /// Summarise the learned model.
    Show,
    /// Delete the learned model (the juggler starts again from its priors).
    Reset,
}

/// Options every `sparkle bench gemm|conv2d` takes.
#[derive(clap::Args)]
struct BenchArgs {
    /// Threads for every implementation.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also measure the peers, in the same run.
    #[arg(long)]
    peers: bool,
    /// Print one JSON array of records instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds of timed repetitions per implementation and shape or layer.
    #[arg(long, default_value_t = 0.5)]
    seconds: f64,
    /// `cpu`, or `vulkan` (the preferred Vulkan device, tensors resident on it).
    #[arg(long, value_enum, default_value_t = BenchDevice::Cpu)]
    device: BenchDevice,
    /// Also draw the results (GFLOPS per shape or layer per implementation, the measured peak as
    /// the roof) to this SVG file.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
}

impl BenchArgs {
    fn check(&self) -> Result<(), Failure> {
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if !(self.seconds.is_finite() && self.seconds > 0.0) {
            return Err("--seconds must be a positive number".into());
        }
        Ok(())
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// GEMM f32 GFLOPS per shape: sparkle, and with --peers matrixmultiply, the gemm crate and
    /// numpy/OpenBLAS (through python3, when numpy is installed).
    Gemm {
        /// Comma-separated shapes, `MxNxK` or `N` for square.
        #[arg(long, default_value = bench::DEFAULT_SHAPES)]
        shapes: String,
        #[command(flatten)]
        common: BenchArgs,
    },
    /// conv2d f32 + ReLU GFLOPS per layer: sparkle (fused), and with --peers sparkle's unfused
    /// im2col + GEMM and PyTorch/oneDNN (through python3, when torch is installed).
    Conv2d {
        /// `resnet50` (the ResNet-50 layer set at batch 1 and a depthwise layer), or a file with
        /// one layer a line: `name c=64 h=56 w=56 k=64 r=3 s=3 pad=1 [n= stride= dilation= groups= layout=]`.
        #[arg(long, default_value = "resnet50")]
        layers: String,
        /// Batch size for every layer (overrides the layer's own n).
        #[arg(long)]
        batch: Option<usize>,
        #[command(flatten)]
        common: BenchArgs,
    },
    /// One GEMM split across the devices of one Sparkle handle (rows in proportion to each
    /// device's predicted speed, learned from the runs alone) beside each device alone; host
    /// tensors, copies included.
    Split {
        /// Comma-separated shapes, `MxNxK` or `N`.
        #[arg(long, default_value = "1024")]
        shapes: String,
        /// `all` (the CPU and every Vulkan device) or `vulkan` (every Vulkan device).
        #[arg(long, default_value = "all")]
        devices: String,
        /// CPU threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Timed repetitions (best is reported).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Operands resident on each Vulkan device (uploaded once, outside the timing): the
        /// first device alone vs every device, for the shapes and the ResNet-50 conv layers.
        #[arg(long)]
        resident: bool,
        /// Batch of the conv layers with --resident (0: no conv layers).
        #[arg(long, default_value_t = 64)]
        conv_batch: usize,
    },
    /// The measured FMA peak of this CPU, on one thread and on all.
    Peak {
        /// Threads for the all-threads figure (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
}

use cli::one_line;

fn main() -> ExitCode {
    // A bug must still end in one line and exit code 2, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        sparkle_std::files::remove_pending();
        eprintln!("sparkle: internal error (please report): {}", one_line(&info.to_string()));
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
            eprintln!("sparkle: {} (see --help)", one_line(first.trim_start_matches("error: ")));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Demo { small } => run_demo(small),
        Command::Devices => list_devices(),
        Command::Stream { batch, rounds, small, json } => run_stream(batch, rounds, small, json),
        Command::Conv2d(args) => cli::remove_temporaries_on_signal().and_then(|()| cli::conv2d(&args)),
        Command::Gemm(args) => cli::remove_temporaries_on_signal().and_then(|()| cli::gemm(&args)),
        Command::Bench(b) => run_bench(b),
        Command::Model(m) => run_model(m),
        Command::Calibrate { max, small } => run_calibrate(max, small),
        Command::Juggler(j) => run_juggler(j),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sparkle: error: {}", one_line(&e.to_string()));
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
        BenchCommand::Gemm { shapes, common } if common.device == BenchDevice::Vulkan => {
            common.check()?;
            let BenchArgs { json, seconds, plot, .. } = common;
            let shapes: Vec<[usize; 3]> = shapes.split(',').map(bench::parse_shape).collect::<Result<_, _>>()?;
            let (name, records) = bench::gemm_vulkan(&shapes, seconds)?;
            if !json {
                println!("device: {name} (Vulkan; operands resident, upload excluded)");
            }
            bench::print(&records, json, None, plot.as_deref())?;
        }
        BenchCommand::Gemm { shapes, common } => {
            common.check()?;
            let BenchArgs { threads, peers, json, seconds, plot, .. } = common;
            let shapes: Vec<[usize; 3]> = shapes.split(',').map(bench::parse_shape).collect::<Result<_, _>>()?;
            // matrixmultiply reads its thread count once, from the environment, on first use;
            // no other thread exists yet at this point.
            std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
            let records = bench::gemm(&shapes, threads, peers, seconds)?;
            let peak = (!json).then(|| sparkle_std::cpu::peak::peak_gflops(threads));
            bench::print(&records, json, peak, plot.as_deref())?;
        }
        BenchCommand::Conv2d { layers, batch, common } => {
            common.check()?;
            let BenchArgs { threads, peers, json, seconds, device, plot } = common;
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
                bench::print_conv(&records, json, None, plot.as_deref())?;
                return Ok(ExitCode::SUCCESS);
            }
            let records = bench::conv2d(&layers, threads, peers, seconds)?;
            let peak = (!json).then(|| sparkle_std::cpu::peak::peak_gflops(threads));
            bench::print_conv(&records, json, peak, plot.as_deref())?;
        }
        BenchCommand::Split { shapes, devices, threads, reps, resident, conv_batch } => {
            let shapes: Vec<[usize; 3]> = shapes.split(',').map(bench::parse_shape).collect::<Result<_, _>>()?;
            if resident {
                bench::split_resident(&shapes, conv_batch, reps)?;
                return Ok(ExitCode::SUCCESS);
            }
            let with_cpu = match devices.as_str() {
                "all" => true,
                "vulkan" => false,
                d => return Err(format!("--devices {d}: expected all or vulkan").into()),
            };
            bench::split(&shapes, with_cpu, threads.max(1), reps)?;
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
    let kernels: Vec<&str> = sparkle_std::cpu::isa::available_kernels().iter().map(|k| k.id()).collect();
    println!("cpu: {} ({cores} threads)", cli::cpu_brand());
    println!(
        "  caches: L1d {} KiB, L2 {} KiB, L3 {} MiB per the OS",
        caches.l1d >> 10,
        caches.l2 >> 10,
        caches.l3 >> 20
    );
    println!("  kernels this CPU runs: {}; picked: {}", kernels.join(", "), cpu.kernel.id());
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
                if let Ok(ctx) = sparkle_std::vk::Context::new(d.index) {
                    match ctx.tuning().min_vec4_tiles {
                        u32::MAX => println!("  GEMM kernel (autotuned): 64x64 tiles at every size"),
                        t => println!(
                            "  GEMM kernel (autotuned): 128x128 vec4 tiles from {t} tiles of C up, 64x64 below"
                        ),
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

/// `sparkle stream`.
fn run_stream(batch: usize, rounds: usize, small: bool, json: bool) -> Result<ExitCode, Failure> {
    use sparkle_std::stream;
    if batch == 0 || rounds == 0 {
        return Err("--batch and --rounds must be at least 1".into());
    }
    // Every device by name, so each can be timed in the fixed assignments; the juggler still
    // places nothing on a CPU-type Vulkan device beside the CPU path.
    use sparkle_std::sparkle::DeviceSel;
    let mut devices = vec![DeviceSel::Cpu];
    devices.extend(sparkle_std::vk::devices().unwrap_or_default().iter().map(|d| DeviceSel::VulkanIndex(d.index)));
    let sparkle = sparkle_std::Sparkle::builder().devices(&devices).build()?;
    let which = if small { sparkle_std::demo::Layers::Small } else { sparkle_std::demo::Layers::ResNet50 };
    let failure = |e: sparkle_std::demo::DemoError| -> Failure { e.to_string().into() };
    let layers = stream::demo_layers(which, batch).map_err(failure)?;
    let c = stream::compare(&sparkle, &layers, rounds).map_err(failure)?;
    let best = c.best_fixed().ok_or("no fixed run")?;
    let (best_policy, best_fixed) = (best.policy.clone(), best.report.seconds);
    if json {
        let runs: Vec<serde_json::Value> = c
            .runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "policy": r.policy, "seconds": r.report.seconds, "fallbacks": r.report.fallbacks,
                    "uploaded_bytes": r.report.uploaded, "downloaded_bytes": r.report.downloaded,
                    "placements": r.report.placements.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let out = serde_json::json!({
            "batch": batch, "rounds": rounds,
            "devices": c.devices.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "layers": layers.iter().map(|l| l.name).collect::<Vec<_>>(),
            "layer_seconds": c.seconds,
            "balanced_fixed": c.balanced.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "best_fixed_policy": best_policy,
            "juggler_over_best_fixed": c.juggler().map(|r| r.report.seconds / best_fixed),
            "runs": runs, "worst_error_over_tolerance": c.worst_error_ratio,
        });
        println!("{out}");
    } else {
        println!(
            "stream: {} layers x {rounds} rounds at batch {batch} through one Sparkle handle from {} threads; devices: {}",
            layers.len(),
            stream::default_workers(&sparkle),
            {
                let names: Vec<String> = c.devices.iter().map(|d| d.to_string()).collect();
                names.join(", ")
            }
        );
        for (l, t) in layers.iter().zip(&c.seconds) {
            let times: Vec<String> = t.iter().map(|s| format!("{:9.3} ms", s * 1e3)).collect();
            println!("  {:<26} {}", l.name, times.join(" "));
        }
        let picks: Vec<String> = c.balanced.iter().map(|d| d.to_string()).collect();
        println!("balanced fixed assignment (from those times): {}", picks.join(", "));
        for r in &c.runs {
            let mut count: std::collections::BTreeMap<String, usize> = Default::default();
            for d in &r.report.placements {
                *count.entry(d.to_string()).or_default() += 1;
            }
            println!(
                "{:<16} {:9.3} ms  ({:.2}x the best fixed)  up {:.1} MB, down {:.1} MB  ops per device {:?}",
                r.policy,
                r.report.seconds * 1e3,
                r.report.seconds / best_fixed,
                r.report.uploaded as f64 / 1e6,
                r.report.downloaded as f64 / 1e6,
                count
            );
        }
        println!("best fixed: {best_policy}; largest error over the oracle's tolerance: {:.3}", c.worst_error_ratio);
    }
    // The GPU is held to twice the CPU's tolerance (its exp/tanh and summation order differ).
    if c.worst_error_ratio > 2.0 {
        return Err(format!("an output is off by {:.2}x the tolerance", c.worst_error_ratio).into());
    }
    Ok(ExitCode::SUCCESS)
}

fn run_demo(small: bool) -> Result<ExitCode, Failure> {
    let sparkle = sparkle_std::Sparkle::new()?;
    let path = sparkle.model_path().map(|p| p.display().to_string()).unwrap_or_default();
    match sparkle.model_status() {
        Some(Ok(store::Loaded::Same)) => println!("juggler: model loaded from {path}"),
        Some(Ok(store::Loaded::Foreign)) => println!("juggler: model from another machine/driver kept as a weak prior"),
        Some(Err(why)) => println!("juggler: ignoring the saved model ({why}); it will be replaced"),
        _ => println!("juggler: no saved model yet; starting from priors"),
    }
    let which = if small { demo::Layers::Small } else { demo::Layers::ResNet50 };
    let gpu = sparkle.gpus().into_iter().next();
    println!(
        "sparkle demo: conv + bias + ReLU at batch 1 through one Sparkle handle (devices {:?}), every layer checked against the f64 oracle on every device\n",
        sparkle.devices()
    );
    println!(
        "{:<24} {:<14} {:<10} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10}  ok",
        "layer", "path", "device", "pred ms", "ms", "GFLOPS", "cpu ms", "gpu ms", "max err"
    );
    let reports = demo::run(&sparkle, which).map_err(|e| -> Failure { e.to_string().into() })?;
    let mut all_ok = true;
    let (mut total, mut total_cpu, mut total_gpu) = (0.0, 0.0, 0.0);
    for r in &reports {
        println!(
            "{:<24} {:<14} {:<10} {:>10.3} {:>10.3} {:>8.1} {:>10.3} {:>10} {:>10.2e}  {}",
            r.name,
            r.path.name(),
            r.device.to_string(),
            r.predicted * 1e3,
            r.seconds * 1e3,
            r.gflops(),
            r.cpu_seconds * 1e3,
            r.gpu_seconds.map_or("-".to_string(), |t| format!("{:.3}", t * 1e3)),
            r.max_error,
            if r.passed() { "PASS" } else { "FAIL" }
        );
        all_ok &= r.passed();
        total += r.seconds;
        total_cpu += r.cpu_seconds;
        total_gpu += r.gpu_seconds.unwrap_or(f64::NAN);
    }
    print!("\ntotal: juggler {:.2} ms, always-CPU {:.2} ms", total * 1e3, total_cpu * 1e3);
    match &gpu {
        Some(g) => println!(", always-GPU {:.2} ms ({}, copies included)", total_gpu * 1e3, g.name),
        None => println!(" (no GPU for always-GPU; a CPU-type Vulkan device such as lavapipe is not placed on)"),
    }
    match sparkle.save() {
        Ok(()) => println!("juggler: model saved to {path}"),
        Err(e) => println!("juggler: could not save the model ({e})"),
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn run_juggler(cmd: JugglerCommand) -> Result<ExitCode, Failure> {
    use sparkle_std::juggler::replay;
    match cmd {
        JugglerCommand::Record { out, max } => {
            let cpu = sparkle_std::cpu::Cpu::new()?;
            let ctx = sparkle_std::vk::Context::best()?;
            let cpu_peak = sparkle_std::cpu::peak::peak_gflops(cpu.threads) * 1e9;
            let mut samples = Vec::new();
            let sizes = [16usize, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096];
            for &n in sizes.iter().filter(|&&n| n <= max) {
                let mut a = vec![0.0f32; n * n];
                let mut b = vec![0.0f32; n * n];
                demo::fill(&mut a, 1);
                demo::fill(&mut b, 2);
                let mut c = vec![0.0f32; n * n];
                for device in 0..2 {
                    let mut run = || -> Result<f64, Failure> {
                        let (av, bv) =
                            (sparkle_core::MatRef::row_major(&a, n, n)?, sparkle_core::MatRef::row_major(&b, n, n)?);
                        let cv = sparkle_core::MatMut::row_major(&mut c, n, n)?;
                        let t = std::time::Instant::now();
                        if device == 0 {
                            cpu.gemm(1.0, av, bv, 0.0, cv, &sparkle_core::Epilogue::NONE)?;
                        } else {
                            ctx.gemm(1.0, av, bv, 0.0, cv, &sparkle_core::Epilogue::NONE)?;
                        }
                        Ok(t.elapsed().as_secs_f64())
                    };
                    run()?;
                    let times: Vec<f64> = (0..5).map(|_| run()).collect::<Result<_, _>>()?;
                    let mean = times.iter().sum::<f64>() / 5.0;
                    let std = (times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / 4.0).sqrt();
                    samples.push(replay::Sample { device, shape: [n, n, n], mean, std });
                }
                eprintln!("recorded {n}^3");
            }
            let info = ctx.info();
            let r = replay::Recording {
                machine: format!(
                    "{} ({} threads) + {} ({})",
                    cli::cpu_brand(),
                    cpu.threads,
                    info.name,
                    info.device_type
                ),
                cpu_peak,
                gpu_is_discrete: info.device_type != "CPU",
                samples,
            };
            std::fs::write(&out, r.to_csv()).map_err(|e| format!("{}: {e}", out.display()))?;
            println!("wrote {} samples to {}", r.samples.len(), out.display());
        }
        JugglerCommand::Replay { samples, trace, json } => {
            let text = std::fs::read_to_string(&samples).map_err(|e| format!("{}: {e}", samples.display()))?;
            let r = replay::Recording::from_csv(&text).map_err(|e| format!("{}: {e}", samples.display()))?;
            let only = match trace.as_str() {
                "all" => None,
                t @ ("T1" | "T2" | "T3" | "T4") => Some(t),
                t => return Err(format!("--trace {t}: expected T1, T2, T3, T4 or all").into()),
            };
            let out = replay::run(&r, only);
            if json {
                let items: Vec<String> = out
                    .iter()
                    .map(|o| {
                        format!(
                            r#"{{"trace":"{}","policy":"{}","regret_pct":{:.2},"first_pick_accuracy":{:.3},"calls_to_converge":{},"decision_ns_p99":{:.0}}}"#,
                            o.trace, o.policy, o.regret_pct, o.first_pick_accuracy, o.calls_to_converge, o.decision_ns_p99
                        )
                    })
                    .collect();
                println!("[{}]", items.join(",\n "));
            } else {
                println!("replay of {} ({})", samples.display(), r.machine);
                println!(
                    "{:<6} {:<16} {:>11} {:>11} {:>10} {:>12}",
                    "trace", "policy", "regret %", "first pick", "converge", "decide p99"
                );
                for o in &out {
                    println!(
                        "{:<6} {:<16} {:>11.2} {:>11.3} {:>10} {:>9.0} ns",
                        o.trace, o.policy, o.regret_pct, o.first_pick_accuracy, o.calls_to_converge, o.decision_ns_p99
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_calibrate(max: usize, small: bool) -> Result<ExitCode, Failure> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // The same handle and model every op uses: each measurement below is an op pinned on a device,
    // which the handle learns from (a device's first op of a kind is set-up, not learned).
    let sparkle = sparkle_std::Sparkle::new()?;
    if let Some(Err(why)) = sparkle.model_status() {
        eprintln!("sparkle: ignoring the saved model ({why}); it will be replaced");
    }
    let path = sparkle.model_path().ok_or("no cache directory on this system; set SPARKLE_CACHE_DIR")?.to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
    let devices = sparkle.devices();
    let gemms: Vec<usize> = [16usize, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]
        .into_iter()
        .filter(|&n| n <= max)
        .collect();
    let mut convs = demo::layers(demo::Layers::Small);
    if !small {
        convs.extend(demo::layers(demo::Layers::ResNet50));
    }
    let steps = ((gemms.len() + convs.len()) * devices.len()) as u64;
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut measured = 0;
    'sweep: for &dev in &devices {
        for &n in &gemms {
            if stop.load(Ordering::SeqCst) {
                break 'sweep;
            }
            bar.set_message(format!("{dev} gemm {n}^3"));
            let a = vec![0.5f32; n * n];
            let mut c = vec![0.0f32; n * n];
            // A cold CPU run (scratch pages, caches) is not learned: warm up on the CPU path
            // directly; a GPU's first op is set-up, which the handle does not learn either.
            if dev == DeviceId::Cpu {
                let av = sparkle_core::MatRef::row_major(&a, n, n)?;
                let cv = sparkle_core::MatMut::row_major(&mut c, n, n)?;
                sparkle.cpu().gemm(1.0, av, av, 0.0, cv, &sparkle_core::Epilogue::NONE)?;
            }
            for _ in 0..3 {
                let av = sparkle_core::MatRef::row_major(&a, n, n)?;
                let cv = sparkle_core::MatMut::row_major(&mut c, n, n)?;
                sparkle.gemm_on(dev, 1.0, av, av, 0.0, cv, &sparkle_core::Epilogue::NONE)?;
            }
            measured += 1;
            bar.inc(1);
        }
        for (name, p) in &convs {
            if stop.load(Ordering::SeqCst) {
                break 'sweep;
            }
            bar.set_message(format!("{dev} {name}"));
            let g = p.validate()?;
            let x = vec![0.25f32; g.input_len()];
            let w = vec![0.125f32; g.weight_len()];
            let mut y = vec![0.0f32; g.output_len()];
            if dev == DeviceId::Cpu {
                sparkle.cpu().conv2d(&g, &x, &w, &sparkle_core::Epilogue::NONE, &mut y)?;
            }
            for _ in 0..3 {
                sparkle.conv2d_on(dev, &g, &x, &w, &sparkle_core::Epilogue::NONE, &mut y)?;
            }
            measured += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    sparkle.save().map_err(|e| format!("{}: {e}", path.display()))?;
    let how = if stop.load(Ordering::SeqCst) { "interrupted; kept" } else { "measured" };
    println!("calibrate: {how} {measured} of {steps} ops; model saved to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn run_model(cmd: ModelCommand) -> Result<ExitCode, Failure> {
    let path = store::default_path().ok_or("no cache directory on this system; set SPARKLE_CACHE_DIR")?;
    match cmd {
        ModelCommand::Path => println!("{}", path.display()),
        ModelCommand::Show => match store::describe(&path) {
            Ok(text) => print!("{}\n{text}", path.display()),
            Err(_) if !path.exists() => println!("{}: no model yet (run `sparkle demo`)", path.display()),
            Err(why) => return Err(format!("{}: {why}", path.display()).into()),
        },
        ModelCommand::Reset => match std::fs::remove_file(&path) {
            Ok(()) => println!("removed {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!("{}: no model to remove", path.display()),
            Err(e) => return Err(format!("{}: {e}", path.display()).into()),
        },
    }
    Ok(ExitCode::SUCCESS)
}
