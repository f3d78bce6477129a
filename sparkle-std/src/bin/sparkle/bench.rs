//! `sparkle bench`: Sparkle beside its peers, in one process and one run.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use sparkle_core::gemm::reference::gemm_reference_f64;
use sparkle_core::{Epilogue, MatMut, MatRef};
use sparkle_std::cpu::peak::peak_gflops;
use sparkle_std::cpu::Gemm;
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
    let sparkle = Gemm::new().map(|g| g.threads(threads));
    let mut v: Vec<(&'static str, GemmFn)> = Vec::new();
    if let Ok(g) = sparkle {
        v.push((
            "sparkle",
            Box::new(move |a, b, c, [m, n, k]| {
                let av = MatRef::row_major(a, m, k).expect("a");
                let bv = MatRef::row_major(b, k, n).expect("b");
                g.run(1.0, av, bv, 0.0, MatMut::row_major(c, m, n).expect("c"), &Epilogue::NONE).expect("sparkle gemm");
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

/// numpy's matmul (OpenBLAS in the PyPI wheel) in a child python3, or why it could not run.
fn numpy(shapes: &[[usize; 3]], threads: usize, budget: f64) -> Result<Vec<f64>, String> {
    let arg = format!("[{}]", shapes.iter().map(|[m, n, k]| format!("[{m},{n},{k}]")).collect::<Vec<_>>().join(","));
    let out = Command::new("python3")
        .args(["-c", NUMPY_SCRIPT, &arg, &budget.to_string()])
        .env("OPENBLAS_NUM_THREADS", threads.to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("failed");
        return Err(format!("numpy not available ({last})"));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .trim_matches(['[', ']'])
        .split(',')
        .map(|s| s.trim().parse::<f64>().map_err(|e| format!("bad numpy output `{text}`: {e}")))
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
        match numpy(shapes, threads, budget) {
            Ok(g) => {
                for (&shape, gflops) in shapes.iter().zip(g) {
                    records.push(Record { shape, threads, implementation: "openblas".into(), gflops });
                }
            }
            Err(why) => eprintln!("note: numpy/OpenBLAS peer skipped: {why}"),
        }
    }
    Ok(records)
}

/// Prints records as a table (one row per shape, one column per implementation) or JSON.
pub fn print(records: &[Record], json: bool, peak: Option<f64>) {
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
        return;
    }
    let mut impls: Vec<&str> = Vec::new();
    for r in records {
        if !impls.contains(&r.implementation.as_str()) {
            impls.push(&r.implementation);
        }
    }
    let mut shapes: Vec<[usize; 3]> = Vec::new();
    for r in records {
        if !shapes.contains(&r.shape) {
            shapes.push(r.shape);
        }
    }
    let threads = records.first().map_or(1, |r| r.threads);
    let mut out = String::new();
    let _ = write!(out, "GEMM f32 GFLOPS, {threads} thread(s)");
    if let Some(p) = peak {
        let _ = write!(out, "; measured FMA peak {p:.0} GFLOPS");
    }
    let _ = write!(out, "\n{:<16}", "shape (MxNxK)");
    for i in &impls {
        let _ = write!(out, " {i:>15}");
    }
    out.push('\n');
    for s in shapes {
        let _ = write!(out, "{:<16}", format!("{}x{}x{}", s[0], s[1], s[2]));
        for i in &impls {
            match records.iter().find(|r| r.shape == s && r.implementation == *i) {
                Some(r) => {
                    let _ = write!(out, " {:>15.1}", r.gflops);
                }
                None => {
                    let _ = write!(out, " {:>15}", "-");
                }
            }
        }
        out.push('\n');
    }
    print!("{out}");
}

/// `sparkle bench peak`.
pub fn peak(threads: usize) {
    let one = peak_gflops(1);
    let all = peak_gflops(threads);
    println!("FMA peak: {one:.1} GFLOPS on 1 thread, {all:.1} GFLOPS on {threads} threads");
}
