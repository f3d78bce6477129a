//! The `sparkle` command-line tool.

mod bench;
mod calibrate;
mod cli;
mod demo;
mod devices;
mod juggler;
mod model;
mod plot;
mod stream;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Model(model::ModelCommand),
    /// The juggler's replay benchmark and the recordings it replays.
    #[command(subcommand)]
    Juggler(juggler::JugglerCommand),
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
        Command::Demo { small } => demo::run(small),
        Command::Devices => devices::run(),
        Command::Stream { batch, rounds, small, json } => stream::run(batch, rounds, small, json),
        Command::Conv2d(args) => cli::remove_temporaries_on_signal().and_then(|()| cli::conv2d(&args)),
        Command::Gemm(args) => cli::remove_temporaries_on_signal().and_then(|()| cli::gemm(&args)),
        Command::Bench(b) => run_bench(b),
        Command::Model(m) => model::run(m),
        Command::Calibrate { max, small } => calibrate::run(max, small),
        Command::Juggler(j) => juggler::run(j),
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
