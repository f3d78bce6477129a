//! `sparkle bench`: Sparkle's own figures. The loops are `sparkle_std::bench`'s; peers are
//! measured beside the same loops by `cargo run --release -p sparkle-benches --bin peers`.

use std::process::ExitCode;

use clap::Subcommand;
use sparkle_std::bench::{self, Record};
use sparkle_std::cpu::peak::peak_gflops;

use crate::Failure;
use sparkle_core::f16::{bf16 as bf16_t, f16 as f16_t};
use sparkle_core::Precision;

/// One of `bench::half_gemm_vulkan`'s instances.
type HalfBench = fn(&[[usize; 3]], f64) -> Result<(String, Vec<Record>), bench::BenchError>;
/// One of `bench::half_conv2d_vulkan`'s instances.
type HalfConvBench = fn(&[bench::Layer], f64) -> Result<(String, Vec<Record>), bench::BenchError>;

/// Options every `sparkle bench gemm|conv2d` takes.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Threads for every implementation.
    #[arg(long, default_value_t = 1)]
    threads: usize,
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
    /// Comma-separated element types, one column each: `f32`, `int8` (or `i8`: u8 x s8 -> u8 with
    /// ONNX's output stage, GOPS, bit-exact against the integer oracle; on the CPU or Vulkan),
    /// `bf16` (bf16 x bf16 -> f32; GEMM on the CPU or Vulkan, conv2d on Vulkan) and `f16` (f16 x
    /// f16 -> f32, GEMM and conv2d; Vulkan only, on cooperative matrices where the device has
    /// them).
    #[arg(long, alias = "dtype", default_value = "f32")]
    dtypes: String,
    /// Comma-separated precisions of the f32 GEMM on Vulkan, one column each, as PyTorch's
    /// `set_float32_matmul_precision` names them: `highest` (f32 kernels), `high` (three f16
    /// products per f32 product on tensor cores, f32-accurate) and `medium` (one). Each column's
    /// largest error against the f64 oracle over sampled elements is printed after the table.
    /// GEMMs only: conv2d runs f32 at `highest`.
    #[arg(long, default_value = "highest")]
    precision: String,
}

/// The element types `--dtypes` asks for.
#[derive(Clone, Copy, Debug, Default)]
struct Dtypes {
    f32s: bool,
    int8: bool,
    bf16: bool,
    f16: bool,
}

impl BenchArgs {
    /// Which of f32, int8, bf16 and f16 to run.
    fn dtypes(&self) -> Result<Dtypes, Failure> {
        // `i8` is int8's other name.
        let list: Vec<&str> =
            self.dtypes.split(',').map(str::trim).map(|d| if d == "i8" { "int8" } else { d }).collect();
        if let Some(d) = list.iter().find(|d| !matches!(**d, "f32" | "int8" | "bf16" | "f16")) {
            return Err(format!("--dtypes: `{d}` is not f32, int8 (i8), bf16 or f16").into());
        }
        let has = |d| list.contains(&d);
        let t = Dtypes { f32s: has("f32"), int8: has("int8"), bf16: has("bf16"), f16: has("f16") };
        if t.f16 && self.device == BenchDevice::Cpu {
            return Err("--dtypes f16 runs on Vulkan only (--device vulkan): no CPU f16 kernel".into());
        }
        Ok(t)
    }

    /// The precisions `--precision` asks for.
    fn precisions(&self) -> Result<Vec<Precision>, Failure> {
        let list = self
            .precision
            .split(',')
            .map(|p| {
                Precision::parse(p.trim())
                    .ok_or_else(|| format!("--precision: `{p}` is not highest, high or medium").into())
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        if list.iter().any(|&p| p != Precision::Highest) {
            if self.device != BenchDevice::Vulkan {
                return Err(
                    "--precision high|medium runs on Vulkan only (--device vulkan): the CPU computes f32".into()
                );
            }
            if !self.dtypes.split(',').any(|d| d.trim() == "f32") {
                return Err("--precision chooses how f32 GEMMs run: add f32 to --dtypes".into());
            }
        }
        Ok(list)
    }

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
pub enum BenchCommand {
    /// GEMM f32 GFLOPS (and int8 GOPS) per shape, each result checked against the oracle first.
    Gemm {
        /// Comma-separated shapes, `MxNxK` or `N` for square.
        #[arg(long, default_value = bench::DEFAULT_SHAPES)]
        shapes: String,
        #[command(flatten)]
        common: BenchArgs,
    },
    /// conv2d f32 + ReLU GFLOPS per layer, each result checked against the f64 oracle first.
    Conv2d {
        /// `resnet50` (the ResNet-50 layer set at batch 1 and a depthwise layer), or a file with
        /// one layer a line: `name c=64 h=56 w=56 k=64 r=3 s=3 pad=1 [n= stride= dilation= groups= layout=nchw|nhwc weights=kcrs|krsc]`.
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

/// Where `sparkle bench` runs Sparkle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BenchDevice {
    Cpu,
    Vulkan,
}

/// The records of `vulkan` (naming the device unless `json`: tensors resident, uploads
/// excluded) or of `cpu` with the measured FMA peak on `threads` (unless `json`).
fn on_device(
    use_vulkan: bool,
    json: bool,
    threads: usize,
    vulkan: impl FnOnce() -> Result<(String, Vec<Record>), bench::BenchError>,
    cpu: impl FnOnce() -> Result<Vec<Record>, bench::BenchError>,
) -> Result<(Vec<Record>, Option<f64>), Failure> {
    if use_vulkan {
        let (name, records) = vulkan()?;
        if !json {
            println!("device: {name} (Vulkan; operands resident, upload excluded)");
        }
        Ok((records, None))
    } else {
        Ok((cpu()?, (!json).then(|| peak_gflops(threads))))
    }
}

/// Runs one `sparkle bench` command.
pub fn run(cmd: BenchCommand) -> Result<ExitCode, Failure> {
    match cmd {
        BenchCommand::Gemm { shapes, common } => {
            common.check()?;
            let Dtypes { f32s, int8, bf16, f16 } = common.dtypes()?;
            let precisions = common.precisions()?;
            let BenchArgs { threads, json, seconds, device, plot, .. } = common;
            let shapes: Vec<[usize; 3]> = shapes.split(',').map(bench::parse_shape).collect::<Result<_, _>>()?;
            let vulkan = device == BenchDevice::Vulkan;
            let mut accuracy = Vec::new();
            let (mut records, peak) = if f32s {
                on_device(
                    device == BenchDevice::Vulkan,
                    json,
                    threads,
                    || {
                        let (name, records, errors) = bench::gemm_precision_vulkan(&shapes, seconds, &precisions)?;
                        accuracy = errors;
                        Ok((name, records))
                    },
                    || bench::gemm_cpu(&shapes, threads, seconds),
                )?
            } else {
                (Vec::new(), None)
            };
            if int8 && vulkan {
                let (name, r) = bench::qgemm_vulkan(&shapes, seconds)?;
                if !json {
                    println!("device: {name} (Vulkan; operands resident, upload excluded)");
                }
                records.extend(r);
            } else if int8 {
                records.extend(bench::qgemm_cpu(&shapes, threads, seconds)?);
            }
            if bf16 && !vulkan {
                records.extend(bench::bf16_gemm_cpu(&shapes, threads, seconds)?);
            }
            for (on, run) in [
                (bf16 && vulkan, bench::half_gemm_vulkan::<bf16_t> as HalfBench),
                (f16, bench::half_gemm_vulkan::<f16_t>),
            ] {
                if on {
                    let (name, r) = run(&shapes, seconds)?;
                    if !json {
                        println!("device: {name} (Vulkan; operands resident, upload excluded)");
                    }
                    records.extend(r);
                }
            }
            let what = if int8 { "GEMM f32 / bf16 GFLOPS, int8 GOPS" } else { "GEMM GFLOPS" };
            print(what, "shape (MxNxK)", &records, json, peak, plot.as_deref())?;
            if precisions.len() > 1 || precisions.first() != Some(&Precision::Highest) {
                // The JSON is the records alone; the accuracy goes to stderr there.
                for a in &accuracy {
                    let line = format!(
                        "accuracy: {} {} ({}): max error {:.2e} over {} sampled elements (against the f64 oracle)",
                        a.key,
                        a.implementation,
                        a.path,
                        a.max_error,
                        bench::ACCURACY_SAMPLES
                    );
                    if json {
                        eprintln!("{line}");
                    } else {
                        println!("{line}");
                    }
                }
            }
        }
        BenchCommand::Conv2d { layers, batch, common } => {
            common.check()?;
            if common.precisions()? != [Precision::Highest] {
                return Err("--precision chooses how f32 GEMMs run; conv2d runs f32 at highest".into());
            }
            let Dtypes { f32s, int8, bf16, f16 } = common.dtypes()?;
            if bf16 && common.device == BenchDevice::Cpu {
                return Err("--dtypes bf16: conv2d in bf16 runs on Vulkan only (--device vulkan)".into());
            }
            let BenchArgs { threads, json, seconds, device, plot, .. } = common;
            let layers = bench::load_layers(&layers, batch)?;
            let (mut records, peak) = if f32s {
                on_device(
                    device == BenchDevice::Vulkan,
                    json,
                    threads,
                    || bench::conv2d_vulkan(&layers, seconds),
                    || bench::conv2d_cpu(&layers, threads, seconds),
                )?
            } else {
                (Vec::new(), None)
            };
            if int8 && device == BenchDevice::Vulkan {
                let (name, r) = bench::qconv2d_vulkan(&layers, seconds)?;
                if !json {
                    println!("device: {name} (Vulkan)");
                }
                records.extend(r);
            } else if int8 {
                records.extend(bench::qconv2d_cpu(&layers, threads, seconds)?);
            }
            for (on, run) in [
                (bf16, bench::half_conv2d_vulkan::<bf16_t> as HalfConvBench),
                (f16, bench::half_conv2d_vulkan::<f16_t>),
            ] {
                if on {
                    let (name, r) = run(&layers, seconds)?;
                    if !json {
                        println!("device: {name} (Vulkan; tensors resident, upload excluded)");
                    }
                    records.extend(r);
                }
            }
            let what = match (int8, bf16 || f16) {
                (true, _) => "conv2d + ReLU, f32 GFLOPS / int8 GOPS",
                (false, true) => "conv2d + ReLU",
                (false, false) => "conv2d f32 + ReLU",
            };
            print(what, "layer", &records, json, peak, plot.as_deref())?;
            if f32s && device == BenchDevice::Cpu && !json {
                let paths = bench::conv2d_paths(&layers, threads)?;
                let list: Vec<String> = paths.iter().map(|(name, path)| format!("{name}: {path}")).collect();
                println!("f32 paths: {}", list.join(", "));
            }
        }
        BenchCommand::Split { shapes, devices, threads, reps, resident, conv_batch } => {
            let shapes: Vec<[usize; 3]> = shapes.split(',').map(bench::parse_shape).collect::<Result<_, _>>()?;
            if resident {
                bench::split_resident(&shapes, conv_batch, reps, &mut |line| println!("{line}"))?;
                return Ok(ExitCode::SUCCESS);
            }
            let with_cpu = match devices.as_str() {
                "all" => true,
                "vulkan" => false,
                d => return Err(format!("--devices {d}: expected all or vulkan").into()),
            };
            bench::split(&shapes, with_cpu, threads.max(1), reps, &mut |line| println!("{line}"))?;
        }
        BenchCommand::Peak { threads } => {
            peak(threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())))
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints records as a table (one row per key, one column per implementation) or JSON, and
/// draws them to `plot` if given.
fn print(
    what: &str,
    key: &str,
    records: &[Record],
    json: bool,
    peak: Option<f64>,
    plot: Option<&std::path::Path>,
) -> Result<(), Failure> {
    if json {
        println!("{}", bench::to_json(records));
        return Ok(());
    }
    let title = bench::title(what, records.first().map_or(1, |r| r.threads), peak);
    let cells = bench::cells(records);
    print!("{}", bench::table(&title, key, &cells));
    plot.map_or(Ok(()), |p| crate::plot::bars(p, &title, &cells, peak))
}

/// `sparkle bench peak`.
fn peak(threads: usize) {
    let one = peak_gflops(1);
    let all = peak_gflops(threads);
    println!("FMA peak: {one:.1} GFLOPS on 1 thread, {all:.1} GFLOPS on {threads} threads");
}
