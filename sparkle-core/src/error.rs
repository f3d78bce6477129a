//! The core's one error type: small, `Copy`, no strings, carrying the numbers that were wrong.

use core::fmt;

/// Which parameter or operand an [`Error`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Param {
    /// Batch size `n`.
    N,
    /// Input channels `c`.
    C,
    /// Input height `h`.
    H,
    /// Input width `w`.
    W,
    /// Output channels `k`.
    K,
    /// Kernel height `r`.
    R,
    /// Kernel width `s`.
    S,
    /// Vertical stride.
    StrideH,
    /// Horizontal stride.
    StrideW,
    /// Vertical dilation.
    DilationH,
    /// Horizontal dilation.
    DilationW,
    /// Padding (any side).
    Pad,
    /// Number of groups.
    Groups,
    /// Output height `ho`.
    OutH,
    /// Output width `wo`.
    OutW,
    /// Rows of a matrix view.
    Rows,
    /// Columns of a matrix view.
    Cols,
    /// The GEMM `m` dimension (rows of C).
    M,
    /// The GEMM `k` dimension (the reduction).
    GemmK,
    /// The GEMM `n` dimension (columns of C).
    GemmN,
    /// Operand A of a GEMM.
    A,
    /// Operand B of a GEMM.
    B,
    /// Operand / output C of a GEMM.
    COut,
    /// The conv input tensor.
    Input,
    /// The conv weight tensor.
    Weight,
    /// The bias vector.
    Bias,
    /// The conv output tensor.
    Output,
    /// Caller-provided scratch memory.
    Scratch,
    /// A tile dimension.
    Tile,
    /// The leaky-ReLU slope or another activation parameter.
    Activation,
    /// The GEMM scalars alpha / beta.
    Scalar,
    /// An executor's number of workers.
    Workers,
    /// The zero point of a quantized GEMM's A (ONNX's x).
    AZeroPoint,
    /// The zero point of a quantized GEMM's B (ONNX's w), or of one of its channels.
    BZeroPoint,
    /// The zero point of a quantized output (ONNX's y).
    YZeroPoint,
    /// A quantization scale.
    Scale,
    /// A fixed-point requantization multiplier.
    Multiplier,
    /// A fixed-point requantization shift.
    Shift,
    /// The output clamp of a quantized op (its fused activation).
    Clamp,
    /// The reduction length an int32 accumulator can hold exactly for these operands.
    Accumulator,
    /// Weights packed ahead of the call, used with a kernel or a weight geometry other than
    /// the ones they were packed for.
    Packed,
}

impl Param {
    /// The name used in messages (the field names people know).
    pub const fn name(self) -> &'static str {
        match self {
            Param::N => "n",
            Param::C => "c",
            Param::H => "h",
            Param::W => "w",
            Param::K => "k",
            Param::R => "r",
            Param::S => "s",
            Param::StrideH => "stride_h",
            Param::StrideW => "stride_w",
            Param::DilationH => "dilation_h",
            Param::DilationW => "dilation_w",
            Param::Pad => "pad",
            Param::Groups => "groups",
            Param::OutH => "ho",
            Param::OutW => "wo",
            Param::Rows => "rows",
            Param::Cols => "cols",
            Param::M => "m",
            Param::GemmK => "k (reduction)",
            Param::GemmN => "n (columns)",
            Param::A => "A",
            Param::B => "B",
            Param::COut => "C",
            Param::Input => "input",
            Param::Weight => "weight",
            Param::Bias => "bias",
            Param::Output => "output",
            Param::Scratch => "scratch",
            Param::Tile => "tile",
            Param::Workers => "workers",
            Param::AZeroPoint => "zero point of A (x)",
            Param::BZeroPoint => "zero point of B (w)",
            Param::YZeroPoint => "zero point of the output (y)",
            Param::Scale => "scale",
            Param::Multiplier => "multiplier",
            Param::Shift => "shift",
            Param::Clamp => "clamp",
            Param::Accumulator => "k (reduction; the int32 accumulator's exact range)",
            Param::Packed => "packed weights (packed for another kernel format or weight geometry)",
            Param::Activation => "activation",
            Param::Scalar => "alpha/beta",
        }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can be wrong with a shape, a view or a buffer handed to the core.
///
/// Every variant carries the numbers that were wrong so that a message can say
/// "expected X, found Y" without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A size that must be at least 1 was 0.
    Zero {
        /// The parameter that was zero.
        param: Param,
    },
    /// A size or index computation overflowed `usize` or `isize` on this target.
    Overflow {
        /// The quantity whose computation overflowed.
        param: Param,
    },
    /// Two sizes that must agree did not.
    Mismatch {
        /// The operand or parameter that disagreed.
        param: Param,
        /// What the other operands imply.
        expected: usize,
        /// What was passed.
        found: usize,
    },
    /// A buffer (slice) is shorter than the shape needs.
    TooSmall {
        /// The buffer.
        param: Param,
        /// Elements needed.
        required: usize,
        /// Elements passed.
        found: usize,
    },
    /// `value` must be a multiple of `divisor` (e.g. `c % groups`).
    NotDivisible {
        /// The parameter that is not divisible.
        param: Param,
        /// Its value.
        value: usize,
        /// The divisor it must be a multiple of.
        divisor: usize,
    },
    /// The dilated kernel extent is larger than the padded input along one axis.
    KernelTooLarge {
        /// `R` (vertical) or `S` (horizontal).
        param: Param,
        /// `dilation * (kernel - 1) + 1`.
        extent: usize,
        /// Input size plus both pads along that axis.
        padded: usize,
    },
    /// A mutable matrix view whose strides make two distinct elements share memory.
    Aliasing {
        /// Rows of the view.
        rows: usize,
        /// Columns of the view.
        cols: usize,
        /// Row stride.
        rs: usize,
        /// Column stride.
        cs: usize,
    },
    /// A value outside its domain (e.g. a non-finite leaky-ReLU slope).
    Invalid {
        /// The parameter.
        param: Param,
    },
    /// A number outside the range its type or its role allows (a zero point outside its
    /// element type, a shift past 31 bits, a reduction too long for an exact int32 sum).
    OutOfRange {
        /// What was out of range.
        param: Param,
        /// The value given.
        value: i64,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Zero { param } => write!(f, "{param} must be at least 1, found 0"),
            Error::Overflow { param } => {
                write!(f, "size computation for {param} overflows on this target")
            }
            Error::Mismatch { param, expected, found } => {
                write!(f, "{param}: expected {expected}, found {found}")
            }
            Error::TooSmall { param, required, found } => {
                write!(f, "{param} buffer too small: needs {required} elements, found {found}")
            }
            Error::NotDivisible { param, value, divisor } => {
                write!(f, "{param} = {value} is not a multiple of {divisor}")
            }
            Error::KernelTooLarge { param, extent, padded } => {
                write!(f, "dilated kernel {param} spans {extent} but the padded input is only {padded}")
            }
            Error::Aliasing { rows, cols, rs, cs } => {
                write!(f, "mutable {rows}x{cols} view with row stride {rs} and column stride {cs} aliases elements")
            }
            Error::Invalid { param } => write!(f, "{param} has an invalid value"),
            Error::OutOfRange { param, value, min, max } => {
                write!(f, "{param} = {value} is outside [{min}, {max}]")
            }
        }
    }
}

impl core::error::Error for Error {}

/// Shorthand used across the core.
pub type Result<T> = core::result::Result<T, Error>;

/// Checked `a * b`, reporting `param` on overflow.
#[inline]
pub(crate) fn mul(a: usize, b: usize, param: Param) -> Result<usize> {
    a.checked_mul(b).ok_or(Error::Overflow { param })
}

/// Checked `a + b`, reporting `param` on overflow.
#[inline]
pub(crate) fn add(a: usize, b: usize, param: Param) -> Result<usize> {
    a.checked_add(b).ok_or(Error::Overflow { param })
}

/// Largest number of `f32` elements one allocation may hold: Rust requires every object to
/// span at most `isize::MAX` bytes, whatever the pointer width.
pub const MAX_ELEMS_F32: usize = (isize::MAX as usize) / core::mem::size_of::<f32>();

/// Product of `dims` as an element count of an f32 tensor, checked against [`MAX_ELEMS_F32`].
pub(crate) fn elems(dims: &[usize], param: Param) -> Result<usize> {
    let mut total = 1usize;
    for &d in dims {
        total = mul(total, d, param)?;
    }
    if total > MAX_ELEMS_F32 {
        return Err(Error::Overflow { param });
    }
    Ok(total)
}
