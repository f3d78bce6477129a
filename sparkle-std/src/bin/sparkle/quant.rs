//! The int8 side of `sparkle gemm` and `sparkle conv2d`: `uint8`/`int8` `.npy` inputs with the
//! quantization parameters of ONNX's QLinearMatMul/QLinearConv (or, without `--y-scale`,
//! MatMulInteger/ConvInteger's int32 accumulator). For gemm, x is A, w is B and y the output.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use sparkle_core::quant::{quantize_multiplier, OutputStage, PerChannel};
use sparkle_std::budget::MemoryBudget;
use sparkle_std::npy::{self, AnyArray};

use crate::Failure;

/// How the accumulator is requantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RequantMode {
    /// ONNX QLinear* as ONNX Runtime computes it: f32 multiplier, round half to even.
    Onnx,
    /// TFLite/CMSIS-NN: each scale product as a Q31 multiplier and shift (QuantizeMultiplier),
    /// rounding doubling high multiply, rounding shift.
    Fixed,
}

/// Output element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum QType {
    /// uint8.
    Uint8,
    /// int8.
    Int8,
}

/// The quantization flags, for int8 inputs only.
#[derive(Args, Debug)]
pub struct QuantArgs {
    /// Scale of x (A for gemm): a number.
    #[arg(long, value_name = "NUMBER", allow_hyphen_values = true)]
    x_scale: Option<f32>,
    /// Zero point of x: an integer in x's type (default 0).
    #[arg(long, value_name = "INT", allow_hyphen_values = true)]
    x_zero_point: Option<i32>,
    /// Scale of w (B for gemm): a number, or a float32 .npy with one per output channel.
    #[arg(long, value_name = "NUMBER|NPY", allow_hyphen_values = true)]
    w_scale: Option<String>,
    /// Zero point of w: an integer, or an int .npy with one per output channel (default 0).
    #[arg(long, value_name = "INT|NPY", allow_hyphen_values = true)]
    w_zero_point: Option<String>,
    /// Scale of y: with it the output is requantized to int8/uint8; without it the output is
    /// the int32 accumulator (ONNX MatMulInteger/ConvInteger).
    #[arg(long, value_name = "NUMBER", allow_hyphen_values = true)]
    y_scale: Option<f32>,
    /// Zero point of y: an integer in y's type (default 0).
    #[arg(long, value_name = "INT", allow_hyphen_values = true)]
    y_zero_point: Option<i32>,
    /// Type of a requantized output (default: x's type).
    #[arg(long, value_enum)]
    y_dtype: Option<QType>,
    /// How the accumulator is requantized.
    #[arg(long, value_enum, default_value_t = RequantMode::Onnx)]
    requant: RequantMode,
}

/// The parsed parameters, owning what the [`OutputStage`] and the zero points borrow.
pub struct Quant {
    /// Zero point of x.
    pub x_zero: i32,
    /// Zero points of w: one, or one per channel.
    pub w_zero: Vec<i32>,
    stage: Stage,
    /// Type of the output.
    pub y: YType,
}

/// What the output is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YType {
    /// int32 accumulator.
    I32,
    /// uint8.
    U8,
    /// int8.
    I8,
}

enum Stage {
    Accumulator,
    Onnx { x_scale: f32, w_scale: Vec<f32>, y_scale: f32, y_zero: i32 },
    Fixed { multiplier: Vec<i32>, shift: Vec<i32>, y_zero: i32 },
}

fn per_channel<T: Copy>(v: &[T]) -> PerChannel<'_, T> {
    match v {
        [one] => PerChannel::Tensor(*one),
        many => PerChannel::Channel(many),
    }
}

impl Quant {
    /// Zero points of w for the core.
    pub fn w_zero(&self) -> PerChannel<'_, i32> {
        per_channel(&self.w_zero)
    }

    /// The output stage for the core.
    pub fn stage(&self) -> OutputStage<'_> {
        match &self.stage {
            Stage::Accumulator => OutputStage::ACCUMULATOR,
            Stage::Onnx { x_scale, w_scale, y_scale, y_zero } => {
                OutputStage::onnx(*x_scale, per_channel(w_scale), *y_scale, *y_zero)
            }
            Stage::Fixed { multiplier, shift, y_zero } => {
                OutputStage::fixed(per_channel(multiplier), per_channel(shift), *y_zero, i32::MIN, i32::MAX)
            }
        }
    }

    /// Whether any flag of a quantized op was given (an error on float inputs).
    pub fn any_given(args: &QuantArgs) -> bool {
        args.x_scale.is_some()
            || args.x_zero_point.is_some()
            || args.w_scale.is_some()
            || args.w_zero_point.is_some()
            || args.y_scale.is_some()
            || args.y_zero_point.is_some()
            || args.y_dtype.is_some()
            || args.requant != RequantMode::Onnx
    }

    /// Parses the flags for `channels` output channels with x of type `x_signed` (int8) or not,
    /// reading per-channel `.npy` files within `budget`. Ranges are checked by the core.
    pub fn parse(args: &QuantArgs, channels: usize, x_signed: bool, budget: MemoryBudget) -> Result<Quant, Failure> {
        let w_zero = match &args.w_zero_point {
            None => vec![0],
            Some(text) => number_or_npy(text, "--w-zero-point", channels, budget, |a| match a {
                AnyArray::I32(a) => Some(a.data),
                AnyArray::U8(a) => Some(a.data.into_iter().map(i32::from).collect()),
                AnyArray::I8(a) => Some(a.data.into_iter().map(i32::from).collect()),
                AnyArray::F32(_) | AnyArray::F16(_) => None,
            })?,
        };
        let y = match (args.y_scale, args.y_dtype) {
            (None, Some(_)) => {
                return Err("--y-dtype needs --y-scale (without it the output is the int32 accumulator)".into())
            }
            (None, None) => YType::I32,
            (Some(_), Some(QType::Uint8)) => YType::U8,
            (Some(_), Some(QType::Int8)) => YType::I8,
            (Some(_), None) if x_signed => YType::I8,
            (Some(_), None) => YType::U8,
        };
        let stage = match args.y_scale {
            None => {
                if args.x_scale.is_some() || args.w_scale.is_some() || args.y_zero_point.is_some() {
                    return Err("--x-scale, --w-scale and --y-zero-point need --y-scale (without it the output is the int32 accumulator)".into());
                }
                if args.requant != RequantMode::Onnx {
                    return Err("--requant needs --y-scale".into());
                }
                Stage::Accumulator
            }
            Some(y_scale) => {
                let x_scale = args.x_scale.ok_or("--y-scale needs --x-scale")?;
                let w_text = args.w_scale.as_deref().ok_or("--y-scale needs --w-scale")?;
                let w_scale = number_or_npy(w_text, "--w-scale", channels, budget, |a| match a {
                    AnyArray::F32(a) => Some(a.data),
                    _ => None,
                })?;
                for (flag, v) in [("--x-scale", x_scale), ("--y-scale", y_scale)]
                    .into_iter()
                    .chain(w_scale.iter().map(|&w| ("--w-scale", w)))
                {
                    if !(v.is_finite() && v > 0.0) {
                        return Err(format!("{flag} {v} is not a positive finite number").into());
                    }
                }
                let y_zero = args.y_zero_point.unwrap_or(0);
                match args.requant {
                    RequantMode::Onnx => {
                        // ONNX's multiplier is a float32: it must be a positive finite one.
                        let mut multipliers = w_scale.iter().map(|&w| (w, x_scale * w / y_scale));
                        if let Some((w, m)) = multipliers.find(|&(_, m)| !(m.is_finite() && m > 0.0)) {
                            return Err(format!("the requantization multiplier --x-scale * --w-scale / --y-scale = {x_scale:e} * {w:e} / {y_scale:e} is {m:e} in float32 (ONNX's arithmetic), not a positive finite number").into());
                        }
                        Stage::Onnx { x_scale, w_scale, y_scale, y_zero }
                    }
                    RequantMode::Fixed => {
                        let mut multiplier = Vec::with_capacity(w_scale.len());
                        let mut shift = Vec::with_capacity(w_scale.len());
                        for &w in &w_scale {
                            let real = f64::from(x_scale) * f64::from(w) / f64::from(y_scale);
                            let (m, s) = quantize_multiplier(real)?;
                            if m == 0 {
                                return Err(format!("the requantization multiplier {real:e} is below the fixed-point range (2^-32): every output would be the zero point").into());
                            }
                            multiplier.push(m);
                            shift.push(s);
                        }
                        Stage::Fixed { multiplier, shift, y_zero }
                    }
                }
            }
        };
        Ok(Quant { x_zero: args.x_zero_point.unwrap_or(0), w_zero, stage, y })
    }
}

/// A flag that is a number, or a `.npy` of one value per channel (`pick` takes the element types
/// it accepts).
fn number_or_npy<T: std::str::FromStr + Copy>(
    text: &str,
    flag: &str,
    channels: usize,
    budget: MemoryBudget,
    pick: impl Fn(AnyArray) -> Option<Vec<T>>,
) -> Result<Vec<T>, Failure> {
    if let Ok(v) = text.parse::<T>() {
        return Ok(vec![v]);
    }
    let path = PathBuf::from(text);
    if Path::new(text).extension().is_none_or(|e| e != "npy") {
        let kind = if text.parse::<f64>().is_ok() {
            "a number of the wrong kind (an integer is expected)"
        } else {
            "neither a number nor a .npy file"
        };
        return Err(format!("{flag} `{text}` is {kind}").into());
    }
    let a = npy::read_any_within(&path, budget)?;
    let (shape, dtype) = (a.shape().to_vec(), a.dtype());
    let v = pick(a).ok_or_else(|| format!("{flag} {}: dtype {dtype} is not accepted here", path.display()))?;
    if shape != [channels] && shape != [1] && !shape.is_empty() {
        return Err(format!(
            "{flag} {}: shape {shape:?}, expected [{channels}] (one per output channel) or one value",
            path.display()
        )
        .into());
    }
    Ok(v)
}
