//! Sparkle beside its peers, in one process and one run: the same measurement loops as
//! `sparkle bench` (`sparkle_std::bench`), each result checked against the f64 oracle first.
//!
//! ```text
//! cargo run --release -p sparkle-benches --bin peers -- gemm --threads 2
//! cargo run --release -p sparkle-benches --bin peers -- conv2d --layers resnet50 --threads 2
//! ```
//!
//! GEMM peers: `matrixmultiply` and the `gemm` crate (in this process), numpy/OpenBLAS and
//! PyTorch/MKL (python3 child processes, when installed). conv2d: Sparkle with its weights packed
//! once ahead (`sparkle-packed`, as an inference runtime keeps a model's layers), Sparkle's own
//! unfused im2col + GEMM (the old project's way) and PyTorch/oneDNN. A python peer that cannot run is
//! skipped with a note on stderr.

use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use sparkle_core::conv::im2col::{im2col, im2col_len};
use sparkle_core::{Activation, Epilogue, MatMut, MatRef, TensorLayout};
use sparkle_std::bench::{self, BenchError, Layer, Record};
use sparkle_std::cpu::peak::peak_gflops;
use sparkle_std::cpu::Cpu;

#[derive(Parser)]
#[command(name = "peers", about = "Sparkle beside its peers, in one run")]
struct Cli {
    #[command(subcommand)]
    what: What,
    /// Threads for every implementation.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Seconds of timed repetitions per implementation and shape or layer.
    #[arg(long, global = true, default_value_t = 0.5)]
    seconds: f64,
    /// One JSON array of records instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum What {
    /// GEMM f32 GFLOPS per shape.
    Gemm {
        /// Comma-separated shapes, `MxNxK` or `N` for square.
        #[arg(long, default_value = bench::DEFAULT_SHAPES)]
        shapes: String,
        /// B stored transposed (`n x k` row-major), as a linear layer's weight (`y = x W^T`,
        /// PyTorch's `F.linear`).
        #[arg(long)]
        b_transposed: bool,
    },
    /// conv2d f32 + ReLU GFLOPS per layer.
    Conv2d {
        /// `resnet50`, or a layer file (see `sparkle bench conv2d --help`).
        #[arg(long, default_value = "resnet50")]
        layers: String,
        /// Batch size for every layer.
        #[arg(long)]
        batch: Option<usize>,
    },
}

/// A GEMM under test, owned.
type GemmFn = Box<bench::GemmImpl<'static>>;

/// The in-process GEMMs: Sparkle, matrixmultiply, the gemm crate.
fn rust_gemms(threads: usize) -> Result<Vec<(&'static str, GemmFn)>, BenchError> {
    let cpu = Cpu::new()?.threads(threads);
    Ok(vec![
        ("sparkle", bench::sparkle_gemm(cpu)),
        (
            "matrixmultiply",
            Box::new(|a, b, c, [m, n, k], b_transposed| {
                assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n);
                // SAFETY: a is m x k, b is k x n (or n x k, transposed), c is m x n, all
                // row-major and exactly that long (asserted above).
                unsafe {
                    let (rs_a, rs_c) = (k as isize, n as isize);
                    let (rs_b, cs_b) = if b_transposed { (1, k as isize) } else { (n as isize, 1) };
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rs_a,
                        1,
                        b.as_ptr(),
                        rs_b,
                        cs_b,
                        0.0,
                        c.as_mut_ptr(),
                        rs_c,
                        1,
                    )
                }
                Ok(())
            }),
        ),
        (
            "gemm",
            Box::new(move |a, b, c, [m, n, k], b_transposed| {
                assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n);
                let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
                let (n_i, k_i) = (n as isize, k as isize);
                let (cs_b, rs_b) = if b_transposed { (k_i, 1) } else { (1, n_i) };
                // SAFETY: as above; the gemm crate takes (column stride, row stride) pairs.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n_i,
                        false,
                        a.as_ptr(),
                        1,
                        k_i,
                        b.as_ptr(),
                        cs_b,
                        rs_b,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    )
                }
                Ok(())
            }),
        ),
    ])
}

/// One python3 peer script (from `benches/peers/`) with its JSON argument, in a child process
/// with `threads` threads: its GFLOPS list, or why it could not run.
fn python(script: &str, what: &str, arg: &str, threads: usize, seconds: f64) -> Result<Vec<f64>, String> {
    let out = Command::new("python3")
        .args(["-c", script, arg, &seconds.to_string(), &threads.to_string()])
        .env("OPENBLAS_NUM_THREADS", threads.to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{what} not available ({})", err.lines().last().unwrap_or("failed")));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .trim_matches(['[', ']'])
        .split(',')
        .map(|s| s.trim().parse::<f64>().map_err(|e| format!("bad {what} output `{text}`: {e}")))
        .collect()
}

/// Records for a python peer's figures, one per key, or a note on stderr when it cannot run.
fn python_records(
    op: &'static str,
    name: &str,
    keys: &[String],
    threads: usize,
    figures: Result<Vec<f64>, String>,
) -> Vec<Record> {
    match figures {
        Ok(g) => keys
            .iter()
            .zip(g)
            .map(|(key, gflops)| Record { op, key: key.clone(), threads, implementation: name.into(), gflops })
            .collect(),
        Err(why) => {
            eprintln!("note: {name} peer skipped: {why}");
            Vec::new()
        }
    }
}

fn gemm_peers(shapes: &[[usize; 3]], bt: bool, threads: usize, seconds: f64) -> Result<Vec<Record>, BenchError> {
    let mut records = Vec::new();
    let mut impls = rust_gemms(threads)?;
    for &shape in shapes {
        for (name, f) in &mut impls {
            records.push(bench::time_gemm(name, shape, bt, threads, seconds, f.as_mut())?);
        }
    }
    let bt_arg = u8::from(bt);
    let arg =
        format!("[{}]", shapes.iter().map(|[m, n, k]| format!("[{m},{n},{k},{bt_arg}]")).collect::<Vec<_>>().join(","));
    let keys: Vec<String> = shapes.iter().map(|&s| bench::gemm_key(s, bt)).collect();
    for (script, what, name) in [
        (include_str!("../../peers/numpy_gemm.py"), "numpy", "openblas"),
        (include_str!("../../peers/torch_gemm.py"), "PyTorch", "mkl"),
    ] {
        records.extend(python_records("gemm", name, &keys, threads, python(script, what, &arg, threads, seconds)));
    }
    Ok(records)
}

/// Sparkle with the weights packed once ahead ([`Cpu::conv2d_pack`], as an inference runtime
/// keeps a model's layers): the first, checked call packs them; the timed calls run on them.
fn packed_conv(cpu: &Cpu, layer: &Layer, threads: usize, seconds: f64) -> Result<Record, BenchError> {
    let g = layer.params.validate()?;
    let relu = Epilogue::activation(Activation::Relu);
    let mut packed = None;
    bench::time_conv2d("sparkle-packed", layer, threads, seconds, &mut |x, w, y| {
        let weights = match &mut packed {
            Some(p) => p,
            None => packed.insert(cpu.conv2d_pack(&g, w)?),
        };
        cpu.conv2d_packed(&g, x, weights, &relu, y)?;
        Ok(())
    })
}

/// Sparkle's unfused baseline: im2col materialised, then a GEMM per (image, group).
fn im2col_conv(cpu: &Cpu, layer: &Layer, threads: usize, seconds: f64) -> Result<Record, BenchError> {
    let g = layer.params.validate()?;
    let p = *g.params();
    let mut col = vec![0.0f32; im2col_len(&g)?];
    let (kg, hw, gk) = g.gemm_dims();
    let relu = Epilogue::activation(Activation::Relu);
    bench::time_conv2d("sparkle-im2col", layer, threads, seconds, &mut |x, w, y| {
        for n in 0..p.n {
            for grp in 0..p.groups {
                im2col(&g, x, n, grp, &mut col)?;
                let w0 = g.weight_group_offset(grp);
                let a = MatRef::row_major(&w[w0..w0 + kg * gk], kg, gk)?;
                let b = MatRef::row_major(&col, gk, hw)?;
                let (off, rs, cs) = g.output_gemm_view(n, grp);
                cpu.gemm(1.0, a, b, 0.0, MatMut::new(&mut y[off..], kg, hw, rs, cs)?, &relu)?;
            }
        }
        Ok(())
    })
}

fn conv2d_peers(layers: &[Layer], threads: usize, seconds: f64) -> Result<Vec<Record>, BenchError> {
    let mut records = bench::conv2d_cpu(layers, threads, seconds)?;
    let cpu = Cpu::new()?.threads(threads);
    for layer in layers {
        records.push(packed_conv(&cpu, layer, threads, seconds)?);
    }
    for layer in layers.iter().filter(|l| l.params.layout == TensorLayout::Nchw) {
        records.push(im2col_conv(&cpu, layer, threads, seconds)?);
    }
    // PyTorch runs each layer in its layout (NHWC as channels_last).
    let mut rows = Vec::new();
    for l in layers {
        let p = &l.params;
        let flops = p.validate()?.flops();
        let nums = [
            p.n,
            p.c,
            p.h,
            p.w,
            p.k,
            p.r,
            p.s,
            p.stride[0],
            p.stride[1],
            p.pad.top,
            p.pad.left,
            p.pad.bottom,
            p.pad.right,
            p.dilation[0],
            p.dilation[1],
            p.groups,
            usize::from(p.layout == TensorLayout::Nhwc),
        ];
        let nums: Vec<String> = nums.iter().map(usize::to_string).collect();
        rows.push(format!("[{},{flops}]", nums.join(",")));
    }
    let arg = format!("[{}]", rows.join(","));
    let keys: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let figures = python(include_str!("../../peers/torch_conv2d.py"), "PyTorch", &arg, threads, seconds);
    records.extend(python_records("conv2d", "pytorch", &keys, threads, figures));
    Ok(records)
}

fn run(cli: Cli) -> Result<(), BenchError> {
    if cli.threads == 0 || !(cli.seconds.is_finite() && cli.seconds > 0.0) {
        return Err("--threads must be at least 1 and --seconds a positive number".into());
    }
    let (records, what, key) = match &cli.what {
        What::Gemm { shapes, b_transposed } => {
            let shapes: Vec<[usize; 3]> = shapes.split(',').map(bench::parse_shape).collect::<Result<_, _>>()?;
            // matrixmultiply reads its thread count once, from the environment, on first use;
            // no other thread exists yet at this point.
            std::env::set_var("MATMUL_NUM_THREADS", cli.threads.to_string());
            (gemm_peers(&shapes, *b_transposed, cli.threads, cli.seconds)?, "GEMM f32", "shape (MxNxK)")
        }
        What::Conv2d { layers, batch } => {
            let layers = bench::load_layers(layers, *batch)?;
            (conv2d_peers(&layers, cli.threads, cli.seconds)?, "conv2d f32 + ReLU", "layer")
        }
    };
    if cli.json {
        println!("{}", bench::to_json(&records));
    } else {
        let title = bench::title(what, cli.threads, Some(peak_gflops(cli.threads)));
        print!("{}", bench::table(&title, key, &bench::cells(&records)));
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peers: error: {e}");
            ExitCode::from(2)
        }
    }
}
