//! `sparkle conv2d` and `sparkle gemm`: the ops on .npy files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use sparkle_core::f16::f16;
use sparkle_core::quant::conv::QConv;
use sparkle_core::quant::{QElem, QGemm, QOperand};
use sparkle_core::{Activation, Conv2d, Conv2dParams, Epilogue, MatMut, MatRef, Padding, Precision, TensorLayout};
use sparkle_std::budget::{parse_size, MemoryBudget, ZeroBits};
use sparkle_std::npy::{self, AnyArray};
use sparkle_std::sparkle::{Builder, DeviceSel, Prediction};
use sparkle_std::{Run, Sparkle};

use crate::quant::{Quant, QuantArgs, YType};
use crate::Failure;

/// Where an op runs: `auto` (the juggler picks among the CPU and every Vulkan GPU), `cpu`,
/// `vulkan` (every Vulkan GPU; a CPU-type device such as lavapipe when it is the only one) or
/// `vulkan:N`.
fn parse_device(text: &str) -> Result<DeviceChoice, String> {
    match DeviceSel::parse(text) {
        Some(sel) => Ok(DeviceChoice(Some(sel))),
        None if text == "auto" => Ok(DeviceChoice(None)),
        None => Err(format!("`{text}` is not auto, cpu, vulkan or vulkan:N")),
    }
}

/// `--precision`: highest, high or medium.
fn parse_precision(text: &str) -> Result<Precision, String> {
    Precision::parse(text).ok_or_else(|| format!("`{text}` is not highest, high or medium"))
}

/// A parsed `--device`: `None` for auto.
#[derive(Clone, Debug)]
struct DeviceChoice(Option<DeviceSel>);

/// Where and within what an op runs: the options `conv2d` and `gemm` share.
#[derive(Args, Debug)]
pub struct Placement {
    /// Where to run: auto (the juggler decides), cpu, vulkan, vulkan:N.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceChoice,
    /// Print every device's predicted time before running.
    #[arg(long)]
    explain: bool,
    /// Most bytes this op may allocate (inputs, output, scratch): a number with an optional K, M,
    /// G or T suffix (powers of 1024). Default: SPARKLE_MEMORY_BUDGET, or half the physical memory.
    #[arg(long, value_name = "SIZE")]
    memory_budget: Option<String>,
}

impl Placement {
    /// The op's budget: `--memory-budget`, else `SPARKLE_MEMORY_BUDGET`, else half the memory.
    fn budget(&self) -> Result<MemoryBudget, Failure> {
        match &self.memory_budget {
            Some(text) => parse_size(text)
                .map(MemoryBudget::bytes)
                .ok_or_else(|| format!("--memory-budget {text:?} is not a size such as 512M or 8G").into()),
            None => Ok(MemoryBudget::from_env()?),
        }
    }

    /// The handle for `--device`, with what is left of the op's budget for the CPU path.
    fn sparkle(&self, budget: MemoryBudget) -> Result<Sparkle, Failure> {
        Ok(self.builder(budget).build()?)
    }

    /// [`Placement::sparkle`]'s builder.
    fn builder(&self, budget: MemoryBudget) -> Builder {
        let b = Sparkle::builder().memory_budget(budget);
        match &self.device.0 {
            Some(sel) => b.devices(std::slice::from_ref(sel)),
            None => b,
        }
    }
}

/// `--explain`: every device's prediction for the op, best first.
fn explain(predictions: Vec<Prediction>) {
    let mut p = predictions;
    p.sort_by(|a, b| (a.wait + a.run).total_cmp(&(b.wait + b.run)));
    for Prediction { device, run, wait } in p {
        let wait = if wait > 0.0 {
            format!(" after {:.3} ms until it is free (queue or set-up)", wait * 1e3)
        } else {
            String::new()
        };
        println!("  predicted on {device}: {:.3} ms{wait}", run * 1e3);
    }
}

/// `text` on one line whatever it holds: control characters (a newline in a file name, say)
/// written as escapes.
pub fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// One line on where an op ran and how long it took against the prediction.
fn report(what: &str, run: &Run, flops: f64, output: &std::path::Path) {
    report_in(what, run, flops, "GFLOPS", output);
}

/// [`report`] with the rate in `unit` (GOPS for integer ops).
fn report_in(what: &str, run: &Run, ops: f64, unit: &str, output: &std::path::Path) {
    let mut notes = String::new();
    if run.first_use {
        notes.push_str(", first use: includes set-up");
    }
    if run.explored {
        notes.push_str(", explored");
    }
    if let Some(e) = &run.fallback {
        notes.push_str(&format!(", {}; re-ran on the CPU", one_line(&e.to_string())));
    }
    let predicted = if run.predicted.is_finite() { format!("{:.3} ms", run.predicted * 1e3) } else { "-".into() };
    println!(
        "{what} on {} ({}): predicted {predicted}, measured {:.3} ms, {:.1} {unit}{notes} -> {}",
        run.device,
        run.kernel,
        run.seconds * 1e3,
        ops / run.seconds.max(1e-9) / 1e9,
        output.display()
    );
}

/// Activation names on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Act {
    /// Identity.
    None,
    /// max(x, 0).
    Relu,
    /// min(max(x, 0), 6).
    Relu6,
    /// x, or 0.01 x for negative x.
    LeakyRelu,
    /// 1 / (1 + exp(-x)).
    Sigmoid,
    /// tanh(x).
    Tanh,
    /// Exact GELU.
    Gelu,
}

impl From<Act> for Activation {
    fn from(a: Act) -> Self {
        match a {
            Act::None => Activation::None,
            Act::Relu => Activation::Relu,
            Act::Relu6 => Activation::Relu6,
            Act::LeakyRelu => Activation::LeakyRelu { slope: 0.01 },
            Act::Sigmoid => Activation::Sigmoid,
            Act::Tanh => Activation::Tanh,
            Act::Gelu => Activation::Gelu,
        }
    }
}

/// Activation layout names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    /// [n, c, h, w].
    Nchw,
    /// [n, h, w, c].
    Nhwc,
}

#[derive(Args, Debug)]
pub struct Conv2dArgs {
    /// Input, shape (n, c, h, w) for nchw or (n, h, w, c) for nhwc: float32; float16 (f32 sums, a
    /// float16 output); or uint8/int8 for the quantized conv (ONNX QLinearConv with --y-scale,
    /// ConvInteger without).
    #[arg(long)]
    input: PathBuf,
    /// Weights, shape (k, c/groups, r, s): of the input's type (uint8/int8 with a uint8/int8
    /// input).
    #[arg(long)]
    weight: PathBuf,
    /// Bias, shape (k): float32, or int32 (added to the accumulator) for int8 tensors.
    #[arg(long)]
    bias: Option<PathBuf>,
    /// Stride: S or SH,SW.
    #[arg(long, default_value = "1")]
    stride: String,
    /// Zero padding: P, PH,PW or T,L,B,R.
    #[arg(long, default_value = "0")]
    pad: String,
    /// Dilation: D or DH,DW.
    #[arg(long, default_value = "1")]
    dilation: String,
    /// Groups.
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Activation applied after the bias.
    #[arg(long, value_enum, default_value_t = Act::None)]
    activation: Act,
    /// Layout of input and output.
    #[arg(long, value_enum, default_value_t = Layout::Nchw)]
    layout: Layout,
    #[command(flatten)]
    quant: QuantArgs,
    #[command(flatten)]
    placement: Placement,
    /// Output .npy, written atomically, in the input's layout.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args, Debug)]
pub struct GemmArgs {
    /// A, [m, k]: float32; float16 (f32 sums, a float16 C, on the GPU's tensor cores where it has
    /// them); or uint8/int8 for the quantized GEMM (ONNX QLinearMatMul with --y-scale,
    /// MatMulInteger without).
    #[arg(long)]
    a: PathBuf,
    /// B, [k, n]: of A's type (uint8/int8 with a uint8/int8 A).
    #[arg(long)]
    b: PathBuf,
    /// Bias per column, shape (n): float32, or int32 (added to the accumulator) for int8 operands.
    #[arg(long)]
    bias: Option<PathBuf>,
    /// C, [m, n], float32 (needed when beta != 0).
    #[arg(long)]
    c: Option<PathBuf>,
    /// Scale of A @ B.
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    alpha: f32,
    /// Scale of C.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    beta: f32,
    /// The precision a float32 GEMM may be computed in, as PyTorch's
    /// `set_float32_matmul_precision` names it: highest (f32), high (three f16 products per f32
    /// product on a GPU's tensor cores, as accurate as f32), medium (one f16 product: inputs
    /// rounded to 11 bits). Devices without f16 tensor cores, the CPU included, compute f32.
    #[arg(long, default_value = "highest", value_parser = parse_precision)]
    precision: Precision,
    #[command(flatten)]
    quant: QuantArgs,
    #[command(flatten)]
    placement: Placement,
    /// Output .npy, [m, n], written atomically.
    #[arg(long)]
    output: PathBuf,
}

/// On SIGINT or SIGTERM, removes the temporary output being written (if any) and exits 130: a
/// killed `sparkle conv2d` leaves neither a partial output nor a stray temporary file.
pub fn remove_temporaries_on_signal() -> Result<(), Failure> {
    ctrlc::set_handler(|| {
        sparkle_std::files::remove_pending();
        std::process::exit(130);
    })
    .map_err(|e| format!("cannot install the signal handler: {e}").into())
}

/// The CPU's marketing name (Linux), or the architecture.
pub fn cpu_brand() -> String {
    sparkle_std::cpu::brand()
}

fn numbers(what: &str, text: &str, allowed: &[usize]) -> Result<Vec<usize>, Failure> {
    let v: Vec<usize> = text
        .split(',')
        .map(|x| x.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--{what} `{text}` is not a comma-separated list of non-negative integers"))?;
    if !allowed.contains(&v.len()) {
        return Err(format!(
            "--{what} takes {} numbers, got {}",
            allowed.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" or "),
            v.len()
        )
        .into());
    }
    Ok(v)
}

fn pair(what: &str, text: &str) -> Result<[usize; 2], Failure> {
    let v = numbers(what, text, &[1, 2])?;
    Ok(if v.len() == 1 { [v[0], v[0]] } else { [v[0], v[1]] })
}

/// Reads an input within what is left of the budget, and counts it as used.
fn read_input(path: &std::path::Path, budget: MemoryBudget, used: &mut u64) -> Result<npy::Array, Failure> {
    let a = npy::read_within(path, budget.after(*used))?;
    *used += 4 * a.data.len() as u64;
    Ok(a)
}

fn dims<const N: usize>(what: &str, a: &npy::Array) -> Result<[usize; N], Failure> {
    dims_of(what, &a.shape)
}

pub fn conv2d(args: &Conv2dArgs) -> Result<ExitCode, Failure> {
    let budget = args.placement.budget()?;
    let mut used = 0;
    match read_any(&args.input, budget, &mut used)? {
        AnyArray::F32(x) => conv2d_f32(args, x, budget, used),
        AnyArray::U8(x) => conv2d_int8(args, x, budget, used),
        AnyArray::I8(x) => conv2d_int8(args, x, budget, used),
        AnyArray::F16(x) => conv2d_f16(args, x, budget, used),
        AnyArray::I32(_) => {
            Err(format!("{}: the input is int32; conv2d takes float32, float16, uint8 or int8", args.input.display())
                .into())
        }
    }
}

/// The validated geometry of `args` for an input and weights of these shapes, and the output's
/// shape in the input's layout.
fn conv_geometry(args: &Conv2dArgs, x_shape: &[usize], w_shape: &[usize]) -> Result<(Conv2d, Vec<usize>), Failure> {
    let stride = pair("stride", &args.stride)?;
    let dilation = pair("dilation", &args.dilation)?;
    let pad = match numbers("pad", &args.pad, &[1, 2, 4])?[..] {
        [p] => Padding::uniform(p),
        [ph, pw] => Padding::symmetric(ph, pw),
        [t, l, b, r] => Padding::new(t, l, b, r),
        _ => unreachable!("numbers() checked the count"),
    };
    let layout = match args.layout {
        Layout::Nchw => TensorLayout::Nchw,
        Layout::Nhwc => TensorLayout::Nhwc,
    };
    let [n, c, h, wd] = match (layout, dims_of::<4>("input", x_shape)?) {
        (TensorLayout::Nchw, d) => d,
        (TensorLayout::Nhwc, [n, h, w, c]) => [n, c, h, w],
    };
    let [k, cg, r, s] = dims_of::<4>("weight", w_shape)?;
    if args.groups == 0 {
        return Err("--groups must be at least 1".into());
    }
    if cg * args.groups != c {
        return Err(format!(
            "weight has {cg} input channels per group, input has {c} channels in {} group(s)",
            args.groups
        )
        .into());
    }
    let g = Conv2dParams::new(n, c, h, wd, k, r, s)
        .stride(stride[0], stride[1])
        .dilation(dilation[0], dilation[1])
        .pad(pad)
        .groups(args.groups)
        .layout(layout)
        .validate()?;
    let shape = match layout {
        TensorLayout::Nchw => vec![n, k, g.ho(), g.wo()],
        TensorLayout::Nhwc => vec![n, g.ho(), g.wo(), k],
    };
    Ok((g, shape))
}

fn conv2d_f32(args: &Conv2dArgs, x: npy::Array, budget: MemoryBudget, mut used: u64) -> Result<ExitCode, Failure> {
    if Quant::any_given(&args.quant) {
        return Err(format!(
            "{}: the input is float32; the quantization flags need uint8 or int8 tensors",
            args.input.display()
        )
        .into());
    }
    let w = read_input(&args.weight, budget, &mut used)?;
    let bias = args.bias.as_deref().map(|p| read_input(p, budget, &mut used)).transpose()?;
    let (g, shape) = conv_geometry(args, &x.shape, &w.shape)?;
    let epi = conv_epilogue(args, &g, bias.as_ref())?;
    let mut y = budget.after(used).zeros(&format!("the output ({} float32)", g.output_len()), g.output_len())?;
    used += 4 * y.len() as u64;
    let sparkle = args.placement.sparkle(budget.after(used))?;
    if args.placement.explain {
        explain(sparkle.predict_conv2d(&g));
    }
    let run = sparkle.conv2d(&g, &x.data, &w.data, &epi, &mut y)?;
    npy::write(&args.output, &shape, &y)?;
    report(&format!("conv2d {shape:?}"), &run, g.flops(), &args.output);
    Ok(ExitCode::SUCCESS)
}

/// The float32 bias (checked against `g`'s output channels) and `args`' activation.
fn conv_epilogue<'a>(args: &Conv2dArgs, g: &Conv2d, bias: Option<&'a npy::Array>) -> Result<Epilogue<'a>, Failure> {
    let k = g.params().k;
    let mut epi = Epilogue::activation(args.activation.into());
    if let Some(b) = bias {
        if b.shape != [k] {
            return Err(format!("bias shape {:?} does not match the {k} output channels", b.shape).into());
        }
        epi = epi.with_bias(&b.data);
    }
    Ok(epi)
}

/// The f16 conv2d: float16 input and weights, f32 sums (tensor cores where the device has them),
/// an optional float32 bias and the activation, the result rounded to a float16 output.
fn conv2d_f16(args: &Conv2dArgs, x: npy::Array<f16>, budget: MemoryBudget, mut used: u64) -> Result<ExitCode, Failure> {
    if Quant::any_given(&args.quant) {
        return Err(format!(
            "{}: the input is float16; the quantization flags need uint8 or int8 tensors",
            args.input.display()
        )
        .into());
    }
    let w = match read_any(&args.weight, budget, &mut used)? {
        AnyArray::F16(w) => w,
        other => {
            return Err(format!(
                "{}: the weights are {}; with a float16 input they must be float16",
                args.weight.display(),
                other.dtype()
            )
            .into())
        }
    };
    let bias = args.bias.as_deref().map(|p| read_input(p, budget, &mut used)).transpose()?;
    let (g, shape) = conv_geometry(args, &x.shape, &w.shape)?;
    let epi = conv_epilogue(args, &g, bias.as_ref())?;
    let mut y: Vec<f32> =
        budget.after(used).zeros(&format!("the output ({} float32)", g.output_len()), g.output_len())?;
    used += 4 * y.len() as u64;
    budget.after(used).check("the float16 output", g.output_len(), 2)?;
    used += 2 * y.len() as u64;
    let sparkle = args.placement.sparkle(budget.after(used))?;
    if args.placement.explain {
        explain(sparkle.predict_conv2d_half::<f16>(&g));
    }
    let run = sparkle.conv2d_half(&g, &x.data, &w.data, &epi, &mut y)?;
    let half: Vec<f16> = y.iter().map(|&v| f16::from_f32(v)).collect();
    npy::write(&args.output, &shape, &half)?;
    report(&format!("conv2d f16 {shape:?}"), &run, g.flops(), &args.output);
    Ok(ExitCode::SUCCESS)
}

/// The int32 bias of an int8 `op` with `channels` outputs, if one was given.
fn int32_bias(
    path: Option<&std::path::Path>,
    op: &str,
    channels: usize,
    budget: MemoryBudget,
    used: &mut u64,
) -> Result<Option<Vec<i32>>, Failure> {
    match path.map(|p| read_any(p, budget, used)).transpose()? {
        None => Ok(None),
        Some(AnyArray::I32(bias)) if bias.shape == [channels] => Ok(Some(bias.data)),
        Some(other) => Err(format!(
            "the bias of an int8 {op} is int32 of shape [{channels}], found {} {:?}",
            other.dtype(),
            other.shape()
        )
        .into()),
    }
}

/// The quantized conv2d: uint8/int8 input and weights, the CPU's int8 kernels.
fn conv2d_int8<X: QOperand + npy::Element>(
    args: &Conv2dArgs,
    x: npy::Array<X>,
    budget: MemoryBudget,
    mut used: u64,
) -> Result<ExitCode, Failure> {
    let w = read_any(&args.weight, budget, &mut used)?;
    let (g, shape) = conv_geometry(args, &x.shape, w.shape())?;
    let k = g.params().k;
    let bias = int32_bias(args.bias.as_deref(), "conv2d", k, budget, &mut used)?;
    let q = Quant::parse(&args.quant, k, X::MIN < 0, budget.after(used))?;
    let relu = match args.activation {
        Act::None => false,
        Act::Relu if q.y != YType::I32 => true,
        _ => return Err(
            "int8 conv2d takes --activation none or relu (relu clamps at the output zero point, and needs --y-scale)"
                .into(),
        ),
    };
    match w {
        AnyArray::U8(w) => {
            conv2d_int8_typed(args, &g, &shape, &x.data, &w.data, bias.as_deref(), &q, relu, budget.after(used))
        }
        AnyArray::I8(w) => {
            conv2d_int8_typed(args, &g, &shape, &x.data, &w.data, bias.as_deref(), &q, relu, budget.after(used))
        }
        other => Err(format!(
            "{}: the weights are {}; with a {} input they must be uint8 or int8",
            args.weight.display(),
            other.dtype(),
            <X as npy::Element>::NAME
        )
        .into()),
    }
}

#[allow(clippy::too_many_arguments)]
fn conv2d_int8_typed<X: QOperand + npy::Element, W: QOperand + npy::Element>(
    args: &Conv2dArgs,
    g: &Conv2d,
    shape: &[usize],
    x: &[X],
    w: &[W],
    bias: Option<&[i32]>,
    q: &Quant,
    relu: bool,
    budget: MemoryBudget,
) -> Result<ExitCode, Failure> {
    let op = QConv { input: x, x_zero: q.x_zero, weight: w, w_zero: q.w_zero(), bias };
    let mut stage = q.stage();
    if relu {
        stage.min = stage.zero_point;
    }
    match q.y {
        YType::I32 => conv2d_int8_run::<X, W, i32>(args, g, shape, &op, &stage, budget),
        YType::U8 => conv2d_int8_run::<X, W, u8>(args, g, shape, &op, &stage, budget),
        YType::I8 => conv2d_int8_run::<X, W, i8>(args, g, shape, &op, &stage, budget),
    }
}

fn conv2d_int8_run<X: QOperand + npy::Element, W: QOperand + npy::Element, Y: QElem + ZeroBits + npy::Element>(
    args: &Conv2dArgs,
    g: &Conv2d,
    shape: &[usize],
    op: &QConv<'_, X, W>,
    stage: &sparkle_core::quant::OutputStage<'_>,
    budget: MemoryBudget,
) -> Result<ExitCode, Failure> {
    let mut y: Vec<Y> =
        budget.zeros(&format!("the output ({} {})", g.output_len(), <Y as npy::Element>::NAME), g.output_len())?;
    let used = (y.len() * std::mem::size_of::<Y>()) as u64;
    let sparkle = args.placement.sparkle(budget.after(used))?;
    if args.placement.explain {
        explain(sparkle.predict_qconv2d::<Y>(g));
    }
    let run = sparkle.qconv2d(g, op, stage, &mut y)?;
    npy::write(&args.output, shape, &y)?;
    let what = format!(
        "conv2d {shape:?} {} x {} -> {}",
        <X as npy::Element>::NAME,
        <W as npy::Element>::NAME,
        <Y as npy::Element>::NAME
    );
    report_in(&what, &run, g.flops(), "GOPS", &args.output);
    Ok(ExitCode::SUCCESS)
}

pub fn gemm(args: &GemmArgs) -> Result<ExitCode, Failure> {
    for (flag, v) in [("alpha", args.alpha), ("beta", args.beta)] {
        if !v.is_finite() {
            return Err(format!("--{flag} {v} is not a finite number").into());
        }
    }
    let budget = args.placement.budget()?;
    let mut used = 0;
    let a = read_any(&args.a, budget, &mut used)?;
    if args.precision != Precision::Highest && !matches!(a, AnyArray::F32(_)) {
        return Err(
            format!("--precision {}: only float32 GEMMs have a precision to choose", args.precision.name()).into()
        );
    }
    match a {
        AnyArray::F32(a) => gemm_f32(args, a, budget, used),
        AnyArray::U8(a) => gemm_int8(args, a, budget, used),
        AnyArray::I8(a) => gemm_int8(args, a, budget, used),
        AnyArray::F16(a) => gemm_f16(args, a, budget, used),
        AnyArray::I32(_) => {
            Err(format!("{}: A is int32; gemm takes float32, float16, uint8 or int8", args.a.display()).into())
        }
    }
}

/// The f16 GEMM: f16 A and B, f32 sums (tensor cores where the device has them), the f32 result
/// rounded to the f16 output (as `torch.matmul` on f16 tensors returns), an optional float32
/// bias added before the rounding.
fn gemm_f16(args: &GemmArgs, a: npy::Array<f16>, budget: MemoryBudget, mut used: u64) -> Result<ExitCode, Failure> {
    if Quant::any_given(&args.quant) {
        return Err(
            format!("{}: A is float16; the quantization flags need uint8 or int8 operands", args.a.display()).into()
        );
    }
    if args.alpha != 1.0 || args.beta != 0.0 || args.c.is_some() {
        return Err("--alpha, --beta and --c are for float32 operands (float16 computes C = A B + bias)".into());
    }
    let b = match read_any(&args.b, budget, &mut used)? {
        AnyArray::F16(b) => b,
        other => {
            return Err(
                format!("{}: B is {}; with a float16 A it must be float16", args.b.display(), other.dtype()).into()
            )
        }
    };
    let [m, k] = dims_of("A", &a.shape)?;
    let [kb, n] = dims_of("B", &b.shape)?;
    if kb != k {
        return Err(format!("A is {m}x{k} but B is {kb}x{n}: inner dimensions differ").into());
    }
    let bias = args.bias.as_deref().map(|p| read_input(p, budget, &mut used)).transpose()?;
    if let Some(b) = &bias {
        if b.shape != [n] {
            return Err(format!("bias shape {:?} does not match the {n} columns", b.shape).into());
        }
    }
    let count = m.checked_mul(n).ok_or_else(|| format!("the output of {m}x{n} has more elements than memory"))?;
    let mut out: Vec<f32> = budget.after(used).zeros(&format!("the {m}x{n} output"), count)?;
    used += 4 * count as u64;
    // The f16 copy written at the end.
    budget.after(used).check(&format!("the {m}x{n} float16 output"), count, 2)?;
    used += 2 * count as u64;
    let sparkle = args.placement.sparkle(budget.after(used))?;
    if args.placement.explain {
        explain(sparkle.predict_gemm_half::<f16>(m, n, k));
    }
    let epi = match &bias {
        Some(b) => Epilogue { bias: sparkle_core::Bias::Col(&b.data), ..Epilogue::NONE },
        None => Epilogue::NONE,
    };
    let run = sparkle.gemm_half(
        MatRef::row_major(&a.data, m, k)?,
        MatRef::row_major(&b.data, k, n)?,
        MatMut::row_major(&mut out, m, n)?,
        &epi,
    )?;
    let half: Vec<f16> = out.iter().map(|&v| f16::from_f32(v)).collect();
    npy::write(&args.output, &[m, n], &half)?;
    report(&format!("gemm f16 {m}x{n}x{k}"), &run, 2.0 * m as f64 * n as f64 * k as f64, &args.output);
    Ok(ExitCode::SUCCESS)
}

/// Reads an input of any supported type within what is left of the budget, and counts it.
fn read_any(path: &std::path::Path, budget: MemoryBudget, used: &mut u64) -> Result<AnyArray, Failure> {
    let a = npy::read_any_within(path, budget.after(*used))?;
    *used += a.data_bytes();
    Ok(a)
}

fn gemm_f32(args: &GemmArgs, a: npy::Array, budget: MemoryBudget, mut used: u64) -> Result<ExitCode, Failure> {
    if Quant::any_given(&args.quant) {
        return Err(
            format!("{}: A is float32; the quantization flags need uint8 or int8 operands", args.a.display()).into()
        );
    }
    let b = read_input(&args.b, budget, &mut used)?;
    let [m, k] = dims::<2>("A", &a)?;
    let [kb, n] = dims::<2>("B", &b)?;
    if kb != k {
        return Err(format!("A is {m}x{k} but B is {kb}x{n}: inner dimensions differ").into());
    }
    let bias = args.bias.as_deref().map(|p| read_input(p, budget, &mut used)).transpose()?;
    if let Some(b) = &bias {
        if b.shape != [n] {
            return Err(format!("bias shape {:?} does not match the {n} columns", b.shape).into());
        }
    }
    let count = m.checked_mul(n).ok_or_else(|| format!("the output of {m}x{n} has more elements than memory"))?;
    let mut out = match (&args.c, args.beta != 0.0) {
        (Some(path), _) => {
            let c = read_input(path, budget, &mut used)?;
            if c.shape != [m, n] {
                return Err(format!("C has shape {:?}, expected [{m}, {n}]", c.shape).into());
            }
            c.data
        }
        (None, true) => return Err("--beta is not 0 but no --c was given".into()),
        (None, false) => {
            let out = budget.after(used).zeros(&format!("the {m}x{n} output"), count)?;
            used += 4 * count as u64;
            out
        }
    };
    let sparkle = args.placement.builder(budget.after(used)).precision(args.precision).build()?;
    if args.placement.explain {
        explain(sparkle.predict_gemm(m, n, k));
    }
    let epi = match &bias {
        Some(b) => Epilogue { bias: sparkle_core::Bias::Col(&b.data), ..Epilogue::NONE },
        None => Epilogue::NONE,
    };
    let run = sparkle.gemm(
        args.alpha,
        MatRef::row_major(&a.data, m, k)?,
        MatRef::row_major(&b.data, k, n)?,
        args.beta,
        MatMut::row_major(&mut out, m, n)?,
        &epi,
    )?;
    npy::write(&args.output, &[m, n], &out)?;
    report(&format!("gemm {m}x{n}x{k}"), &run, 2.0 * m as f64 * n as f64 * k as f64, &args.output);
    Ok(ExitCode::SUCCESS)
}

/// The quantized GEMM: int8/uint8 A and B, placed by the handle (the CPU's int8 kernels or a
/// Vulkan device's).
fn gemm_int8<A: QOperand + npy::Element>(
    args: &GemmArgs,
    a: npy::Array<A>,
    budget: MemoryBudget,
    mut used: u64,
) -> Result<ExitCode, Failure> {
    if args.alpha != 1.0 || args.beta != 0.0 || args.c.is_some() {
        return Err(
            "--alpha, --beta and --c are for float32 operands; int8 scaling is --x-scale/--w-scale/--y-scale".into()
        );
    }
    let b = read_any(&args.b, budget, &mut used)?;
    let [m, k] = dims_of("A", &a.shape)?;
    let [kb, n] = dims_of("B", b.shape())?;
    if kb != k {
        return Err(format!("A is {m}x{k} but B is {kb}x{n}: inner dimensions differ").into());
    }
    let bias = int32_bias(args.bias.as_deref(), "GEMM", n, budget, &mut used)?;
    let q = Quant::parse(&args.quant, n, A::MIN < 0, budget.after(used))?;
    let dims = QDims { m, n, k, used, budget };
    match b {
        AnyArray::U8(b) => gemm_int8_typed(args, &a, &b, bias.as_deref(), &q, dims),
        AnyArray::I8(b) => gemm_int8_typed(args, &a, &b, bias.as_deref(), &q, dims),
        other => Err(format!(
            "{}: B is {}; with a {} A it must be uint8 or int8",
            args.b.display(),
            other.dtype(),
            <A as npy::Element>::NAME
        )
        .into()),
    }
}

/// Sizes and what is left of the budget, passed down the int8 dispatch.
#[derive(Clone, Copy)]
struct QDims {
    m: usize,
    n: usize,
    k: usize,
    used: u64,
    budget: MemoryBudget,
}

fn gemm_int8_typed<A: QOperand + npy::Element, B: QOperand + npy::Element>(
    args: &GemmArgs,
    a: &npy::Array<A>,
    b: &npy::Array<B>,
    bias: Option<&[i32]>,
    q: &Quant,
    d: QDims,
) -> Result<ExitCode, Failure> {
    let op = QGemm {
        a: MatRef::row_major(&a.data, d.m, d.k)?,
        a_zero: q.x_zero,
        b: MatRef::row_major(&b.data, d.k, d.n)?,
        b_zero: q.w_zero(),
        bias,
    };
    match q.y {
        YType::I32 => gemm_int8_run::<A, B, i32>(args, &op, q, d),
        YType::U8 => gemm_int8_run::<A, B, u8>(args, &op, q, d),
        YType::I8 => gemm_int8_run::<A, B, i8>(args, &op, q, d),
    }
}

fn gemm_int8_run<A: QOperand + npy::Element, B: QOperand + npy::Element, Y: QElem + ZeroBits + npy::Element>(
    args: &GemmArgs,
    op: &QGemm<'_, A, B>,
    q: &Quant,
    d: QDims,
) -> Result<ExitCode, Failure> {
    let QDims { m, n, k, used, budget } = d;
    let count = m.checked_mul(n).ok_or_else(|| format!("the output of {m}x{n} has more elements than memory"))?;
    let mut out: Vec<Y> = budget.after(used).zeros(&format!("the {m}x{n} output"), count)?;
    let used = used + (count * std::mem::size_of::<Y>()) as u64;
    let sparkle = args.placement.sparkle(budget.after(used))?;
    if args.placement.explain {
        explain(sparkle.predict_qgemm::<Y>(m, n, k));
    }
    let run = sparkle.qgemm(op, &q.stage(), MatMut::row_major(&mut out, m, n)?)?;
    npy::write(&args.output, &[m, n], &out)?;
    let what = format!(
        "gemm {m}x{n}x{k} {} x {} -> {}",
        <A as npy::Element>::NAME,
        <B as npy::Element>::NAME,
        <Y as npy::Element>::NAME
    );
    report_in(&what, &run, 2.0 * m as f64 * n as f64 * k as f64, "GOPS", &args.output);
    Ok(ExitCode::SUCCESS)
}

fn dims_of<const N: usize>(what: &str, shape: &[usize]) -> Result<[usize; N], Failure> {
    shape.try_into().map_err(|_| format!("{what} must be {N}-d, its shape is {shape:?}").into())
}
