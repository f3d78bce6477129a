//! The epilogue every backend applies on write-out: `y = act(alpha * acc + beta * c + bias)`.
//!
//! For conv2d, `alpha = 1`, `beta = 0` and the bias is per output channel. For GEMM the bias is
//! per row of C ([`Bias::Row`], the output channel when A holds weights) or per column
//! ([`Bias::Col`], as in a fully connected layer `x * W^T + b`).

use crate::error::{Error, Param, Result};

/// Elementwise activation applied last. NaN inputs propagate (as in PyTorch).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` for `x >= 0`, else `slope * x`; `slope` must be finite.
    LeakyRelu {
        /// Slope for negative inputs (PyTorch's default is 0.01).
        slope: f32,
    },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// Exact GELU, `0.5 * x * (1 + erf(x / sqrt(2)))` (PyTorch's default, not the tanh approximation).
    Gelu,
}

impl Activation {
    /// Every activation once (leaky ReLU with slope 0.1), for tests and benches.
    pub const ALL: [Activation; 7] = [
        Activation::None,
        Activation::Relu,
        Activation::Relu6,
        Activation::LeakyRelu { slope: 0.1 },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Gelu,
    ];

    /// Rejects parameters outside their domain.
    pub fn validate(self) -> Result<()> {
        match self {
            Activation::LeakyRelu { slope } if !slope.is_finite() => Err(Error::Invalid { param: Param::Activation }),
            _ => Ok(()),
        }
    }

    /// Applies the activation in f32 (libm for the transcendental ones).
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::LeakyRelu { slope } => {
                if x < 0.0 {
                    x * slope
                } else {
                    x
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + libm::expf(-x)),
            Activation::Tanh => libm::tanhf(x),
            // x * (1 + erf) is -inf * 0 at -inf; the limit is 0.
            Activation::Gelu if x == f32::NEG_INFINITY => 0.0,
            Activation::Gelu => 0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2)),
        }
    }

    /// Applies the activation in f64: the oracle's version.
    pub fn apply_f64(self, x: f64) -> f64 {
        match self {
            Activation::None => x,
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::LeakyRelu { slope } => {
                if x < 0.0 {
                    x * f64::from(slope)
                } else {
                    x
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + libm::exp(-x)),
            Activation::Tanh => libm::tanh(x),
            Activation::Gelu if x == f64::NEG_INFINITY => 0.0,
            Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x * core::f64::consts::FRAC_1_SQRT_2)),
        }
    }
}

/// Where a bias vector is added.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Bias<'a> {
    /// No bias.
    #[default]
    None,
    /// One value per row of C (per output channel for conv2d); length `m`.
    Row(&'a [f32]),
    /// One value per column of C; length `n`.
    Col(&'a [f32]),
}

impl<'a> Bias<'a> {
    /// The bias added to element `(i, j)` (0 without bias). Indices must be in range.
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        match *self {
            Bias::None => 0.0,
            Bias::Row(b) => b[i],
            Bias::Col(b) => b[j],
        }
    }

    /// Checks the length against an `m x n` output.
    pub fn validate(&self, m: usize, n: usize) -> Result<()> {
        let (expected, found) = match *self {
            Bias::None => return Ok(()),
            Bias::Row(b) => (m, b.len()),
            Bias::Col(b) => (n, b.len()),
        };
        if expected != found {
            return Err(Error::Mismatch { param: Param::Bias, expected, found });
        }
        Ok(())
    }
}

/// Bias and activation, shared by every backend and op.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Epilogue<'a> {
    /// Added after `alpha * acc + beta * c`.
    pub bias: Bias<'a>,
    /// Applied last.
    pub activation: Activation,
}

impl<'a> Epilogue<'a> {
    /// No bias, no activation.
    pub const NONE: Epilogue<'static> = Epilogue { bias: Bias::None, activation: Activation::None };

    /// An epilogue with only an activation.
    pub const fn activation(activation: Activation) -> Self {
        Self { bias: Bias::None, activation }
    }

    /// The same epilogue with a per-row (per output channel) bias.
    pub const fn with_bias(self, bias: &'a [f32]) -> Self {
        Self { bias: Bias::Row(bias), activation: self.activation }
    }

    /// `act(x + bias(i, j))` in f32.
    #[inline]
    pub fn apply(&self, i: usize, j: usize, x: f32) -> f32 {
        self.activation.apply(x + self.bias.at(i, j))
    }

    /// `act(x + bias(i, j))` in f64 (the oracle).
    pub fn apply_f64(&self, i: usize, j: usize, x: f64) -> f64 {
        self.activation.apply_f64(x + f64::from(self.bias.at(i, j)))
    }

    /// Checks the activation's parameters and the bias length against an `m x n` output.
    pub fn validate(&self, m: usize, n: usize) -> Result<()> {
        self.activation.validate()?;
        self.bias.validate(m, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_and_f64_agree() {
        for act in Activation::ALL {
            for x in [-7.0f32, -1.5, -0.0, 0.0, 0.3, 2.0, 6.5, 30.0] {
                let a = act.apply(x);
                let b = act.apply_f64(f64::from(x)) as f32;
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{act:?}({x}): {a} vs {b}");
            }
            assert!(act.apply(f32::NAN).is_nan(), "{act:?} must propagate NaN");
        }
    }

    #[test]
    fn infinities_give_the_limits() {
        let cases: [(Activation, f32, f32); 7] = [
            (Activation::None, f32::NEG_INFINITY, f32::INFINITY),
            (Activation::Relu, 0.0, f32::INFINITY),
            (Activation::Relu6, 0.0, 6.0),
            (Activation::LeakyRelu { slope: 0.5 }, f32::NEG_INFINITY, f32::INFINITY),
            (Activation::Sigmoid, 0.0, 1.0),
            (Activation::Tanh, -1.0, 1.0),
            (Activation::Gelu, 0.0, f32::INFINITY),
        ];
        for (act, lo, hi) in cases {
            assert_eq!(act.apply(f32::NEG_INFINITY), lo, "{act:?}(-inf)");
            assert_eq!(act.apply(f32::INFINITY), hi, "{act:?}(+inf)");
            assert_eq!(act.apply_f64(f64::NEG_INFINITY), f64::from(lo), "{act:?}(-inf) in f64");
            assert_eq!(act.apply_f64(f64::INFINITY), f64::from(hi), "{act:?}(+inf) in f64");
        }
    }

    #[test]
    fn bias_and_slope_validated() {
        let b = [1.0f32; 3];
        assert!(Epilogue::NONE.with_bias(&b).validate(3, 9).is_ok());
        assert_eq!(
            Epilogue::NONE.with_bias(&b).validate(4, 9),
            Err(Error::Mismatch { param: Param::Bias, expected: 4, found: 3 })
        );
        let bad = Epilogue::activation(Activation::LeakyRelu { slope: f32::NAN });
        assert_eq!(bad.validate(1, 1), Err(Error::Invalid { param: Param::Activation }));
    }
}
