//! f32 conv weights packed once and kept by the caller, as an inference runtime keeps a model's
//! layers ([`PackedConv`]): a call with them skips the per-call preparation of the weights on
//! the paths that prepare them. Today that is the direct conv ([`super::direct`]): on row tiles
//! (AVX-512) each call transposes every panel of 32 output channels from the weights
//! (512->512 3x3 @7 on one Zen 4 thread: 23% of the call, 9 MiB of weights), and as pixels on
//! other kernel sets (NHWC from 16 channels a group) the GEMM driver gathers `W^T` in the
//! reduction's order from the weights for every block. Packed, the row tiles read their panels
//! as they are and the pixels' `W^T` is row-major, which the GEMM driver packs by plain copies.
//!
//! Every other path keeps the weights as given (no packed form: a call runs as the
//! plain [`conv2d_with`]): the implicit GEMM and 1x1 convs pack their weights with the image in
//! the GEMM driver's blocks, Winograd transforms them per call (both a small part of those
//! layers), depthwise reads them in place.
//!
//! Weights are packed for a kernel set, blocking and worker count, for a weight shape and the
//! path a conv of that geometry takes there ([`PackedConv::fits`]); using them with another is an
//! error ([`Param::Packed`]), never a wrong result. The results are bit-identical to the plain
//! call's on the same weights: the kernels see the same panels in the same order. The caller owns
//! the storage, any `S` that derefs to `[f32]`: a `Vec<f32>`, or a static buffer on a
//! microcontroller.
#![allow(unsafe_code)]

use super::direct::PackedForm;
use super::fused::{conv2d_scratch_len, conv2d_with};
use super::{check_epilogue, Conv2d};
use crate::arch::Kernel;
use crate::epilogue::{Bias, Epilogue};
use crate::error::{Error, Param, Result};
use crate::gemm::blocking::Blocking;
use crate::gemm::driver::{planned_workers, Workspace};

/// The form of `g`'s packed weights on `kernel`, `blocking` and `workers` workers: `None` where
/// its path reads them as given.
fn form(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> Option<PackedForm> {
    #[cfg(feature = "direct")]
    if super::fused::running_path(g, kernel, blocking, workers, usize::MAX) == super::Conv2dPath::Direct {
        return super::direct::packed_form(g, kernel, blocking, workers);
    }
    let _ = (g, kernel, blocking, workers);
    None
}

/// Floats of storage [`PackedConv::new`] needs for `g` on `kernel`, `blocking` and `workers`.
pub fn conv2d_packed_len(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> Result<usize> {
    match form(g, kernel, blocking, workers) {
        Some(f) => super::direct::packed_len(g, f),
        None => Ok(g.weight_len()),
    }
}

/// Floats of scratch [`conv2d_packed_with`] needs for `g` with `workers` workers: a packed form's
/// path at its fastest (less than [`conv2d_scratch_len`]: no room for the weights), or, where the
/// weights are kept as given, what [`conv2d_with`] needs at its fastest.
pub fn conv2d_packed_scratch_len(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> Result<usize> {
    match form(g, kernel, blocking, workers) {
        Some(_) => super::direct::packed_scratch_len(g, kernel, blocking, workers),
        None => conv2d_scratch_len(g, kernel, blocking, workers),
    }
}

/// A conv's f32 weights packed for one kernel set, blocking, worker count and path. Make one with
/// [`PackedConv::new`], run with [`conv2d_packed_with`].
pub struct PackedConv<S> {
    floats: S,
    /// The geometry packed for (its weight shape and path are what a run must share).
    g: Conv2d,
    form: Option<PackedForm>,
    len: usize,
}

impl<S> core::fmt::Debug for PackedConv<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PackedConv").field("form", &self.form).field("len", &self.len).finish()
    }
}

impl<S: AsRef<[f32]>> PackedConv<S> {
    /// Packs `weight` (`g.weight_len()` floats in `g`'s weight layout) into `floats` (at least
    /// [`conv2d_packed_len`] long) for convs of `g`'s weight shape and path on `kernel`,
    /// `blocking` and `workers` workers.
    pub fn new(
        g: &Conv2d,
        weight: &[f32],
        (kernel, blocking, workers): (&Kernel, &Blocking, usize),
        mut floats: S,
    ) -> Result<Self>
    where
        S: AsMut<[f32]>,
    {
        if weight.len() != g.weight_len() {
            return Err(Error::Mismatch { param: Param::Weight, expected: g.weight_len(), found: weight.len() });
        }
        let form = form(g, kernel, blocking, workers);
        let len = conv2d_packed_len(g, kernel, blocking, workers)?;
        let buf = floats.as_mut();
        if buf.len() < len {
            return Err(Error::TooSmall { param: Param::Packed, required: len, found: buf.len() });
        }
        match form {
            // SAFETY: the form is `packed_form`'s for `g` on this kernel set.
            Some(f) => unsafe { super::direct::pack(g, kernel, f, weight, &mut buf[..len]) },
            None => buf[..len].copy_from_slice(weight),
        }
        Ok(PackedConv { floats, g: *g, form, len })
    }

    /// Whether these weights serve convs of `g` on `kernel`, `blocking` and `workers` workers:
    /// the same weight shape (`c`, `k`, `r`, `s`, groups, weight layout) and the same packed form
    /// (which depends on the path such a conv takes there). Batch, image size, padding and stride
    /// may differ where the form does not.
    pub fn fits(&self, g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> bool {
        let (a, b) = (self.g.params(), g.params());
        let shape = (a.c, a.k, a.r, a.s, a.groups, a.weight_layout) == (b.c, b.k, b.r, b.s, b.groups, b.weight_layout);
        shape && form(g, kernel, blocking, workers) == self.form
    }

    /// Whether the weights are packed (a path that prepares them per call), rather than kept as
    /// given.
    pub fn is_packed(&self) -> bool {
        self.form.is_some()
    }

    /// The storage back.
    pub fn into_floats(self) -> S {
        self.floats
    }

    /// The packed floats; an error if the storage no longer holds them.
    fn data(&self) -> Result<&[f32]> {
        self.floats.as_ref().get(..self.len).ok_or(Error::Invalid { param: Param::Packed })
    }
}

/// [`conv2d_with`] with weights packed ahead: validates the buffers, the epilogue, that the
/// weights fit `g` on `ws` ([`PackedConv::fits`] with the workspace's worker count), and the
/// scratch (at least [`conv2d_packed_scratch_len`] where the weights are packed; as
/// [`conv2d_with`] where they are kept as given), then runs. Bit-identical to [`conv2d_with`] on
/// the weights that were packed; on an error nothing has been written.
pub fn conv2d_packed_with<S: AsRef<[f32]>>(
    g: &Conv2d,
    input: &[f32],
    weight: &PackedConv<S>,
    epi: &Epilogue<'_>,
    output: &mut [f32],
    mut ws: Workspace<'_>,
) -> Result<()> {
    let data = weight.data()?;
    if !weight.is_packed() {
        // Kept as given: the plain call runs them (whatever path it then takes, they are the
        // weights), but they must have been packed for this weight shape and form.
        if !weight.fits(g, ws.kernel, ws.blocking, planned_workers(ws.exec)) {
            return Err(Error::Invalid { param: Param::Packed });
        }
        return conv2d_with(g, input, data, epi, output, ws);
    }
    g.check_buffers(input.len(), g.weight_len(), None, output.len())?;
    check_epilogue(g, epi)?;
    let (kernel, blocking) = (ws.kernel, ws.blocking);
    ws.validated(
        |workers| {
            if !weight.fits(g, kernel, blocking, workers) {
                return Err(Error::Invalid { param: Param::Packed });
            }
            super::direct::packed_scratch_len(g, kernel, blocking, workers)
        },
        |ws| {
            let bias = match epi.bias {
                Bias::Row(b) => Some(b),
                _ => None,
            };
            // SAFETY: buffers, epilogue, blocking and scratch validated; the executor is pinned;
            // the weights are `pack`'s for the form this geometry, kernel set, blocking and worker
            // count take (`fits`), which is a direct conv that runs in this scratch.
            unsafe { super::direct::conv2d_unchecked(g, input, (data, true), epi, bias, output, ws) }
        },
    )
}

#[cfg(test)]
mod tests {
    //! Small enough for Miri: weights packed on each form (row tiles where the CPU has them,
    //! pixels, kept as given) run bit-identical to the plain call and within the oracle's
    //! tolerance; weights packed for another shape or path, or short storage, are errors.
    extern crate std;
    use std::vec;

    use super::*;
    use crate::arch::generic::GENERIC_KERNELS;
    use crate::check::{error, tolerance};
    use crate::conv::reference::conv2d_reference;
    use crate::conv::{Conv2dParams, Padding};
    use crate::epilogue::Activation;
    use crate::gemm::blocking::CacheSizes;
    use crate::gemm::driver::Sequential;
    use crate::layout::{TensorLayout, WeightLayout};

    fn ws<'a>(kernel: &'a Kernel, blocking: &'a Blocking, scratch: &'a mut [f32]) -> Workspace<'a> {
        Workspace { kernel, blocking, exec: &Sequential, scratch }
    }

    fn values(len: usize, seed: usize) -> std::vec::Vec<f32> {
        (0..len).map(|i| ((i * 7 + seed * 3) % 13) as f32 / 8.0 - 0.75).collect()
    }

    #[test]
    fn packed_runs_as_the_plain_call() {
        let base = Conv2dParams::new(1, 16, 5, 6, 3, 3, 3).pad(Padding::uniform(1));
        let kernels: std::vec::Vec<&Kernel> =
            if cfg!(miri) { vec![&GENERIC_KERNELS] } else { vec![&GENERIC_KERNELS, Kernel::best()] };
        let mut forms = [false; 3];
        for kernel in kernels {
            let blocking = Blocking::for_kernel(kernel, CacheSizes::STATIC);
            for p in [
                base,
                Conv2dParams { k: 6, ..base }.stride(2, 1).groups(2),
                base.layout(TensorLayout::Nhwc),
                base.layout(TensorLayout::Nhwc).weight_layout(WeightLayout::Krsc).stride(2, 2),
                Conv2dParams::new(1, 4, 3, 3, 6, 1, 1),
            ] {
                let g = p.validate().unwrap();
                let (x, w) = (values(g.input_len(), 1), values(g.weight_len(), 2));
                let bias = values(p.k, 3);
                let epi = Epilogue::activation(Activation::LeakyRelu { slope: 0.1 }).with_bias(&bias);
                let len = conv2d_packed_len(&g, kernel, &blocking, 1).unwrap();
                let packed = PackedConv::new(&g, &w, (kernel, &blocking, 1), vec![f32::NAN; len]).unwrap();
                forms[match packed.form {
                    Some(PackedForm::Rows { .. }) => 0,
                    Some(PackedForm::Pixels { .. }) => 1,
                    None => 2,
                }] = true;
                let scratch_len = conv2d_packed_scratch_len(&g, kernel, &blocking, 1).unwrap();
                let plain_len = conv2d_scratch_len(&g, kernel, &blocking, 1).unwrap();
                let mut scratch = vec![0.0f32; scratch_len.max(plain_len)];
                let (mut got, mut plain) = (vec![f32::NAN; g.output_len()], vec![f32::NAN; g.output_len()]);
                conv2d_packed_with(&g, &x, &packed, &epi, &mut got, ws(kernel, &blocking, &mut scratch[..scratch_len]))
                    .unwrap();
                conv2d_with(&g, &x, &w, &epi, &mut plain, ws(kernel, &blocking, &mut scratch[..plain_len])).unwrap();
                assert_eq!(got, plain, "{p:?} on {}", kernel.gemm.id);
                let mut want = vec![0.0f32; g.output_len()];
                conv2d_reference(&g, &x, &w, &epi, &mut want).unwrap();
                for (a, b) in got.iter().zip(&want) {
                    assert!(error(*a, f64::from(*b)) <= tolerance(g.gemm_dims().2), "{p:?}: {a} vs {b}");
                }
                // Too little scratch, or weights of another shape: errors, nothing written.
                let mut out = vec![f32::NAN; g.output_len()];
                if packed.is_packed() && scratch_len > 0 {
                    let short = ws(kernel, &blocking, &mut scratch[..scratch_len - 1]);
                    assert!(conv2d_packed_with(&g, &x, &packed, &epi, &mut out, short).is_err());
                }
                let other = Conv2dParams { k: p.k + p.groups, ..p }.validate().unwrap();
                let mut out2 = vec![f32::NAN; other.output_len()];
                let ws2 = ws(kernel, &blocking, &mut scratch[..]);
                assert_eq!(
                    conv2d_packed_with(&other, &values(other.input_len(), 1), &packed, &Epilogue::NONE, &mut out2, ws2),
                    Err(Error::Invalid { param: Param::Packed })
                );
                assert!(out.iter().chain(&out2).all(|v| v.is_nan()), "nothing written on an error");
                assert!(matches!(
                    PackedConv::new(&g, &w, (kernel, &blocking, 1), vec![0.0; len - 1]),
                    Err(Error::TooSmall { param: Param::Packed, .. })
                ));
            }
        }
        // Row tiles exist on AVX-512 only.
        let rows = !cfg!(miri) && Kernel::best().gemm.rows.is_some();
        assert_eq!(forms, [rows, true, true], "the forms run: row tiles, pixels, as given");
    }
}
