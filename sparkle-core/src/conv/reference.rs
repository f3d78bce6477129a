//! The conv2d oracle: a direct seven-deep loop in safe Rust over the validated geometry, for
//! every parameter (stride, asymmetric padding, dilation, groups, both layouts).

use crate::accum::Accum;
use crate::conv::{check_epilogue, Conv2d};
use crate::epilogue::Epilogue;
use crate::error::{Error, Param, Result};

fn conv2d_direct<T: Accum>(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue<'_>,
    output: &mut [T],
) -> Result<()> {
    let p = g.params();
    g.check_buffers(input.len(), weight.len(), None, output.len())?;
    check_epilogue(g, epi)?;
    for n in 0..p.n {
        for k in 0..p.k {
            for oy in 0..g.ho() {
                for ox in 0..g.wo() {
                    output[g.output_index(n, k, oy, ox)] = element(g, input, weight, epi, (n, k, oy, ox));
                }
            }
        }
    }
    Ok(())
}

/// Output element `(n, k, oy, ox)` straight from the definition. The buffers and epilogue must
/// have been validated against `g`, and the index must be inside the output.
#[inline]
fn element<T: Accum>(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue<'_>,
    (n, k, oy, ox): (usize, usize, usize, usize),
) -> T {
    let p = g.params();
    let (cg, kg) = (g.cg(), g.kg());
    let group = k / kg;
    let mut acc = T::ZERO;
    for ci in 0..cg {
        for r in 0..p.r {
            let Some(iy) = g.input_y(oy, r) else { continue };
            for s in 0..p.s {
                let Some(ix) = g.input_x(ox, s) else { continue };
                let x = input[g.input_index(n, group * cg + ci, iy, ix)];
                let wt = weight[g.weight_index(k, ci, r, s)];
                acc = acc + T::from_f32(x) * T::from_f32(wt);
            }
        }
    }
    T::epilogue(epi, k, 0, acc)
}

/// Direct conv2d accumulating in f32: `output = act(conv(input, weight) + bias)`.
/// Buffers must match the geometry's lengths exactly; the bias, if any, has `k` values.
pub fn conv2d_reference(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue<'_>,
    output: &mut [f32],
) -> Result<()> {
    conv2d_direct(g, input, weight, epi, output)
}

/// Ground truth: the same conv accumulated in f64.
pub fn conv2d_reference_f64(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue<'_>,
    output: &mut [f64],
) -> Result<()> {
    conv2d_direct(g, input, weight, epi, output)
}

/// One output element `(n, k, oy, ox)` of [`conv2d_reference_f64`], for checking sampled points
/// of large outputs (the fuzz targets do) without computing the whole oracle.
pub fn conv2d_reference_f64_at(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue<'_>,
    at: (usize, usize, usize, usize),
) -> Result<f64> {
    let p = g.params();
    g.check_buffers(input.len(), weight.len(), None, g.output_len())?;
    check_epilogue(g, epi)?;
    let bounds =
        [(at.0, p.n, Param::N), (at.1, p.k, Param::K), (at.2, g.ho(), Param::OutH), (at.3, g.wo(), Param::OutW)];
    for (v, end, param) in bounds {
        if v >= end {
            return Err(Error::TooSmall { param, required: v + 1, found: end });
        }
    }
    Ok(element(g, input, weight, epi, at))
}
