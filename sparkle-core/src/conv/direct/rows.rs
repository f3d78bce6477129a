//! The direct conv as row tiles: `C^T (pixels x kg) = X^T * W^T`, each tile a run of output
//! pixels of one output row by one panel of output channels ([`RowsKernel`]), over an image
//! staged as channel planes or as pixels (NHWC from 16 channels a group).
//!
//! The parent's channel-plane form computes `C (kg x pixels)` over the virtual pixels of its
//! padded rows, `nr` pixels a tile: it computes the `wp - wo` pixels past each output row and
//! rounds the rest up to whole tiles (256->256 3x3 @14: 224 pixels computed for 196, 512->512
//! 3x3 @7: 64 for 49). Here the pixels are the tile's rows, broadcast one at a time, and the
//! output channels its vectors: a row of `wo` pixels is cut into `ceil(wo / mr)` tiles of nearly
//! equal height, so nothing past an output row is computed, and only output channels past a
//! multiple of `nr` are rounded up.
//!
//! The image is staged by the parent (`stage`) and read in place. The weights are packed a
//! panel of `nr` output channels at a time (the reduction channel-major, as the planes are
//! read), by the worker that reaches it, into its own buffer. The tiles write the output
//! directly over the whole reduction, the bias and activation fused: no product buffer and no
//! copy-out. One Zen 4 thread, NCHW, GFLOPS against the parent's form (medians of three to five
//! alternating runs): 128->128 3x3 @28 99.5 -> 106.8, 256->256 @14 96.3 -> 104.9, 512->512 @7
//! 80.9 -> 84.7 (its 9 MiB of weights packed per call, about a fifth of its time, cost most of
//! what the computed pixels save), conv1 89.2 -> 92.6; two threads 1.08-1.21x (BENCHMARKS.md,
//! session 41).
//!
//! Over pixels (session 47) the reduction runs tap by tap, and within a tap channel by channel
//! (the panel in KRSC's order), so that a tile's pixel pointers stay fixed through a tap, at
//! most 12 pixels a tile (`RowsKernel::pixels_mr`: with 14, or channel by channel with the taps
//! inside, LLVM spilled the accumulators and it ran at 0.6x). Against the parent's pixels form
//! (a GEMM over the padded rows' virtual pixels, 12 a tile, in reduction blocks through a
//! product buffer), one Zen 4 thread, NHWC with KRSC weights, GFLOPS: 64->64 3x3 @56 101 -> 114,
//! 128->128 @28 103 -> 115, 256->256 @14 95 -> 112, 512->512 @7 71 -> 91.
#![allow(unsafe_code)]

use crate::arch::{Kernel, MicroArgs, RowsKernel, TileBias};
use crate::conv::Conv2d;
use crate::epilogue::Epilogue;
use crate::error::{mul, Param, Result};
use crate::gemm::driver::{Executor, Shared};
use crate::layout::{TensorLayout, WeightLayout};

use super::Shape;

/// The row tiles a direct conv runs on with `kernel`: those of a kernel set that has them,
/// for channel planes and pixels alike.
pub(super) fn takes(kernel: &Kernel) -> Option<RowsKernel> {
    kernel.gemm.rows
}

/// Floats of the packed weights: a panel of `gemm_k` rows of `nr` per worker.
pub(super) fn packed_len(g: &Conv2d, kernel: &Kernel, workers: usize) -> Result<usize> {
    let nr = kernel.gemm.rows.map_or(0, |r| r.nr);
    let panel = mul(g.gemm_dims().2, nr, Param::Scratch)?;
    mul(panel, workers.max(1), Param::Scratch)
}

/// Packs group `grp`'s panel `j` into `dst`: reduction row `q` of output channel `j * nr + l`
/// at `dst[q * nr + l]`, zero past the group's `kg`. Row `q` is channel `q / taps`, tap
/// `q % taps` as channel planes are read (KCRS's order), or with `pixels` tap `q / cg`, channel
/// `q % cg` (KRSC's).
///
/// # Safety
/// `dst` valid for `gemm_k * nr` floats and this call's alone.
pub(super) unsafe fn pack_panel(
    g: &Conv2d,
    rk: &RowsKernel,
    (weight, pixels): (&[f32], bool),
    grp: usize,
    j: usize,
    dst: *mut f32,
) {
    let p = g.params();
    let nr = rk.nr;
    let (kg, gk, taps, cg) = (g.kg(), g.gemm_dims().2, p.r * p.s, g.cg());
    let (o0, w0) = (j * nr, g.weight_group_offset(grp));
    let n = nr.min(kg - o0);
    let order = if pixels { WeightLayout::Krsc } else { WeightLayout::Kcrs };
    if p.weight_layout == order {
        // The weights are in the reduction's order: the panel is the transpose of `n` rows of a
        // row-major `kg x gemm_k` matrix.
        let src = &weight[w0 + o0 * gk..w0 + (o0 + n) * gk];
        // SAFETY: `n` rows of `gk` floats `gk` apart in `src`; `gk * nr` floats at dst; the
        // kernel set's ISA is this CPU's (the set is the proof).
        unsafe { (rk.pack)(src.as_ptr(), gk, n, gk, dst) };
        return;
    }
    for q in 0..gk {
        let (c, t) = if pixels { (q % cg, q / cg) } else { (q / taps, q % taps) };
        let at = w0 + o0 * gk + g.reduction_index(c, t / p.s, t % p.s);
        for l in 0..nr {
            let v = if l < n { weight[at + l * gk] } else { 0.0 };
            // SAFETY: q * nr + l < gk * nr.
            unsafe { *dst.add(q * nr + l) = v };
        }
    }
}

/// The tiles of one chunk of `count` pairs from pair `first`, whose images are staged at
/// `images` (`shape.image` floats apart), into the output. With `packed`, `weight` holds every
/// panel packed ahead (`PackedForm::Rows`: group `grp`'s panel `j` is panel `grp * ceil(kg / nr)
/// + j`) and `panels` is not used. The units (panel, pair, output row)
/// are split over `workers` workers in ranges; a worker packs a panel into its own slice of
/// `panels` when it reaches it, then runs its rows of every pair of the chunk while the panel is
/// in cache (packing every panel first, then reading it back, cost 18% of 256->256 3x3 @14).
/// With groups, consecutive pairs are of different groups and each repacks its panel: a
/// group's panel is small there (its `kg` channels), not measured.
///
/// # Safety
/// As the parent's `conv2d_unchecked`; `rk` is the CPU's kernel set's; the images staged and
/// only read; `panels` valid for [`packed_len`] floats for `workers` and not otherwise used
/// during the call; `exec` runs at most `workers` workers.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tiles(
    g: &Conv2d,
    rk: &RowsKernel,
    shape: &Shape,
    (images, first, count): (*const f32, usize, usize),
    (weight, packed): (&[f32], bool),
    (panels, workers): (*mut f32, usize),
    epi: &Epilogue<'_>,
    bias: Option<&[f32]>,
    out: *mut f32,
    exec: &dyn Executor,
) {
    let p = g.params();
    let nr = rk.nr;
    let (kg, gk, ho, wo) = (g.kg(), g.gemm_dims().2, g.ho(), g.wo());
    let per_group = kg.div_ceil(nr);
    let taps = shape.red.taps;
    // Channel planes: pixel i of a tile at `a + i`, channel c's plane `shape.stride` on, the taps
    // shifted by pixels. Pixels (NHWC): pixel i `shape.stride` floats on, channel c at `a + c`,
    // the taps' shifts in floats.
    let (px, rs_a, cs_a, run) =
        if shape.planes { (1, 1, shape.stride, rk.run) } else { (shape.stride, shape.stride, 1, rk.pixels) };
    let mr = if shape.planes { rk.mr } else { rk.pixels_mr };
    let mut shifts = shape.red.shifts();
    for shift in &mut shifts {
        *shift *= px;
    }
    // A row of `wo` pixels in `row_tiles` tiles of nearly equal height.
    let row_tiles = wo.div_ceil(mr);
    let (rs_c, cs_c) = match p.layout {
        TensorLayout::Nchw => (1, ho * wo),
        TensorLayout::Nhwc => (p.k, 1),
    };
    let (images, panels, out) = (Shared(images.cast_mut()), Shared(panels), Shared(out));
    let units = per_group * count * ho;
    exec.run(&|w| {
        if w >= workers {
            return;
        }
        let mut args = MicroArgs {
            k: gk,
            a: core::ptr::null(),
            rs_a,
            cs_a,
            b: core::ptr::null(),
            rs_b: nr,
            taps: shifts.as_ptr(),
            ntaps: taps,
            c: core::ptr::null_mut(),
            rs_c,
            cs_c,
            m: 0,
            n: 0,
            alpha: 1.0,
            beta: 0.0,
            bias: TileBias::None,
            act: epi.activation,
        };
        // Worker w's panel inside `panels` (`packed_len`), unless the weights come packed.
        let panel = panels.ptr().wrapping_add(w * gk * nr);
        let mut current = None;
        for u in units * w / workers..units * (w + 1) / workers {
            let (j, i, y) = (u / (count * ho), u / ho % count, u % ho);
            let pair = first + i;
            let (img, grp) = (pair / p.groups, pair % p.groups);
            if packed {
                // The panel packed ahead.
                args.b = weight[(grp * per_group + j) * gk * nr..][..gk * nr].as_ptr();
            } else {
                if current != Some((grp, j)) {
                    // SAFETY: this worker's panel.
                    unsafe { pack_panel(g, rk, (weight, !shape.planes), grp, j, panel) };
                    current = Some((grp, j));
                }
                args.b = panel;
            }
            let o0 = j * nr;
            args.n = nr.min(kg - o0);
            args.bias = match bias {
                // SAFETY: channels grp*kg + o0.. (args.n of them) of the validated bias.
                Some(b) => TileBias::Col(unsafe { b.as_ptr().add(grp * kg + o0) }),
                None => TileBias::None,
            };
            for tile in 0..row_tiles {
                let (x0, x1) = (tile * wo / row_tiles, (tile + 1) * wo / row_tiles);
                args.m = x1 - x0;
                // SAFETY: pair i's image in the chunk; virtual pixel y*wp + x0.. of its planes,
                // whose taps' reads the staged image holds (`Shape::new`'s guard).
                args.a = unsafe { images.ptr().add(i * shape.image + (y * shape.wp + x0) * px) };
                // SAFETY: output pixels (y, x0..x1) of channels grp*kg + o0.. (args.n): the
                // validated output's, this unit's alone.
                args.c = unsafe { out.ptr().add(g.output_index(img, grp * kg + o0, y, x0)) };
                // SAFETY: the kernel set's row tiles (its ISA is this CPU's: the set is the
                // proof), m <= mr, n <= nr, A and B as `rows_acc` reads them.
                unsafe { run(&args) };
            }
        }
    });
}
