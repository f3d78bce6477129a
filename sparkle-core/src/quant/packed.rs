//! Weights packed once and kept by the caller, as PyTorch's quantized modules and oneDNN keep
//! theirs: [`QPackedGemm`] (a GEMM's B) and [`QPackedConv`] (a conv's weights). A call with
//! packed weights skips what every plain call does to them: reordering (a conv's KCRS weights
//! into its path's order), packing into the kernel's panel format, and their column sums. On
//! an AMX Xeon, preparing 512->512 3x3 weights was about three quarters of a plain call's time.
//!
//! The packed form holds the weights alone (canonical values in the kernel's panel format and
//! each output channel's canonical sum), not the zero points, bias or output stage, which each
//! call gives as for the plain ops; the results are bit-identical to the plain ops' (and so to
//! the integer oracle).
//!
//! A packed weight is made for a kernel's panel format (its `nr` and packing; kernels that share
//! them share packed weights) and, for a conv, for a weight shape and the path a conv takes on
//! that kernel ([`QPackedConv::fits`]); using it with another is an error
//! ([`Param::Packed`]), never a wrong result. The caller owns the storage, any `S` that derefs
//! to `[i32]`: a `Vec<i32>` with an allocator, a static buffer on a microcontroller.
#![allow(unsafe_code)]

use core::marker::PhantomData;

use crate::arch::quant::{QKernel, QPack};
use crate::conv::Conv2d;
use crate::error::{Error, Param, Result};
use crate::gemm::driver::{planned_workers, Pinned};
use crate::quant::conv::{
    as_elems, qconv2d_packed_scratch_len, run_conv, weight_order, PackedView, QConv, WeightOrder,
};
use crate::quant::driver::{
    b_offset, line_start, packed_b_bytes, qgemm_packed_scratch_len, qgemm_unchecked, BSource, PackedPanels, PanelPlace,
    QOperands, QWorkspace,
};
use crate::quant::{check_gemm, OutputStage, PerChannel, QElem, QGemmDims, QOperand};
use crate::view::{MatMut, MatRef};

/// `i32` words per 64-byte line.
const LINE: usize = 16;

/// Words of `bytes`, rounded up to whole 64-byte lines.
fn line_words(bytes: usize) -> Result<usize> {
    bytes.div_ceil(64).checked_mul(LINE).ok_or(Error::Overflow { param: Param::Packed })
}

/// The part of a packed buffer in use: from its first 64-byte line (recorded when packing, so
/// that a buffer moved since, an array by value, is still read where it was written), `len`
/// words; an error if the storage no longer holds them.
fn region(words: &[i32], start: usize, len: usize) -> Result<&[i32]> {
    words.get(start..).and_then(|w| w.get(..len)).ok_or(Error::Invalid { param: Param::Packed })
}

/// Words as bytes.
fn as_bytes(words: &[i32]) -> &[u8] {
    // SAFETY: `u8` has alignment one and no invalid values; the slice covers the words' bytes
    // and borrows them for its lifetime.
    unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 4) }
}

/// B of a quantized GEMM (`k x n`, elements `B`) packed for one kernel format. Make one with
/// [`QPackedGemm::new`], run with [`qgemm_packed_with`].
pub struct QPackedGemm<B: QOperand, S> {
    words: S,
    start: usize,
    k: usize,
    n: usize,
    pack: QPack,
    nr: usize,
    /// Words of the column sums (lines), then the panels.
    sum_words: usize,
    panel_words: usize,
    _b: PhantomData<fn() -> B>,
}

impl<B: QOperand, S> core::fmt::Debug for QPackedGemm<B, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("QPackedGemm").field("k", &self.k).field("n", &self.n).field("nr", &self.nr).finish()
    }
}

/// `i32` words of storage [`QPackedGemm::new`] needs for a `k x n` B on `kernel` (with up to a
/// line's worth to start on a 64-byte line).
pub fn qgemm_packed_words(kernel: &QKernel, k: usize, n: usize) -> Result<usize> {
    let (sums, panels) = gemm_parts(kernel, k, n)?;
    sums.checked_add(panels).and_then(|w| w.checked_add(LINE - 1)).ok_or(Error::Overflow { param: Param::Packed })
}

/// Words of a packed B's column sums (whole lines) and of its panels.
fn gemm_parts(kernel: &QKernel, k: usize, n: usize) -> Result<(usize, usize)> {
    let sums = line_words(n.checked_mul(4).ok_or(Error::Overflow { param: Param::Packed })?)?;
    Ok((sums, packed_b_bytes(kernel, k, n)? / 4))
}

impl<B: QOperand, S: AsRef<[i32]>> QPackedGemm<B, S> {
    /// Packs `b` for `kernel` into `words` (at least [`qgemm_packed_words`] long).
    pub fn new(kernel: &QKernel, b: &MatRef<'_, B>, mut words: S) -> Result<Self>
    where
        S: AsMut<[i32]>,
    {
        let (k, n) = (b.rows(), b.cols());
        let (sum_words, panel_words) = gemm_parts(kernel, k, n)?;
        let required = qgemm_packed_words(kernel, k, n)?;
        let buf = words.as_mut();
        if buf.len() < required {
            return Err(Error::TooSmall { param: Param::Packed, required, found: buf.len() });
        }
        let start = line_start(buf);
        let (sums, panels) = buf[start..][..sum_words + panel_words].split_at_mut(sum_words);
        sums.fill(0);
        let panels = as_elems::<u8>(panels);
        panels.fill(0);
        let place = PanelPlace::new(kernel, k);
        let off = b_offset::<B>();
        for (j, sum) in sums[..n].iter_mut().enumerate() {
            for p in 0..k {
                let v = b.at(p, j).widen() + off;
                *sum = sum.wrapping_add(v);
                place.put(panels, p, j, v);
            }
        }
        Ok(QPackedGemm {
            words,
            start,
            k,
            n,
            pack: kernel.pack,
            nr: kernel.nr,
            sum_words,
            panel_words,
            _b: PhantomData,
        })
    }

    /// Rows (the reduction) of the packed B.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of the packed B.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Whether these weights were packed for `kernel`'s panel format.
    pub fn fits(&self, kernel: &QKernel) -> bool {
        kernel.pack == self.pack && kernel.nr == self.nr
    }

    /// The storage back.
    pub fn into_words(self) -> S {
        self.words
    }

    fn panels(&self, kernel: &QKernel) -> Result<PackedPanels<'_>> {
        if !self.fits(kernel) {
            return Err(Error::Invalid { param: Param::Packed });
        }
        let r = region(self.words.as_ref(), self.start, self.sum_words + self.panel_words)?;
        let (sums, panels) = r.split_at(self.sum_words);
        Ok(PackedPanels { panels: as_bytes(panels), colsums: &sums[..self.n] })
    }
}

/// A quantized GEMM whose B was packed ahead: [`crate::quant::QGemm`] with `b` a
/// [`QPackedGemm`].
#[derive(Debug)]
pub struct QGemmPacked<'a, A: QOperand, B: QOperand, S> {
    /// Left operand (activations).
    pub a: MatRef<'a, A>,
    /// Zero point of A (in A's range).
    pub a_zero: i32,
    /// Right operand, packed.
    pub b: &'a QPackedGemm<B, S>,
    /// Zero point of B, per tensor or per column (in B's range).
    pub b_zero: PerChannel<'a, i32>,
    /// Bias added to the accumulator, one per column.
    pub bias: Option<&'a [i32]>,
}

/// [`crate::quant::driver::qgemm_with`] with B packed ahead: validates the op (as
/// [`crate::quant::QGemm::check`]), that B was packed for `ws.kernel`'s format, the workers and
/// the scratch ([`qgemm_packed_scratch_len`]), then runs. Bit-identical to the plain call on the
/// weights that were packed.
pub fn qgemm_packed_with<A: QOperand, B: QOperand, S: AsRef<[i32]>, Y: QElem>(
    op: &QGemmPacked<'_, A, B, S>,
    out: &OutputStage<'_>,
    mut c: MatMut<'_, Y>,
    ws: QWorkspace<'_>,
) -> Result<QGemmDims> {
    let d = check_gemm::<A, B, Y>(&op.a, op.a_zero, (op.b.k, op.b.n), &op.b_zero, op.bias, out, &c)?;
    let panels = op.b.panels(ws.kernel)?;
    let exec = Pinned::new(ws.exec)?;
    let required = qgemm_packed_scratch_len(ws.kernel, d.m, d.n, d.k, planned_workers(&exec))?;
    if ws.scratch.len() < required {
        return Err(Error::TooSmall { param: Param::Scratch, required, found: ws.scratch.len() });
    }
    if d.m > 0 && d.n > 0 {
        let b = BSource::<B>::Packed(panels);
        let ops = QOperands { a: &op.a, a_zero: op.a_zero, b, b_zero: &op.b_zero, bias: op.bias, ch0: 0 };
        let (rs, cs) = (c.rs(), c.cs());
        // SAFETY: the op, the stage and the scratch were validated above; B's panels were packed
        // for this kernel's format at `k x n` (checked), and the region holds them all; `c` is
        // an exclusive, alias-free `m x n` view; the executor is pinned.
        unsafe { qgemm_unchecked(&ops, out, (c.as_mut_ptr(), rs, cs), ws.kernel, &exec, ws.scratch, true) };
    }
    Ok(d)
}

/// A conv's weights (elements `W`) packed for one kernel format and the path a conv takes on it.
/// Make one with [`QPackedConv::new`], run with [`qconv2d_packed_with`].
pub struct QPackedConv<W: QOperand, S> {
    words: S,
    start: usize,
    /// The geometry packed for (its weight shape and path are what a run must share).
    g: Conv2d,
    order: WeightOrder,
    pack: QPack,
    nr: usize,
    /// Words of the column sums (lines), then of each group's panels (or the depthwise weights).
    sum_words: usize,
    group_bytes: usize,
    total: usize,
    _w: PhantomData<fn() -> W>,
}

impl<W: QOperand, S> core::fmt::Debug for QPackedConv<W, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("QPackedConv").field("order", &self.order).field("nr", &self.nr).finish()
    }
}

/// The sizes of a conv's packed weights: words of the sums, bytes per group, words in all.
fn conv_parts(kernel: &QKernel, g: &Conv2d, order: WeightOrder) -> Result<(usize, usize, usize)> {
    let p = g.params();
    let of = Error::Overflow { param: Param::Packed };
    if order == WeightOrder::Depthwise {
        return Ok((0, 0, line_words(g.weight_len())?));
    }
    let (kg, _, gemm_k) = g.gemm_dims();
    let kp = match order {
        WeightOrder::Direct { cp } => (p.r * p.s).checked_mul(cp).ok_or(of)?,
        _ => gemm_k,
    };
    let sums = line_words(p.k.checked_mul(4).ok_or(of)?)?;
    let group_bytes = packed_b_bytes(kernel, kp, kg)?;
    let total = group_bytes.checked_mul(p.groups).map(|b| b / 4).and_then(|w| w.checked_add(sums)).ok_or(of)?;
    Ok((sums, group_bytes, total))
}

/// `i32` words of storage [`QPackedConv::new`] needs for `g`'s weights on `kernel`.
pub fn qconv2d_packed_words(kernel: &QKernel, g: &Conv2d) -> Result<usize> {
    let (_, _, total) = conv_parts(kernel, g, weight_order(kernel, g))?;
    total.checked_add(LINE - 1).ok_or(Error::Overflow { param: Param::Packed })
}

impl<W: QOperand, S: AsRef<[i32]>> QPackedConv<W, S> {
    /// Packs `weight` (`g.weight_len()` elements in `g`'s weight layout) for convs of `g`'s
    /// weight shape on `kernel` into `words` (at least [`qconv2d_packed_words`] long), in the
    /// order of the path such a conv takes there, whatever the image: a direct conv (AMX; AVX-512
    /// VNNI where the group's channels are not whole blocks of 64), per tap, the channels padded
    /// to 64; depthwise (one channel per group), the weights as given; otherwise KRSC's (which
    /// the direct conv also reads where the channels are whole blocks).
    pub fn new(kernel: &QKernel, g: &Conv2d, weight: &[W], mut words: S) -> Result<Self>
    where
        S: AsMut<[i32]>,
    {
        if weight.len() != g.weight_len() {
            return Err(Error::Mismatch { param: Param::Weight, expected: g.weight_len(), found: weight.len() });
        }
        let order = weight_order(kernel, g);
        let (sum_words, group_bytes, total) = conv_parts(kernel, g, order)?;
        let required = qconv2d_packed_words(kernel, g)?;
        let buf = words.as_mut();
        if buf.len() < required {
            return Err(Error::TooSmall { param: Param::Packed, required, found: buf.len() });
        }
        let start = line_start(buf);
        let (sums, rest) = buf[start..][..total].split_at_mut(sum_words);
        sums.fill(0);
        let rest = as_elems::<u8>(rest);
        rest.fill(0);
        let p = g.params();
        let (cg, (kg, _, _)) = (g.cg(), g.gemm_dims());
        match order {
            WeightOrder::Depthwise => {
                for (to, w) in rest.iter_mut().zip(weight) {
                    *to = w.widen() as u8;
                }
            }
            WeightOrder::Direct { .. } | WeightOrder::Krsc => {
                let per_tap = if let WeightOrder::Direct { cp } = order { cp } else { cg };
                let place = PanelPlace::new(kernel, p.r * p.s * per_tap);
                let off = b_offset::<W>();
                for (k, sum) in sums[..p.k].iter_mut().enumerate() {
                    let panels = &mut rest[k / kg * group_bytes..][..group_bytes];
                    for c in 0..cg {
                        for r in 0..p.r {
                            for s in 0..p.s {
                                let v = weight[g.weight_index(k, c, r, s)].widen() + off;
                                *sum = sum.wrapping_add(v);
                                place.put(panels, (r * p.s + s) * per_tap + c, k % kg, v);
                            }
                        }
                    }
                }
            }
        }
        Ok(QPackedConv {
            words,
            start,
            g: *g,
            order,
            pack: kernel.pack,
            nr: kernel.nr,
            sum_words,
            group_bytes,
            total,
            _w: PhantomData,
        })
    }
}

impl<W: QOperand, S: AsRef<[i32]>> QPackedConv<W, S> {
    /// Whether these weights serve convs of `g` on `kernel`: packed for its panel format, for
    /// `g`'s weight shape (`c`, `k`, `r`, `s`, groups, weight layout) and for the path such a
    /// conv takes there (which may depend on the stride, e.g. AMX's direct conv, stride 1).
    /// Batch, image size and padding may differ where the path does not.
    pub fn fits(&self, kernel: &QKernel, g: &Conv2d) -> bool {
        let (a, b) = (self.g.params(), g.params());
        let shape = (a.c, a.k, a.r, a.s, a.groups, a.weight_layout) == (b.c, b.k, b.r, b.s, b.groups, b.weight_layout);
        shape && kernel.pack == self.pack && kernel.nr == self.nr && weight_order(kernel, g) == self.order
    }

    /// The storage back.
    pub fn into_words(self) -> S {
        self.words
    }

    fn view(&self, kernel: &QKernel, g: &Conv2d) -> Result<PackedView<'_>> {
        if !self.fits(kernel, g) {
            return Err(Error::Invalid { param: Param::Packed });
        }
        let r = region(self.words.as_ref(), self.start, self.total)?;
        let (sums, rest) = r.split_at(self.sum_words);
        Ok(PackedView { order: self.order, bytes: as_bytes(rest), colsums: sums, group_bytes: self.group_bytes })
    }
}

/// A quantized conv whose weights were packed ahead: [`QConv`] with `weight` a [`QPackedConv`].
#[derive(Debug)]
pub struct QConvPacked<'a, X: QOperand, W: QOperand, S> {
    /// Input (ONNX's x), `g.input_len()` elements.
    pub input: &'a [X],
    /// Zero point of the input (in X's range); also the value of the padding.
    pub x_zero: i32,
    /// The weights, packed.
    pub weight: &'a QPackedConv<W, S>,
    /// Zero point of the weights, per tensor or per output channel (`k` values).
    pub w_zero: PerChannel<'a, i32>,
    /// Bias added to the accumulator, `k` values.
    pub bias: Option<&'a [i32]>,
}

/// [`crate::quant::conv::qconv2d_with`] with weights packed ahead: validates the op (as
/// [`QConv::check`]), that the weights fit `g` on `ws.kernel` ([`QPackedConv::fits`]), the
/// workers and the scratch (at least [`qconv2d_packed_scratch_len`] words; with
/// [`crate::quant::conv::qconv2d_packed_staged_scratch_len`] it stages the input where that is
/// faster), then runs. Bit-identical to the plain call on the weights that were packed.
pub fn qconv2d_packed_with<X: QOperand, W: QOperand, S: AsRef<[i32]>, Y: QElem>(
    g: &Conv2d,
    op: &QConvPacked<'_, X, W, S>,
    out: &OutputStage<'_>,
    output: &mut [Y],
    ws: QWorkspace<'_>,
) -> Result<()> {
    let plain = QConv::<X, W> { input: op.input, x_zero: op.x_zero, weight: &[], w_zero: op.w_zero, bias: op.bias };
    plain.check_with_weight_len::<Y>(g, out, output.len(), g.weight_len())?;
    let view = op.weight.view(ws.kernel, g)?;
    let exec = Pinned::new(ws.exec)?;
    let required = qconv2d_packed_scratch_len(ws.kernel, g, planned_workers(&exec))?;
    if ws.scratch.len() < required {
        return Err(Error::TooSmall { param: Param::Scratch, required, found: ws.scratch.len() });
    }
    run_conv(g, &plain, Some(&view), out, output, (ws.kernel, &exec), ws.scratch)
}

#[cfg(test)]
mod tests {
    //! Small enough for Miri: packed weights on every path (im2col with KCRS and KRSC weights,
    //! staged and not, 1x1, depthwise, the direct form on the portable tile kernel) and packed
    //! GEMM B against the integer oracle; the errors for weights that do not fit.
    use super::*;
    use crate::arch::quant::GENERIC_TILES_Q;
    use crate::conv::{Conv2dParams, Padding};
    use crate::gemm::driver::Sequential;
    use crate::layout::{TensorLayout, WeightLayout};
    use crate::quant::conv::{qconv2d_packed_staged_scratch_len, qconv2d_reference};
    use crate::quant::reference::qgemm_reference;
    use crate::quant::QGemm;

    fn bytes<const L: usize>(seed: usize) -> [u8; L] {
        core::array::from_fn(|i| ((i * 53 + seed * 17) % 251) as u8)
    }

    /// Packs `weight` for `g` on `kernel`, runs with the least and the staged scratch, and
    /// compares with the oracle.
    fn conv_case(kernel: &QKernel, g: &Conv2d, input: &[u8], weight: &[i8], per_channel: bool) {
        let wz: [i32; 8] = core::array::from_fn(|j| j as i32 % 3 - 1);
        let bias: [i32; 8] = core::array::from_fn(|j| j as i32 * 31 - 100);
        let k = g.params().k;
        let w_zero = if per_channel { PerChannel::Channel(&wz[..k]) } else { PerChannel::Tensor(0) };
        let out = OutputStage::onnx(0.02, PerChannel::Tensor(0.01), 0.05, 7);
        let mut words = [0i32; 8192];
        let len = qconv2d_packed_words(kernel, g).unwrap();
        assert!(QPackedConv::new(kernel, g, weight, &mut words[..len - 1]).is_err());
        let packed = QPackedConv::new(kernel, g, weight, &mut words[..len]).unwrap();
        assert!(packed.fits(kernel, g));
        let plain = QConv { input, x_zero: 9, weight, w_zero, bias: Some(&bias[..k]) };
        let op = QConvPacked { input, x_zero: 9, weight: &packed, w_zero, bias: Some(&bias[..k]) };
        let mut want = [1u8; 512];
        let want = &mut want[..g.output_len()];
        qconv2d_reference(g, &plain, &out, want).unwrap();
        let least = qconv2d_packed_scratch_len(kernel, g, 1).unwrap();
        let staged = qconv2d_packed_staged_scratch_len(kernel, g, 1).unwrap();
        let mut scratch = [0i32; 16384];
        for len in [least, staged] {
            let mut got = [0u8; 512];
            let got = &mut got[..g.output_len()];
            let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len] };
            qconv2d_packed_with(g, &op, &out, got, ws).unwrap();
            assert_eq!(got, want, "{} {:?} scratch {len}", kernel.id(), g.params());
        }
        let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..least - 1] };
        assert!(qconv2d_packed_with(g, &op, &out, want, ws).is_err());
    }

    #[test]
    fn packed_conv_weights_match_the_oracle_on_every_path() {
        let input: [u8; 512] = bytes(1);
        let weight: [i8; 640] = bytes::<640>(2).map(|b| b as i8);
        let im2col = Conv2dParams::new(2, 4, 5, 4, 6, 3, 2).pad(Padding::new(1, 0, 2, 1)).stride(2, 1).groups(2);
        let pointwise = Conv2dParams::new(1, 6, 3, 4, 5, 1, 1);
        let depthwise = Conv2dParams::new(1, 4, 4, 5, 4, 3, 3).groups(4).pad(Padding::uniform(1));
        // Under Miri (the best kernel is the generic one there) NCHW/KCRS, staged, and NHWC/KRSC.
        let (kernels, layouts) = if cfg!(miri) { (1, 2) } else { (2, 3) };
        for &kernel in &[QKernel::generic(), QKernel::best()][..kernels] {
            for p in [im2col, pointwise, depthwise] {
                for &(layout, wl) in &[
                    (TensorLayout::Nchw, WeightLayout::Kcrs),
                    (TensorLayout::Nhwc, WeightLayout::Krsc),
                    (TensorLayout::Nhwc, WeightLayout::Kcrs),
                ][..layouts]
                {
                    let g = p.layout(layout).weight_layout(wl).validate().unwrap();
                    conv_case(
                        kernel,
                        &g,
                        &input[..g.input_len()],
                        &weight[..g.weight_len()],
                        layout == TensorLayout::Nchw,
                    );
                }
            }
        }
        // The direct form: 64 channels (one block), 1x1 with padding (3x3 outside Miri), NCHW.
        let (r, big) = if cfg!(miri) { (1, 1) } else { (3, 2) };
        let p = Conv2dParams::new(1, 64, 2, 2 * big, 2, r, r).pad(Padding::uniform(1));
        let g = p.weight_layout(WeightLayout::Kcrs).validate().unwrap();
        assert!(matches!(weight_order(&GENERIC_TILES_Q, &g), WeightOrder::Direct { cp: 64 }));
        let weight: [i8; 2 * 64 * 9] = core::array::from_fn(|i| (i * 71 % 256) as u8 as i8);
        conv_case(&GENERIC_TILES_Q, &g, &input[..g.input_len()], &weight[..g.weight_len()], true);
    }

    #[test]
    fn packed_conv_weights_that_do_not_fit_are_an_error() {
        let g = Conv2dParams::new(1, 4, 5, 5, 6, 3, 3).validate().unwrap();
        let weight = [1i8; 216];
        let mut words = [0i32; 4096];
        let kernel = QKernel::generic();
        assert!(matches!(
            QPackedConv::new(kernel, &g, &weight[1..], &mut words[..]),
            Err(Error::Mismatch { param: Param::Weight, .. })
        ));
        let packed = QPackedConv::new(kernel, &g, &weight, &mut words[..]).unwrap();
        // Another batch and image size: the same weights serve.
        let other_image = Conv2dParams::new(2, 4, 7, 6, 6, 3, 3).validate().unwrap();
        assert!(packed.fits(kernel, &other_image));
        let input = [0u8; 8 * 25];
        let mut out = [5u8; 54];
        let stage = OutputStage::onnx(1.0, PerChannel::Tensor(1.0), 1.0, 0);
        let mut scratch = [0i32; 4096];
        for bad in [
            Conv2dParams::new(1, 4, 5, 5, 5, 3, 3).validate().unwrap(),
            Conv2dParams::new(1, 4, 5, 5, 6, 3, 3).weight_layout(WeightLayout::Krsc).validate().unwrap(),
            Conv2dParams::new(1, 4, 5, 5, 6, 3, 3).groups(2).validate().unwrap(),
        ] {
            assert!(!packed.fits(kernel, &bad));
            let op = QConvPacked {
                input: &input[..bad.input_len()],
                x_zero: 0,
                weight: &packed,
                w_zero: PerChannel::Tensor(0),
                bias: None,
            };
            let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch };
            let err = qconv2d_packed_with(&bad, &op, &stage, &mut out[..bad.output_len()], ws);
            assert!(matches!(err, Err(Error::Invalid { param: Param::Packed })), "{err:?}");
            assert!(out.iter().all(|&y| y == 5));
        }
        // Another kernel format.
        assert!(!packed.fits(&GENERIC_TILES_Q, &g));
    }

    #[test]
    fn packed_gemm_b_matches_the_oracle() {
        const M: usize = 9;
        const N: usize = 19;
        const K: usize = 13;
        let a: [u8; M * K] = bytes(3);
        let b: [i8; K * N] = bytes::<{ K * N }>(4).map(|x| x as i8);
        let zb: [i32; N] = core::array::from_fn(|j| j as i32 % 7 - 3);
        let bias: [i32; N] = core::array::from_fn(|j| (j as i32 - 9) * 113);
        let stage = OutputStage::onnx(0.05, PerChannel::Tensor(0.004), 0.1, 3);
        let mut scratch = [0i32; 4096];
        let mut words = [0i32; 4096];
        for kernel in [QKernel::generic(), QKernel::best(), &GENERIC_TILES_Q] {
            for bv in [MatRef::row_major(&b, K, N).unwrap(), MatRef::col_major(&b, K, N).unwrap()] {
                let plain = QGemm {
                    a: MatRef::row_major(&a, M, K).unwrap(),
                    a_zero: 7,
                    b: bv,
                    b_zero: PerChannel::Channel(&zb),
                    bias: Some(&bias),
                };
                let packed = QPackedGemm::new(kernel, &bv, &mut words[..]).unwrap();
                assert_eq!((packed.k(), packed.n()), (K, N));
                let op = QGemmPacked { a: plain.a, a_zero: 7, b: &packed, b_zero: plain.b_zero, bias: plain.bias };
                let (mut got, mut want) = ([0i8; M * N], [1i8; M * N]);
                let len = crate::quant::driver::qgemm_packed_scratch_len(kernel, M, N, K, 1).unwrap();
                // No region for B's panels: less than a plain call's.
                assert!(len < crate::quant::driver::qgemm_scratch_len(kernel, M, N, K, 1).unwrap());
                let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len] };
                qgemm_packed_with(&op, &stage, MatMut::row_major(&mut got, M, N).unwrap(), ws).unwrap();
                qgemm_reference(&plain, &stage, MatMut::row_major(&mut want, M, N).unwrap()).unwrap();
                assert_eq!(got, want, "{}", kernel.id());
                // A kernel of another format (kernels of the same format share packed weights).
                let other = [QKernel::generic(), &GENERIC_TILES_Q].into_iter().find(|k| !packed.fits(k)).unwrap();
                let ws = QWorkspace { kernel: other, exec: &Sequential, scratch: &mut scratch[..] };
                let err = qgemm_packed_with(&op, &stage, MatMut::row_major(&mut got, M, N).unwrap(), ws);
                assert!(matches!(err, Err(Error::Invalid { param: Param::Packed })), "{err:?}");
            }
        }
    }
}
