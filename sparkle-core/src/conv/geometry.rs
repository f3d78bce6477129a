//! Conv2d geometry: parameters, validation with checked arithmetic, output size, and the index
//! math every conv kernel shares (tensor offsets, input taps, the implicit-GEMM view).
//!
//! Once [`Conv2dParams::validate`] has returned a [`Conv2d`], every offset of an in-range index
//! is below the tensor's length and none of the index functions below can overflow: all of them
//! are bounded by lengths that validation computed with checked arithmetic.

use crate::error::{add, elems, mul, Error, Param, Result};
use crate::layout::{TensorLayout, WeightLayout};

/// Zero padding on each side of the input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Padding {
    /// Rows added above.
    pub top: usize,
    /// Columns added on the left.
    pub left: usize,
    /// Rows added below.
    pub bottom: usize,
    /// Columns added on the right.
    pub right: usize,
}

impl Padding {
    /// The same padding on all four sides.
    pub const fn uniform(p: usize) -> Self {
        Self { top: p, left: p, bottom: p, right: p }
    }
    /// `ph` above and below, `pw` left and right.
    pub const fn symmetric(ph: usize, pw: usize) -> Self {
        Self { top: ph, left: pw, bottom: ph, right: pw }
    }
    /// Explicit, possibly asymmetric, padding.
    pub const fn new(top: usize, left: usize, bottom: usize, right: usize) -> Self {
        Self { top, left, bottom, right }
    }
}

/// Unvalidated conv2d parameters. Build with [`Conv2dParams::new`] and the setters, then
/// [`validate`](Conv2dParams::validate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub k: usize,
    /// Kernel height.
    pub r: usize,
    /// Kernel width.
    pub s: usize,
    /// Stride `[vertical, horizontal]`.
    pub stride: [usize; 2],
    /// Zero padding.
    pub pad: Padding,
    /// Dilation `[vertical, horizontal]`.
    pub dilation: [usize; 2],
    /// Groups: input and output channels are split into `groups` independent convolutions.
    pub groups: usize,
    /// Layout of input and output.
    pub layout: TensorLayout,
    /// Layout of the weights.
    pub weight_layout: WeightLayout,
}

impl Conv2dParams {
    /// `n x c x h x w` input, `k` filters of `r x s`; stride 1, no padding, no dilation, one
    /// group, NCHW activations and KCRS weights.
    pub const fn new(n: usize, c: usize, h: usize, w: usize, k: usize, r: usize, s: usize) -> Self {
        Self {
            n,
            c,
            h,
            w,
            k,
            r,
            s,
            stride: [1, 1],
            pad: Padding::uniform(0),
            dilation: [1, 1],
            groups: 1,
            layout: TensorLayout::Nchw,
            weight_layout: WeightLayout::Kcrs,
        }
    }
    /// Sets the stride (vertical, horizontal).
    pub const fn stride(mut self, sh: usize, sw: usize) -> Self {
        self.stride = [sh, sw];
        self
    }
    /// Sets the padding.
    pub const fn pad(mut self, pad: Padding) -> Self {
        self.pad = pad;
        self
    }
    /// Sets the dilation (vertical, horizontal).
    pub const fn dilation(mut self, dh: usize, dw: usize) -> Self {
        self.dilation = [dh, dw];
        self
    }
    /// Sets the number of groups.
    pub const fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    /// Sets the activation layout (input and output).
    pub const fn layout(mut self, layout: TensorLayout) -> Self {
        self.layout = layout;
        self
    }
    /// Sets the weight layout.
    pub const fn weight_layout(mut self, weight_layout: WeightLayout) -> Self {
        self.weight_layout = weight_layout;
        self
    }

    /// Checks every parameter and computes the output size and tensor lengths, all with checked
    /// arithmetic (no overflow of `usize`, and every tensor at most `isize::MAX` bytes).
    pub fn validate(self) -> Result<Conv2d> {
        let p = self;
        for (v, param) in [
            (p.n, Param::N),
            (p.c, Param::C),
            (p.h, Param::H),
            (p.w, Param::W),
            (p.k, Param::K),
            (p.r, Param::R),
            (p.s, Param::S),
            (p.stride[0], Param::StrideH),
            (p.stride[1], Param::StrideW),
            (p.dilation[0], Param::DilationH),
            (p.dilation[1], Param::DilationW),
            (p.groups, Param::Groups),
        ] {
            if v == 0 {
                return Err(Error::Zero { param });
            }
        }
        if !p.c.is_multiple_of(p.groups) {
            return Err(Error::NotDivisible { param: Param::C, value: p.c, divisor: p.groups });
        }
        if !p.k.is_multiple_of(p.groups) {
            return Err(Error::NotDivisible { param: Param::K, value: p.k, divisor: p.groups });
        }
        let ho = out_extent(p.h, p.pad.top, p.pad.bottom, p.r, p.dilation[0], p.stride[0], Param::R)?;
        let wo = out_extent(p.w, p.pad.left, p.pad.right, p.s, p.dilation[1], p.stride[1], Param::S)?;
        let cg = p.c / p.groups;
        let input_len = elems(&[p.n, p.c, p.h, p.w], Param::Input)?;
        let weight_len = elems(&[p.k, cg, p.r, p.s], Param::Weight)?;
        let output_len = elems(&[p.n, p.k, ho, wo], Param::Output)?;
        // The implicit-GEMM reduction length and its per-image column count must fit too.
        let gemm_k = elems(&[cg, p.r, p.s], Param::GemmK)?;
        Ok(Conv2d { p, ho, wo, input_len, weight_len, output_len, gemm_k })
    }
}

/// Output extent along one axis: `(in + pad_a + pad_b - (dil * (ker - 1) + 1)) / stride + 1`.
fn out_extent(
    input: usize,
    pad_a: usize,
    pad_b: usize,
    ker: usize,
    dil: usize,
    stride: usize,
    param: Param,
) -> Result<usize> {
    let padded = add(add(input, pad_a, Param::Pad)?, pad_b, Param::Pad)?;
    let extent = add(mul(dil, ker - 1, param)?, 1, param)?;
    if extent > padded {
        return Err(Error::KernelTooLarge { param, extent, padded });
    }
    Ok((padded - extent) / stride + 1)
}

/// A validated conv2d geometry. Only [`Conv2dParams::validate`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2d {
    p: Conv2dParams,
    ho: usize,
    wo: usize,
    input_len: usize,
    weight_len: usize,
    output_len: usize,
    gemm_k: usize,
}

impl Conv2d {
    /// The parameters this geometry was validated from.
    pub const fn params(&self) -> &Conv2dParams {
        &self.p
    }
    /// Output height.
    pub const fn ho(&self) -> usize {
        self.ho
    }
    /// Output width.
    pub const fn wo(&self) -> usize {
        self.wo
    }
    /// Input channels per group.
    pub const fn cg(&self) -> usize {
        self.p.c / self.p.groups
    }
    /// Output channels per group.
    pub const fn kg(&self) -> usize {
        self.p.k / self.p.groups
    }
    /// Elements of the input tensor (`n*c*h*w`).
    pub const fn input_len(&self) -> usize {
        self.input_len
    }
    /// Elements of the weight tensor (`k*(c/groups)*r*s`).
    pub const fn weight_len(&self) -> usize {
        self.weight_len
    }
    /// Elements of the output tensor (`n*k*ho*wo`).
    pub const fn output_len(&self) -> usize {
        self.output_len
    }
    /// The implicit GEMM per (image, group): `m = k/groups` rows (output channels),
    /// `n = ho*wo` columns (output pixels), reduction `k = (c/groups)*r*s`.
    pub const fn gemm_dims(&self) -> (usize, usize, usize) {
        (self.kg(), self.ho * self.wo, self.gemm_k)
    }
    /// Multiply-adds of the whole conv times two: `2*n*k*ho*wo*(c/groups)*r*s` as f64.
    pub fn flops(&self) -> f64 {
        2.0 * self.output_len as f64 * self.gemm_k as f64
    }

    /// Offset of input element `(n, c, y, x)`.
    #[inline]
    pub const fn input_index(&self, n: usize, c: usize, y: usize, x: usize) -> usize {
        let p = &self.p;
        match p.layout {
            TensorLayout::Nchw => ((n * p.c + c) * p.h + y) * p.w + x,
            TensorLayout::Nhwc => self.nhwc_input_index(n, c, y, x),
        }
    }

    /// [`Conv2d::input_index`] of an NHWC geometry, without the layout branch (for gathers whose
    /// layout is already known). Meaningless for an NCHW geometry.
    #[inline]
    pub const fn nhwc_input_index(&self, n: usize, c: usize, y: usize, x: usize) -> usize {
        let p = &self.p;
        ((n * p.h + y) * p.w + x) * p.c + c
    }

    /// Offset of output element `(n, k, y, x)` (same layout as the input).
    #[inline]
    pub const fn output_index(&self, n: usize, k: usize, y: usize, x: usize) -> usize {
        let p = &self.p;
        match p.layout {
            TensorLayout::Nchw => ((n * p.k + k) * self.ho + y) * self.wo + x,
            TensorLayout::Nhwc => ((n * self.ho + y) * self.wo + x) * p.k + k,
        }
    }

    /// Offset of weight `(k, c, r, s)`, `c` counted within the group.
    #[inline]
    pub const fn weight_index(&self, k: usize, c: usize, r: usize, s: usize) -> usize {
        let p = &self.p;
        let cg = self.cg();
        match p.weight_layout {
            WeightLayout::Kcrs => ((k * cg + c) * p.r + r) * p.s + s,
            WeightLayout::Krsc => ((k * p.r + r) * p.s + s) * cg + c,
        }
    }

    /// Row of the implicit-GEMM reduction for tap `(c, r, s)`, `c` within the group. The order
    /// follows the weight layout, so the weights of a group are always a dense row-major
    /// `kg x gemm_k` matrix: `weight_index(k, c, r, s) == k * gemm_k + reduction_index(c, r, s)`.
    #[inline]
    pub const fn reduction_index(&self, c: usize, r: usize, s: usize) -> usize {
        let p = &self.p;
        match p.weight_layout {
            WeightLayout::Kcrs => (c * p.r + r) * p.s + s,
            WeightLayout::Krsc => (r * p.s + s) * self.cg() + c,
        }
    }

    /// Inverse of [`reduction_index`](Self::reduction_index): `(c, r, s)` of reduction row `row`.
    #[inline]
    pub const fn reduction_tap(&self, row: usize) -> (usize, usize, usize) {
        let p = &self.p;
        match p.weight_layout {
            WeightLayout::Kcrs => (row / (p.r * p.s), (row / p.s) % p.r, row % p.s),
            WeightLayout::Krsc => {
                let cg = self.cg();
                (row % cg, row / (p.s * cg), (row / cg) % p.s)
            }
        }
    }

    /// The tap of reduction row `row + 1` given that of `row` (no division: for packing loops).
    #[inline]
    pub const fn next_tap(&self, (c, r, s): (usize, usize, usize)) -> (usize, usize, usize) {
        let p = &self.p;
        match p.weight_layout {
            WeightLayout::Kcrs => {
                if s + 1 < p.s {
                    (c, r, s + 1)
                } else if r + 1 < p.r {
                    (c, r + 1, 0)
                } else {
                    (c + 1, 0, 0)
                }
            }
            WeightLayout::Krsc => {
                if c + 1 < self.cg() {
                    (c + 1, r, s)
                } else if s + 1 < p.s {
                    (0, r, s + 1)
                } else {
                    (0, r + 1, 0)
                }
            }
        }
    }

    /// Input row read by output row `oy` through kernel row `r`, or `None` in the padding.
    #[inline]
    pub const fn input_y(&self, oy: usize, r: usize) -> Option<usize> {
        // oy*sh + r*dh <= (ho-1)*sh + (r_max-1)*dh <= h + pad_top + pad_bottom - 1: no overflow.
        tap(oy * self.p.stride[0] + r * self.p.dilation[0], self.p.pad.top, self.p.h)
    }

    /// Input column read by output column `ox` through kernel column `s`, or `None` in the padding.
    #[inline]
    pub const fn input_x(&self, ox: usize, s: usize) -> Option<usize> {
        tap(ox * self.p.stride[1] + s * self.p.dilation[1], self.p.pad.left, self.p.w)
    }

    /// Where the output of image `n`, group `g` lives as a `kg x (ho*wo)` matrix:
    /// `(offset, row stride, column stride)`. NCHW gives a row-major view, NHWC a column-major one.
    pub const fn output_gemm_view(&self, n: usize, g: usize) -> (usize, usize, usize) {
        let hw = self.ho * self.wo;
        let k0 = g * self.kg();
        match self.p.layout {
            TensorLayout::Nchw => ((n * self.p.k + k0) * hw, hw, 1),
            TensorLayout::Nhwc => (n * hw * self.p.k + k0, 1, self.p.k),
        }
    }

    /// Offset of group `g`'s weights, a dense row-major `kg x gemm_k` matrix.
    pub const fn weight_group_offset(&self, g: usize) -> usize {
        g * self.kg() * self.gemm_k
    }

    /// Checks slice lengths for input, weights, optional bias and output.
    pub fn check_buffers(&self, input: usize, weight: usize, bias: Option<usize>, output: usize) -> Result<()> {
        for (param, expected, found) in [
            (Param::Input, self.input_len, input),
            (Param::Weight, self.weight_len, weight),
            (Param::Output, self.output_len, output),
            (Param::Bias, self.p.k, bias.unwrap_or(self.p.k)),
        ] {
            if expected != found {
                return Err(Error::Mismatch { param, expected, found });
            }
        }
        Ok(())
    }
}

/// `pos - pad` if it lands in `0..len`.
#[inline]
const fn tap(pos: usize, pad: usize, len: usize) -> Option<usize> {
    if pos < pad {
        return None;
    }
    let i = pos - pad;
    if i < len {
        Some(i)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_conv1() {
        let g = Conv2dParams::new(1, 3, 224, 224, 64, 7, 7).stride(2, 2).pad(Padding::uniform(3)).validate().unwrap();
        assert_eq!((g.ho(), g.wo()), (112, 112));
        assert_eq!(g.gemm_dims(), (64, 112 * 112, 147));
    }

    #[test]
    fn errors_carry_numbers() {
        let base = Conv2dParams::new(1, 6, 5, 5, 4, 3, 3);
        assert_eq!(base.groups(4).validate(), Err(Error::NotDivisible { param: Param::C, value: 6, divisor: 4 }));
        assert_eq!(base.groups(3).validate(), Err(Error::NotDivisible { param: Param::K, value: 4, divisor: 3 }));
        assert_eq!(base.stride(0, 1).validate(), Err(Error::Zero { param: Param::StrideH }));
        assert_eq!(
            base.dilation(3, 1).validate(),
            Err(Error::KernelTooLarge { param: Param::R, extent: 7, padded: 5 })
        );
        assert!(base.dilation(3, 1).pad(Padding::new(1, 0, 1, 0)).validate().is_ok());
        let huge = Conv2dParams::new(usize::MAX, 2, 2, 2, 1, 1, 1);
        assert_eq!(huge.validate(), Err(Error::Overflow { param: Param::Input }));
        let pad = base.pad(Padding::new(usize::MAX, 0, 1, 0));
        assert_eq!(pad.validate(), Err(Error::Overflow { param: Param::Pad }));
        let dil = base.dilation(usize::MAX, 1);
        assert_eq!(dil.validate(), Err(Error::Overflow { param: Param::R }));
    }

    #[test]
    fn reduction_order_matches_weight_layout() {
        for wl in [WeightLayout::Kcrs, WeightLayout::Krsc] {
            let g = Conv2dParams::new(1, 6, 9, 9, 4, 3, 2).groups(2).weight_layout(wl).validate().unwrap();
            let gk = g.gemm_dims().2;
            for k in 0..4 {
                for c in 0..3 {
                    for r in 0..3 {
                        for s in 0..2 {
                            let row = g.reduction_index(c, r, s);
                            assert_eq!(g.weight_index(k, c, r, s), k * gk + row);
                            assert_eq!(g.reduction_tap(row), (c, r, s));
                            if row + 1 < gk {
                                assert_eq!(g.next_tap((c, r, s)), g.reduction_tap(row + 1));
                            }
                        }
                    }
                }
            }
        }
    }
}
