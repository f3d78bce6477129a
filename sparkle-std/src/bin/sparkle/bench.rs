//! `sparkle bench`: Sparkle beside its peers, in one process and one run.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use sparkle_core::gemm::reference::gemm_reference_f64;
use sparkle_core::{Epilogue, MatMut, MatRef};
use sparkle_std::cpu::peak::peak_gflops;
use sparkle_std::cpu::Cpu;
use sparkle_std::demo::fill;

use crate::Failure;

/// One measurement.
pub struct Record {
    pub shape: [usize; 3],
    pub threads: usize,
    pub implementation: String,
    pub gflops: f64,
}

/// Parses `MxNxK` (or `N` for a square problem).
pub fn parse_shape(s: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = s.split('x').collect();
    let nums: Result<Vec<usize>, _> = parts.iter().map(|p| p.trim().parse::<usize>()).collect();
    match nums.as_deref() {
        Ok([n]) if *n > 0 => Ok([*n, *n, *n]),
        Ok([m, n, k]) if *m > 0 && *n > 0 && *k > 0 => Ok([*m, *n, *k]),
        _ => Err(format!("shape `{s}` is not MxNxK (or N) with positive sizes")),
    }
}

/// The default shapes: squares and the ResNet-50 im2col GEMMs.
pub const DEFAULT_SHAPES: &str = "64,128,256,512,1024,2048,12544x64x147,3136x64x576,784x128x1152";

/// Best time of `f` after a warm-up, repeating until about `budget` has passed (at least 3 runs).
fn best_time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut runs = 0;
    while runs < 3 || (start.elapsed() < budget && runs < 1000) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    best
}

/// Checks 64 sampled elements of `c = a * b` (row-major) against the f64 oracle.
fn spot_check(name: &str, a: &[f32], b: &[f32], c: &[f32], [m, n, k]: [usize; 3]) -> Result<(), Failure> {
    let tol = sparkle_core::check::tolerance(k);
    let mut seed = 0x5eedu64;
    for _ in 0..64 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let (i, j) = ((seed >> 33) as usize % m, (seed >> 13) as usize % n);
        let av = MatRef::row_major(&a[i * k..(i + 1) * k], 1, k)?;
        let bv = MatRef::new(&b[j..], k, 1, n, 1)?;
        let mut want = [0.0f64];
        gemm_reference_f64(1.0, av, bv, 0.0, None, &Epilogue::NONE, &mut want)?;
        let err = sparkle_core::check::error(c[i * n + j], want[0]);
        if err > tol {
            return Err(format!("{name} is wrong at ({i}, {j}) of {m}x{n}x{k}: error {err:e} > {tol:e}").into());
        }
    }
    Ok(())
}

/// A GEMM implementation under test: `c = a * b`, all row-major, shape `[m, n, k]`.
type GemmFn = Box<dyn Fn(&[f32], &[f32], &mut [f32], [usize; 3])>;

fn rust_impls(threads: usize) -> Vec<(&'static str, GemmFn)> {
    let sparkle = Cpu::new().map(|g| g.threads(threads));
    let mut v: Vec<(&'static str, GemmFn)> = Vec::new();
    if let Ok(g) = sparkle {
        v.push((
            "sparkle",
            Box::new(move |a, b, c, [m, n, k]| {
                let av = MatRef::row_major(a, m, k).expect("a");
                let bv = MatRef::row_major(b, k, n).expect("b");
                g.gemm(1.0, av, bv, 0.0, MatMut::row_major(c, m, n).expect("c"), &Epilogue::NONE)
                    .expect("sparkle gemm");
            }),
        ));
    }
    v.push((
        "matrixmultiply",
        Box::new(|a, b, c, [m, n, k]| {
            // SAFETY: a is m x k, b is k x n, c is m x n, all row-major and exactly that long.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        }),
    ));
    v.push((
        "gemm",
        Box::new(move |a, b, c, [m, n, k]| {
            let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
            // SAFETY: as above; the gemm crate takes (column stride, row stride) pairs.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            }
        }),
    ));
    v
}

const NUMPY_SCRIPT: &str = r#"
import json, sys, time
import numpy as np
shapes, budget = json.loads(sys.argv[1]), float(sys.argv[2])
out = []
for m, n, k in shapes:
    rng = np.random.default_rng(0)
    a = rng.random((m, k), dtype=np.float32); b = rng.random((k, n), dtype=np.float32)
    c = a @ b
    best, start, runs = float("inf"), time.perf_counter(), 0
    while runs < 3 or (time.perf_counter() - start < budget and runs < 1000):
        t = time.perf_counter(); np.matmul(a, b, out=c); best = min(best, time.perf_counter() - t); runs += 1
    out.append(2.0 * m * n * k / best / 1e9)
print(json.dumps(out))
"#;

const TORCH_MM_SCRIPT: &str = r#"
import json, sys, time
import torch
shapes, budget, threads = json.loads(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
out = []
with torch.no_grad():
    for m, n, k in shapes:
        a = torch.rand(m, k); b = torch.rand(k, n); c = torch.empty(m, n)
        torch.mm(a, b, out=c)
        best, start, runs = float("inf"), time.perf_counter(), 0
        while runs < 3 or (time.perf_counter() - start < budget and runs < 1000):
            t = time.perf_counter(); torch.mm(a, b, out=c); best = min(best, time.perf_counter() - t); runs += 1
        out.append(2.0 * m * n * k / best / 1e9)
print(json.dumps(out))
"#;

/// A python3 peer script over the GEMM shapes, in a child process with `threads` threads.
fn python_gemm(
    script: &str,
    what: &str,
    shapes: &[[usize; 3]],
    threads: usize,
    budget: f64,
) -> Result<Vec<f64>, String> {
    let arg = format!("[{}]", shapes.iter().map(|[m, n, k]| format!("[{m},{n},{k}]")).collect::<Vec<_>>().join(","));
    let out = Command::new("python3")
        .args(["-c", script, &arg, &budget.to_string(), &threads.to_string()])
        .env("OPENBLAS_NUM_THREADS", threads.to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("failed");
        return Err(format!("{what} not available ({last})"));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .trim_matches(['[', ']'])
        .split(',')
        .map(|s| s.trim().parse::<f64>().map_err(|e| format!("bad {what} output `{text}`: {e}")))
        .collect()
}

/// `sparkle bench gemm`.
pub fn gemm(shapes: &[[usize; 3]], threads: usize, peers: bool, budget: f64) -> Result<Vec<Record>, Failure> {
    let mut records = Vec::new();
    let impls = rust_impls(threads);
    let budget_d = Duration::from_secs_f64(budget);
    for &shape in shapes {
        let [m, n, k] = shape;
        let mut a = vec![0.0f32; m * k];
        let mut b = vec![0.0f32; k * n];
        fill(&mut a, 1);
        fill(&mut b, 2);
        let mut c = vec![0.0f32; m * n];
        for (name, f) in &impls {
            if !peers && *name != "sparkle" {
                continue;
            }
            c.iter_mut().for_each(|v| *v = f32::NAN);
            f(&a, &b, &mut c, shape);
            spot_check(name, &a, &b, &c, shape)?;
            let t = best_time(budget_d, || f(&a, &b, &mut c, shape));
            let gflops = 2.0 * m as f64 * n as f64 * k as f64 / t / 1e9;
            records.push(Record { shape, threads, implementation: name.to_string(), gflops });
        }
    }
    if peers {
        // numpy (OpenBLAS in the PyPI wheel) and torch.mm (MKL), each in its own child process so
        // their thread pools never fight.
        for (script, what, name) in [(NUMPY_SCRIPT, "numpy", "openblas"), (TORCH_MM_SCRIPT, "PyTorch", "mkl")] {
            match python_gemm(script, what, shapes, threads, budget) {
                Ok(g) => {
                    for (&shape, gflops) in shapes.iter().zip(g) {
                        records.push(Record { shape, threads, implementation: name.into(), gflops });
                    }
                }
                Err(why) => eprintln!("note: {name} peer ({what}) skipped: {why}"),
            }
        }
    }
    Ok(records)
}

/// Prints records as a table (one row per shape, one column per implementation) or JSON.
pub fn print(records: &[Record], json: bool, peak: Option<f64>, plot: Option<&std::path::Path>) -> Result<(), Failure> {
    if json {
        let items: Vec<String> = records
            .iter()
            .map(|r| {
                format!(
                    r#"{{"op":"gemm","shape":[{},{},{}],"threads":{},"impl":"{}","gflops":{:.1}}}"#,
                    r.shape[0], r.shape[1], r.shape[2], r.threads, r.implementation, r.gflops
                )
            })
            .collect();
        println!("[{}]", items.join(",\n "));
        return Ok(());
    }
    let title = title("GEMM f32", records.first().map_or(1, |r| r.threads), peak);
    let rows: Vec<(String, &str, f64)> = records
        .iter()
        .map(|r| (format!("{}x{}x{}", r.shape[0], r.shape[1], r.shape[2]), r.implementation.as_str(), r.gflops))
        .collect();
    print!("{}", table(&title, "shape (MxNxK)", &rows));
    plot.map_or(Ok(()), |p| crate::plot::bars(p, &title, &rows, peak))
}

/// "GEMM f32 GFLOPS, 2 thread(s); measured FMA peak ..." (threads 0: on the GPU).
fn title(what: &str, threads: usize, peak: Option<f64>) -> String {
    let mut t = match threads {
        0 => format!("{what} GFLOPS on the GPU"),
        n => format!("{what} GFLOPS, {n} thread(s)"),
    };
    if let Some(p) = peak {
        let _ = write!(t, "; measured FMA peak {p:.0} GFLOPS");
    }
    t
}

/// The distinct keys and implementations of `cells`, each in first-seen order: the rows and
/// columns of a table or plot.
pub fn keys_and_impls<'a>(cells: &'a [(String, &'a str, f64)]) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut keys: Vec<&str> = Vec::new();
    let mut impls: Vec<&str> = Vec::new();
    for (k, i, _) in cells {
        if !keys.contains(&k.as_str()) {
            keys.push(k);
        }
        if !impls.contains(i) {
            impls.push(i);
        }
    }
    (keys, impls)
}

/// A table with one row per distinct key and one column per implementation, in first-seen order.
fn table(title: &str, key: &str, cells: &[(String, &str, f64)]) -> String {
    let (keys, impls) = keys_and_impls(cells);
    let width = keys.iter().map(|k| k.len()).chain([key.len()]).max().unwrap_or(0) + 2;
    let mut out = format!("{title}\n{key:<width$}");
    for i in &impls {
        let _ = write!(out, " {i:>15}");
    }
    out.push('\n');
    for k in keys {
        let _ = write!(out, "{k:<width$}");
        for i in &impls {
            match cells.iter().find(|(ck, ci, _)| ck == k && ci == i) {
                Some((_, _, v)) => {
                    let _ = write!(out, " {v:>15.1}");
                }
                None => {
                    let _ = write!(out, " {:>15}", "-");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// `sparkle bench peak`.
pub fn peak(threads: usize) {
    let one = peak_gflops(1);
    let all = peak_gflops(threads);
    println!("FMA peak: {one:.1} GFLOPS on 1 thread, {all:.1} GFLOPS on {threads} threads");
}

/// One conv layer to measure.
pub struct Layer {
    pub name: String,
    pub params: sparkle_core::Conv2dParams,
}

/// The ResNet-50 layer set at batch 1 plus MobileNet's depthwise 3x3 (all NCHW, as PyTorch).
pub fn resnet50_layers() -> Vec<Layer> {
    // The demo's layer set: one list, so the demo and the benchmark always measure the same layers.
    sparkle_std::demo::layers(sparkle_std::demo::Layers::ResNet50)
        .into_iter()
        .map(|(name, params)| Layer { name: name.to_string(), params })
        .collect()
}

/// Parses a layer file: one layer a line, `name key=value ...` with keys n, c, h, w, k, r, s,
/// stride, pad (one value, `ph,pw` or `t,l,b,r`), dilation, groups, layout (nchw|nhwc);
/// `#` starts a comment. n, stride, dilation and groups default to 1, pad to 0.
pub fn parse_layers(text: &str) -> Result<Vec<Layer>, String> {
    use sparkle_core::{Conv2dParams, Padding, TensorLayout};
    let mut out = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |what: String| format!("layer file line {}: {what}", no + 1);
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let mut p = Conv2dParams::new(1, 0, 0, 0, 0, 0, 0);
        for word in words {
            let (key, value) = word.split_once('=').ok_or_else(|| err(format!("`{word}` is not key=value")))?;
            let nums: Vec<usize> = if key == "layout" {
                Vec::new()
            } else {
                value
                    .split(',')
                    .map(|v| v.parse::<usize>().map_err(|_| err(format!("`{value}` is not a number list"))))
                    .collect::<Result<_, _>>()?
            };
            let one = || match nums[..] {
                [v] => Ok(v),
                _ => Err(err(format!("{key} takes one number"))),
            };
            let pair = || match nums[..] {
                [v] => Ok([v, v]),
                [a, b] => Ok([a, b]),
                _ => Err(err(format!("{key} takes one or two numbers"))),
            };
            match key {
                "n" => p.n = one()?,
                "c" => p.c = one()?,
                "h" => p.h = one()?,
                "w" => p.w = one()?,
                "k" => p.k = one()?,
                "r" => p.r = one()?,
                "s" => p.s = one()?,
                "groups" => p.groups = one()?,
                "stride" => p.stride = pair()?,
                "dilation" => p.dilation = pair()?,
                "pad" => {
                    p.pad = match nums[..] {
                        [v] => Padding::uniform(v),
                        [ph, pw] => Padding::symmetric(ph, pw),
                        [t, l, b, r] => Padding::new(t, l, b, r),
                        _ => return Err(err("pad takes 1, 2 or 4 numbers".into())),
                    }
                }
                "layout" => {
                    p.layout = match value {
                        "nchw" => TensorLayout::Nchw,
                        "nhwc" => TensorLayout::Nhwc,
                        _ => return Err(err(format!("layout `{value}` is not nchw or nhwc"))),
                    }
                }
                _ => return Err(err(format!("unknown key `{key}`"))),
            }
        }
        p.validate().map_err(|e| err(e.to_string()))?;
        out.push(Layer { name, params: p });
    }
    if out.is_empty() {
        return Err("the layer file has no layers".into());
    }
    Ok(out)
}

/// Checks 64 sampled outputs of a conv + ReLU against the f64 oracle at those elements.
fn conv_spot_check(name: &str, g: &sparkle_core::Conv2d, x: &[f32], w: &[f32], y: &[f32]) -> Result<(), Failure> {
    let p = g.params();
    let tol = sparkle_core::check::tolerance(g.gemm_dims().2);
    let relu = Epilogue::activation(sparkle_core::Activation::Relu);
    let mut seed = 0x5eedu64;
    for _ in 0..64 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let (n, k) = ((seed >> 50) as usize % p.n, (seed >> 33) as usize % p.k);
        let (oy, ox) = ((seed >> 20) as usize % g.ho(), (seed >> 7) as usize % g.wo());
        let want = sparkle_core::conv::reference::conv2d_reference_f64_at(g, x, w, &relu, (n, k, oy, ox))?;
        let err = sparkle_core::check::error(y[g.output_index(n, k, oy, ox)], want);
        if err > tol {
            return Err(format!("{name} is wrong at (n {n}, k {k}, y {oy}, x {ox}): error {err:e} > {tol:e}").into());
        }
    }
    Ok(())
}

/// A conv record.
pub struct ConvRecord {
    pub layer: String,
    pub threads: usize,
    pub implementation: String,
    pub gflops: f64,
}

const TORCH_SCRIPT: &str = r#"
import json, sys, time
import torch
layers, budget, threads = json.loads(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
out = []
with torch.no_grad():
    for n, c, h, w, k, r, s, sh, sw, pt, pl, pb, pr, dh, dw, groups, flops in layers:
        x = torch.randn(n, c, h, w); wt = torch.randn(k, c // groups, r, s); b = torch.randn(k)
        x = torch.nn.functional.pad(x, (pl, pr, pt, pb))
        f = lambda: torch.relu(torch.nn.functional.conv2d(x, wt, b, (sh, sw), 0, (dh, dw), groups))
        f()
        best, start, runs = float("inf"), time.perf_counter(), 0
        while runs < 3 or (time.perf_counter() - start < budget and runs < 1000):
            t = time.perf_counter(); f(); best = min(best, time.perf_counter() - t); runs += 1
        out.append(flops / best / 1e9)
print(json.dumps(out))
"#;

/// PyTorch's CPU conv2d (oneDNN) + ReLU in a child python3, or why it could not run.
fn torch(layers: &[Layer], threads: usize, budget: f64) -> Result<Vec<f64>, String> {
    let arg = format!(
        "[{}]",
        layers
            .iter()
            .map(|l| {
                let p = &l.params;
                let flops = p.validate().map(|g| g.flops()).unwrap_or(0.0);
                format!(
                    "[{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}]",
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
                    flops
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    );
    let out = Command::new("python3")
        .args(["-c", TORCH_SCRIPT, &arg, &budget.to_string(), &threads.to_string()])
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("PyTorch not available ({})", err.lines().last().unwrap_or("failed")));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .trim_matches(['[', ']'])
        .split(',')
        .map(|s| s.trim().parse::<f64>().map_err(|e| format!("bad PyTorch output `{text}`: {e}")))
        .collect()
}

/// `sparkle bench conv2d`: fused sparkle, sparkle's unfused im2col + GEMM, and PyTorch.
pub fn conv2d(layers: &[Layer], threads: usize, peers: bool, budget: f64) -> Result<Vec<ConvRecord>, Failure> {
    use sparkle_core::conv::im2col::{im2col, im2col_len};
    use sparkle_core::epilogue::{Activation, Bias};
    let cpu = Cpu::new()?.threads(threads);
    let budget_d = Duration::from_secs_f64(budget);
    let mut records = Vec::new();
    for layer in layers {
        let g = layer.params.validate()?;
        let p = g.params();
        let mut x = vec![0.0f32; g.input_len()];
        let mut w = vec![0.0f32; g.weight_len()];
        fill(&mut x, 1);
        fill(&mut w, 2);
        let epi = Epilogue::activation(Activation::Relu);
        let mut y = vec![f32::NAN; g.output_len()];
        let mut run = |name: &str, f: &mut dyn FnMut(&mut [f32]) -> Result<(), Failure>| -> Result<(), Failure> {
            y.iter_mut().for_each(|v| *v = f32::NAN);
            f(&mut y)?;
            conv_spot_check(name, &g, &x, &w, &y)?;
            let t = best_time(budget_d, || {
                let _ = f(&mut y);
            });
            records.push(ConvRecord {
                layer: layer.name.clone(),
                threads,
                implementation: name.to_string(),
                gflops: g.flops() / t / 1e9,
            });
            Ok(())
        };
        run("sparkle", &mut |y| Ok(cpu.conv2d(&g, &x, &w, &epi, y)?))?;
        if peers && p.layout == sparkle_core::TensorLayout::Nchw {
            // The old project's way: materialise im2col, then a GEMM per (image, group).
            let mut col = vec![0.0f32; im2col_len(&g)?];
            let (kg, hw, gk) = g.gemm_dims();
            run("sparkle-im2col", &mut |y| {
                for n in 0..p.n {
                    for grp in 0..p.groups {
                        im2col(&g, &x, n, grp, &mut col)?;
                        let w0 = g.weight_group_offset(grp);
                        let a = MatRef::row_major(&w[w0..w0 + kg * gk], kg, gk)?;
                        let b = MatRef::row_major(&col, gk, hw)?;
                        let (off, rs, cs) = g.output_gemm_view(n, grp);
                        let c = MatMut::new(&mut y[off..], kg, hw, rs, cs)?;
                        cpu.gemm(1.0, a, b, 0.0, c, &Epilogue { bias: Bias::None, activation: Activation::Relu })?;
                    }
                }
                Ok(())
            })?;
        }
    }
    if peers {
        match torch(layers, threads, budget) {
            Ok(g) => {
                for (layer, gflops) in layers.iter().zip(g) {
                    records.push(ConvRecord {
                        layer: layer.name.clone(),
                        threads,
                        implementation: "pytorch".into(),
                        gflops,
                    });
                }
            }
            Err(why) => eprintln!("note: PyTorch/oneDNN peer skipped: {why}"),
        }
    }
    Ok(records)
}

/// Prints conv records as a table or JSON.
pub fn print_conv(
    records: &[ConvRecord],
    json: bool,
    peak: Option<f64>,
    plot: Option<&std::path::Path>,
) -> Result<(), Failure> {
    if json {
        let items: Vec<String> = records
            .iter()
            .map(|r| {
                format!(
                    r#"{{"op":"conv2d","layer":"{}","threads":{},"impl":"{}","gflops":{:.1}}}"#,
                    r.layer, r.threads, r.implementation, r.gflops
                )
            })
            .collect();
        println!("[{}]", items.join(",\n "));
        return Ok(());
    }
    let title = title("conv2d f32 + ReLU", records.first().map_or(1, |r| r.threads), peak);
    let rows: Vec<(String, &str, f64)> =
        records.iter().map(|r| (r.layer.clone(), r.implementation.as_str(), r.gflops)).collect();
    print!("{}", table(&title, "layer", &rows));
    plot.map_or(Ok(()), |p| crate::plot::bars(p, &title, &rows, peak))
}

/// Repetitions so that timing one batch takes about `budget` seconds (3 to 1000).
fn reps_for(one: f64, budget: f64) -> u32 {
    (budget / one.max(1e-7)).clamp(3.0, 1000.0) as u32
}

/// `sparkle bench gemm --device vulkan`: resident operands (upload excluded), after a spot check
/// of the full upload/dispatch/download path against the oracle.
pub fn gemm_vulkan(shapes: &[[usize; 3]], budget: f64) -> Result<(String, Vec<Record>), Failure> {
    let ctx = sparkle_std::vk::Context::best()?;
    let name = ctx.info().name.clone();
    let mut records = Vec::new();
    for &shape in shapes {
        let [m, n, k] = shape;
        let mut a = vec![0.0f32; m * k];
        let mut b = vec![0.0f32; k * n];
        fill(&mut a, 1);
        fill(&mut b, 2);
        let mut c = vec![f32::NAN; m * n];
        ctx.gemm(
            1.0,
            MatRef::row_major(&a, m, k)?,
            MatRef::row_major(&b, k, n)?,
            0.0,
            MatMut::row_major(&mut c, m, n)?,
            &Epilogue::NONE,
        )?;
        spot_check("sparkle-vulkan", &a, &b, &c, shape)?;
        let one = ctx.time_gemm_resident(m, n, k, 1)?;
        let t = ctx.time_gemm_resident(m, n, k, reps_for(one, budget))?;
        let gflops = 2.0 * m as f64 * n as f64 * k as f64 / t / 1e9;
        records.push(Record { shape, threads: 0, implementation: "sparkle-vulkan".into(), gflops });
    }
    Ok((name, records))
}

/// `sparkle bench conv2d --device vulkan`: resident tensors, after a spot check.
pub fn conv2d_vulkan(layers: &[Layer], budget: f64) -> Result<(String, Vec<ConvRecord>), Failure> {
    use sparkle_core::epilogue::Activation;
    let ctx = sparkle_std::vk::Context::best()?;
    let name = ctx.info().name.clone();
    let mut records = Vec::new();
    for layer in layers {
        let g = layer.params.validate()?;
        let mut x = vec![0.0f32; g.input_len()];
        let mut w = vec![0.0f32; g.weight_len()];
        fill(&mut x, 1);
        fill(&mut w, 2);
        let mut y = vec![f32::NAN; g.output_len()];
        ctx.conv2d(&g, &x, &w, &Epilogue::activation(Activation::Relu), &mut y)?;
        conv_spot_check("sparkle-vulkan", &g, &x, &w, &y)?;
        let one = ctx.time_conv2d_resident(&g, 1)?;
        let t = ctx.time_conv2d_resident(&g, reps_for(one, budget))?;
        records.push(ConvRecord {
            layer: layer.name.clone(),
            threads: 0,
            implementation: "sparkle-vulkan".into(),
            gflops: g.flops() / t / 1e9,
        });
    }
    Ok((name, records))
}

/// `sparkle bench split`: each device of one Sparkle handle alone (pinned), then the op split
/// across all of them by the handle ([`sparkle_std::Sparkle::gemm_split`]: rows in proportion to
/// the juggler's predicted speed, which has learned from the runs alone). Host tensors, copies
/// included (what a split costs).
pub fn split(shapes: &[[usize; 3]], with_cpu: bool, threads: usize, reps: usize) -> Result<(), Failure> {
    use sparkle_std::sparkle::DeviceSel;
    let mut devices = if with_cpu { vec![DeviceSel::Cpu] } else { Vec::new() };
    devices.extend(sparkle_std::vk::devices()?.iter().map(|d| DeviceSel::VulkanIndex(d.index)));
    let sparkle = sparkle_std::Sparkle::builder().devices(&devices).threads(threads).in_memory_model().build()?;
    let parts = sparkle.devices();
    if parts.len() < 2 {
        return Err(format!(
            "a split needs at least two devices the juggler places on (here: {parts:?}; a CPU-type Vulkan device beside the CPU is not one)"
        )
        .into());
    }
    for &shape in shapes {
        let [m, n, k] = shape;
        let mut a = vec![0.0f32; m * k];
        let mut b = vec![0.0f32; k * n];
        fill(&mut a, 1);
        fill(&mut b, 2);
        let mut c = vec![f32::NAN; m * n];
        let flops = 2.0 * m as f64 * n as f64 * k as f64;
        let mut best = |f: &mut dyn FnMut(&mut [f32]) -> Result<(), Failure>| -> Result<f64, Failure> {
            f(&mut c)?;
            let mut t = f64::INFINITY;
            for _ in 0..reps.max(1) {
                let s = Instant::now();
                f(&mut c)?;
                t = t.min(s.elapsed().as_secs_f64());
            }
            Ok(t)
        };
        let mut alone = Vec::new();
        for &device in &parts {
            let t = best(&mut |c| {
                let (av, bv) = (MatRef::row_major(&a, m, k)?, MatRef::row_major(&b, k, n)?);
                let run = sparkle.gemm_on(device, 1.0, av, bv, 0.0, MatMut::row_major(c, m, n)?, &Epilogue::NONE)?;
                match run.fallback {
                    Some(e) => Err(format!("{device} failed: {e}").into()),
                    None => Ok(()),
                }
            })?;
            println!("{m}x{n}x{k} on {device} alone: {:.2} ms ({:.1} GFLOPS)", t * 1e3, flops / t / 1e9);
            alone.push(t);
        }
        let mut split_desc = Vec::new();
        let t = best(&mut |c| {
            let (av, bv) = (MatRef::row_major(&a, m, k)?, MatRef::row_major(&b, k, n)?);
            let reports = sparkle.gemm_split(1.0, av, bv, 0.0, MatMut::row_major(c, m, n)?, &Epilogue::NONE)?;
            if let Some(e) = reports.iter().find_map(|r| r.failed.as_ref()) {
                return Err(format!("a part failed: {e}").into());
            }
            split_desc = reports.iter().map(|r| format!("{} rows {:?}", r.device, r.rows)).collect();
            Ok(())
        })?;
        spot_check("split", &a, &b, &c, shape)?;
        let fastest = alone.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{m}x{n}x{k} split ({}): {:.2} ms ({:.1} GFLOPS), {:.2}x the fastest single device",
            split_desc.join(", "),
            t * 1e3,
            flops / t / 1e9,
            fastest / t
        );
    }
    Ok(())
}

/// `sparkle bench split --resident`: the same op on the first Vulkan device alone and split
/// evenly over every Vulkan device, with each device's operands already resident (uploaded
/// once, outside the timing): rows of A and C for a GEMM, images of the input and output for a
/// conv2d batch. The parts are submitted to all devices before any is waited for. Results are
/// spot-checked against the oracle (GEMM) or the CPU path (conv2d). Seconds are the best of
/// `reps` after a warm-up.
pub fn split_resident(shapes: &[[usize; 3]], conv_batch: usize, reps: usize) -> Result<(), Failure> {
    use sparkle_core::epilogue::Activation;
    use sparkle_std::multi::split_rows;
    use sparkle_std::vk::{Context, TensorBias, TensorMat};
    let gpus: Vec<Context> =
        sparkle_std::vk::devices()?.iter().map(|d| Context::new(d.index)).collect::<Result<_, _>>()?;
    if gpus.is_empty() {
        return Err("no Vulkan device".into());
    }
    let names: Vec<String> = gpus.iter().map(|g| format!("vulkan:{} {}", g.info().index, g.info().name)).collect();
    let counts = if gpus.len() > 1 { vec![1, gpus.len()] } else { vec![1] };
    println!("devices: {}", names.join("; "));
    // Best of `reps` (after a warm-up) of submitting `parts` (one recording per device) and
    // waiting for all of them.
    let time = |record: &dyn Fn(usize) -> Result<sparkle_std::vk::Pending, Failure>, parts: usize| {
        let run = || -> Result<f64, Failure> {
            let t = Instant::now();
            let pending = (0..parts).map(record).collect::<Result<Vec<_>, _>>()?;
            for p in pending {
                p.wait()?;
            }
            Ok(t.elapsed().as_secs_f64())
        };
        run()?;
        (0..reps.max(1)).try_fold(f64::INFINITY, |best, _| Ok::<f64, Failure>(best.min(run()?)))
    };
    for &[m, n, k] in shapes {
        let (mut a, mut b) = (vec![0.0f32; m * k], vec![0.0f32; k * n]);
        fill(&mut a, 1);
        fill(&mut b, 2);
        let flops = 2.0 * m as f64 * n as f64 * k as f64;
        let mut single = f64::NAN;
        for &count in &counts {
            let rows = split_rows(m, &vec![1.0; count], 128);
            let mut tensors = Vec::new();
            for (g, r) in gpus.iter().zip(&rows) {
                let at = g.upload(&a[r.start * k..r.end * k])?;
                tensors.push((at, g.upload(&b)?, g.zeros(r.len().max(1) * n)?));
            }
            let record = |i: usize| -> Result<sparkle_std::vk::Pending, Failure> {
                let (g, r, (at, bt, ct)) = (&gpus[i], &rows[i], &tensors[i]);
                let mut rec = g.record()?;
                if !r.is_empty() {
                    let (av, bv) = (TensorMat::row_major(at, r.len(), k)?, TensorMat::row_major(bt, k, n)?);
                    let cv = TensorMat::row_major(ct, r.len(), n)?;
                    rec.gemm(1.0, av, bv, 0.0, cv, TensorBias::None, Activation::None)?;
                }
                Ok(rec.submit()?)
            };
            let t = time(&record, count)?;
            let mut c = Vec::with_capacity(m * n);
            for ((g, r), (_, _, ct)) in gpus.iter().zip(&rows).zip(&tensors) {
                c.extend_from_slice(&g.download(ct)?[..r.len() * n]);
            }
            spot_check("resident split", &a, &b, &c, [m, n, k])?;
            if count == 1 {
                single = t;
            }
            println!(
                "gemm {m}x{n}x{k} on {count} device(s), resident: {:.3} ms ({:.1} GFLOPS), {:.2}x one device",
                t * 1e3,
                flops / t / 1e9,
                single / t
            );
        }
    }
    if conv_batch == 0 {
        return Ok(());
    }
    let cpu = Cpu::new()?;
    for (name, p) in sparkle_std::demo::layers(sparkle_std::demo::Layers::ResNet50) {
        let p = sparkle_core::Conv2dParams { n: conv_batch, ..p };
        let g = p.validate()?;
        let (mut x, mut w) = (vec![0.0f32; g.input_len()], vec![0.0f32; g.weight_len()]);
        fill(&mut x, 3);
        fill(&mut w, 4);
        let (in_per, out_per) = (g.input_len() / conv_batch, g.output_len() / conv_batch);
        let mut single = f64::NAN;
        for &count in &counts {
            let images = split_rows(conv_batch, &vec![1.0; count], 1);
            let mut parts = Vec::new();
            for (gpu, r) in gpus.iter().zip(&images) {
                let sub = sparkle_core::Conv2dParams { n: r.len().max(1), ..p }.validate()?;
                let xt = gpu.upload(&x[r.start * in_per..r.end.max(r.start + 1) * in_per])?;
                parts.push((sub, xt, gpu.upload(&w)?, gpu.zeros(sub.output_len())?));
            }
            let record = |i: usize| -> Result<sparkle_std::vk::Pending, Failure> {
                let (sub, xt, wt, yt) = &parts[i];
                let mut rec = gpus[i].record()?;
                rec.conv2d(sub, xt, wt, None, Activation::Relu, yt)?;
                Ok(rec.submit()?)
            };
            let t = time(&record, count)?;
            // The first image of every part against the CPU path (itself tested against the
            // oracle).
            for ((gpu, r), (sub, _, _, yt)) in gpus.iter().zip(&images).zip(&parts) {
                let y = gpu.download(yt)?;
                let one = sparkle_core::Conv2dParams { n: 1, ..*sub.params() }.validate()?;
                let mut want = vec![0.0f32; out_per];
                let epi = Epilogue::activation(Activation::Relu);
                cpu.conv2d(&one, &x[r.start * in_per..(r.start + 1) * in_per], &w, &epi, &mut want)?;
                let tol = sparkle_core::check::gpu_tolerance(g.gemm_dims().2);
                let err = y[..out_per]
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| sparkle_core::check::error(*a, f64::from(*b)))
                    .fold(0.0, f64::max);
                if err > tol {
                    return Err(format!("{name}: resident split is wrong on image {}: {err:e}", r.start).into());
                }
            }
            if count == 1 {
                single = t;
            }
            println!(
                "conv2d {name} batch {conv_batch} on {count} device(s), resident: {:.3} ms ({:.1} GFLOPS), {:.2}x one device",
                t * 1e3,
                g.flops() / t / 1e9,
                single / t
            );
        }
    }
    Ok(())
}
