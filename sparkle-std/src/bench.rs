//! Measurement loops: what `sparkle bench` runs, and what the peer comparisons in `benches/`
//! (`cargo run --release -p sparkle-benches --bin peers`) run beside their peers, so both measure
//! Sparkle the same way.
//!
//! Every timed result is first checked against the f64 oracle at sampled elements, held to the
//! tolerance of the backend that computed it ([`sparkle_core::check::tolerance_for`]); a wrong
//! result is an error, never a figure. Times are the best of repeated runs after a warm-up.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sparkle_core::check::{error, tolerance_for, Backend, DType};
use sparkle_core::conv::reference::conv2d_reference_f64_at;
#[cfg(feature = "vulkan")]
use sparkle_core::Precision;
use sparkle_core::{Activation, Conv2d, Conv2dParams, Epilogue, MatMut, MatRef};

use crate::cpu::Cpu;
use crate::demo::fill;

/// What a measurement can fail with: a wrong result, a device error, bad input.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// A CPU GEMM under test: `f(a, b, c, [m, n, k], b_transposed)` computes `c = a * b`, all
/// row-major, except that with `b_transposed` the slice `b` holds B's transpose (`n x k`
/// row-major: a linear layer's weight, `y = x W^T`).
pub type GemmImpl<'a> = dyn FnMut(&[f32], &[f32], &mut [f32], [usize; 3], bool) -> Result<(), BenchError> + 'a;

/// A CPU conv2d + ReLU under test: `f(input, weight, output)` for the layer it is timed on.
pub type Conv2dImpl<'a> = dyn FnMut(&[f32], &[f32], &mut [f32]) -> Result<(), BenchError> + 'a;

/// One measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// `gemm` or `conv2d`.
    pub op: &'static str,
    /// The shape (`MxNxK`) or the layer's name.
    pub key: String,
    /// CPU threads (0: on a GPU).
    pub threads: usize,
    /// Who computed it: `sparkle`, `sparkle-vulkan`, or a peer's name.
    pub implementation: String,
    /// Useful GFLOPS: `2*m*n*k` (GEMM) or [`Conv2d::flops`] over the best time.
    pub gflops: f64,
}

impl Record {
    /// One JSON object (`op`, `key`, `threads`, `impl`, `gflops`).
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"op":"{}","key":"{}","threads":{},"impl":"{}","gflops":{:.1}}}"#,
            self.op, self.key, self.threads, self.implementation, self.gflops
        )
    }
}

/// `MxNxK`, a GEMM record's key.
pub fn shape_key([m, n, k]: [usize; 3]) -> String {
    format!("{m}x{n}x{k}")
}

/// [`shape_key`], marked `B^T` where B is stored transposed.
pub fn gemm_key(shape: [usize; 3], b_transposed: bool) -> String {
    let key = shape_key(shape);
    if b_transposed {
        key + " B^T"
    } else {
        key
    }
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
pub fn best_time(budget: Duration, mut f: impl FnMut()) -> f64 {
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

/// Repetitions so that timing one batch takes about `budget` seconds (3 to 1000).
#[cfg(feature = "vulkan")]
fn reps_for(one: f64, budget: f64) -> u32 {
    (budget / one.max(1e-7)).clamp(3.0, 1000.0) as u32
}

/// Row-major GEMM operands of `shape`, filled deterministically: `(a, b)`.
pub fn gemm_operands([m, n, k]: [usize; 3]) -> (Vec<f32>, Vec<f32>) {
    let (mut a, mut b) = (vec![0.0f32; m * k], vec![0.0f32; k * n]);
    fill(&mut a, 1);
    fill(&mut b, 2);
    (a, b)
}

/// Conv operands of `g`, filled deterministically: `(input, weight)`.
pub fn conv2d_operands(g: &Conv2d) -> (Vec<f32>, Vec<f32>) {
    let (mut x, mut w) = (vec![0.0f32; g.input_len()], vec![0.0f32; g.weight_len()]);
    fill(&mut x, 1);
    fill(&mut w, 2);
    (x, w)
}

/// The 64 pseudo-random words the spot checks sample output elements with (the same elements on
/// every run).
fn samples() -> impl Iterator<Item = u64> {
    (0..64).scan(0x5eedu64, |seed, _| {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Some(*seed)
    })
}

/// [`check_gemm`] for half inputs: 64 sampled elements against the f64 oracle on the same
/// (rounded) inputs, with `H`'s tolerance.
pub fn check_half_gemm<H: sparkle_core::f16::Half>(
    name: &str,
    backend: Backend,
    a: &[H],
    b: &[H],
    c: &[f32],
    [m, n, k]: [usize; 3],
) -> Result<(), BenchError> {
    let tol = tolerance_for(backend, H::DTYPE, k);
    for seed in samples() {
        let (i, j) = ((seed >> 33) as usize % m, (seed >> 13) as usize % n);
        let want: f64 = (0..k).map(|p| a[i * k + p].to_f64() * b[p * n + j].to_f64()).sum();
        let err = error(c[i * n + j], want);
        if err > tol {
            return Err(format!("{name} is wrong at ({i}, {j}) of {m}x{n}x{k}: error {err:e} > {tol:e}").into());
        }
    }
    Ok(())
}

/// Checks 64 sampled elements of `c = a * b` (row-major) from `backend` against the f64 oracle.
pub fn check_gemm(
    name: &str,
    backend: Backend,
    a: &[f32],
    b: &[f32],
    c: &[f32],
    [m, n, k]: [usize; 3],
) -> Result<(), BenchError> {
    let tol = tolerance_for(backend, DType::F32, k);
    let (err, (i, j)) = sampled_gemm_error(a, b, c, [m, n, k], 64);
    if err > tol {
        return Err(format!("{name} is wrong at ({i}, {j}) of {m}x{n}x{k}: error {err:e} > {tol:e}").into());
    }
    Ok(())
}

/// The largest [`error`] of `count` sampled elements of `c = a * b` (row-major, f32) against the
/// f64 oracle, and where it is.
pub fn sampled_gemm_error(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    [m, n, k]: [usize; 3],
    count: usize,
) -> (f64, (usize, usize)) {
    let mut worst = (0.0, (0, 0));
    if m == 0 || n == 0 {
        return worst;
    }
    let mut seed = 0x5eed_u64;
    for _ in 0..count {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let (i, j) = ((seed >> 33) as usize % m, (seed >> 13) as usize % n);
        let want: f64 = (0..k).map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j])).sum();
        let err = error(c[i * n + j], want);
        if err > worst.0 || err.is_nan() {
            worst = (err, (i, j));
        }
    }
    worst
}

/// Checks 64 sampled outputs of a conv + ReLU from `backend` against the f64 oracle at those
/// elements.
pub fn check_conv2d(
    name: &str,
    backend: Backend,
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    y: &[f32],
) -> Result<(), BenchError> {
    check_conv2d_as(name, backend, DType::F32, g, x, w, y)
}

/// [`check_conv2d`] with `dtype`'s tolerance (`x` and `w` the rounded inputs, widened).
pub fn check_conv2d_as(
    name: &str,
    backend: Backend,
    dtype: DType,
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    y: &[f32],
) -> Result<(), BenchError> {
    let p = g.params();
    let tol = tolerance_for(backend, dtype, g.gemm_dims().2);
    let relu = Epilogue::activation(Activation::Relu);
    for seed in samples() {
        let (n, k) = ((seed >> 50) as usize % p.n, (seed >> 33) as usize % p.k);
        let (oy, ox) = ((seed >> 20) as usize % g.ho(), (seed >> 7) as usize % g.wo());
        let want = conv2d_reference_f64_at(g, x, w, &relu, (n, k, oy, ox))?;
        let err = error(y[g.output_index(n, k, oy, ox)], want);
        if err > tol {
            return Err(format!("{name} is wrong at (n {n}, k {k}, y {oy}, x {ox}): error {err:e} > {tol:e}").into());
        }
    }
    Ok(())
}

/// Times one CPU GEMM implementation `f(a, b, c, shape, b_transposed)` (`c = a * b`, see
/// [`GemmImpl`]) at `shape` after checking its result: the loop every CPU GEMM figure, Sparkle's
/// or a peer's, comes from.
pub fn time_gemm(
    name: &str,
    shape: [usize; 3],
    b_transposed: bool,
    threads: usize,
    budget: f64,
    f: &mut GemmImpl<'_>,
) -> Result<Record, BenchError> {
    let [m, n, k] = shape;
    let (a, b) = gemm_operands(shape);
    // Transposed, the same values are B^T's (n x k): the oracle reads them as B (k x n).
    let b_row_major = match b_transposed {
        true => (0..k * n).map(|i| b[i % n * k + i / n]).collect(),
        false => b.clone(),
    };
    let mut c = vec![f32::NAN; m * n];
    f(&a, &b, &mut c, shape, b_transposed)?;
    check_gemm(name, Backend::Cpu, &a, &b_row_major, &c, shape)?;
    let t = best_time(Duration::from_secs_f64(budget), || {
        let _ = f(&a, &b, &mut c, shape, b_transposed);
    });
    let gflops = 2.0 * m as f64 * n as f64 * k as f64 / t / 1e9;
    Ok(Record { op: "gemm", key: gemm_key(shape, b_transposed), threads, implementation: name.into(), gflops })
}

/// Times one CPU conv2d + ReLU implementation `f(input, weight, output)` on `layer` after
/// checking its result.
pub fn time_conv2d(
    name: &str,
    layer: &Layer,
    threads: usize,
    budget: f64,
    f: &mut Conv2dImpl<'_>,
) -> Result<Record, BenchError> {
    let g = layer.params.validate()?;
    let (x, w) = conv2d_operands(&g);
    let mut y = vec![f32::NAN; g.output_len()];
    f(&x, &w, &mut y)?;
    check_conv2d(name, Backend::Cpu, &g, &x, &w, &y)?;
    let t = best_time(Duration::from_secs_f64(budget), || {
        let _ = f(&x, &w, &mut y);
    });
    Ok(Record {
        op: "conv2d",
        key: layer.name.clone(),
        threads,
        implementation: name.into(),
        gflops: g.flops() / t / 1e9,
    })
}

/// Sparkle's CPU GEMM as a [`GemmImpl`]: the one `sparkle bench gemm` and the peer comparison
/// both time.
pub fn sparkle_gemm(cpu: Cpu) -> Box<GemmImpl<'static>> {
    Box::new(move |a, b, c, [m, n, k], b_transposed| {
        let av = MatRef::row_major(a, m, k)?;
        let bv = if b_transposed { MatRef::row_major(b, n, k)?.t() } else { MatRef::row_major(b, k, n)? };
        cpu.gemm(1.0, av, bv, 0.0, MatMut::row_major(c, m, n)?, &Epilogue::NONE)?;
        Ok(())
    })
}

/// Sparkle's CPU GEMM at every shape (`sparkle bench gemm`).
pub fn gemm_cpu(shapes: &[[usize; 3]], threads: usize, budget: f64) -> Result<Vec<Record>, BenchError> {
    let mut gemm = sparkle_gemm(Cpu::new()?.threads(threads));
    shapes.iter().map(|&s| time_gemm("sparkle", s, false, threads, budget, gemm.as_mut())).collect()
}

/// The quantized GEMM a `sparkle bench gemm --dtypes int8` row times: ONNX QLinearMatMul's
/// common case, u8 activations (zero point 3) times s8 weights (zero point 0) requantized to u8
/// in the ONNX stage.
fn qgemm_case<'a>(
    a: &'a [u8],
    b: &'a [i8],
    [m, n, k]: [usize; 3],
) -> Result<sparkle_core::quant::QGemm<'a, u8, i8>, BenchError> {
    use sparkle_core::quant::{PerChannel, QGemm};
    Ok(QGemm {
        a: MatRef::row_major(a, m, k)?,
        a_zero: 3,
        b: MatRef::row_major(b, k, n)?,
        b_zero: PerChannel::Tensor(0),
        bias: None,
    })
}

/// The output stage of [`qgemm_case`].
fn qgemm_stage() -> sparkle_core::quant::OutputStage<'static> {
    sparkle_core::quant::OutputStage::onnx(0.02, sparkle_core::quant::PerChannel::Tensor(0.01), 0.5, 128)
}

/// `c`, the result of [`qgemm_case`] at `shape` under [`qgemm_stage`] by `name`, against the
/// integer oracle at 64 sampled elements, bit for bit.
fn check_qgemm(
    name: &str,
    op: &sparkle_core::quant::QGemm<'_, u8, i8>,
    stage: &sparkle_core::quant::OutputStage<'_>,
    c: &[u8],
    [m, n, k]: [usize; 3],
) -> Result<(), BenchError> {
    for seed in samples() {
        let (i, j) = ((seed >> 33) as usize % m, (seed >> 13) as usize % n);
        let want: u8 = stage.apply(sparkle_core::quant::reference::accumulator(op, (i, j))?, j);
        if c[i * n + j] != want {
            return Err(format!("{name} is wrong at ({i}, {j}) of {m}x{n}x{k}: {} vs {want}", c[i * n + j]).into());
        }
    }
    Ok(())
}

/// The int8 operands of a GEMM bench at `shape`: [`gemm_operands`] mapped onto u8 and s8.
fn qgemm_operands(shape: [usize; 3]) -> (Vec<u8>, Vec<i8>) {
    let (fa, fb) = gemm_operands(shape);
    (fa.iter().map(|&v| ((v + 1.0) * 127.5) as u8).collect(), fb.iter().map(|&v| (v * 127.0) as i8).collect())
}

/// `sparkle bench gemm --device vulkan --dtypes int8`: the case of [`qgemm_cpu`] (u8 with zero
/// point 3 x s8 -> u8, ONNX stage) on the preferred device, on cooperative matrices where it has int8 ones. Checked bit for bit at 64
/// sampled elements through the full upload/dispatch/download path first; then timed resident
/// after 0.2 s of warm-up, with a u8 output requantized in the fixed-point stage (per-column
/// words read in the write-out, as the ONNX stage's are). GOPS.
#[cfg(feature = "vulkan")]
pub fn qgemm_vulkan(shapes: &[[usize; 3]], budget: f64) -> Result<(String, Vec<Record>), BenchError> {
    let ctx = crate::vk::Context::best()?;
    let name = format!("{} (int8 on {})", ctx.info().name, ctx.qgemm_path());
    let stage = qgemm_stage();
    let mut records = Vec::new();
    for &shape in shapes {
        let [m, n, k] = shape;
        let (a, b) = qgemm_operands(shape);
        let op = qgemm_case(&a, &b, shape)?;
        let mut c = vec![0u8; m * n];
        ctx.qgemm(&op, &stage, MatMut::row_major(&mut c, m, n)?)?;
        let implementation = "sparkle-vulkan-int8".to_string();
        check_qgemm(&implementation, &op, &stage, &c, shape)?;
        let one = ctx.time_qgemm_resident(m, n, k, 1, 0.2)?;
        let t = ctx.time_qgemm_resident(m, n, k, reps_for(one, budget), 0.0)?;
        let gflops = 2.0 * m as f64 * n as f64 * k as f64 / t / 1e9;
        records.push(Record { op: "gemm", key: shape_key(shape), threads: 0, implementation, gflops });
    }
    Ok((name, records))
}

/// Sparkle's int8 CPU GEMM (u8 with zero point 3 x s8 -> u8, ONNX stage) at every shape, each result checked
/// bit for bit against the integer oracle at 64 sampled elements first. The figure is GOPS
/// (`2*m*n*k` integer operations per second), comparable with f32 GFLOPS. Two rows per shape:
/// `sparkle-int8` (B packed on every call) and `sparkle-int8-packed` (B packed once, outside the
/// timed loop, by `Cpu::qgemm_pack`).
pub fn qgemm_cpu(shapes: &[[usize; 3]], threads: usize, budget: f64) -> Result<Vec<Record>, BenchError> {
    use sparkle_core::quant::packed::QGemmPacked;
    let cpu = Cpu::new()?.threads(threads);
    let stage = qgemm_stage();
    let mut records = Vec::new();
    for &shape in shapes {
        let [m, n, k] = shape;
        let (a, b) = qgemm_operands(shape);
        let op = qgemm_case(&a, &b, shape)?;
        // B packed once, outside the timed loop (as PyTorch's quantized linear keeps its weights).
        let packed = cpu.qgemm_pack(&op.b)?;
        let packed_op = QGemmPacked { a: op.a, a_zero: op.a_zero, b: &packed, b_zero: op.b_zero, bias: op.bias };
        let mut c = vec![0u8; m * n];
        let run = |name: &str, c: &mut [u8]| -> Result<(), BenchError> {
            let cv = MatMut::row_major(c, m, n)?;
            match name {
                "sparkle-int8" => cpu.qgemm(&op, &stage, cv)?,
                _ => cpu.qgemm_packed(&packed_op, &stage, cv)?,
            };
            Ok(())
        };
        for name in ["sparkle-int8", "sparkle-int8-packed"] {
            c.fill(0);
            run(name, &mut c)?;
            check_qgemm(name, &op, &stage, &c, shape)?;
            let t = best_time(Duration::from_secs_f64(budget), || {
                let _ = run(name, &mut c);
            });
            let gflops = 2.0 * m as f64 * n as f64 * k as f64 / t / 1e9;
            records.push(Record { op: "gemm", key: shape_key(shape), threads, implementation: name.into(), gflops });
        }
    }
    Ok(records)
}

/// Sparkle's bf16 CPU GEMM (`sparkle bench gemm --dtypes bf16`): the f32 operands rounded to
/// bf16, an f32 result, each checked against the f64 oracle on the rounded inputs at 64 sampled
/// elements (the tolerance table's bf16 row) first. GFLOPS over the best time.
pub fn bf16_gemm_cpu(shapes: &[[usize; 3]], threads: usize, budget: f64) -> Result<Vec<Record>, BenchError> {
    use sparkle_core::bf16::bf16;
    let cpu = Cpu::new()?.threads(threads);
    let mut records = Vec::new();
    for &shape in shapes {
        let [m, n, k] = shape;
        let (fa, fb) = gemm_operands(shape);
        let a: Vec<bf16> = fa.iter().map(|&v| bf16::from_f32(v)).collect();
        let b: Vec<bf16> = fb.iter().map(|&v| bf16::from_f32(v)).collect();
        let (av, bv) = (MatRef::row_major(&a, m, k)?, MatRef::row_major(&b, k, n)?);
        let mut c = vec![0.0f32; m * n];
        cpu.gemm_bf16(&av, &bv, MatMut::row_major(&mut c, m, n)?)?;
        check_half_gemm("sparkle-bf16", Backend::Cpu, &a, &b, &c, shape)?;
        let t = best_time(Duration::from_secs_f64(budget), || {
            let _ = MatMut::row_major(&mut c, m, n).map(|cv| cpu.gemm_bf16(&av, &bv, cv));
        });
        let gflops = 2.0 * m as f64 * n as f64 * k as f64 / t / 1e9;
        records.push(Record {
            op: "gemm",
            key: shape_key(shape),
            threads,
            implementation: "sparkle-bf16".into(),
            gflops,
        });
    }
    Ok(records)
}

/// Sparkle's int8 CPU conv2d on every layer (`sparkle bench conv2d --dtypes int8`): ONNX
/// QLinearConv's common case, u8 input (zero point 3) x s8 weights (zero point 0) -> u8 with
/// ReLU (the output clamped at its zero point), each result checked bit for bit against the
/// integer oracle at 64 sampled outputs first. GOPS: [`Conv2d::flops`] over the best time. Two
/// rows per layer: `sparkle-int8` (the weights prepared on every call) and `sparkle-int8-packed`
/// (packed once, outside the timed loop, by `Cpu::qconv2d_pack`, as PyTorch's module does).
pub fn qconv2d_cpu(layers: &[Layer], threads: usize, budget: f64) -> Result<Vec<Record>, BenchError> {
    use sparkle_core::quant::packed::QConvPacked;
    let cpu = Cpu::new()?.threads(threads);
    let stage = qconv_stage();
    let mut records = Vec::new();
    for layer in layers {
        let g = layer.params.validate()?;
        let (x, w) = qconv_operands(&g);
        let op = qconv_case(&x, &w);
        // Packed once, outside the timed loop, as PyTorch's quantized module packs its weights
        // when it is built.
        let packed = cpu.qconv2d_pack(&g, &w)?;
        let packed_op = QConvPacked { input: &x, x_zero: 3, weight: &packed, w_zero: op.w_zero, bias: None };
        let mut y = vec![0u8; g.output_len()];
        let run = |name: &str, y: &mut [u8]| -> Result<(), BenchError> {
            match name {
                "sparkle-int8" => cpu.qconv2d(&g, &op, &stage, y)?,
                _ => cpu.qconv2d_packed(&g, &packed_op, &stage, y)?,
            }
            Ok(())
        };
        for name in ["sparkle-int8", "sparkle-int8-packed"] {
            y.fill(0);
            run(name, &mut y)?;
            check_qconv(name, layer, &g, &op, &stage, &y)?;
            let t = best_time(Duration::from_secs_f64(budget), || {
                let _ = run(name, &mut y);
            });
            records.push(Record {
                op: "conv2d",
                key: layer.name.clone(),
                threads,
                implementation: name.into(),
                gflops: g.flops() / t / 1e9,
            });
        }
    }
    Ok(records)
}

/// The int8 operands of a conv bench layer: [`conv2d_operands`] mapped onto u8 and s8.
fn qconv_operands(g: &Conv2d) -> (Vec<u8>, Vec<i8>) {
    let (fx, fw) = conv2d_operands(g);
    (fx.iter().map(|&v| ((v + 1.0) * 127.5) as u8).collect(), fw.iter().map(|&v| (v * 127.0) as i8).collect())
}

/// The int8 conv a `sparkle bench conv2d --dtypes int8` row times: u8 input (zero point 3) x s8
/// weights (zero point 0).
fn qconv_case<'a>(x: &'a [u8], w: &'a [i8]) -> sparkle_core::quant::conv::QConv<'a, u8, i8> {
    use sparkle_core::quant::PerChannel;
    sparkle_core::quant::conv::QConv { input: x, x_zero: 3, weight: w, w_zero: PerChannel::Tensor(0), bias: None }
}

/// [`qgemm_stage`] with ReLU: the output clamped at its zero point.
fn qconv_stage() -> sparkle_core::quant::OutputStage<'static> {
    let mut stage = qgemm_stage();
    stage.min = stage.zero_point;
    stage
}

/// `y`, the result of `op` on `layer` by `name`, against the integer oracle at 64 sampled
/// outputs, bit for bit.
fn check_qconv(
    name: &str,
    layer: &Layer,
    g: &Conv2d,
    op: &sparkle_core::quant::conv::QConv<'_, u8, i8>,
    stage: &sparkle_core::quant::OutputStage<'_>,
    y: &[u8],
) -> Result<(), BenchError> {
    let p = g.params();
    for seed in samples() {
        let (n, k) = ((seed >> 50) as usize % p.n, (seed >> 33) as usize % p.k);
        let (oy, ox) = ((seed >> 20) as usize % g.ho(), (seed >> 7) as usize % g.wo());
        let want: u8 = stage.apply(sparkle_core::quant::conv::accumulator(g, op, (n, k, oy, ox))?, k);
        let got = y[g.output_index(n, k, oy, ox)];
        if got != want {
            return Err(format!(
                "{name} is wrong on {} at (n {n}, k {k}, y {oy}, x {ox}): {got} vs {want}",
                layer.name
            )
            .into());
        }
    }
    Ok(())
}

/// `sparkle bench conv2d --device vulkan --dtypes int8`: the case of [`qconv2d_cpu`] through
/// [`crate::vk::Context::qconv2d`] on the preferred device (the input staged by the host, the
/// patches gathered on the device by the int8 GEMM's kernels: tensor cores where it has int8
/// cooperative matrices), checked bit for bit at 64 sampled outputs first. Two rows, GOPS, each
/// after 0.2 s of warm-up: `sparkle-vulkan-int8` the whole call (the host's staging and the
/// transfers are part of the figure: no resident int8 tensors yet), `sparkle-vulkan-int8-kernel`
/// the kernel alone on resident operands.
#[cfg(feature = "vulkan")]
pub fn qconv2d_vulkan(layers: &[Layer], budget: f64) -> Result<(String, Vec<Record>), BenchError> {
    let ctx = crate::vk::Context::best()?;
    let name = format!("{} (int8 on {})", ctx.info().name, ctx.qgemm_path());
    let stage = qconv_stage();
    let implementation = "sparkle-vulkan-int8".to_string();
    let mut records = Vec::new();
    for layer in layers {
        let g = layer.params.validate()?;
        let (x, w) = qconv_operands(&g);
        let op = qconv_case(&x, &w);
        let mut y = vec![0u8; g.output_len()];
        ctx.qconv2d(&g, &op, &stage, &mut y)?;
        check_qconv(&implementation, layer, &g, &op, &stage, &y)?;
        let warm = Instant::now();
        while warm.elapsed().as_secs_f64() < 0.2 {
            ctx.qconv2d(&g, &op, &stage, &mut y)?;
        }
        let t = best_time(Duration::from_secs_f64(budget), || {
            let _ = ctx.qconv2d(&g, &op, &stage, &mut y);
        });
        let one = ctx.time_qconv2d_resident(&g, 1, 0.2)?;
        let kernel = ctx.time_qconv2d_resident(&g, reps_for(one, budget), 0.0)?;
        for (implementation, t) in [(implementation.clone(), t), (format!("{implementation}-kernel"), kernel)] {
            records.push(Record {
                op: "conv2d",
                key: layer.name.clone(),
                threads: 0,
                implementation,
                gflops: g.flops() / t / 1e9,
            });
        }
    }
    Ok((name, records))
}

/// Sparkle's fused CPU conv2d + ReLU on every layer (`sparkle bench conv2d`).
pub fn conv2d_cpu(layers: &[Layer], threads: usize, budget: f64) -> Result<Vec<Record>, BenchError> {
    let cpu = Cpu::new()?.threads(threads);
    let epi = Epilogue::activation(Activation::Relu);
    let mut out = Vec::new();
    for layer in layers {
        let g = layer.params.validate()?;
        let mut conv =
            |x: &[f32], w: &[f32], y: &mut [f32]| -> Result<(), BenchError> { Ok(cpu.conv2d(&g, x, w, &epi, y)?) };
        out.push(time_conv2d("sparkle", layer, threads, budget, &mut conv)?);
    }
    Ok(out)
}

/// The path each layer runs on with `threads` threads on this CPU (`Cpu::conv2d_path`: the
/// kernel, workers and memory budget included), for the line under the table.
pub fn conv2d_paths(layers: &[Layer], threads: usize) -> Result<Vec<(String, &'static str)>, BenchError> {
    let cpu = Cpu::new()?.threads(threads);
    layers.iter().map(|l| Ok((l.name.clone(), cpu.conv2d_path(&l.params.validate()?)?.name()))).collect()
}

/// One conv layer to measure.
#[derive(Clone, Debug)]
pub struct Layer {
    /// Its name in tables.
    pub name: String,
    /// Its geometry.
    pub params: Conv2dParams,
}

/// The ResNet-50 layer set at batch 1 plus MobileNet's depthwise 3x3 (all NCHW, as PyTorch).
pub fn resnet50_layers() -> Vec<Layer> {
    // The demo's layer set: one list, so the demo and the benchmark always measure the same layers.
    crate::demo::layers(crate::demo::Layers::ResNet50)
        .into_iter()
        .map(|(name, params)| Layer { name: name.to_string(), params })
        .collect()
}

/// The layers `spec` names: `resnet50` ([`resnet50_layers`]) or a layer file
/// ([`parse_layers`]), every layer at batch `batch` if given (at least 1).
pub fn load_layers(spec: &str, batch: Option<usize>) -> Result<Vec<Layer>, BenchError> {
    let mut layers = if spec == "resnet50" {
        resnet50_layers()
    } else {
        let text = std::fs::read_to_string(spec).map_err(|e| format!("cannot read {spec}: {e}"))?;
        parse_layers(&text)?
    };
    if let Some(n) = batch {
        if n == 0 {
            return Err("the batch must be at least 1".into());
        }
        layers.iter_mut().for_each(|l| l.params.n = n);
    }
    Ok(layers)
}

/// Parses a layer file: one layer a line, `name key=value ...` with keys n, c, h, w, k, r, s,
/// stride, pad (one value, `ph,pw` or `t,l,b,r`), dilation, groups, layout (nchw|nhwc);
/// `#` starts a comment. n, stride, dilation and groups default to 1, pad to 0.
pub fn parse_layers(text: &str) -> Result<Vec<Layer>, String> {
    use sparkle_core::{Padding, TensorLayout, WeightLayout};
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
            let nums: Vec<usize> = if key == "layout" || key == "weights" {
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
                "weights" => {
                    p.weight_layout = match value {
                        "kcrs" => WeightLayout::Kcrs,
                        "krsc" => WeightLayout::Krsc,
                        _ => return Err(err(format!("weights `{value}` is not kcrs or krsc"))),
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

/// "GEMM f32 GFLOPS, 2 thread(s); measured FMA peak ..." (threads 0: on the GPU).
pub fn title(what: &str, threads: usize, peak: Option<f64>) -> String {
    let mut t = match threads {
        0 => format!("{what} GFLOPS on the GPU"),
        n => format!("{what} GFLOPS, {n} thread(s)"),
    };
    if let Some(p) = peak {
        let _ = write!(t, "; measured FMA peak {p:.0} GFLOPS");
    }
    t
}

/// The `(key, implementation, GFLOPS)` cells of `records`, for [`table`] and plots.
pub fn cells(records: &[Record]) -> Vec<(String, &str, f64)> {
    records.iter().map(|r| (r.key.clone(), r.implementation.as_str(), r.gflops)).collect()
}

/// `records` as a JSON array, one object a line.
pub fn to_json(records: &[Record]) -> String {
    format!("[{}]", records.iter().map(Record::to_json).collect::<Vec<_>>().join(",\n "))
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
pub fn table(title: &str, key: &str, cells: &[(String, &str, f64)]) -> String {
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

/// `sparkle bench gemm --device vulkan`: resident operands (upload excluded), after a spot check
/// of the full upload/dispatch/download path against the oracle.
#[cfg(feature = "vulkan")]
pub fn gemm_vulkan(shapes: &[[usize; 3]], budget: f64) -> Result<(String, Vec<Record>), BenchError> {
    gemm_precision_vulkan(shapes, budget, &[Precision::Highest]).map(|(name, records, _)| (name, records))
}

/// The largest error, against the f64 oracle, of one implementation at one shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Accuracy {
    /// The shape (`MxNxK`).
    pub key: String,
    /// As in its [`Record`].
    pub implementation: String,
    /// The largest [`error`] over [`ACCURACY_SAMPLES`] sampled elements of C.
    pub max_error: f64,
    /// How the device computed it ([`crate::vk::Context::precision_path`]).
    pub path: &'static str,
}

/// Elements of C each [`Accuracy`] samples.
pub const ACCURACY_SAMPLES: usize = 1024;

/// `sparkle bench gemm --device vulkan --precision ...`: the f32 GEMM at each precision
/// ([`crate::vk::Context::gemm_with_precision`]: `high` and `medium` on tensor cores where the
/// device has f16 cooperative matrices, else the f32 kernels). Each is run through the full
/// upload/dispatch/download path and [`ACCURACY_SAMPLES`] elements are checked against the f64
/// oracle on the f32 inputs (within [`Precision::tolerance`]; the largest error is returned);
/// then timed resident after 0.2 s of warm-up.
#[cfg(feature = "vulkan")]
pub fn gemm_precision_vulkan(
    shapes: &[[usize; 3]],
    budget: f64,
    precisions: &[Precision],
) -> Result<(String, Vec<Record>, Vec<Accuracy>), BenchError> {
    let ctx = crate::vk::Context::best()?;
    let name = ctx.info().name.clone();
    let (mut records, mut errors) = (Vec::new(), Vec::new());
    for &shape in shapes {
        let [m, n, k] = shape;
        let (a, b) = gemm_operands(shape);
        let (av, bv) = (MatRef::row_major(&a, m, k)?, MatRef::row_major(&b, k, n)?);
        for &precision in precisions {
            let implementation = match precision {
                Precision::Highest => "sparkle-vulkan".to_string(),
                p => format!("sparkle-vulkan-{}", p.name()),
            };
            let mut c = vec![f32::NAN; m * n];
            ctx.gemm_with_precision(precision, 1.0, av, bv, 0.0, MatMut::row_major(&mut c, m, n)?, &Epilogue::NONE)?;
            let (err, at) = sampled_gemm_error(&a, &b, &c, shape, ACCURACY_SAMPLES);
            let tol = precision.tolerance(Backend::Vulkan, k);
            if err > tol {
                let (i, j) = at;
                return Err(
                    format!("{implementation} is wrong at ({i}, {j}) of {m}x{n}x{k}: error {err:e} > {tol:e}").into()
                );
            }
            let one = ctx.time_gemm_precision_resident(precision, m, n, k, 1, 0.2)?;
            let t = ctx.time_gemm_precision_resident(precision, m, n, k, reps_for(one, budget), 0.0)?;
            let gflops = 2.0 * m as f64 * n as f64 * k as f64 / t / 1e9;
            let path = ctx.precision_path(precision);
            errors.push(Accuracy {
                key: shape_key(shape),
                implementation: implementation.clone(),
                max_error: err,
                path,
            });
            records.push(Record { op: "gemm", key: shape_key(shape), threads: 0, implementation, gflops });
        }
    }
    Ok((name, records, errors))
}

/// `sparkle bench gemm --device vulkan --dtypes f16|bf16`: half inputs (the f32 operands
/// rounded), f32 sums and output, on cooperative matrices where the device has them for the type
/// and shape (the device line names each shape's kernel, `Context::gemm_half_path`).
/// Spot-checked through the full upload/dispatch/download path at 64 sampled elements against
/// the f64 oracle on the rounded inputs first; then timed resident after 0.2 s of warm-up (a GPU
/// idling at a low clock needs about 0.1 s of sustained work to reach its full one).
#[cfg(feature = "vulkan")]
pub fn half_gemm_vulkan<H: sparkle_core::f16::Half>(
    shapes: &[[usize; 3]],
    budget: f64,
) -> Result<(String, Vec<Record>), BenchError> {
    let ctx = crate::vk::Context::best()?;
    // Each kernel with the shapes it runs, in the order first met.
    let mut paths: Vec<(&str, Vec<String>)> = Vec::new();
    for &[m, n, k] in shapes {
        let path = ctx.gemm_half_path::<H>(m, n, k)?;
        match paths.iter_mut().find(|(p, _)| *p == path) {
            Some((_, keys)) => keys.push(shape_key([m, n, k])),
            None => paths.push((path, vec![shape_key([m, n, k])])),
        }
    }
    let on: Vec<String> = paths.iter().map(|(p, keys)| format!("{} on {p}", keys.join(", "))).collect();
    let name = format!("{} ({}: {})", ctx.info().name, H::NAME, on.join("; "));
    let mut records = Vec::new();
    for &shape in shapes {
        let [m, n, k] = shape;
        let (fa, fb) = gemm_operands(shape);
        let a: Vec<H> = fa.iter().map(|&v| H::from_f32(v)).collect();
        let b: Vec<H> = fb.iter().map(|&v| H::from_f32(v)).collect();
        let (av, bv) = (MatRef::row_major(&a, m, k)?, MatRef::row_major(&b, k, n)?);
        let mut c = vec![f32::NAN; m * n];
        ctx.gemm_half(&av, &bv, MatMut::row_major(&mut c, m, n)?, &Epilogue::NONE)?;
        let implementation = format!("sparkle-vulkan-{}", H::NAME);
        check_half_gemm(&implementation, Backend::Vulkan, &a, &b, &c, shape)?;
        let one = ctx.time_gemm_half_resident::<H>(m, n, k, 1, 0.2)?;
        let t = ctx.time_gemm_half_resident::<H>(m, n, k, reps_for(one, budget), 0.0)?;
        let gflops = 2.0 * m as f64 * n as f64 * k as f64 / t / 1e9;
        records.push(Record { op: "gemm", key: shape_key(shape), threads: 0, implementation, gflops });
    }
    Ok((name, records))
}

/// `sparkle bench conv2d --device vulkan`: resident tensors, after a spot check.
#[cfg(feature = "vulkan")]
pub fn conv2d_vulkan(layers: &[Layer], budget: f64) -> Result<(String, Vec<Record>), BenchError> {
    let ctx = crate::vk::Context::best()?;
    let name = ctx.info().name.clone();
    let mut records = Vec::new();
    for layer in layers {
        let g = layer.params.validate()?;
        let (x, w) = conv2d_operands(&g);
        let mut y = vec![f32::NAN; g.output_len()];
        ctx.conv2d(&g, &x, &w, &Epilogue::activation(Activation::Relu), &mut y)?;
        check_conv2d("sparkle-vulkan", Backend::Vulkan, &g, &x, &w, &y)?;
        let one = ctx.time_conv2d_resident(&g, 1)?;
        let t = ctx.time_conv2d_resident(&g, reps_for(one, budget))?;
        records.push(Record {
            op: "conv2d",
            key: layer.name.clone(),
            threads: 0,
            implementation: "sparkle-vulkan".into(),
            gflops: g.flops() / t / 1e9,
        });
    }
    Ok((name, records))
}

/// `sparkle bench conv2d --device vulkan --dtypes f16|bf16`: half input and weights (the f32
/// operands rounded), f32 sums and output, + ReLU; an implicit GEMM on cooperative matrices where
/// the device has them for the type. Spot-checked through the full path first, then timed
/// resident after 0.2 s of warm-up.
#[cfg(feature = "vulkan")]
pub fn half_conv2d_vulkan<H: sparkle_core::f16::Half>(
    layers: &[Layer],
    budget: f64,
) -> Result<(String, Vec<Record>), BenchError> {
    let ctx = crate::vk::Context::best()?;
    let coop = match H::DTYPE {
        DType::F16 => ctx.has_cooperative_matrix_f16(),
        _ => ctx.has_cooperative_matrix_bf16(),
    };
    let name =
        format!("{} ({} on {})", ctx.info().name, H::NAME, if coop { "cooperative matrices" } else { "shader cores" });
    let implementation = format!("sparkle-vulkan-{}", H::NAME);
    let mut records = Vec::new();
    for layer in layers {
        let g = layer.params.validate()?;
        let (x, w) = conv2d_operands(&g);
        let (xh, wh): (Vec<H>, Vec<H>) =
            (x.iter().map(|&v| H::from_f32(v)).collect(), w.iter().map(|&v| H::from_f32(v)).collect());
        let (x, w): (Vec<f32>, Vec<f32>) =
            (xh.iter().map(|h| h.to_f64() as f32).collect(), wh.iter().map(|h| h.to_f64() as f32).collect());
        let mut y = vec![f32::NAN; g.output_len()];
        ctx.conv2d_half(&g, &xh, &wh, &Epilogue::activation(Activation::Relu), &mut y)?;
        check_conv2d_as(&implementation, Backend::Vulkan, H::DTYPE, &g, &x, &w, &y)?;
        let one = ctx.time_conv2d_half_resident::<H>(&g, 1, 0.2)?;
        let t = ctx.time_conv2d_half_resident::<H>(&g, reps_for(one, budget), 0.0)?;
        records.push(Record {
            op: "conv2d",
            key: layer.name.clone(),
            threads: 0,
            implementation: implementation.clone(),
            gflops: g.flops() / t / 1e9,
        });
    }
    Ok((name, records))
}

/// `sparkle bench split`: each device of one Sparkle handle alone (pinned), then the op split
/// across all of them by the handle ([`crate::Sparkle::gemm_split`]: rows in proportion to
/// the juggler's predicted speed, which has learned from the runs alone). Host tensors, copies
/// included (what a split costs).
///
/// Each result line goes to `report` as it is measured.
#[cfg(feature = "vulkan")]
pub fn split(
    shapes: &[[usize; 3]],
    with_cpu: bool,
    threads: usize,
    reps: usize,
    report: &mut dyn FnMut(String),
) -> Result<(), BenchError> {
    use crate::sparkle::DeviceSel;
    let mut devices = if with_cpu { vec![DeviceSel::Cpu] } else { Vec::new() };
    devices.extend(crate::vk::devices()?.iter().map(|d| DeviceSel::VulkanIndex(d.index)));
    let sparkle = crate::Sparkle::builder().devices(&devices).threads(threads).in_memory_model().build()?;
    let parts = sparkle.devices();
    if parts.len() < 2 {
        return Err(format!(
            "a split needs at least two devices the juggler places on (here: {parts:?}; a CPU-type Vulkan device beside the CPU is not one)"
        )
        .into());
    }
    for &shape in shapes {
        let [m, n, k] = shape;
        let (a, b) = gemm_operands(shape);
        let mut c = vec![f32::NAN; m * n];
        let flops = 2.0 * m as f64 * n as f64 * k as f64;
        let mut best = |f: &mut dyn FnMut(&mut [f32]) -> Result<(), BenchError>| -> Result<f64, BenchError> {
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
            report(format!("{m}x{n}x{k} on {device} alone: {:.2} ms ({:.1} GFLOPS)", t * 1e3, flops / t / 1e9));
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
        // Parts ran on GPUs and the CPU: the looser row of the table.
        check_gemm("split", Backend::Vulkan, &a, &b, &c, shape)?;
        let fastest = alone.iter().copied().fold(f64::INFINITY, f64::min);
        report(format!(
            "{m}x{n}x{k} split ({}): {:.2} ms ({:.1} GFLOPS), {:.2}x the fastest single device",
            split_desc.join(", "),
            t * 1e3,
            flops / t / 1e9,
            fastest / t
        ));
    }
    Ok(())
}

/// `sparkle bench split --resident`: the same op on the first Vulkan device alone and split
/// evenly over every Vulkan device, with each device's operands already resident (uploaded
/// once, outside the timing): rows of A and C for a GEMM, images of the input and output for a
/// conv2d batch. The parts are submitted to all devices before any is waited for. Results are
/// spot-checked against the oracle (GEMM) or the CPU path (conv2d). Seconds are the best of
/// `reps` after a warm-up.
///
/// Each result line goes to `report` as it is measured.
#[cfg(feature = "vulkan")]
pub fn split_resident(
    shapes: &[[usize; 3]],
    conv_batch: usize,
    reps: usize,
    report: &mut dyn FnMut(String),
) -> Result<(), BenchError> {
    use crate::multi::split_rows;
    use crate::vk::{Context, TensorBias, TensorMat};
    let gpus: Vec<Context> = crate::vk::devices()?.iter().map(|d| Context::new(d.index)).collect::<Result<_, _>>()?;
    if gpus.is_empty() {
        return Err("no Vulkan device".into());
    }
    let names: Vec<String> = gpus.iter().map(|g| format!("vulkan:{} {}", g.info().index, g.info().name)).collect();
    let counts = if gpus.len() > 1 { vec![1, gpus.len()] } else { vec![1] };
    report(format!("devices: {}", names.join("; ")));
    // Best of `reps` (after a warm-up) of submitting `parts` (one recording per device) and
    // waiting for all of them.
    let time = |record: &dyn Fn(usize) -> Result<crate::vk::Pending, BenchError>, parts: usize| {
        let run = || -> Result<f64, BenchError> {
            let t = Instant::now();
            let pending = (0..parts).map(record).collect::<Result<Vec<_>, _>>()?;
            for p in pending {
                p.wait()?;
            }
            Ok(t.elapsed().as_secs_f64())
        };
        run()?;
        (0..reps.max(1)).try_fold(f64::INFINITY, |best, _| Ok::<f64, BenchError>(best.min(run()?)))
    };
    for &[m, n, k] in shapes {
        let (a, b) = gemm_operands([m, n, k]);
        let flops = 2.0 * m as f64 * n as f64 * k as f64;
        let mut single = f64::NAN;
        for &count in &counts {
            let rows = split_rows(m, &vec![1.0; count], 128);
            let mut tensors = Vec::new();
            for (g, r) in gpus.iter().zip(&rows) {
                let at = g.upload(&a[r.start * k..r.end * k])?;
                tensors.push((at, g.upload(&b)?, g.zeros(r.len().max(1) * n)?));
            }
            let record = |i: usize| -> Result<crate::vk::Pending, BenchError> {
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
            check_gemm("resident split", Backend::Vulkan, &a, &b, &c, [m, n, k])?;
            if count == 1 {
                single = t;
            }
            report(format!(
                "gemm {m}x{n}x{k} on {count} device(s), resident: {:.3} ms ({:.1} GFLOPS), {:.2}x one device",
                t * 1e3,
                flops / t / 1e9,
                single / t
            ));
        }
    }
    if conv_batch == 0 {
        return Ok(());
    }
    let cpu = Cpu::new()?;
    for (name, p) in crate::demo::layers(crate::demo::Layers::ResNet50) {
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
            let record = |i: usize| -> Result<crate::vk::Pending, BenchError> {
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
                let tol = tolerance_for(Backend::Vulkan, DType::F32, g.gemm_dims().2);
                let err = y[..out_per].iter().zip(&want).map(|(a, b)| error(*a, f64::from(*b))).fold(0.0, f64::max);
                if err > tol {
                    return Err(format!("{name}: resident split is wrong on image {}: {err:e}", r.start).into());
                }
            }
            if count == 1 {
                single = t;
            }
            report(format!(
                "conv2d {name} batch {conv_batch} on {count} device(s), resident: {:.3} ms ({:.1} GFLOPS), {:.2}x one device",
                t * 1e3,
                g.flops() / t / 1e9,
                single / t
            ));
        }
    }
    Ok(())
}

/// The ops a juggler recording measures: GEMMs square (16 to `max`), skinny (M or N of 1 to 64
/// against K and the other side up to 4096) and tall (small K; M up to 16 `max` over 64 columns),
/// none with a side over `max` but the tall ones' M; then ResNet-50's 23 distinct conv layers
/// (1x1, 3x3, strided, the 7x7 stem) and MobileNet v1's 19 (depthwise 3x3 and pointwise), each at
/// every batch size of `batches`.
pub fn juggler_ops(max: usize, batches: &[usize]) -> Vec<crate::juggler::replay::Op> {
    use crate::juggler::replay::Op;
    let mut ops = Vec::new();
    let square = [16usize, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096];
    ops.extend(square.iter().filter(|&&n| n <= max).map(|&n| Op::Gemm([n, n, n])));
    let sides = [(256, 256), (512, 512), (1024, 1024), (2048, 2048), (4096, 4096), (4096, 1024), (1024, 4096)];
    for m in [1usize, 8, 32, 64] {
        ops.extend(sides.iter().filter(|s| s.0.max(s.1) <= max).map(|&(n, k)| Op::Gemm([m, n, k])));
    }
    for n in [1usize, 16, 64] {
        ops.extend([256usize, 1024, 4096].iter().filter(|&&m| m <= max).map(|&m| Op::Gemm([m, n, m])));
    }
    for k in [16usize, 64] {
        ops.extend([512usize, 2048].iter().filter(|&&m| m <= max).map(|&m| Op::Gemm([m, m, k])));
    }
    ops.extend(
        [4096usize, 16384, 65536].iter().filter(|&&m| m <= max.saturating_mul(16)).map(|&m| Op::Gemm([m, 64, 64])),
    );
    // [c, hw, k, r, stride]: pad r / 2, groups 1 (or c for MobileNet's depthwise, marked k = 0).
    let resnet50: [[usize; 5]; 23] = [
        [3, 224, 64, 7, 2],
        [64, 56, 64, 1, 1],
        [64, 56, 64, 3, 1],
        [64, 56, 256, 1, 1],
        [256, 56, 64, 1, 1],
        [256, 56, 128, 1, 1],
        [128, 56, 128, 3, 2],
        [128, 28, 512, 1, 1],
        [256, 56, 512, 1, 2],
        [512, 28, 128, 1, 1],
        [128, 28, 128, 3, 1],
        [512, 28, 256, 1, 1],
        [256, 28, 256, 3, 2],
        [256, 14, 1024, 1, 1],
        [512, 28, 1024, 1, 2],
        [1024, 14, 256, 1, 1],
        [256, 14, 256, 3, 1],
        [1024, 14, 512, 1, 1],
        [512, 14, 512, 3, 2],
        [512, 7, 2048, 1, 1],
        [1024, 14, 2048, 1, 2],
        [2048, 7, 512, 1, 1],
        [512, 7, 512, 3, 1],
    ];
    let mut mobilenet = vec![[3usize, 224, 32, 3, 2]];
    let blocks = [(32, 112, 64, 1), (64, 112, 128, 2), (128, 56, 128, 1), (128, 56, 256, 2), (256, 28, 256, 1)];
    let tail = [(256, 28, 512, 2), (512, 14, 512, 1), (512, 14, 1024, 2), (1024, 7, 1024, 1)];
    for (c, hw, k, stride) in blocks.into_iter().chain(tail) {
        mobilenet.push([c, hw, 0, 3, stride]);
        mobilenet.push([c, hw / stride, k, 1, 1]);
    }
    for &batch in batches {
        for &[c, hw, k, r, stride] in resnet50.iter().chain(&mobilenet) {
            let (k, groups) = if k == 0 { (c, c) } else { (k, 1) };
            ops.push(Op::Conv([batch, c, hw, hw, k, r, r, stride, r / 2, groups]));
        }
    }
    ops
}

/// A recording for the juggler's replay (`sparkle juggler record`): every op of
/// [`juggler_ops`]`(max, batches)` on the CPU and the preferred Vulkan device, each pinned
/// through one [`crate::Sparkle`] handle (`gemm_on` / `conv2d_on`: the path users call, host
/// tensors, copies included; conv2d with its ReLU fused), checked against the f64 oracle once,
/// then the mean and spread of up to five runs (at least three, within about two seconds) after
/// that first run. A device that fails is an error, not a recorded fallback. Each op goes to
/// `progress` once recorded.
#[cfg(feature = "vulkan")]
pub fn juggler_recording(
    max: usize,
    batches: &[usize],
    progress: &mut dyn FnMut(&crate::juggler::replay::Op),
) -> Result<crate::juggler::replay::Recording, BenchError> {
    use crate::juggler::replay::{Op, Recording, Sample};
    use crate::juggler::DeviceId;
    use crate::sparkle::DeviceSel;
    let best = crate::vk::Context::best()?.info().clone();
    let sparkle = crate::Sparkle::builder()
        .devices(&[DeviceSel::Cpu, DeviceSel::VulkanIndex(best.index)])
        .in_memory_model()
        .build()?;
    let threads = Cpu::new()?.threads;
    let relu = Epilogue::activation(Activation::Relu);
    let mut samples = Vec::new();
    for op in juggler_ops(max, batches) {
        // The operands, and one run on `id` (checked when `check`) timed through the handle.
        let mut operands = match op {
            Op::Gemm(shape) => {
                let (a, b) = gemm_operands(shape);
                (a, b, vec![0.0f32; shape[0] * shape[1]], None)
            }
            Op::Conv(_) => {
                let g = op.conv2d_params().ok_or("not a conv")?.validate()?;
                let (x, w) = conv2d_operands(&g);
                (x, w, vec![0.0f32; g.output_len()], Some(g))
            }
        };
        for (device, id) in [(0, DeviceId::Cpu), (1, DeviceId::Vulkan(best.index))] {
            let backend = if device == 0 { Backend::Cpu } else { Backend::Vulkan };
            let mut run = |check: bool| -> Result<f64, BenchError> {
                let (a, b, c, g) = &mut operands;
                let g = &*g;
                let t = Instant::now();
                let r = match (op, g) {
                    (Op::Gemm([m, n, k]), _) => {
                        let (av, bv) = (MatRef::row_major(a, m, k)?, MatRef::row_major(b, k, n)?);
                        sparkle.gemm_on(id, 1.0, av, bv, 0.0, MatMut::row_major(c, m, n)?, &Epilogue::NONE)?
                    }
                    (_, Some(g)) => sparkle.conv2d_on(id, g, a, b, &relu, c)?,
                    _ => return Err("not a conv".into()),
                };
                let seconds = t.elapsed().as_secs_f64();
                if let Some(e) = r.fallback {
                    return Err(format!("{id} failed on {op}: {e}").into());
                }
                if check {
                    match (op, g) {
                        (Op::Gemm(shape), _) => check_gemm(&format!("{id}"), backend, a, b, c, shape)?,
                        (_, Some(g)) => check_conv2d(&format!("{id}"), backend, g, a, b, c)?,
                        _ => {}
                    }
                }
                Ok(seconds)
            };
            run(true)?;
            let start = Instant::now();
            let mut times = Vec::new();
            while times.len() < 5 && (times.len() < 3 || start.elapsed().as_secs_f64() < 2.0) {
                times.push(run(false)?);
            }
            let n = times.len() as f64;
            let mean = times.iter().sum::<f64>() / n;
            let std = (times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            samples.push(Sample { device, op, mean, std });
        }
        progress(&op);
    }
    Ok(Recording {
        machine: format!("{} ({threads} threads) + {} ({})", crate::cpu::brand(), best.name, best.device_type),
        cpu_peak: crate::cpu::peak::peak_gflops(threads) * 1e9,
        gpu_is_discrete: best.device_type != "CPU",
        samples,
    })
}
