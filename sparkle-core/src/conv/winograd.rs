//! Winograd F(2x2, 3x3) conv2d on the CPU (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016): for 3x3, stride 1, undilated, ungrouped convolutions, each 2x2 output
//! tile is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` over a 4x4 input tile `d`. Summed over input channels,
//! the elementwise products become 16 GEMMs `M_ξ (k x tiles) = U_ξ (k x c) · V_ξ (c x tiles)`,
//! which run through the GEMM driver: 4 multiplies per output instead of 9.
//!
//! It runs only where its scratch was given and the input and weights are finite (otherwise the
//! implicit GEMM runs: Winograd would turn one infinity into `inf - inf = NaN`), see
//! `fused::conv2d_with`.
//!
//! Scratch (caller-provided, [`scratch_len`]) holds the transformed weights `U` as `[k][ξ][c]`,
//! the transformed input `V` as `[c][ξ][t]` and the products `M` as `[k][ξ][t]`, so each worker
//! of a transform writes one contiguous range (of output channels, input channels, output
//! channels), and `U_ξ`, `V_ξ`, `M_ξ` are strided matrix views for the GEMM driver.
//!
//! Accuracy: `Bᵀ` and `Aᵀ` only add and subtract, and `G` halves (in f64, rounded once to f32),
//! so the error is that of the implicit GEMM: measured against the f64 oracle at 8 ResNet-like
//! shapes and 3 seeds (c = 8..512, 28x28 and 56x56), the largest error was 0.05 of the CPU f32
//! bound of the tolerance table (implicit GEMM: 0.07) on inputs and weights in [-1, 1], and 1.75
//! of it (implicit GEMM: 2.97) on inputs in [0, 100] with signed weights (a post-ReLU activation,
//! whose cancellation neither path's bound covers). F(4x4, 3x3), 2.25 multiplies per output, was built and measured
//! too and left out: on the post-ReLU inputs its error reached 29.5 of the bound (its transforms
//! multiply by up to 8 and mix 6 terms).
#![allow(unsafe_code)]
// Without the `winograd` feature nothing calls the transforms, and they are left out of the build.
#![cfg_attr(not(feature = "winograd"), allow(dead_code))]

use core::ops::Range;

use crate::arch::Kernel;
use crate::conv::Conv2d;
use crate::epilogue::{Activation, Bias, Epilogue};
use crate::error::{mul, Error, Param, Result};
use crate::gemm::blocking::Blocking;
use crate::gemm::driver::{gemm_batch, operands_scratch_len, planned_workers, Batch, JobFn, OutPtr, Shared, Workspace};
use crate::view::MatRef;

/// Output tile edge.
const TILE: usize = 2;
/// Input tile edge: `TILE + 3 - 1`.
const ALPHA: usize = 4;
/// Transformed elements per tile, one GEMM each.
const XI: usize = ALPHA * ALPHA;
/// Tiles transformed together, one per SIMD lane.
const L: usize = 8;
/// Input columns a group of `L` tiles reads.
const SEGMENT: usize = TILE * (L - 1) + ALPHA;

/// The smallest number of 2x2 output tiles (over the batch) for which Winograd runs: below it the
/// weight transform (`16·k·c` values per call) and the transforms' passes outweigh what the GEMMs
/// save. Measured against the implicit GEMM (`sparkle bench conv2d`, BENCHMARKS.md, a 2-vCPU
/// Xeon): 64->64 3x3@56 (784 tiles) 1.2-1.6x faster; 128->128 @28 (196) 0.75-1.1x; 256->256 @14
/// (49) and 512->512 @7 (16) 0.3-0.7x; 512->512 @7 at batch 8 (128) 1.2-1.3x.
pub const MIN_TILES: usize = 256;

/// The fewest input channels for which Winograd runs: its 16 GEMMs reduce over the channels, and
/// 3 (an RGB image's first 3x3 layer, 3->32 @224) ran at 12-13 GFLOPS on one Zen 4 thread, a
/// third of the unfused im2col's speed; the direct conv runs it at 73-75. (8 channels, 8->32
/// @112: Winograd 38, direct 95; left at Winograd, where the tests of its small cases live.)
pub const MIN_CHANNELS: usize = 4;

/// The most floats of transformed weights, input and products (`16·(k·c + c·t + k·t)`) the
/// Winograd path takes (64 MiB): past it (64->64 3x3@56 from batch 11) the implicit GEMM, whose
/// scratch does not grow with the batch, runs instead.
pub const MAX_FLOATS: usize = 1 << 24;

/// Whether [`choose_path`](super::choose_path) takes Winograd for `g`: this build has the
/// `winograd` feature (a default one), and `g` [`applies`], has at least [`MIN_CHANNELS`] input
/// channels and [`MIN_TILES`] tiles, and its buffers fit [`MAX_FLOATS`].
pub fn chosen(g: &Conv2d) -> bool {
    let fits =
        || buffers(g).ok().and_then(|[u, v, m]| u.checked_add(v)?.checked_add(m)).is_some_and(|n| n <= MAX_FLOATS);
    cfg!(feature = "winograd") && applies(g) && g.params().c >= MIN_CHANNELS && tiles(g) >= MIN_TILES && fits()
}

/// Whether `g` can run as Winograd F(2x2, 3x3): 3x3, stride 1, dilation 1, one group.
pub fn applies(g: &Conv2d) -> bool {
    let p = g.params();
    p.r == 3 && p.s == 3 && p.stride == [1, 1] && p.dilation == [1, 1] && p.groups == 1
}

/// Output tiles of `g`: `n * ceil(ho/2) * ceil(wo/2)`.
pub fn tiles(g: &Conv2d) -> usize {
    let (ty, tx) = tile_grid(g);
    g.params().n.saturating_mul(ty).saturating_mul(tx)
}

fn tile_grid(g: &Conv2d) -> (usize, usize) {
    (g.ho().div_ceil(TILE), g.wo().div_ceil(TILE))
}

/// The sizes of `U`, `V` and `M` in floats.
fn buffers(g: &Conv2d) -> Result<[usize; 3]> {
    let p = g.params();
    let t = tiles(g);
    Ok([
        mul(mul(p.k, XI, Param::Scratch)?, p.c, Param::Scratch)?,
        mul(mul(p.c, XI, Param::Scratch)?, t, Param::Scratch)?,
        mul(mul(p.k, XI, Param::Scratch)?, t, Param::Scratch)?,
    ])
}

/// Floats of scratch the Winograd path needs for `g` with `workers` workers: `U`, `V`, `M`, the
/// GEMM driver's packing and each worker's padded input rows.
pub fn scratch_len(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> Result<usize> {
    let p = g.params();
    let [u, v, m] = buffers(g)?;
    let gemm = operands_scratch_len(kernel, blocking, p.k, tiles(g), p.c, workers)?;
    let rows = mul(rows_len(g)?, workers.max(1), Param::Scratch)?;
    [u, v, m, gemm, rows]
        .into_iter()
        .try_fold(0usize, |a, b| a.checked_add(b))
        .ok_or(Error::Overflow { param: Param::Scratch })
}

/// Winograd's 16 products `M_ξ (k x t) = U_ξ (k x c) · V_ξ (c x t)` as one GEMM batch: `U`
/// as `[k][ξ][c]`, `V` as `[c][ξ][t]`, `M` as `[k][ξ][t]`.
struct Products<'a> {
    u: &'a [f32],
    v: &'a [f32],
    m: Shared<f32>,
    k: usize,
    c: usize,
    t: usize,
}

// SAFETY: every product is k x t x c; M_ξ are disjoint strided views of M (see `gemm_batch`'s
// caller), and no job has a bias.
unsafe impl Batch for Products<'_> {
    fn jobs(&self) -> usize {
        XI
    }
    fn with_job(&self, xi: usize, f: &mut JobFn<'_>) {
        let (k, c, t) = (self.k, self.c, self.t);
        // Cannot fail: the views lie inside U and V by construction.
        let Ok(a) = MatRef::new(&self.u[xi * c..], k, c, XI * c, 1) else { return };
        let Ok(b) = MatRef::new(&self.v[xi * t..], c, t, XI * t, 1) else { return };
        // SAFETY: offset xi * t < XI * t is inside M.
        let out = OutPtr { ptr: unsafe { self.m.ptr().add(xi * t) }, rs: XI * t, cs: 1 };
        f(&a, &b, out, Bias::None);
    }
}

/// Values of `L` tiles, one per lane.
type Lanes = [f32; L];

/// `out = Bᵀ z` for a column `z` of 4, lane by lane.
#[inline(always)]
fn bt(z: [&Lanes; ALPHA], out: &mut [Lanes; ALPHA]) {
    for l in 0..L {
        let [z0, z1, z2, z3] = [z[0][l], z[1][l], z[2][l], z[3][l]];
        out[0][l] = z0 - z2;
        out[1][l] = z1 + z2;
        out[2][l] = z2 - z1;
        out[3][l] = z1 - z3;
    }
}

/// `out = Aᵀ z` for a column `z` of 4, lane by lane.
#[inline(always)]
fn at(z: [&Lanes; ALPHA], out: &mut [Lanes; TILE]) {
    for l in 0..L {
        let [z0, z1, z2, z3] = [z[0][l], z[1][l], z[2][l], z[3][l]];
        out[0][l] = z0 + z1 + z2;
        out[1][l] = z1 - z2 - z3;
    }
}

/// Copies the first `min(dst.len(), src.len())` (at most `L`) lanes: whole groups as one
/// fixed-size copy (a variable-length one is a `memmove` call per group).
#[inline(always)]
fn copy_lanes(dst: &mut [f32], src: &[f32]) {
    match (<&mut Lanes>::try_from(&mut *dst), <&Lanes>::try_from(src)) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => {
            let n = dst.len().min(src.len());
            for (d, s) in dst[..n].iter_mut().zip(&src[..n]) {
                *d = *s;
            }
        }
    }
}

/// `row = act(row + b)`, the activation's branch taken once per row rather than per element.
#[inline(always)]
fn finish(row: &mut [Lanes; TILE], b: f32, act: Activation) {
    let xs = row.as_flattened_mut();
    match act {
        Activation::None => xs.iter_mut().for_each(|x| *x += b),
        Activation::Relu => xs.iter_mut().for_each(|x| *x = Activation::Relu.apply(*x + b)),
        act => xs.iter_mut().for_each(|x| *x = act.apply(*x + b)),
    }
}

/// Column `j` of an `ALPHA`-row array of lanes.
#[inline(always)]
fn column<const R: usize>(a: &[[Lanes; R]; ALPHA], j: usize) -> [&Lanes; ALPHA] {
    core::array::from_fn(|i| &a[i][j])
}

/// `G g` for a column `g` of 3, in f64 (exact: halves).
fn gt(g: [f64; 3]) -> [f64; ALPHA] {
    let [g0, g1, g2] = g;
    [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2]
}

/// `U[k][ξ][c] = (G g_kc Gᵀ)[ξ]` for the output channels `ks`; `u` holds exactly their rows.
fn transform_weights(g: &Conv2d, weight: &[f32], ks: Range<usize>, u: &mut [f32]) {
    let c = g.params().c;
    for (row, k) in u.chunks_exact_mut(XI * c).zip(ks) {
        for ci in 0..c {
            let w = |r: usize, s: usize| f64::from(weight[g.weight_index(k, ci, r, s)]);
            // G g: 4 x 3, then (G g) Gᵀ: 4 x 4.
            let cols =
                [gt([w(0, 0), w(1, 0), w(2, 0)]), gt([w(0, 1), w(1, 1), w(2, 1)]), gt([w(0, 2), w(1, 2), w(2, 2)])];
            for i in 0..ALPHA {
                let v = gt([cols[0][i], cols[1][i], cols[2][i]]);
                for (j, x) in v.into_iter().enumerate() {
                    row[(i * ALPHA + j) * c + ci] = x as f32;
                }
            }
        }
    }
}

/// Offsets of a tensor's unit steps: `[n, c, y, x]`.
fn unit(index: impl Fn(usize, usize, usize, usize) -> usize) -> [usize; 4] {
    [index(1, 0, 0, 0), index(0, 1, 0, 0), index(0, 0, 1, 0), index(0, 0, 0, 1)]
}

/// Floats of one worker's padded input rows: 4 rows of [`padded_width`].
fn rows_len(g: &Conv2d) -> Result<usize> {
    mul(padded_width(g)?, ALPHA, Param::Scratch)
}

/// Columns of a padded input row: every group of `L` tiles reads [`SEGMENT`] of them.
fn padded_width(g: &Conv2d) -> Result<usize> {
    let groups = tile_grid(g).1.div_ceil(L);
    mul(groups, TILE * L, Param::Scratch)?.checked_add(ALPHA - TILE).ok_or(Error::Overflow { param: Param::Scratch })
}

/// `V[c][ξ][t] = (Bᵀ d_ct B)[ξ]` for the input channels `cs`; `v` holds exactly their rows, and
/// `rows` (at least [`rows_len`] floats) holds the four input rows of a row of tiles, zero-padded,
/// so the groups of tiles read them without a bounds check.
#[inline(always)]
fn transform_input(g: &Conv2d, input: &[f32], cs: Range<usize>, v: &mut [f32], rows: &mut [f32]) {
    let p = g.params();
    let (tiles_y, tiles_x) = tile_grid(g);
    let t_all = tiles(g);
    let [sn, sc, sy, sx] = unit(|n, c, y, x| g.input_index(n, c, y, x));
    // Cannot fail: the scratch was sized with the same checked arithmetic.
    let Ok(width) = padded_width(g) else { return };
    let (left, cols) = (p.pad.left, p.w.min(width - p.pad.left.min(width)));
    // d[i][j]: the tiles' input rows i, columns j; bd[j][i] = (Bᵀ d)[i][j]; row = a row of (Bᵀ d) B.
    let mut d = [[[0.0f32; L]; ALPHA]; ALPHA];
    let mut bd = [[[0.0f32; L]; ALPHA]; ALPHA];
    let mut row = [[0.0f32; L]; ALPHA];
    rows[..ALPHA * width].fill(0.0);
    for (vc, c) in v.chunks_exact_mut(XI * t_all).zip(cs) {
        for img in 0..p.n {
            let base = img * sn + c * sc;
            for ty in 0..tiles_y {
                // The four input rows of this row of tiles, zero outside the input.
                for (i, r) in rows.chunks_exact_mut(width).take(ALPHA).enumerate() {
                    let y = (ty * TILE + i).wrapping_sub(p.pad.top);
                    let dst = &mut r[left.min(width)..left.min(width) + cols];
                    if y >= p.h {
                        dst.fill(0.0);
                    } else if sx == 1 {
                        dst.copy_from_slice(&input[base + y * sy..][..cols]);
                    } else {
                        for (x, e) in dst.iter_mut().enumerate() {
                            *e = input[base + y * sy + x * sx];
                        }
                    }
                }
                for tx0 in (0..tiles_x).step_by(L) {
                    let lanes = L.min(tiles_x - tx0);
                    for (di, r) in d.iter_mut().zip(rows.chunks_exact(width)) {
                        let seg: &[f32; SEGMENT] = match r[tx0 * TILE..][..SEGMENT].try_into() {
                            Ok(seg) => seg,
                            Err(_) => return,
                        };
                        for (j, dij) in di.iter_mut().enumerate() {
                            for (l, x) in dij.iter_mut().enumerate() {
                                *x = seg[TILE * l + j];
                            }
                        }
                    }
                    for (j, bdj) in bd.iter_mut().enumerate() {
                        bt(column(&d, j), bdj);
                    }
                    let t0 = (img * tiles_y + ty) * tiles_x + tx0;
                    let whole = if t0 + L <= t_all { L } else { 0 };
                    for i in 0..ALPHA {
                        bt(column(&bd, i), &mut row);
                        for (j, rj) in row.iter().enumerate() {
                            // Whole groups stay inside plane ξ while t0 + L <= t_all: lanes past
                            // this row's tiles land on the next row's, which this loop writes later.
                            let off = (i * ALPHA + j) * t_all + t0;
                            copy_lanes(&mut vc[off..off + lanes.max(whole)], rj);
                        }
                    }
                }
            }
        }
    }
}

/// Where and how the output transform writes: the geometry, the epilogue and the output.
#[derive(Clone, Copy)]
struct Output<'a> {
    g: &'a Conv2d,
    bias: Option<&'a [f32]>,
    act: Activation,
    out: *mut f32,
}

/// `output[k] = act(Aᵀ M_kt A + bias[k])` for the output channels `ks`, from their rows `m` of M.
///
/// # Safety
/// `o.out` points to the validated output of `o.g`, and no one else writes channels `ks` of it
/// during the call.
#[inline(always)]
unsafe fn transform_output(o: Output<'_>, m: &[f32], ks: Range<usize>) {
    let Output { g, bias, act, out } = o;
    let p = g.params();
    let (tiles_y, tiles_x) = tile_grid(g);
    let t_all = tiles(g);
    let (ho, wo) = (g.ho(), g.wo());
    let [sn, sk, sy, sx] = unit(|n, k, y, x| g.output_index(n, k, y, x));
    // z[i][j]: the tiles' products; az[j][i] = (Aᵀ z)[i][j]; row = a row of (Aᵀ z) A.
    let mut z = [[[0.0f32; L]; ALPHA]; ALPHA];
    let mut az = [[[0.0f32; L]; TILE]; ALPHA];
    let mut row = [[0.0f32; L]; TILE];
    for (mk, k) in m.chunks_exact(XI * t_all).zip(ks) {
        let b = bias.map_or(0.0, |b| b[k]);
        for img in 0..p.n {
            for ty in 0..tiles_y {
                for tx0 in (0..tiles_x).step_by(L) {
                    let lanes = L.min(tiles_x - tx0);
                    let t0 = (img * tiles_y + ty) * tiles_x + tx0;
                    let whole = if t0 + L <= t_all { L } else { 0 };
                    for (i, zi) in z.iter_mut().enumerate() {
                        for (j, zij) in zi.iter_mut().enumerate() {
                            // Lanes past this row's tiles read the next row's: unused.
                            let off = (i * ALPHA + j) * t_all + t0;
                            copy_lanes(zij, &mk[off..off + lanes.max(whole)]);
                        }
                    }
                    for (j, azj) in az.iter_mut().enumerate() {
                        at(column(&z, j), azj);
                    }
                    let x0 = tx0 * TILE;
                    for i in 0..TILE.min(ho - ty * TILE) {
                        at(column(&az, i), &mut row);
                        finish(&mut row, b, act);
                        // Tile l's column j is output column x0 + 2l + j.
                        let o = img * sn + k * sk + (ty * TILE + i) * sy + x0 * sx;
                        let cols = (TILE * lanes).min(wo - x0);
                        if cols == TILE * L {
                            for (j, rj) in row.iter().enumerate() {
                                for (l, v) in rj.iter().enumerate() {
                                    // SAFETY: columns x0 .. x0 + 2L of row y < ho are inside the
                                    // output, and channel k is this call's alone.
                                    unsafe { *out.add(o + (TILE * l + j) * sx) = *v };
                                }
                            }
                        } else {
                            for x in 0..cols {
                                // SAFETY: (img, k, y, x0 + x) is inside the output (y < ho, x0 + x
                                // < wo), and channel k is this call's alone.
                                unsafe { *out.add(o + x * sx) = row[x % TILE][x / TILE] };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The transforms compiled for AVX2 and FMA: the same source, lanes of 8 tiles in one ymm
/// register instead of two xmm ones.
#[cfg(target_arch = "x86_64")]
mod wide {
    use super::*;

    /// [`transform_input`] with AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU runs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn input(g: &Conv2d, input: &[f32], cs: Range<usize>, v: &mut [f32], rows: &mut [f32]) {
        transform_input(g, input, cs, v, rows)
    }

    /// [`transform_output`] with AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU runs AVX2 and FMA, and [`transform_output`]'s contract holds.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn output(o: Output<'_>, m: &[f32], ks: Range<usize>) {
        // SAFETY: forwarded contract.
        unsafe { transform_output(o, m, ks) }
    }
}

/// Whether this CPU runs AVX2 and FMA, so the [`wide`] copy may run: the AVX2 and AVX-512
/// kernels prove it (AVX-512F is detected only together with AVX2, FMA and F16C).
fn wide(kernel: &Kernel) -> bool {
    use crate::arch::Isa;
    cfg!(target_arch = "x86_64") && matches!(kernel.isa(), Isa::Avx2 | Isa::Avx512)
}

/// [`transform_input`], compiled for `kernel`'s ISA.
fn input_for(kernel: &Kernel, g: &Conv2d, input: &[f32], cs: Range<usize>, v: &mut [f32], rows: &mut [f32]) {
    if wide(kernel) {
        // SAFETY: `wide` checked that this CPU runs AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        return unsafe { wide::input(g, input, cs, v, rows) };
    }
    transform_input(g, input, cs, v, rows)
}

/// [`transform_output`], compiled for `kernel`'s ISA.
///
/// # Safety
/// As [`transform_output`].
unsafe fn output_for(kernel: &Kernel, o: Output<'_>, m: &[f32], ks: Range<usize>) {
    if wide(kernel) {
        // SAFETY: `wide` checked AVX2 and FMA; the rest is the caller's contract.
        #[cfg(target_arch = "x86_64")]
        return unsafe { wide::output(o, m, ks) };
    }
    // SAFETY: forwarded contract.
    unsafe { transform_output(o, m, ks) }
}

/// The Winograd conv2d of `g` (which [`applies`]) in `ws`, whose scratch holds at least
/// [`scratch_len`] floats for its workers.
///
/// # Safety
/// Everything [`super::fused::conv2d_with`] checks must hold, `ws.exec` is pinned, and the
/// scratch is as above.
pub(crate) unsafe fn conv2d_unchecked(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue<'_>,
    bias: Option<&[f32]>,
    output: &mut [f32],
    ws: &mut Workspace<'_>,
) {
    let p = g.params();
    let t_all = tiles(g);
    // Cannot fail: scratch_len computed the same sizes with checked arithmetic.
    let Ok([ulen, vlen, mlen]) = buffers(g) else { return };
    let (u, rest) = ws.scratch.split_at_mut(ulen);
    let (v, rest) = rest.split_at_mut(vlen);
    let (m, rest) = rest.split_at_mut(mlen);
    let (exec, kernel) = (ws.exec, ws.kernel);
    let workers = planned_workers(exec).max(1);
    let Ok(per_worker) = rows_len(g) else { return };
    let (rows, gemm_scratch) = rest.split_at_mut(per_worker * workers);
    let share = |len: usize| move |w: usize| len * w / workers..len * (w + 1) / workers;
    let (ks, cs) = (share(p.k), share(p.c));

    let (up, vp, rp) = (Shared(u.as_mut_ptr()), Shared(v.as_mut_ptr()), Shared(rows.as_mut_ptr()));
    exec.run(&|w| {
        if w >= workers {
            return;
        }
        let (kr, cr) = (ks(w), cs(w));
        // SAFETY: worker w alone owns rows kr of U, rows cr of V and padded rows w (disjoint
        // ranges of the split buffers, which live through this call).
        let (u, v, rows) = unsafe {
            (
                core::slice::from_raw_parts_mut(up.ptr().add(kr.start * XI * p.c), kr.len() * XI * p.c),
                core::slice::from_raw_parts_mut(vp.ptr().add(cr.start * XI * t_all), cr.len() * XI * t_all),
                core::slice::from_raw_parts_mut(rp.ptr().add(w * per_worker), per_worker),
            )
        };
        transform_weights(g, weight, kr, u);
        input_for(kernel, g, input, cr, v, rows);
    });

    let mut gemm_ws = Workspace { kernel: ws.kernel, blocking: ws.blocking, exec, scratch: gemm_scratch };
    let products = Products { u, v, m: Shared(m.as_mut_ptr()), k: p.k, c: p.c, t: t_all };
    // SAFETY: the 16 products are k x t_all x c each, M_ξ disjoint (rows XI * t_all apart,
    // offset ξ * t_all) inside M, which is disjoint from U and V; the GEMM scratch was sized by
    // `scratch_len` for these dimensions and workers.
    unsafe { gemm_batch(&products, 1.0, 0.0, Activation::None, &mut gemm_ws) };

    let (m, out) = (&*m, Shared(output.as_mut_ptr()));
    exec.run(&|w| {
        if w >= workers {
            return;
        }
        let kr = ks(w);
        let rows = &m[kr.start * XI * t_all..kr.end * XI * t_all];
        // SAFETY: the output was validated; worker w alone writes channels kr.
        unsafe { output_for(kernel, Output { g, bias, act: epi.activation, out: out.ptr() }, rows, kr) };
    });
}
