//! The `sparkle` command-line tool.

mod bench;
mod calibrate;
mod cli;
mod demo;
mod devices;
mod juggler;
mod model;
mod plot;
mod quant;
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
    /// Measure Sparkle (its peers: `cargo run --release -p sparkle-benches --bin peers`).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
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
        Command::Bench(b) => bench::run(b),
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

type Failure = Box<dyn std::error::Error + Send + Sync>;
