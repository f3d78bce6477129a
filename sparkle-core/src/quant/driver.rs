//! The int8 GEMM driver: packs B once (shared), packs blocks of A per worker, runs the
//! microkernel on `mr x nr` tiles and finishes each tile: zero-point corrections, bias and the
//! output stage — [`OutputStage::apply`], the oracle's own function, or for one-byte outputs its
//! short forms `float_narrow` (ONNX) and `fixed_narrow` (fixed point), each checked equal to it
//! by unit tests.
//!
//! ## The arithmetic
//! Operands are canonicalised while packing: A to `u8` (an `i8` A is shifted by +128, its zero
//! point with it), B to `i8` (a `u8` B by -128); kernels that multiply `i8 x i8` take A shifted
//! by another -128 (the `SignedBytes4` packing). With `a'`, `b'`, `za'`, `zb'` the shifted values,
//!
//! ```text
//! sum_p (a' - za')(b' - zb') = sum_p a' b'  -  za' * colsum(b')[j]  -  zb'[j] * rowsum(a')[i]  +  k za' zb'[j]
//! ```
//! The kernels compute the first term; the column terms (with the bias) are summed while B is
//! packed, the row sums while A is packed. The identity holds for any shift of A or B, and
//! everything is wrapping `i32` (a ring): exact because the true result fits (the accumulator
//! bound of [`QGemm::check`]), whatever the partial sums did on the way.
//!
//! ```text
//! phase 1 (all workers): pack B's nr-panels (worker w: panels w, w+W, ...) and their column terms
//! phase 2 (all workers): items = (block of mc rows) x (chunk of up to NC_PANELS panels),
//!   worker w takes w, w+W, ...: pack the A block (unless it already holds it), then per B panel, per A panel:
//!   microkernel -> tile -> finish into C
//!   (or, for a full tile into one-byte outputs with the fixed-point stage and no row terms,
//!   the kernel's fused form, `QKernel::fixed`: microkernel -> stage -> C)
//! ```
//!
//! A direct conv (`qconv_direct_unchecked`, AMX and AVX-512 VNNI) has the same phase 1; its
//! phase 2 packs no A: the kernel reads each tile's rows from the staged image in place.
#![allow(unsafe_code)]

use crate::arch::quant::{FinishTile, QDirectArgs, QFixedArgs, QKernel, QMicroArgs, QPack};
use crate::error::{mul, Error, Param, Result};
use crate::gemm::driver::{planned_workers, Executor, Pinned, Shared};
use crate::quant::{corrected, fixed_narrow, narrow, ChannelStage, OutputStage, QElem, QGemm, QGemmDims, QOperand};
use crate::view::{MatMut, MatRef};

/// mr-panels per block of A rows.
const MC_PANELS: usize = 8;
/// nr-panels per chunk of columns (one work item), at most: see [`chunk_panels`].
const NC_PANELS: usize = 16;

/// Panels per column chunk for `row_blocks` blocks of rows and `n_panels` panels on `workers`:
/// [`NC_PANELS`], halved until every worker has two items where the panels allow. A conv's
/// small images are few rows (512->512 3x3 @7: 49 rows, one block of 64, one chunk of 16
/// panels: one item, and a second thread idle); narrower chunks share the columns instead,
/// each worker packing the same A block for its own.
fn chunk_panels(row_blocks: usize, n_panels: usize, workers: usize) -> usize {
    let mut nc = NC_PANELS;
    while nc > 1 && row_blocks.saturating_mul(n_panels.div_ceil(nc)) < workers.saturating_mul(2) {
        nc /= 2;
    }
    nc
}

/// Where an int8 GEMM runs: its kernel, its workers and caller scratch of at least
/// [`qgemm_scratch_len`] `i32` words.
pub struct QWorkspace<'a> {
    /// The kernel (its ISA proved by the `QKernel`).
    pub kernel: &'a QKernel,
    /// The workers.
    pub exec: &'a (dyn Executor + Sync),
    /// Packing scratch.
    pub scratch: &'a mut [i32],
}

impl core::fmt::Debug for QWorkspace<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("QWorkspace")
            .field("kernel", &self.kernel.id())
            .field("workers", &self.exec.workers())
            .field("scratch", &self.scratch.len())
            .finish()
    }
}

/// The scratch layout for one problem, in `i32` words. The shared regions, each worker's region
/// and in it the A block, the row sums and the tile start on 64-byte lines (16 words) from the
/// scratch's first such line: AMX's tile loads and stores run at a fifth of their speed when a
/// row straddles two lines, and vector loads pay for it too.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// k-groups (k rounded up to the kernel's group).
    groups: usize,
    /// nr-panels of B.
    n_panels: usize,
    /// Rows per block of A (a multiple of mr, at most the rounded-up m).
    mc: usize,
    /// Columns of the panels (`n_panels * nr`).
    cols: usize,
    /// Words of the per-column constants: four arrays of `cols` (see [`Columns`]).
    col_words: usize,
    /// Words of packed B.
    b_words: usize,
    /// Words of one packed A block.
    a_words: usize,
    /// Words of one block's row sums (`mc`, rounded up to a line).
    sum_words: usize,
    /// Words per worker: its A block, its row sums, its tile (`mr * nr`) and the rows of one A
    /// panel as i16 (`mr * groups * group`); for a direct conv only the row sums and the tile.
    per_worker: usize,
}

/// `i32` words per 64-byte line.
const LINE_WORDS: usize = 16;

fn words(bytes: usize) -> usize {
    bytes.div_ceil(4)
}

/// `words` rounded up to whole lines.
fn lines(words: usize) -> Result<usize> {
    mul(words.div_ceil(LINE_WORDS), LINE_WORDS, Param::Scratch)
}

fn layout(kernel: &QKernel, m: usize, n: usize, k: usize) -> Result<Layout> {
    let p = Param::Scratch;
    let (mr, nr, pack) = (kernel.mr, kernel.nr, kernel.pack);
    let groups = k.div_ceil(pack.group());
    let n_panels = n.div_ceil(nr);
    // Blocks of at most MC_PANELS panels, as even as whole panels allow: 196 rows in 8-row
    // panels are blocks of 7, 7, 7 and 4 panels, not 8, 8, 8 and 1 (whose last block would
    // leave one of two workers half the rows of the other).
    let panels = m.div_ceil(mr);
    let mc = mul(panels.div_ceil(panels.div_ceil(MC_PANELS).max(1)), mr, p)?;
    // Bytes of one panel: groups x (mr or nr) x group x element bytes.
    let panel_bytes = |rows: usize| mul(mul(mul(groups, rows, p)?, pack.group(), p)?, pack.elem_bytes(), p);
    let cols = mul(n_panels, nr, p)?;
    let col_words = lines(mul(cols, 4, p)?)?;
    let b_words = lines(words(mul(panel_bytes(nr)?, n_panels, p)?))?;
    let a_words = lines(words(mul(panel_bytes(mr)?, mc / mr, p)?))?;
    let sum_words = lines(mc)?;
    // One panel's rows gathered as i16 before they are interleaved: mr x (groups * group).
    let row_words = words(mul(mul(mr, mul(groups, pack.group(), p)?, p)?, 2, p)?);
    let per_worker = a_words
        .checked_add(sum_words)
        .and_then(|w| w.checked_add(mr * nr))
        .and_then(|w| w.checked_add(row_words))
        .ok_or(Error::Overflow { param: p })?;
    let per_worker = lines(per_worker)?;
    Ok(Layout { groups, n_panels, mc, cols, col_words, b_words, a_words, sum_words, per_worker })
}

/// `i32` words of scratch [`qgemm_with`] needs for an `m x n x k` problem on `workers` workers
/// (with up to a line's worth to align its start).
pub fn qgemm_scratch_len(kernel: &QKernel, m: usize, n: usize, k: usize, workers: usize) -> Result<usize> {
    scratch_words(&layout(kernel, m, n, k)?, workers)
}

/// [`qgemm_scratch_len`] for a GEMM whose B was packed ahead
/// ([`crate::quant::packed::qgemm_packed_with`]): no region for B's panels.
pub fn qgemm_packed_scratch_len(kernel: &QKernel, m: usize, n: usize, k: usize, workers: usize) -> Result<usize> {
    scratch_words(&without_b(layout(kernel, m, n, k)?), workers)
}

/// Layout `l` with no region for B's panels: B packed ahead ([`BSource::Packed`]).
fn without_b(l: Layout) -> Layout {
    Layout { b_words: 0, ..l }
}

/// The words of layout `l` on `workers` workers: the shared regions, each worker's, and up to a
/// line's worth to align the start.
fn scratch_words(l: &Layout, workers: usize) -> Result<usize> {
    let shared = l.col_words.checked_add(l.b_words).ok_or(Error::Overflow { param: Param::Scratch })?;
    mul(l.per_worker, workers.max(1), Param::Scratch)?
        .checked_add(shared)
        .and_then(|w| w.checked_add(LINE_WORDS - 1))
        .ok_or(Error::Overflow { param: Param::Scratch })
}

/// [`layout`] for the direct conv ([`qconv_direct_unchecked`]): no A panels, one tile's row
/// sums and the tile per worker.
fn direct_layout(kernel: &QKernel, m: usize, n: usize, k: usize) -> Result<Layout> {
    let l = layout(kernel, m, n, k)?;
    let sum_words = lines(kernel.mr)?;
    let per_worker = lines(sum_words + kernel.mr * kernel.nr)?;
    Ok(Layout { mc: kernel.mr, a_words: 0, sum_words, per_worker, ..l })
}

/// `i32` words of scratch [`qconv_direct_unchecked`] needs for `m` rows of the staged image,
/// `n` channels and a reduction of `k` (a multiple of 64) on `workers` workers.
/// With `packed`, for B packed ahead (no region for its panels).
pub(crate) fn qconv_direct_scratch_len(
    kernel: &QKernel,
    (m, n, k): (usize, usize, usize),
    workers: usize,
    packed: bool,
) -> Result<usize> {
    let l = direct_layout(kernel, m, n, k)?;
    scratch_words(&if packed { without_b(l) } else { l }, workers)
}

/// `C <- out(A * B)` (see [`crate::quant`]) in `ws`: validates the op, the output stage, the
/// workers and the scratch, then runs. The result is bit-identical to
/// [`crate::quant::reference::qgemm_reference`].
pub fn qgemm_with<A: QOperand, B: QOperand, Y: QElem>(
    op: &QGemm<'_, A, B>,
    out: &OutputStage<'_>,
    mut c: MatMut<'_, Y>,
    ws: QWorkspace<'_>,
) -> Result<QGemmDims> {
    let d = op.check(out, &c)?;
    let exec = Pinned::new(ws.exec)?;
    let required = qgemm_scratch_len(ws.kernel, d.m, d.n, d.k, planned_workers(&exec))?;
    if ws.scratch.len() < required {
        return Err(Error::TooSmall { param: Param::Scratch, required, found: ws.scratch.len() });
    }
    if d.m > 0 && d.n > 0 {
        let ops = QOperands {
            a: &op.a,
            a_zero: op.a_zero,
            b: BSource::Matrix(&op.b),
            b_zero: &op.b_zero,
            bias: op.bias,
            ch0: 0,
        };
        let (rs, cs) = (c.rs(), c.cs());
        // SAFETY: the op, the stage and the scratch were validated above; `c` is an exclusive,
        // alias-free `m x n` view; the executor is pinned.
        unsafe { qgemm_unchecked(&ops, out, (c.as_mut_ptr(), rs, cs), ws.kernel, &exec, ws.scratch, true) };
    }
    Ok(d)
}

/// The shift that takes `T` to the canonical operand range: +128 for an `i8` A, -128 for a `u8` B.
pub(crate) const fn a_offset<T: QElem>() -> i32 {
    if T::MIN < 0 {
        128
    } else {
        0
    }
}
pub(crate) const fn b_offset<T: QElem>() -> i32 {
    if T::MIN < 0 {
        0
    } else {
        -128
    }
}

/// A packed element: a byte (`u8` or `i8` bits) or an `i16`.
trait Packed: Copy {
    fn from_i32(v: i32) -> Self;
}
impl Packed for u8 {
    #[inline(always)]
    fn from_i32(v: i32) -> Self {
        v as u8
    }
}
impl Packed for i16 {
    #[inline(always)]
    fn from_i32(v: i32) -> Self {
        v as i16
    }
}

/// Columns `j0 .. j0 + nv` of B (from `src`, its element `(0, j0)`) as one panel of `nr`
/// columns.
struct PanelSource<T> {
    src: *const T,
    rs: usize,
    cs: usize,
    k: usize,
    nv: usize,
    nr: usize,
    groups: usize,
    off: i32,
}

impl<T: QElem> PanelSource<T> {
    /// Writes the panel in groups of `G` elements (`E`), zero past `k` and `nv`, in panel order,
    /// and adds each column's canonical sum to `sums`. Whole groups of whole panels take a loop
    /// without checks.
    ///
    /// # Safety
    /// `src` holds every `(p, jj)` with `p < k`, `jj < nv` at `p * rs + jj * cs`; `dst` is
    /// valid for `groups * nr * G` elements; `nr <= MAX_NR`.
    #[inline(always)]
    unsafe fn pack<E: Packed, const G: usize>(&self, dst: *mut E, sums: &mut [i32; MAX_NR]) {
        let PanelSource { src, rs, cs, k, nv, nr, groups, off } = *self;
        let full = if nv == nr { k / G } else { 0 };
        let mut at = dst;
        // Full groups already written by the byte-column form below.
        let mut done = 0;
        if rs == 1 && core::mem::size_of::<E>() == 1 && core::mem::size_of::<T>() == 1 && full > 0 {
            // Columns contiguous along k (a conv's weights, a column-major B) into byte groups:
            // each column's sum in one pass down it (a reduction the compiler vectorizes), then
            // the groups moved whole, G bytes at a time. The shift to canonical (0, or -128 for
            // a u8 B) is a flip of each byte's top bit, as modulo 256 the shifted value is.
            for (jj, sum) in sums[..nr].iter_mut().enumerate() {
                // SAFETY: `(p, jj)` for `p < full * G <= k`, `jj < nv = nr`: at `p + jj * cs`.
                let col = unsafe { core::slice::from_raw_parts(src.add(jj * cs), full * G) };
                *sum = col.iter().fold(*sum, |s, x| s.wrapping_add(x.widen() + off));
            }
            let flip = if off != 0 { 0x80u8 } else { 0 };
            for g in 0..full {
                for jj in 0..nr {
                    // SAFETY: as above, the G elements from `(g * G, jj)`, one byte each; the
                    // panel's group `(g * nr + jj)`.
                    unsafe {
                        let mut v = src.add(g * G + jj * cs).cast::<[u8; G]>().read_unaligned();
                        v.iter_mut().for_each(|b| *b ^= flip);
                        at.cast::<[u8; G]>().write_unaligned(v);
                        at = at.add(G);
                    }
                }
            }
            done = full;
        }
        if G == 2 {
            // Pairs (the Cortex-M's and AVX2's i16 format): both elements of a group at once
            // (the general loop below is not unrolled on a Cortex-M).
            for g in done..full {
                for (jj, sum) in sums[..nr].iter_mut().enumerate() {
                    // SAFETY: `(2g, jj)` and `(2g + 1, jj)` with `g < full`: `p < k` and `jj <
                    // nv = nr`; elements `(g * nr + jj) * 2 ..` of the panel.
                    unsafe {
                        let col = src.add(2 * g * rs + jj * cs);
                        let (v0, v1) = ((*col).widen() + off, (*col.add(rs)).widen() + off);
                        *sum = sum.wrapping_add(v0).wrapping_add(v1);
                        at.write_unaligned(E::from_i32(v0));
                        at.add(1).write_unaligned(E::from_i32(v1));
                        at = at.add(2);
                    }
                }
            }
            done = full;
        }
        for g in done..full {
            for (jj, sum) in sums[..nr].iter_mut().enumerate() {
                // SAFETY: `(g * G + q, jj)` with `g < full`: `p < k` and `jj < nv = nr`.
                let col = unsafe { src.add(g * G * rs + jj * cs) };
                for q in 0..G {
                    // SAFETY: as above; element `(g * nr + jj) * G + q` of the panel.
                    unsafe {
                        let v = (*col.add(q * rs)).widen() + off;
                        *sum = sum.wrapping_add(v);
                        at.add(q).write_unaligned(E::from_i32(v));
                    }
                }
                // SAFETY: the next group of the panel (or one past its end).
                at = unsafe { at.add(G) };
            }
        }
        for g in full..groups {
            for (jj, sum) in sums[..nr].iter_mut().enumerate() {
                for q in 0..G {
                    let p = g * G + q;
                    let v = if p < k && jj < nv {
                        // SAFETY: `p < k` and `jj < nv`.
                        unsafe { (*src.add(p * rs + jj * cs)).widen() + off }
                    } else {
                        0
                    };
                    *sum = sum.wrapping_add(v);
                    // SAFETY: element `(g * nr + jj) * G + q` of the panel.
                    unsafe { at.add(q).write_unaligned(E::from_i32(v)) };
                }
                // SAFETY: the next group of the panel (or one past its end).
                at = unsafe { at.add(G) };
            }
        }
    }
}

impl<T> Clone for PanelSource<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for PanelSource<T> {}

/// The rows of A as the driver packs them: a strided matrix, or an image seen through im2col
/// (`quant::conv`), which is then never materialised.
pub(crate) trait QRows: Sync {
    /// Rows.
    fn rows(&self) -> usize;
    /// Columns (the reduction length).
    fn cols(&self) -> usize;
    /// The shift to the canonical `u8` range: +128 for `i8` elements, 0 for `u8`.
    fn offset(&self) -> i32;
    /// Calls `f` with the `cols()` values of row `i < rows()`, widened, in order.
    fn visit_row(&self, i: usize, f: impl FnMut(i32));
    /// Writes rows `i0 .. i0 + sums.len()` shifted by `off` as i16, row `r` into
    /// `buf[r * kp ..][..cols()]`, and their sums into `sums`. Row by row unless a source has a
    /// faster order.
    #[inline(always)]
    fn fill_rows(&self, i0: usize, off: i32, buf: &mut [i16], kp: usize, sums: &mut [i32]) {
        fill_row_by_row(self, i0, off, buf, kp, sums)
    }
    /// Writes row `i` shifted by `off` into `out[..cols()]` as i16 and returns its sum.
    #[inline(always)]
    fn fill_row(&self, i: usize, off: i32, out: &mut [i16]) -> i32 {
        fill_by_visit(self, i, off, out)
    }
    /// As [`QRows::fill_row`] into bytes (the shifted values, which the caller's `off` puts in
    /// `u8` range), where the source has a faster form than through i16; None where not (the
    /// caller then goes through [`QRows::fill_row`]). Without `sum` the row's sum is not computed
    /// (0 is returned). Bytes of `out` past the row's `cols()` may be overwritten with anything
    /// (a gather of short runs in whole vectors): a caller gathering several rows into one
    /// buffer gathers them in increasing order, as [`Ctx::pack_a_bytes`] does.
    #[inline(always)]
    fn fill_row_bytes(&self, _i: usize, _off: i32, _out: &mut [u8], _sum: bool) -> Option<i32> {
        None
    }
    /// As [`QRows::fill_row_bytes`] without sums, for the `n` rows from `i0`, row `r` into
    /// `out[r * stride ..]`, where the source has a faster form for the whole block (one
    /// bounds check and one division for all of them); false where not (the caller then goes
    /// row by row). The bytes past each row's `cols()` may be overwritten as there (the next
    /// row's start, then at most [`SHORT_RUN`] bytes past the last row's end).
    #[inline(always)]
    fn fill_rows_bytes(&self, _i0: usize, _n: usize, _off: i32, _out: &mut [u8], _stride: usize) -> bool {
        false
    }
    /// Whether [`QRows::fill_row_bytes`] answers for most rows (so that packing row by row
    /// through it beats [`QRows::fill_rows`]).
    #[inline(always)]
    fn byte_rows(&self) -> bool {
        false
    }
}

/// A slice of one-byte elements as its bytes.
pub(crate) fn bytes<X: QOperand>(x: &[X]) -> &[u8] {
    const { assert!(core::mem::size_of::<X>() == 1 && core::mem::align_of::<X>() == 1) };
    // SAFETY: `X` is `u8` or `i8` (sealed; size and alignment asserted): every bit pattern a
    // valid `u8`; the same bytes, borrowed for the same lifetime.
    unsafe { core::slice::from_raw_parts(x.as_ptr().cast::<u8>(), x.len()) }
}

/// [`bytes`], mutably.
pub(crate) fn bytes_mut<X: QOperand>(x: &mut [X]) -> &mut [u8] {
    const { assert!(core::mem::size_of::<X>() == 1 && core::mem::align_of::<X>() == 1) };
    // SAFETY: as `bytes`; every `u8` is also a valid `u8` or `i8`, so writes keep `x` valid.
    unsafe { core::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<u8>(), x.len()) }
}

/// Writes `src` shifted by `off` into `out` as bytes (the shifted values are in `u8` range) and
/// returns the sum of the shifted values (0 without `sum`): a loop the compiler vectorizes. The
/// sum is a reduction per run, most of the packing's time on short runs (64 bytes: one
/// channel block of a tap), so it is left out where nothing reads it.
#[inline(always)]
pub(crate) fn bytes_run<X: QOperand>(src: &[X], off: i32, out: &mut [u8], sum: bool) -> i32 {
    if !sum {
        let bytes = bytes(src);
        let n = out.len().min(bytes.len());
        if off == 0 {
            // Whole 64-byte blocks (a channel block of a tap) as fixed-size copies, which compile
            // to vector moves where a copy of a run-time length calls `memcpy`.
            let (mut to, mut from) = (out[..n].chunks_exact_mut(64), bytes[..n].chunks_exact(64));
            for (o, b) in (&mut to).zip(&mut from) {
                if let (Ok(o), Ok(b)) = (<&mut [u8; 64]>::try_from(o), <&[u8; 64]>::try_from(b)) {
                    *o = *b;
                }
            }
            copy_short(to.into_remainder(), from.remainder());
        } else {
            // Bytewise modulo 256 (the shifted values are in u8 range).
            let off = off as u8;
            for (o, &b) in out[..n].iter_mut().zip(&bytes[..n]) {
                *o = b.wrapping_add(off);
            }
        }
        return 0;
    }
    let mut sum = 0i32;
    for (o, x) in out.iter_mut().zip(src) {
        let v = x.widen() + off;
        sum = sum.wrapping_add(v);
        *o = v as u8;
    }
    sum
}

/// `out.copy_from_slice(src)` for the short runs of im2col (under 64 bytes: conv1's 21) in a
/// few fixed-size moves, two overlapping where the length is not a power of two, where a copy
/// of a run-time length calls `memcpy`.
#[inline(always)]
fn copy_short(out: &mut [u8], src: &[u8]) {
    #[inline(always)]
    fn two<const N: usize>(out: &mut [u8], src: &[u8]) {
        // `N <= len <= 2N`: the first N bytes and the last N (overlapping, the same values).
        let n = out.len();
        let (head, tail) = (<[u8; N]>::try_from(&src[..N]), <[u8; N]>::try_from(&src[n - N..]));
        if let (Ok(h), Ok(t)) = (head, tail) {
            out[..N].copy_from_slice(&h);
            out[n - N..].copy_from_slice(&t);
        }
    }
    match out.len() {
        0 => {}
        n if n != src.len() => out.copy_from_slice(src),
        1..=3 => out.iter_mut().zip(src).for_each(|(o, &s)| *o = s),
        4..=8 => two::<4>(out, src),
        9..=16 => two::<8>(out, src),
        17..=32 => two::<16>(out, src),
        33..=64 => two::<32>(out, src),
        _ => out.copy_from_slice(src),
    }
}

/// The runs (at most this many bytes) that a source's [`QRows::fill_row_bytes`] (and
/// [`QRows::fill_rows_bytes`]) may copy as
/// whole vectors of this many bytes, writing past the run's end (the next run overwrites it;
/// past the row's last, [`Ctx::pack_a_bytes`] leaves this much room).
pub(crate) const SHORT_RUN: usize = 32;

/// Bytes past a gathered row that [`Ctx::pack_a_bytes`] leaves free for [`SHORT_RUN`] copies.
const ROW_SLACK: usize = SHORT_RUN;

/// [`QRows::fill_row`] through [`QRows::visit_row`]: what sources without a faster order use.
#[inline(always)]
pub(crate) fn fill_by_visit<S: QRows + ?Sized>(src: &S, i: usize, off: i32, out: &mut [i16]) -> i32 {
    let (mut p, mut sum) = (0, 0i32);
    src.visit_row(i, |x| {
        let v = x + off;
        sum = sum.wrapping_add(v);
        out[p] = v as i16;
        p += 1;
    });
    sum
}

/// [`QRows::fill_rows`] one [`QRows::fill_row`] at a time.
#[inline(always)]
fn fill_row_by_row<S: QRows + ?Sized>(src: &S, i0: usize, off: i32, buf: &mut [i16], kp: usize, sums: &mut [i32]) {
    for (r, sum) in sums.iter_mut().enumerate() {
        *sum = src.fill_row(i0 + r, off, &mut buf[r * kp..(r + 1) * kp]);
    }
}

/// A conv's input staged for a direct kernel ([`QKernel::direct`]): an image of `width`-pixel
/// rows, each pixel `pixel_bytes` canonical `u8` (its channels, then padding), the conv's
/// padding included as pixels. Row `q` of the implicit GEMM is the staged pixel `q`: the output
/// pixel `(q / width, q % width)` where `q % width < wo` (the rest are computed and dropped), and
/// its reduction is the `pixel_bytes` bytes at each tap's offset from it, taps in order.
pub(crate) struct DirectImage<'a> {
    /// The staged pixels, at least the rows' last tap's worth, whole tiles included.
    pub image: &'a [u8],
    /// Bytes per staged pixel (a multiple of 64).
    pub pixel_bytes: usize,
    /// Byte offset of each tap from a row's pixel (non-negative).
    pub taps: &'a [i32],
    /// Rows of the GEMM (`(ho - 1) * width + wo`).
    pub rows: usize,
    /// Pixels per staged row.
    pub width: usize,
    /// Output pixels per output row.
    pub wo: usize,
    /// Each staged pixel's byte sum (only where some weight zero point is nonzero: the
    /// write-out's row sums, `-zb' * rowsum`, are sums of these over the taps).
    pub pixel_sums: Option<&'a [i32]>,
}

impl DirectImage<'_> {
    /// The sum of row `q`'s reduction (0 without pixel sums).
    fn row_sum(&self, q: usize) -> i32 {
        let Some(sums) = self.pixel_sums else { return 0 };
        self.taps.iter().fold(0i32, |acc, &t| acc.wrapping_add(sums[q + t as usize / self.pixel_bytes]))
    }
}

impl QRows for DirectImage<'_> {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.taps.len() * self.pixel_bytes
    }
    /// Staged canonical already.
    fn offset(&self) -> i32 {
        0
    }
    fn visit_row(&self, i: usize, mut f: impl FnMut(i32)) {
        for &t in self.taps {
            let at = i * self.pixel_bytes + t as usize;
            self.image[at..at + self.pixel_bytes].iter().for_each(|&x| f(i32::from(x)));
        }
    }
}

impl<A: QOperand> QRows for MatRef<'_, A> {
    fn rows(&self) -> usize {
        MatRef::rows(self)
    }
    fn cols(&self) -> usize {
        MatRef::cols(self)
    }
    fn offset(&self) -> i32 {
        a_offset::<A>()
    }
    #[inline(always)]
    fn visit_row(&self, i: usize, mut f: impl FnMut(i32)) {
        let (data, rs, cs, k) = (self.as_slice(), self.rs(), self.cs(), MatRef::cols(self));
        if k == 0 {
            return;
        }
        let row = &data[i * rs..];
        for p in 0..k {
            f(row[p * cs].widen());
        }
    }
    /// A column-major A (a conv's NCHW input seen as pixels x channels) is read down its
    /// columns, contiguous, and written across the rows.
    #[inline(always)]
    fn fill_rows(&self, i0: usize, off: i32, buf: &mut [i16], kp: usize, sums: &mut [i32]) {
        let (data, rs, cs, k) = (self.as_slice(), self.rs(), self.cs(), MatRef::cols(self));
        let rows = sums.len();
        if rs != 1 || cs == 1 || k == 0 || rows == 0 {
            return fill_row_by_row(self, i0, off, buf, kp, sums);
        }
        sums.fill(0);
        if let ([s0, s1], true) = (&mut *sums, kp >= k) {
            // Two rows (the Cortex-M's tile): both rows' slices once, each column's pair read
            // together.
            let (row0, rest) = buf.split_at_mut(kp);
            for (p, (o0, o1)) in row0[..k].iter_mut().zip(&mut rest[..k]).enumerate() {
                let col = &data[p * cs + i0..][..2];
                let (v0, v1) = (col[0].widen() + off, col[1].widen() + off);
                (*s0, *s1) = (s0.wrapping_add(v0), s1.wrapping_add(v1));
                (*o0, *o1) = (v0 as i16, v1 as i16);
            }
            return;
        }
        for p in 0..k {
            let col = &data[p * cs + i0..p * cs + i0 + rows];
            for (r, (x, sum)) in col.iter().zip(sums.iter_mut()).enumerate() {
                let v = x.widen() + off;
                *sum = sum.wrapping_add(v);
                buf[r * kp + p] = v as i16;
            }
        }
    }
    #[inline(always)]
    fn byte_rows(&self) -> bool {
        self.cs() == 1
    }
    /// A contiguous row (row-major A) as bytes: one vectorized loop.
    #[inline(always)]
    fn fill_row_bytes(&self, i: usize, off: i32, out: &mut [u8], sum: bool) -> Option<i32> {
        let (data, rs, cs, k) = (self.as_slice(), self.rs(), self.cs(), MatRef::cols(self));
        (cs == 1 && k > 0).then(|| bytes_run(&data[i * rs..i * rs + k], off, &mut out[..k], sum))
    }
    /// A contiguous row (row-major A) is one loop the compiler vectorizes.
    #[inline(always)]
    fn fill_row(&self, i: usize, off: i32, out: &mut [i16]) -> i32 {
        let (data, rs, cs, k) = (self.as_slice(), self.rs(), self.cs(), MatRef::cols(self));
        if k == 0 {
            return 0;
        }
        if cs != 1 {
            return fill_by_visit(self, i, off, out);
        }
        let row = &data[i * rs..i * rs + k];
        // The canonical values of a Cortex-M's packing (`u8` range) four bytes a word: the
        // compiler does not vectorize the loop below there.
        if cfg!(target_arch = "arm") && A::MIN + off == 0 && A::MAX + off == 255 {
            return widen_words(bytes(row), (off != 0).then_some(0x8080_8080), &mut out[..k]);
        }
        let mut sum = 0i32;
        for (o, x) in out[..k].iter_mut().zip(row) {
            let v = x.widen() + off;
            sum = sum.wrapping_add(v);
            *o = v as i16;
        }
        sum
    }
}

/// Writes `src`'s bytes, each with its top bit flipped where `flip` is given (`i8` to canonical
/// `u8`: `x + 128`), into `out` as `i16` and returns their sum: four bytes a word, split into
/// their even and odd bytes (`uxtb16`-like masks) and paired back in order (`pkhbt`, `pkhtb`),
/// the sum kept as two 16-bit halves of one word, folded every 128 words (510 a word a half).
#[inline(always)]
fn widen_words(src: &[u8], flip: Option<u32>, out: &mut [i16]) -> i32 {
    let flip = flip.unwrap_or(0);
    let (words, tail) = src.as_chunks::<4>();
    let (pairs, rest) = out.as_chunks_mut::<4>();
    // At most 128 words: their sum.
    let run = |(words, pairs): (&[[u8; 4]], &mut [[i16; 4]])| {
        let mut halves = 0u32;
        for (w, o) in words.iter().zip(pairs) {
            let w = u32::from_le_bytes(*w) ^ flip;
            let (even, odd) = (w & 0x00ff_00ff, (w >> 8) & 0x00ff_00ff);
            halves = halves.wrapping_add(even + odd);
            *o = [even as i16, odd as i16, (even >> 16) as i16, (odd >> 16) as i16];
        }
        (halves & 0xffff) + (halves >> 16)
    };
    // A short row (a 1x1 conv's few channels) in one pass.
    let mut sum = if words.len() <= 128 {
        run((words, pairs))
    } else {
        words.chunks(128).zip(pairs.chunks_mut(128)).map(run).fold(0u32, u32::wrapping_add)
    };
    for (o, &x) in rest.iter_mut().zip(tail) {
        let v = x ^ flip as u8;
        sum = sum.wrapping_add(u32::from(v));
        *o = i16::from(v);
    }
    sum as i32
}

/// Everything the workers of one GEMM share, read-only: the operands, where the scratch and C
/// are, and the problem's layout. Channel `j` of this GEMM is channel `ch0 + j` of the per-channel
/// parameters (a conv group's columns are a slice of the layer's output channels).
struct Ctx<'a, S, B: QElem, Y> {
    a: &'a S,
    /// Canonical A zero point (`a_zero + offset`, shifted as the kernel's format wants).
    za: i32,
    b: BSource<'a, B>,
    b_zero: &'a crate::quant::PerChannel<'a, i32>,
    bias: Option<&'a [i32]>,
    out: &'a OutputStage<'a>,
    ch0: usize,
    kernel: &'a QKernel,
    l: Layout,
    d: QGemmDims,
    workers: usize,
    scratch: Shared<i32>,
    c: Shared<Y>,
    rs_c: usize,
    cs_c: usize,
    /// Whether any column's canonical `zb'` is nonzero: only then does the write-out read A's
    /// row sums (`- zb' * rowsum`), and only then does the byte-row packing compute them (and
    /// only without them does a kernel's fused fixed-point form run).
    row_sums: bool,
    /// The staged image of a direct conv (phase 2 then runs [`Ctx::phase2_direct`]).
    direct: Option<&'a DirectImage<'a>>,
}

impl<S: QRows, B: QOperand, Y: QElem> Ctx<'_, S, B, Y> {
    /// Bytes of one packed panel of `rows` rows.
    fn panel_bytes(&self, rows: usize) -> usize {
        self.l.groups * rows * self.kernel.pack.group() * self.kernel.pack.elem_bytes()
    }

    /// Packed B's panel `jp`.
    ///
    /// # Safety
    /// `jp < n_panels` (the scratch holds them all).
    unsafe fn b_panel(&self, jp: usize) -> *mut u8 {
        let at = jp * self.panel_bytes(self.kernel.nr);
        match self.b {
            // SAFETY: forwarded contract.
            BSource::Matrix(_) => unsafe { self.scratch.ptr().add(self.l.col_words).cast::<u8>().add(at) },
            // Read only (the kernels take B as `*const`): `PackedPanels` holds every panel.
            BSource::Packed(p) => p.panels[at..].as_ptr().cast_mut(),
        }
    }

    /// Phase 1, worker `w`: B's panels `w, w + W, ...` and their per-column constants: the
    /// column terms `bias[j] - za' * colsum(b')[j] + k * za' * zb'[j]`, the canonical `zb'[j]`
    /// and the two words of the channel's rescaling.
    ///
    /// # Safety
    /// `w < workers`, each index run once, before phase 2.
    #[inline(always)]
    unsafe fn phase1(&self, w: usize) {
        let (nr, pack) = (self.kernel.nr, self.kernel.pack);
        let (k, n, off) = (self.d.k, self.d.n, b_offset::<B>());
        let b = match self.b {
            BSource::Matrix(b) => b,
            BSource::Packed(p) => {
                // Packed ahead: only the column constants, from the kept column sums.
                for jp in (w..self.l.n_panels).step_by(self.workers) {
                    let j0 = jp * nr;
                    let nv = nr.min(n - j0);
                    // SAFETY: forwarded contract (panel `jp`'s columns are this worker's).
                    unsafe { self.column_constants(j0, &p.colsums[j0..j0 + nv]) };
                }
                return;
            }
        };
        let (rs, cs) = (b.rs(), b.cs());
        for jp in (w..self.l.n_panels).step_by(self.workers) {
            // SAFETY: panel `jp` is written by this worker alone.
            let dst = unsafe { self.b_panel(jp) };
            let j0 = jp * nr;
            let nv = nr.min(n - j0);
            let mut sums = [0i32; MAX_NR];
            // SAFETY: the validated view holds every `(p, j0 + jj)` with `p < k`, `jj < nv` at
            // `p * rs + jj * cs` from `src`, and `src` is only read at such offsets (with `k = 0`
            // the view may be empty: `src` is then never read, and computed by wrapping
            // arithmetic, which may leave the slice); the panel holds `groups` groups.
            unsafe {
                let src = b.as_slice().as_ptr().wrapping_add(j0 * cs);
                let panel = PanelSource { src, rs, cs, k, nv, nr, groups: self.l.groups, off };
                match pack {
                    QPack::Bytes4 | QPack::SignedBytes4 => panel.pack::<u8, 4>(dst, &mut sums),
                    QPack::Bytes8 => panel.pack::<u8, 8>(dst, &mut sums),
                    QPack::Pairs16 => panel.pack::<i16, 2>(dst.cast(), &mut sums),
                    // 16 groups of 4 bytes per 64-deep block.
                    QPack::Tiles64 => PanelSource { groups: panel.groups * 16, ..panel }.pack::<u8, 4>(dst, &mut sums),
                }
            }
            // SAFETY: forwarded contract (panel `jp`'s columns are this worker's).
            unsafe { self.column_constants(j0, &sums[..nv]) };
        }
    }

    /// The per-column constants of columns `j0 .. j0 + sums.len()` from their canonical sums
    /// `sums`: the column terms `bias[j] - za' * colsum(b')[j] + k * za' * zb'[j]`, the canonical
    /// `zb'[j]` and the two words of the channel's rescaling.
    ///
    /// # Safety
    /// The columns are inside the layout's `cols` and written by this caller alone, in phase 1.
    #[inline(always)]
    unsafe fn column_constants(&self, j0: usize, sums: &[i32]) {
        let (k, off, cols) = (self.d.k, b_offset::<B>(), self.l.cols);
        for (jj, &sum) in sums.iter().enumerate() {
            let j = self.ch0 + j0 + jj;
            let zb = self.b_zero.at(j) + off;
            let base = self.bias.map_or(0, |b| b[j]);
            let term = base
                .wrapping_sub(self.za.wrapping_mul(sum))
                .wrapping_add((k as i32).wrapping_mul(self.za).wrapping_mul(zb));
            let [s0, s1] = self.out.channel::<Y>(j).scale_words();
            // SAFETY: column `j0 + jj < cols` of each of the four arrays, this caller's.
            unsafe {
                let at = self.scratch.ptr().add(j0 + jj);
                *at = term;
                *at.add(cols) = zb;
                *at.add(2 * cols) = s0;
                *at.add(3 * cols) = s1;
            }
        }
    }

    /// Packs rows `i0 .. i0 + rows` of A (canonical `u8`) as `ceil(rows/mr)` panels at `dst`
    /// and their row sums at `sums`; rows past `rows` are zero. Each panel's rows are first
    /// gathered into `rowbuf` (i16, `mr` rows of `groups * group`, zero-padded), then
    /// interleaved into the kernel's format by a loop of fixed group size.
    ///
    /// # Safety
    /// `dst` is valid for `mc / mr` panels, `sums` for `mc` words (`rows <= mc`), `rowbuf` for
    /// `mr * groups * group` i16.
    #[inline(always)]
    unsafe fn pack_a(&self, i0: usize, rows: usize, dst: *mut u8, sums: *mut i32, rowbuf: *mut i16) {
        let (mr, pack) = (self.kernel.mr, self.kernel.pack);
        let kp = self.l.groups * pack.group();
        let off = self.a.offset() + pack.a_shift();
        // SAFETY: forwarded contract: the buffer holds mr rows of kp.
        let buf = unsafe { core::slice::from_raw_parts_mut(rowbuf, mr * kp) };
        let k = self.d.k;
        // Not on a 32-bit Arm: its kernel packs pairs, and the byte formats there are only the
        // portable fallback's, which keeps the shared i16 path (2.3 KiB less flash).
        if !cfg!(target_arch = "arm") && self.a.byte_rows() && pack != QPack::Pairs16 {
            // SAFETY: forwarded contract; each group size is its format's.
            unsafe {
                match pack {
                    QPack::Tiles64 => self.pack_a_bytes::<64>(i0, rows, dst, sums, buf),
                    QPack::Bytes8 => self.pack_a_bytes::<8>(i0, rows, dst, sums, buf),
                    QPack::Bytes4 | QPack::SignedBytes4 => self.pack_a_bytes::<4>(i0, rows, dst, sums, buf),
                    QPack::Pairs16 => unreachable!(),
                }
            }
            return;
        }
        for ip in 0..rows.div_ceil(mr) {
            let valid = mr.min(rows - ip * mr);
            // SAFETY: forwarded contract: `sums` holds mc words, `ip * mr + mr <= mc`.
            let panel_sums = unsafe { core::slice::from_raw_parts_mut(sums.add(ip * mr), mr) };
            self.a.fill_rows(i0 + ip * mr, off, buf, kp, &mut panel_sums[..valid]);
            panel_sums[valid..].fill(0);
            if kp > 0 {
                for (ii, row) in buf.chunks_exact_mut(kp).enumerate() {
                    row[if ii < valid { k } else { 0 }..].fill(0);
                }
            }
            // SAFETY: panel `ip < mc / mr` of the block.
            let panel = unsafe { dst.add(ip * self.panel_bytes(mr)) };
            // SAFETY: the panel holds groups x mr x group elements of the format.
            unsafe { interleave(pack, buf, mr, self.l.groups, panel) };
        }
    }

    /// [`Ctx::pack_a`] for the byte formats (`G`-byte groups: [`QPack::Bytes4`] and
    /// [`QPack::SignedBytes4`], [`QPack::Bytes8`], [`QPack::Tiles64`]) from a source with byte
    /// rows: each row gathered as bytes (through [`QRows::fill_row_bytes`] where the source has
    /// it, else as i16 and narrowed), then copied into the panel a group at a time (one load and
    /// one store: the panel's row `ii` of group `g` is at `(g * mr + ii) * G`), or, where the
    /// kernel has [`crate::arch::quant::QKernel`]'s `pack_rows`, a panel's rows gathered one
    /// after another (all of them in one call where the write-out reads no row sums and the
    /// source has [`QRows::fill_rows_bytes`] for them) and packed by it in vectors; zero past k
    /// and past `rows`. The row sums are computed only where the write-out reads them.
    ///
    /// # Safety
    /// As [`Ctx::pack_a`]; `buf` is the row buffer (`mr * kp` i16).
    #[inline(always)]
    unsafe fn pack_a_bytes<const G: usize>(
        &self,
        i0: usize,
        rows: usize,
        dst: *mut u8,
        sums: *mut i32,
        buf: &mut [i16],
    ) {
        let (mr, groups, k) = (self.kernel.mr, self.l.groups, self.d.k);
        debug_assert_eq!(self.kernel.pack.group(), G);
        let kp = groups * G;
        let off = self.a.offset() + self.kernel.pack.a_shift();
        // The row as i16 (for sources without a byte form) in the buffer's first kp, the row as
        // bytes after it (kp bytes: kp / 2 i16; the buffer holds mr * kp with mr >= 2, as every
        // byte-format kernel has).
        let (wide, rest) = buf.split_at_mut(kp);
        assert!(rest.len() * 2 >= kp, "a byte-format kernel of one row");
        // Where the kernel packs a panel's rows in vectors, they are gathered one after another
        // into the buffer first (mr * kp bytes: (mr - 1) * kp i16 hold them from two rows on).
        let pack_rows = self.kernel.pack_rows.filter(|_| G == 4 && rest.len() * 2 >= mr * kp);
        let rows_bytes = if pack_rows.is_some() { mr * kp } else { kp };
        // Room past the last row for a gather in whole vectors (`QRows::fill_row_bytes`), where
        // the buffer has it.
        let span = (rows_bytes + ROW_SLACK).min(rest.len() * 2);
        // SAFETY: `rest` holds at least `span / 2` i16, that is `span` bytes, all ours; u8 has no
        // invalid values and alignment one.
        let bytes = unsafe { core::slice::from_raw_parts_mut(rest.as_mut_ptr().cast::<u8>(), span) };
        for ip in 0..rows.div_ceil(mr) {
            // SAFETY: panel `ip < mc / mr` of the block.
            let panel = unsafe { dst.add(ip * self.panel_bytes(mr)) };
            // A whole panel of rows in one call, where the source has the form (no sums).
            let whole = pack_rows.is_some() && !self.row_sums && k > 0 && (ip + 1) * mr <= rows;
            if let (true, Some(pack)) = (whole && self.a.fill_rows_bytes(i0 + ip * mr, mr, off, bytes, kp), pack_rows) {
                for ii in 0..mr {
                    // The padding of each row's last group (at most 3 bytes: no `memset`).
                    for b in &mut bytes[ii * kp + k..(ii + 1) * kp] {
                        *b = 0;
                    }
                    // SAFETY: `sums` holds mc words and `ip * mr + ii < rows <= mc`.
                    unsafe { *sums.add(ip * mr + ii) = 0 };
                }
                // SAFETY: as below.
                unsafe { pack(bytes.as_ptr(), kp, panel) };
                continue;
            }
            for ii in 0..mr {
                let i = ip * mr + ii;
                // The row's bytes start here; the gather may overwrite what follows (the next
                // rows, gathered after it, and the slack).
                let start = if pack_rows.is_some() { ii * kp } else { 0 };
                let sum = if i < rows && k > 0 {
                    let sum = match self.a.fill_row_bytes(i0 + i, off, &mut bytes[start..], self.row_sums) {
                        Some(sum) => sum,
                        None => {
                            let sum = self.a.fill_row(i0 + i, off, wide);
                            for (b, &w) in bytes[start..start + k].iter_mut().zip(&wide[..k]) {
                                *b = w as u8;
                            }
                            sum
                        }
                    };
                    bytes[start + k..start + kp].fill(0);
                    sum
                } else {
                    bytes[start..start + kp].fill(0);
                    0
                };
                // SAFETY: `sums` holds mc words and `i < mc`.
                unsafe { *sums.add(i) = sum };
                let row = &bytes[start..start + kp];
                if pack_rows.is_none() {
                    for (g, block) in row.chunks_exact(G).enumerate() {
                        // SAFETY: group `g < groups`, row `ii < mr` of the panel: G bytes at
                        // `(g * mr + ii) * G`, inside its `groups * mr * G`.
                        unsafe { core::ptr::copy_nonoverlapping(block.as_ptr(), panel.add((g * mr + ii) * G), G) };
                    }
                }
            }
            if let Some(pack) = pack_rows {
                // SAFETY: the kernel proves its ISA; the buffer holds the panel's mr rows of kp
                // bytes, the panel `groups * mr * 4` bytes (G == 4), not overlapping.
                unsafe { pack(bytes.as_ptr(), kp, panel) };
            }
        }
    }

    /// Phase 2, worker `w`: items `w, w + W, ...`, each a block of `mc` rows by a chunk of
    /// [`chunk_panels`] panels: pack the A block (unless held), then per B panel the kernel's
    /// fused strip over the full A panels where it applies (`QKernel::fixed`), and per remaining
    /// A panel the microkernel and the write-out.
    ///
    /// # Safety
    /// `w < workers`, each index run once, after phase 1.
    #[inline(always)]
    unsafe fn phase2(&self, w: usize) {
        let (l, d, kernel) = (&self.l, &self.d, self.kernel);
        let (mr, nr) = (kernel.mr, kernel.nr);
        // SAFETY: worker `w < workers` owns words `[shared + w * per_worker, +per_worker)`.
        let (a_buf, sums, tile, rowbuf) = unsafe {
            let mine = self.scratch.ptr().add(l.col_words + l.b_words + w * l.per_worker);
            let tile = mine.add(l.a_words + l.sum_words);
            (mine.cast::<u8>(), mine.add(l.a_words), tile, tile.add(mr * nr).cast::<i16>())
        };
        let row_blocks = d.m.div_ceil(l.mc);
        let nc = chunk_panels(row_blocks, l.n_panels, self.workers);
        let chunks = l.n_panels.div_ceil(nc);
        let items = row_blocks * chunks;
        let stage = self.out.channel::<Y>(self.ch0);
        let mut packed_block = usize::MAX;
        if let Some(session) = kernel.session {
            // SAFETY: the kernel proves its ISA; `end` runs below, on this thread.
            unsafe { (session.begin)() };
        }
        for t in (w..items).step_by(self.workers) {
            let (rb, cc) = (t / chunks, t % chunks);
            let i0 = rb * l.mc;
            let rows = l.mc.min(d.m - i0);
            if packed_block != rb {
                // SAFETY: the worker's own A block and row sums (`rows <= mc`).
                unsafe { self.pack_a(i0, rows, a_buf, sums, rowbuf) };
                packed_block = rb;
            }
            for jp in cc * nc..((cc + 1) * nc).min(l.n_panels) {
                // SAFETY: `jp < n_panels`, written in phase 1.
                let b_panel = unsafe { self.b_panel(jp) };
                let nv = nr.min(d.n - jp * nr);
                // SAFETY: phase 1 wrote the constants of every column; `jp * nr < cols`.
                let cols = unsafe { Columns::at::<Y>(self.scratch.ptr(), l.cols, jp * nr, stage) };
                // The kernel's fused form for full tiles: one-byte outputs, the fixed-point
                // stage, no row terms (every canonical B zero point of the GEMM 0: an `i8` B at 0,
                // a `u8` B at 128).
                let fused = kernel.fixed.filter(|_| cols.fixed && !self.row_sums && nv == nr);
                let (rs_c, cs_c) = (self.rs_c, self.cs_c);
                // The full tiles' strip in one fused call; the rest (a ragged last row panel,
                // or every tile where the fused form does not apply) tile by tile below.
                let fused_tiles = if fused.is_some() { rows / mr } else { 0 };
                if let Some(fixed) = fused.filter(|_| fused_tiles > 0) {
                    let size = core::mem::size_of::<Y>();
                    let args = QFixedArgs {
                        micro: QMicroArgs { groups: l.groups, a: a_buf, b: b_panel, c: tile },
                        tiles: fused_tiles,
                        a_step: self.panel_bytes(mr),
                        term: cols.term,
                        mult: cols.s0,
                        shift: cols.s1,
                        zp: stage.zero_point,
                        lo: stage.lo,
                        hi: stage.hi,
                        // SAFETY: the first tile's output `(0, 0)`, inside C (below).
                        out: unsafe { self.c.ptr().add(i0 * rs_c + jp * nr * cs_c).cast::<u8>() },
                        rs: rs_c * size,
                        cs: cs_c * size,
                        out_step: mr * rs_c * size,
                    };
                    // SAFETY: the kernel's ISA is proved by `QKernel`; panels `0 .. tiles` of the
                    // worker's block hold `groups` groups in its format; the columns' constants
                    // of phase 1 (`nr` from the panel's first); Y is one byte (`cols.fixed`), and
                    // the strip's `tiles * mr x nr` outputs (rows `i0 ..`, columns `jp * nr ..`)
                    // are inside the validated, alias-free view of C, written by this item alone.
                    unsafe { fixed(&args) };
                }
                for ip in fused_tiles..rows.div_ceil(mr) {
                    let args = QMicroArgs {
                        groups: l.groups,
                        // SAFETY: panel `ip` of the worker's block.
                        a: unsafe { a_buf.add(ip * self.panel_bytes(mr)) },
                        b: b_panel,
                        c: tile,
                    };
                    let mv = mr.min(rows - ip * mr);
                    // SAFETY: the kernel's ISA is proved by `QKernel`; the panels hold `groups`
                    // groups in its format; the tile holds `mr * nr` words.
                    unsafe { (kernel.run)(&args) };
                    // SAFETY: the tile, the row sums of this worker's block, the column terms of
                    // phase 1; rows `i0 + ip * mr ..` and columns `jp * nr ..` of C are inside
                    // the validated, alias-free view and only this item writes them.
                    unsafe {
                        finish_tile(
                            &FinishArgs {
                                tile,
                                nr,
                                mv,
                                nv,
                                row_sums: sums.add(ip * mr),
                                cols: &cols,
                                rs_c,
                                cs_c,
                                row_terms: self.row_sums,
                                vector: kernel.finish_tile,
                            },
                            self.c.ptr().add((i0 + ip * mr) * rs_c + jp * nr * cs_c),
                        )
                    };
                }
            }
        }
        if let Some(session) = kernel.session {
            // SAFETY: `begin` ran above, on this thread.
            unsafe { (session.end)() };
        }
    }
}

impl<S: QRows, B: QOperand, Y: QElem> Ctx<'_, S, B, Y> {
    /// Phase 2 of a direct conv, worker `w`: items `w, w + W, ...`, each `mr` rows of the staged
    /// image by a chunk of [`chunk_panels`] panels: the tile's row sums (where read), then per B
    /// panel the direct kernel, which reads A in place, and the write-out of the tile's rows that
    /// are output pixels, a run of an output row at a time.
    ///
    /// # Safety
    /// `w < workers`, each index run once, after phase 1; `self.direct` is the image, whose
    /// taps and rows the kernel may read as [`QDirectArgs`] says for every tile of `mr` rows
    /// from a multiple of `mr` below `rows`; the kernel has a direct form.
    #[inline(always)]
    unsafe fn phase2_direct(&self, w: usize) {
        let (l, d, kernel) = (&self.l, &self.d, self.kernel);
        let (mr, nr) = (kernel.mr, kernel.nr);
        let (Some(img), Some(direct)) = (self.direct, kernel.direct) else { return };
        // SAFETY: worker `w < workers` owns words `[shared + w * per_worker, +per_worker)`: the
        // row sums (`sum_words >= mr`), then the tile.
        let (sums, tile) = unsafe {
            let mine = self.scratch.ptr().add(l.col_words + l.b_words + w * l.per_worker);
            (mine, mine.add(l.sum_words))
        };
        let row_blocks = d.m.div_ceil(mr);
        let nc = chunk_panels(row_blocks, l.n_panels, self.workers);
        let chunks = l.n_panels.div_ceil(nc);
        let items = row_blocks * chunks;
        let stage = self.out.channel::<Y>(self.ch0);
        let (width, wo) = (img.width, img.wo);
        if let Some(session) = kernel.session {
            // SAFETY: the kernel proves its ISA; `end` runs below, on this thread.
            unsafe { (session.begin)() };
        }
        for t in (w..items).step_by(self.workers) {
            let (rb, cc) = (t / chunks, t % chunks);
            let (q0, end) = (rb * mr, (rb * mr + mr).min(d.m));
            if self.row_sums {
                for q in q0..end {
                    // SAFETY: `q - q0 < mr <= sum_words`, this worker's.
                    unsafe { *sums.add(q - q0) = img.row_sum(q) };
                }
            }
            for jp in cc * nc..((cc + 1) * nc).min(l.n_panels) {
                let args = QDirectArgs {
                    // The image from row q0 (`q0 < rows`: inside it).
                    a: img.image[q0 * img.pixel_bytes..].as_ptr(),
                    stride: img.pixel_bytes,
                    taps: img.taps.as_ptr(),
                    ntaps: img.taps.len(),
                    blocks: img.pixel_bytes / 64,
                    // SAFETY: `jp < n_panels`, written in phase 1.
                    b: unsafe { self.b_panel(jp) },
                    c: tile,
                };
                // SAFETY: the kernel's ISA is proved by `QKernel`, inside its session; the
                // contract covers the image's rows and taps; B's panel holds `ntaps * blocks`
                // blocks (the reduction is `taps * pixel_bytes`); the tile `mr * nr` words.
                unsafe { direct(&args) };
                let nv = nr.min(d.n - jp * nr);
                // SAFETY: phase 1 wrote the constants of every column; `jp * nr < cols`.
                let cols = unsafe { Columns::at::<Y>(self.scratch.ptr(), l.cols, jp * nr, stage) };
                let mut q = q0;
                while q < end {
                    let (oy, ox) = (q / width, q % width);
                    if ox >= wo {
                        q += width - ox;
                        continue;
                    }
                    let mv = (wo - ox).min(end - q);
                    let (rs_c, cs_c) = (self.rs_c, self.cs_c);
                    // SAFETY: rows `q - q0 .. + mv` of the tile and of its row sums; output
                    // pixels `oy * wo + ox ..` (`oy < ho`: `q < rows`), `mv` of them in one
                    // output row, and columns `jp * nr ..` of C, inside the view, written by
                    // this item alone.
                    unsafe {
                        finish_tile(
                            &FinishArgs {
                                tile: tile.add((q - q0) * nr),
                                nr,
                                mv,
                                nv,
                                row_sums: sums.add(q - q0),
                                cols: &cols,
                                rs_c,
                                cs_c,
                                row_terms: self.row_sums,
                                vector: kernel.finish_tile,
                            },
                            self.c.ptr().add((oy * wo + ox) * rs_c + jp * nr * cs_c),
                        )
                    };
                    q += mv;
                }
            }
        }
        if let Some(session) = kernel.session {
            // SAFETY: `begin` ran above, on this thread.
            unsafe { (session.end)() };
        }
    }
}

/// Interleaves `mr` gathered rows (`buf`, each `groups * group` long) into one A panel of
/// `pack`'s format: group `g` of row `ii` at element `(g * mr + ii) * group`.
///
/// # Safety
/// `dst` is valid for `groups * mr * group` elements of the format; `buf` holds `mr` rows.
#[inline(always)]
unsafe fn interleave(pack: QPack, buf: &[i16], mr: usize, groups: usize, dst: *mut u8) {
    let kp = buf.len() / mr;
    match pack {
        // SAFETY: forwarded contract.
        QPack::Bytes4 | QPack::SignedBytes4 => unsafe { interleave_bytes::<4>(buf, mr, groups, dst) },
        // SAFETY: forwarded contract.
        QPack::Bytes8 => unsafe { interleave_bytes::<8>(buf, mr, groups, dst) },
        // SAFETY: forwarded contract.
        QPack::Tiles64 => unsafe { interleave_bytes::<64>(buf, mr, groups, dst) },
        QPack::Pairs16 => {
            // A group of one row is two neighbouring i16 of the gathered row: one word.
            let src = buf.as_ptr().cast::<u32>();
            let to = dst.cast::<u32>();
            if mr == 2 {
                // The Cortex-M's tile: both rows' words of a group, stored together.
                for g in 0..groups {
                    // SAFETY: words `g` and `kp / 2 + g` of `buf`'s two rows (`kp = 2 * groups`, `g <
                    // groups`); words `2g` and `2g + 1` of the panel's `2 * groups`.
                    unsafe {
                        let (w0, w1) = (src.add(g).read_unaligned(), src.add(kp / 2 + g).read_unaligned());
                        to.add(2 * g).write_unaligned(w0);
                        to.add(2 * g + 1).write_unaligned(w1);
                    }
                }
                return;
            }
            for ii in 0..mr {
                for g in 0..groups {
                    // SAFETY: forwarded contract: `buf` holds `mr * kp` i16 with `kp = 2 *
                    // groups`, the panel `groups * mr` words.
                    unsafe { to.add(g * mr + ii).write_unaligned(src.add(ii * kp / 2 + g).read_unaligned()) };
                }
            }
        }
    }
}

/// [`interleave`] for `G`-byte groups: the gathered values (canonical, in `u8` or `i8` range as
/// the format wants) truncated to bytes.
///
/// # Safety
/// As [`interleave`].
#[inline(always)]
unsafe fn interleave_bytes<const G: usize>(buf: &[i16], mr: usize, groups: usize, dst: *mut u8) {
    let kp = buf.len() / mr;
    for g in 0..groups {
        for ii in 0..mr {
            let src = &buf[ii * kp + g * G..ii * kp + g * G + G];
            // SAFETY: forwarded contract: G bytes at `(g * mr + ii) * G`.
            let to = unsafe { core::slice::from_raw_parts_mut(dst.add((g * mr + ii) * G), G) };
            for q in 0..G {
                to[q] = src[q] as u8;
            }
        }
    }
}

/// The widest register tile of any kernel (the column sums of one panel live on the stack).
const MAX_NR: usize = 32;
/// Tallest register tile of any int8 kernel (`mr`: AMX's 32), for the write-out's buffer.
const MAX_MR: usize = 32;

/// Per-column constants of one B panel for the write-out, as phase 1 left them in the scratch:
/// four arrays of `cols` words from the panel's first column: the column terms, the canonical B
/// zero points, and the two words of each channel's rescaling
/// ([`ChannelStage::scale_words`]; the first is the f32 multiplier's bits for an ONNX stage).
struct Columns {
    term: *const i32,
    zb: *const i32,
    s0: *const i32,
    s1: *const i32,
    /// The stage of the GEMM's first channel: its kind, zero point and bounds are every
    /// channel's.
    stage: ChannelStage,
    /// One-byte output with the ONNX stage: the vectorizable path.
    float: bool,
    /// One-byte output with the fixed-point stage: `fixed_narrow`, or the kernel's fused form.
    fixed: bool,
}

impl Columns {
    /// The constants of the columns from `j0`.
    ///
    /// # Safety
    /// `words` holds the four arrays of `cols` words; `j0 < cols`.
    unsafe fn at<Y: QElem>(words: *const i32, cols: usize, j0: usize, stage: ChannelStage) -> Self {
        let float = narrow::<Y>() && stage.float_multiplier().is_some();
        let fixed = narrow::<Y>() && stage.is_fixed();
        // SAFETY: forwarded contract.
        unsafe {
            let term = words.add(j0);
            Columns { term, zb: term.add(cols), s0: term.add(2 * cols), s1: term.add(3 * cols), stage, float, fixed }
        }
    }
}

/// One tile's write-out.
struct FinishArgs<'a> {
    tile: *const i32,
    nr: usize,
    mv: usize,
    nv: usize,
    row_sums: *const i32,
    /// Whether any column's canonical `zb'` is nonzero (else `row_sums` need not be read).
    row_terms: bool,
    cols: &'a Columns,
    rs_c: usize,
    cs_c: usize,
    /// The kernel's vector write-out.
    vector: Option<unsafe fn(&FinishTile)>,
}

/// Rows of the byte buffer a one-byte ONNX write-out fills at once: the whole tile on 64-bit
/// targets (1 KiB of stack), a row at a time on a microcontroller's stack.
const BUF_ROWS: usize = if cfg!(target_pointer_width = "64") { MAX_MR } else { 1 };

/// Finishes one tile into C at `c` (its element `(0, 0)`): adds the row and column terms to
/// each raw sum and applies the output stage. One-byte ONNX outputs, the common case, go
/// through the kernel's vector [`FinishTile`] (or its scalar form, the stage's own arithmetic):
/// straight into C where its columns are unit-stride (`cs_c = 1`), else into a byte buffer,
/// then to C: by rows, or where its rows are (`rs_c = 1`: a conv's NCHW output, the tile's rows
/// pixels, its columns channels a plane apart) transposed 8 x 8 bytes at a time, so that each
/// channel's pixels are stored as runs.
///
/// # Safety
/// `tile` holds `mv x nr` sums, `row_sums` `mv` words, and every `(i, j)` with `i < mv`,
/// `j < nv` at `c + i * rs_c + j * cs_c` is writable by this caller alone.
#[inline(always)]
unsafe fn finish_tile<Y: QElem>(f: &FinishArgs<'_>, c: *mut Y) {
    let cols = f.cols;
    let (nv, nr, mv) = (f.nv, f.nr, f.mv);
    if cols.float {
        // Y is one byte (`cols.float`): C's bytes.
        let c = c.cast::<u8>();
        let (rs, cs) = (f.rs_c, f.cs_c);
        let by_columns = BUF_ROWS == MAX_MR && rs == 1 && cs != 1 && mv <= MAX_MR;
        // Unit-stride columns (a GEMM's row-major C, a conv's NHWC output) take the bytes in
        // place: through a buffer, each row's copy would read back the stores just made (and a
        // 32-byte copy over two 16-byte stores cannot be forwarded from the store buffer). Not
        // on 32-bit targets, whose buffer is one row (a microcontroller's flash is tight).
        let in_place = BUF_ROWS == MAX_MR && cs == 1;
        // Uninitialised (1 KiB to clear otherwise): only `[..rows][..nv]` is written, then read.
        let mut buf = core::mem::MaybeUninit::<[[u8; MAX_NR]; BUF_ROWS]>::uninit();
        let at = buf.as_mut_ptr().cast::<u8>();
        let s = &cols.stage;
        for i0 in (0..mv).step_by(BUF_ROWS) {
            let rows = BUF_ROWS.min(mv - i0);
            let ft = FinishTile {
                rows,
                n: nv,
                // SAFETY: rows `i0 ..` of the tile and of its row sums (forwarded contract).
                raw: unsafe { f.tile.add(i0 * nr) },
                raw_stride: nr,
                term: cols.term,
                zb: cols.zb,
                // The f32 multipliers' bits.
                m: cols.s0.cast::<f32>(),
                // SAFETY: as above.
                row_sums: unsafe { f.row_sums.add(i0) },
                row_terms: f.row_terms,
                zp: s.zero_point,
                lo: s.lo,
                hi: s.hi,
                // SAFETY: C's rows `i0 ..` (forwarded contract), where written in place.
                out: if in_place { unsafe { c.add(i0 * rs) } } else { at },
                out_stride: if in_place { rs } else { MAX_NR },
            };
            // SAFETY: the kernel proves the ISA of its vector form; the tile's rows, the
            // columns' `nv` constants; in place, C's `rows` rows of `nv` bytes (the contract),
            // else the buffer's `rows <= BUF_ROWS` rows of `nv <= MAX_NR`.
            unsafe {
                match f.vector {
                    Some(v) => v(&ft),
                    None => ft.scalar(),
                }
            }
            if in_place {
                continue;
            }
            if by_columns {
                // SAFETY: the buffer's `[..mv][..nv]`, written above (`i0 = 0`, `rows = mv`).
                unsafe { store_transposed(at, mv, nv, c, cs) };
                continue;
            }
            for ii in 0..rows {
                // SAFETY: row `ii` of the buffer; C's row `i0 + ii`, columns `..nv`, as the
                // contract says (contiguous where `cs = 1`).
                unsafe {
                    let (from, to) = (at.add(ii * MAX_NR), c.add((i0 + ii) * rs));
                    if cs == 1 {
                        core::ptr::copy_nonoverlapping(from, to, nv);
                    } else {
                        for jj in 0..nv {
                            *to.add(jj * cs) = *from.add(jj);
                        }
                    }
                }
            }
        }
        return;
    }
    for ii in 0..mv {
        // SAFETY: forwarded contract.
        let (row, row_sum) = unsafe { (core::slice::from_raw_parts(f.tile.add(ii * nr), nv), *f.row_sums.add(ii)) };
        if cols.fixed {
            let (zp, lo, hi) = (cols.stage.zero_point, cols.stage.lo, cols.stage.hi);
            for (jj, &raw) in row.iter().enumerate() {
                // SAFETY: the column arrays hold `nv` values from the panel's first column; the
                // stage was validated (multiplier >= 0, shift in [-31, 30]), as `fixed_narrow`
                // needs; C as the contract says.
                unsafe {
                    let acc = corrected(raw, *cols.term.add(jj), *cols.zb.add(jj), row_sum);
                    let y = fixed_narrow(acc, *cols.s0.add(jj), *cols.s1.add(jj), zp, lo, hi);
                    *c.add(ii * f.rs_c + jj * f.cs_c) = Y::narrow(y);
                }
            }
        } else {
            for (jj, &raw) in row.iter().enumerate() {
                // SAFETY: the column arrays hold `nv` values from the panel's first column.
                let y = unsafe {
                    let stage = cols.stage.with_scale_words([*cols.s0.add(jj), *cols.s1.add(jj)]);
                    stage.apply::<Y>(corrected(raw, *cols.term.add(jj), *cols.zb.add(jj), row_sum))
                };
                // SAFETY: forwarded contract.
                unsafe { *c.add(ii * f.rs_c + jj * f.cs_c) = y };
            }
        }
    }
}

/// The `mv x nv` bytes at `rows` (rows `MAX_NR` apart) stored transposed: column `jj` as the
/// `mv` contiguous bytes at `c + jj * cs`, eight columns at a time through [`transpose8x8`] (the
/// last rows of a block past `mv` read as zeros and not stored), the columns past the last
/// whole eight one byte at a time.
///
/// # Safety
/// `rows` holds the `mv x nv` bytes (`mv <= MAX_MR`, `nv <= MAX_NR`); each `c + jj * cs + ii`
/// with `ii < mv`, `jj < nv` is writable by this caller alone.
#[inline(always)]
unsafe fn store_transposed(rows: *const u8, mv: usize, nv: usize, c: *mut u8, cs: usize) {
    let n8 = nv / 8 * 8;
    for j0 in (0..n8).step_by(8) {
        for i0 in (0..mv).step_by(8) {
            let valid = (mv - i0).min(8);
            // SAFETY: rows `i0 .. i0 + valid <= mv`, bytes `j0 .. j0 + 8 <= nv`; C's `valid`
            // bytes of each column `j0 + j` from row `i0` (forwarded contract).
            unsafe {
                // Little-endian words, as `transpose8x8` takes them, on any target.
                let block = core::array::from_fn(|i| {
                    if i < valid {
                        u64::from_le_bytes(rows.add((i0 + i) * MAX_NR + j0).cast::<[u8; 8]>().read_unaligned())
                    } else {
                        0
                    }
                });
                for (j, col) in transpose8x8(block).into_iter().enumerate() {
                    let (to, b) = (c.add((j0 + j) * cs + i0), col.to_le_bytes());
                    if valid == 8 {
                        to.cast::<[u8; 8]>().write_unaligned(b);
                    } else {
                        // The first `valid` bytes: 4, 2 and 1 at a time.
                        let mut at = 0;
                        if valid & 4 != 0 {
                            to.cast::<[u8; 4]>().write_unaligned([b[0], b[1], b[2], b[3]]);
                            at = 4;
                        }
                        if valid & 2 != 0 {
                            to.add(at).cast::<[u8; 2]>().write_unaligned([b[at], b[at + 1]]);
                            at += 2;
                        }
                        if valid & 1 != 0 {
                            *to.add(at) = b[at];
                        }
                    }
                }
            }
        }
    }
    for jj in n8..nv {
        for ii in 0..mv {
            // SAFETY: as above, element by element, for the columns past the whole eights.
            unsafe { *c.add(jj * cs + ii) = *rows.add(ii * MAX_NR + jj) };
        }
    }
}

/// An 8 x 8 byte matrix transposed: `rows[i]`'s byte `j` (little-endian) becomes byte `i` of
/// the result's `j`. Three rounds of swapping 1-, 2- and 4-byte blocks between rows (Hacker's
/// Delight, 7-3), a few dozen integer operations for 64 bytes.
#[inline(always)]
pub(crate) fn transpose8x8(mut r: [u64; 8]) -> [u64; 8] {
    for (shift, mask, pairs) in [
        (8, 0x00FF_00FF_00FF_00FFu64, [(0, 1), (2, 3), (4, 5), (6, 7)]),
        (16, 0x0000_FFFF_0000_FFFF, [(0, 2), (1, 3), (4, 6), (5, 7)]),
        (32, 0x0000_0000_FFFF_FFFF, [(0, 4), (1, 5), (2, 6), (3, 7)]),
    ] {
        for (a, b) in pairs {
            let t = ((r[a] >> shift) ^ r[b]) & mask;
            r[b] ^= t;
            r[a] ^= t << shift;
        }
    }
    r
}

/// The two phases of a GEMM (see the module docs).
#[derive(Clone, Copy)]
enum Phase {
    /// Phase 1: B's panels and column terms.
    PackB,
    /// Phase 2: the tiles, from packed A panels or (a direct conv) the staged image.
    Tiles,
}

/// Runs phase 1 or 2 of `ctx` for worker `w`, compiled for the kernel's ISA so that packing and
/// the write-out vectorize with the kernel's instructions (the `QKernel` proves the CPU has
/// them; AVX-512F implies AVX2).
///
/// # Safety
/// As [`Ctx::phase1`] / [`Ctx::phase2`] / [`Ctx::phase2_direct`].
unsafe fn run_phase<S: QRows, B: QOperand, Y: QElem>(ctx: &Ctx<'_, S, B, Y>, w: usize, phase: Phase) {
    #[inline(always)]
    unsafe fn body<S: QRows, B: QOperand, Y: QElem>(ctx: &Ctx<'_, S, B, Y>, w: usize, phase: Phase) {
        // SAFETY: forwarded contract.
        unsafe {
            match phase {
                Phase::PackB => ctx.phase1(w),
                // Compiled only where a direct kernel may run: 4 KiB less per source type on a
                // Cortex-M.
                Phase::Tiles if DIRECT_KERNELS && ctx.direct.is_some() => ctx.phase2_direct(w),
                Phase::Tiles => ctx.phase2(w),
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        /// # Safety
        /// As [`run_phase`], on a CPU with AVX2.
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<S: QRows, B: QOperand, Y: QElem>(ctx: &Ctx<'_, S, B, Y>, w: usize, phase: Phase) {
            // SAFETY: forwarded contract.
            unsafe { body(ctx, w, phase) }
        }
        /// # Safety
        /// As [`run_phase`], on a CPU with AVX-512F.
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<S: QRows, B: QOperand, Y: QElem>(ctx: &Ctx<'_, S, B, Y>, w: usize, phase: Phase) {
            // SAFETY: forwarded contract.
            unsafe { body(ctx, w, phase) }
        }
        match ctx.kernel.isa {
            // SAFETY: the kernel proves the CPU runs AVX2 (AVX-VNNI's detection requires it).
            crate::arch::Isa::Avx2 | crate::arch::Isa::AvxVnni => return unsafe { avx2(ctx, w, phase) },
            // SAFETY: the kernel proves AVX-512F (its VNNI kernel needs it; AMX's detection
            // requires it).
            crate::arch::Isa::Avx512Vnni | crate::arch::Isa::AmxInt8 => return unsafe { avx512(ctx, w, phase) },
            _ => {}
        }
    }
    // SAFETY: forwarded contract.
    unsafe { body(ctx, w, phase) }
}

/// The operands of one GEMM for [`qgemm_unchecked`]: A's rows, its zero point, B and its
/// per-channel parameters starting at channel `ch0`.
pub(crate) struct QOperands<'a, S, B: QElem> {
    pub a: &'a S,
    pub a_zero: i32,
    pub b: BSource<'a, B>,
    pub b_zero: &'a crate::quant::PerChannel<'a, i32>,
    pub bias: Option<&'a [i32]>,
    pub ch0: usize,
}

/// B of one GEMM: a matrix the driver packs in phase 1, or panels packed ahead of the call
/// (a [`crate::quant::packed`] weight the caller keeps).
#[derive(Clone, Copy)]
pub(crate) enum BSource<'a, B: QElem> {
    Matrix(&'a MatRef<'a, B>),
    Packed(PackedPanels<'a>),
}

impl<B: QElem> BSource<'_, B> {
    /// Columns of B.
    pub fn cols(&self) -> usize {
        match self {
            BSource::Matrix(b) => b.cols(),
            BSource::Packed(p) => p.colsums.len(),
        }
    }
}

/// B's panels packed ahead, as phase 1 would have packed them, and each column's canonical sum.
#[derive(Clone, Copy)]
pub(crate) struct PackedPanels<'a> {
    /// Every nr-panel of the GEMM's columns in the kernel's format ([`packed_b_bytes`]).
    pub panels: &'a [u8],
    /// One canonical column sum per column.
    pub colsums: &'a [i32],
}

/// Bytes of B's panels packed for `kernel` at `k x n`: what phase 1 packs into the scratch.
pub(crate) fn packed_b_bytes(kernel: &QKernel, k: usize, n: usize) -> Result<usize> {
    mul(layout(kernel, 1, n, k)?.b_words, 4, Param::Scratch)
}

/// Where B's element `(p, j)` goes in panels packed for `kernel` (the layout phase 1 writes:
/// per nr-panel, per group of `G` reduction steps, the panel's `nr` columns' `G` steps each),
/// and the bytes of one element. Only for `p < k`, `j < n` of the problem the panels are sized
/// for ([`packed_b_bytes`]).
pub(crate) struct PanelPlace {
    nr: usize,
    group: usize,
    elem: usize,
    panel_bytes: usize,
}

impl PanelPlace {
    pub fn new(kernel: &QKernel, k: usize) -> Self {
        let pack = kernel.pack;
        // Tiles64's B is 16 groups of 4 per 64-deep block (`phase1`).
        let group = if pack == QPack::Tiles64 { 4 } else { pack.group() };
        let panel_bytes = k.div_ceil(pack.group()) * kernel.nr * pack.group() * pack.elem_bytes();
        PanelPlace { nr: kernel.nr, group, elem: pack.elem_bytes(), panel_bytes }
    }

    /// Writes the canonical value `v` of `(p, j)` into `panels`.
    pub fn put(&self, panels: &mut [u8], p: usize, j: usize, v: i32) {
        let (jp, jj) = (j / self.nr, j % self.nr);
        let at = jp * self.panel_bytes + ((p / self.group * self.nr + jj) * self.group + p % self.group) * self.elem;
        if self.elem == 1 {
            panels[at] = v as u8;
        } else {
            panels[at..at + 2].copy_from_slice(&(v as i16).to_ne_bytes());
        }
    }
}

/// [`qgemm_with`] without validation, for any A source (`quant::conv` calls it per image and
/// group). With `pack_b` false, B's panels and column terms are taken as already in `scratch`
/// from a previous call with the same B, per-channel parameters, A zero point and sizes (conv's
/// images after the first of a group).
///
/// # Safety
/// Everything [`qgemm_with`] checks must hold for these operands (channels `ch0 ..` of the
/// per-channel parameters), `m, n > 0`, C is `m x n` at `c` with strides `rs_c, cs_c` (valid,
/// alias-free, written by nobody else meanwhile), and `scratch` holds at least
/// [`qgemm_scratch_len`] words for `exec.workers()` ([`qgemm_packed_scratch_len`] for B packed
/// ahead, whose panels hold every column's); without `pack_b`, a call as described above wrote
/// the scratch's column constants (and B region) last.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn qgemm_unchecked<S: QRows, B: QOperand, Y: QElem>(
    ops: &QOperands<'_, S, B>,
    out: &OutputStage<'_>,
    (c, rs_c, cs_c): (*mut Y, usize, usize),
    kernel: &QKernel,
    exec: &Pinned<'_>,
    scratch: &mut [i32],
    pack_b: bool,
) {
    let d = QGemmDims { m: ops.a.rows(), n: ops.b.cols(), k: ops.a.cols() };
    // The layout was computed (and its arithmetic checked) when the scratch was sized; B packed
    // ahead has no region.
    let Ok(l) = layout(kernel, d.m, d.n, d.k) else { return };
    let l = if matches!(ops.b, BSource::Packed(_)) { without_b(l) } else { l };
    // On a 32-bit Arm every A source runs one compiled driver (`Erased`): flash counts there.
    #[cfg(target_arch = "arm")]
    let erased = Erased(ops.a);
    #[cfg(target_arch = "arm")]
    let ops = &QOperands { a: &erased, a_zero: ops.a_zero, b: ops.b, b_zero: ops.b_zero, bias: ops.bias, ch0: ops.ch0 };
    // SAFETY: forwarded contract (`Erased` is its source, row for row).
    unsafe { run_gemm(ops, out, (c, rs_c, cs_c), (kernel, exec, scratch), (l, d), pack_b, None) }
}

/// [`QRows`] through a reference, object-safe: what [`Erased`] calls.
#[cfg(target_arch = "arm")]
trait DynRows: Sync {
    fn dyn_rows(&self) -> usize;
    fn dyn_cols(&self) -> usize;
    fn dyn_offset(&self) -> i32;
    fn dyn_visit_row(&self, i: usize, f: &mut dyn FnMut(i32));
    fn dyn_fill_rows(&self, i0: usize, off: i32, buf: &mut [i16], kp: usize, sums: &mut [i32]);
}

#[cfg(target_arch = "arm")]
impl<S: QRows> DynRows for S {
    fn dyn_rows(&self) -> usize {
        QRows::rows(self)
    }
    fn dyn_cols(&self) -> usize {
        QRows::cols(self)
    }
    fn dyn_offset(&self) -> i32 {
        QRows::offset(self)
    }
    fn dyn_visit_row(&self, i: usize, f: &mut dyn FnMut(i32)) {
        QRows::visit_row(self, i, f)
    }
    fn dyn_fill_rows(&self, i0: usize, off: i32, buf: &mut [i16], kp: usize, sums: &mut [i32]) {
        QRows::fill_rows(self, i0, off, buf, kp, sums)
    }
}

/// Any A source as one type, so that the driver is compiled once for all of them (on a Cortex-M4
/// the int8 driver's phases are 5-6 KiB a source); the rows are filled by the source's own code,
/// one call a panel (`fill_rows`, all the driver calls there besides the sizes: `Ctx::pack_a`
/// takes neither the byte-row forms nor `fill_row` on a 32-bit Arm, so those keep their
/// defaults).
#[cfg(target_arch = "arm")]
struct Erased<'a>(&'a dyn DynRows);

#[cfg(target_arch = "arm")]
impl QRows for Erased<'_> {
    fn rows(&self) -> usize {
        self.0.dyn_rows()
    }
    fn cols(&self) -> usize {
        self.0.dyn_cols()
    }
    fn offset(&self) -> i32 {
        self.0.dyn_offset()
    }
    fn visit_row(&self, i: usize, mut f: impl FnMut(i32)) {
        self.0.dyn_visit_row(i, &mut f)
    }
    fn fill_rows(&self, i0: usize, off: i32, buf: &mut [i16], kp: usize, sums: &mut [i32]) {
        self.0.dyn_fill_rows(i0, off, buf, kp, sums)
    }
}

/// A direct conv ([`QKernel::direct`]): [`qgemm_unchecked`] with A the staged image `ops.a`,
/// read in place by the kernel, and row `q` of the GEMM written to C's row `(q / width) * wo +
/// q % width` where `q % width < wo` (C holds `ho * wo` rows).
///
/// # Safety
/// As [`qgemm_unchecked`] for the problem `rows x n x (taps * pixel_bytes)` (the accumulator
/// bound, the stage, the parameters; C's `ho * wo` rows instead of `rows`), with `scratch`
/// holding [`qconv_direct_scratch_len`] words (with `packed` as `ops.b` is); the kernel has a
/// direct form; `pixel_bytes` is a multiple of 64 and the image holds every byte a tile of `mr` rows from a multiple of `mr`
/// below `rows` reads at its taps; `pixel_sums`, where present, holds each pixel those reads
/// cover and is present when some canonical weight zero point is nonzero.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn qconv_direct_unchecked<B: QOperand, Y: QElem>(
    ops: &QOperands<'_, DirectImage<'_>, B>,
    out: &OutputStage<'_>,
    c: (*mut Y, usize, usize),
    kernel: &QKernel,
    exec: &Pinned<'_>,
    scratch: &mut [i32],
    pack_b: bool,
) {
    let d = QGemmDims { m: ops.a.rows(), n: ops.b.cols(), k: ops.a.cols() };
    // The layout was computed (and its arithmetic checked) when the scratch was sized; B packed
    // ahead has no region.
    let Ok(l) = direct_layout(kernel, d.m, d.n, d.k) else { return };
    let l = if matches!(ops.b, BSource::Packed(_)) { without_b(l) } else { l };
    debug_assert!(DIRECT_KERNELS && kernel.direct.is_some(), "a direct conv planned without a direct kernel");
    // SAFETY: forwarded contract.
    unsafe { run_gemm(ops, out, c, (kernel, exec, scratch), (l, d), pack_b, Some(ops.a)) }
}

/// Whether a kernel with a direct form ([`QKernel::direct`]) may run on this target: only x86's
/// (AMX, AVX-512 VNNI) have one, and the tests' portable kernel in AMX's formats. Elsewhere the
/// direct phase is not compiled (a direct conv is planned only for a kernel that has the form).
pub(crate) const DIRECT_KERNELS: bool = cfg!(any(test, target_arch = "x86_64"));

/// The body of [`qgemm_unchecked`] and [`qconv_direct_unchecked`]: both phases on the workers.
///
/// # Safety
/// As the callers, `l` the layout of `d` for the scratch given.
unsafe fn run_gemm<S: QRows, B: QOperand, Y: QElem>(
    ops: &QOperands<'_, S, B>,
    out: &OutputStage<'_>,
    (c, rs_c, cs_c): (*mut Y, usize, usize),
    (kernel, exec, scratch): (&QKernel, &Pinned<'_>, &mut [i32]),
    (l, d): (Layout, QGemmDims),
    pack_b: bool,
    direct: Option<&DirectImage<'_>>,
) {
    let start = line_start(scratch);
    let ctx = Ctx {
        a: ops.a,
        za: ops.a_zero + ops.a.offset() + kernel.pack.a_shift(),
        b: ops.b,
        b_zero: ops.b_zero,
        bias: ops.bias,
        out,
        ch0: ops.ch0,
        kernel,
        l,
        d,
        workers: planned_workers(exec),
        // The first 64-byte line of the scratch (the layout's regions are whole lines from it);
        // the scratch holds a line's worth of words more than the regions for this.
        scratch: Shared(scratch[start..].as_mut_ptr()),
        c: Shared(c),
        rs_c,
        cs_c,
        row_sums: (0..d.n).any(|j| ops.b_zero.at(ops.ch0 + j) + b_offset::<B>() != 0),
        direct,
    };
    if pack_b {
        // SAFETY: every worker index once, before phase 2.
        exec.run(&|w| unsafe { run_phase(&ctx, w, Phase::PackB) });
    }
    // SAFETY: every worker index once, after phase 1 has ended (`run` returned).
    exec.run(&|w| unsafe { run_phase(&ctx, w, Phase::Tiles) });
}

/// Elements from `scratch`'s start to its first 64-byte line (fewer than a line holds).
pub(crate) fn line_start<T>(scratch: &[T]) -> usize {
    let per_line = 64 / core::mem::size_of::<T>().max(1);
    // `align_offset` may decline (Miri's symbolic alignment): alignment only affects speed.
    Some(scratch.as_ptr().align_offset(64)).filter(|&w| w < per_line).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    //! Small enough for Miri: the generic kernel (and the best one outside Miri) against the
    //! integer oracle, all four operand-type pairs, per-channel zero points, both stages.
    use super::*;
    use crate::gemm::driver::Sequential;
    use crate::quant::reference::qgemm_reference;
    use crate::quant::PerChannel;

    const M: usize = 9;
    const N: usize = 19;
    const K: usize = 13;

    fn bytes<const L: usize>(mut x: u32) -> [u8; L] {
        core::array::from_fn(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
    }

    /// 9 x 19 x 13: two of AVX2's 16-column panels and both of its 6-row panels, ragged.
    fn case<A: QOperand, B: QOperand>(
        conv_a: impl Fn(u8) -> A,
        conv_b: impl Fn(u8) -> B,
        za: i32,
        zb: impl Fn(usize) -> i32,
    ) {
        let ra: [u8; M * K] = bytes(1);
        let rb: [u8; K * N] = bytes(2);
        let a: [A; M * K] = core::array::from_fn(|i| conv_a(ra[i]));
        let b: [B; K * N] = core::array::from_fn(|i| conv_b(rb[i]));
        let zb: [i32; N] = core::array::from_fn(zb);
        let bias: [i32; N] = core::array::from_fn(|j| (j as i32 - 9) * 113);
        let op = QGemm {
            a: MatRef::row_major(&a, M, K).unwrap(),
            a_zero: za,
            b: MatRef::row_major(&b, K, N).unwrap(),
            b_zero: PerChannel::Channel(&zb),
            bias: Some(&bias),
        };
        let scales: [f32; N] = core::array::from_fn(|j| 0.002 * (1 + j % 5) as f32);
        let mults: [i32; N] = core::array::from_fn(|j| 1_100_000_000 + j as i32 * 50_000_000);
        let shifts: [i32; N] = core::array::from_fn(|j| [-9, -8, -10, 1][j % 4]);
        let stages = [
            OutputStage::onnx(0.05, PerChannel::Channel(&scales), 0.1, 3),
            OutputStage::fixed(PerChannel::Tensor(1_518_500_250), PerChannel::Tensor(-9), -5, -128, 100),
            OutputStage::fixed(PerChannel::Channel(&mults), PerChannel::Channel(&shifts), 4, -100, 127),
        ];
        let mut scratch = [0i32; 4096];
        // The best kernel is the generic one where nothing is detected (under Miri): once.
        let kernels = [QKernel::generic(), QKernel::best()];
        let distinct = if kernels[0].id() == kernels[1].id() { 1 } else { 2 };
        for kernel in kernels.into_iter().take(distinct) {
            let len = qgemm_scratch_len(kernel, M, N, K, 1).unwrap();
            for stage in &stages {
                let mut got = [0i8; M * N];
                let mut want = [0i8; M * N];
                let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len] };
                qgemm_with(&op, stage, MatMut::row_major(&mut got, M, N).unwrap(), ws).unwrap();
                qgemm_reference(&op, stage, MatMut::row_major(&mut want, M, N).unwrap()).unwrap();
                assert_eq!(got, want, "{}", kernel.id());
                let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len - 1] };
                assert!(qgemm_with(&op, stage, MatMut::row_major(&mut got, M, N).unwrap(), ws).is_err());
            }
            let mut got = [0i32; M * N];
            let mut want = [0i32; M * N];
            let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len] };
            qgemm_with(&op, &OutputStage::ACCUMULATOR, MatMut::col_major(&mut got, M, N).unwrap(), ws).unwrap();
            qgemm_reference(&op, &OutputStage::ACCUMULATOR, MatMut::col_major(&mut want, M, N).unwrap()).unwrap();
            assert_eq!(got, want, "{} accumulator", kernel.id());
        }
    }

    /// The fused fixed-point form (`QKernel::fixed`, the portable kernel's here and under Miri)
    /// placed in every way the driver places it: 38 rows (two row blocks of the 4 x 4 tiles,
    /// and a last panel of two rows, which goes tile by tile), 19 columns (four full panels and
    /// a ragged one), row- and column-major C, `i8` and `u8` outputs, per-tensor and
    /// per-channel stages, canonical B zero point 0 (`i8` at 0, `u8` at 128); A row-major and
    /// column-major (the latter's two-row panel packed by `fill_rows`' two-row pass).
    #[test]
    fn fused_fixed_point_strips_match_the_oracle() {
        const M: usize = 38;
        let ra: [u8; M * K] = bytes(3);
        let rb: [u8; K * N] = bytes(4);
        let bias: [i32; N] = core::array::from_fn(|j| (j as i32 - 9) * 113);
        let mults: [i32; N] = core::array::from_fn(|j| 1_100_000_000 + j as i32 * 50_000_000);
        let shifts: [i32; N] = core::array::from_fn(|j| [-9, -8, -10, 1][j % 4]);
        // Every column's shift in the folded form's range (`FixedFolded`), one at each end.
        let folded: [i32; N] = core::array::from_fn(|j| [-9, -1, -22, -12][j % 4]);
        // (i8 output stage, u8 output stage): per tensor, then per channel, then per channel
        // folded and clamped at 127 (`FixedFolded::apply_i8`, into `u8` too).
        let stages = [
            (
                OutputStage::fixed(PerChannel::Tensor(1_518_500_250), PerChannel::Tensor(-9), -5, -128, 100),
                OutputStage::fixed(PerChannel::Tensor(1_518_500_250), PerChannel::Tensor(-9), 5, 0, 200),
            ),
            (
                OutputStage::fixed(PerChannel::Channel(&mults), PerChannel::Channel(&shifts), 4, -100, 127),
                OutputStage::fixed(PerChannel::Channel(&mults), PerChannel::Channel(&shifts), 130, 0, 255),
            ),
            (
                OutputStage::fixed(PerChannel::Channel(&mults), PerChannel::Channel(&folded), 4, -7, 127),
                OutputStage::fixed(PerChannel::Channel(&mults), PerChannel::Channel(&folded), 60, 0, 127),
            ),
        ];
        /// One GEMM on the portable kernel (A's zero point 9, B's per tensor) against the
        /// oracle, C row- or column-major, its elements starting from other values than the
        /// oracle's.
        fn check<B: QOperand, Y: QElem + PartialEq>(
            (a, b, b_zero, bias): (MatRef<'_, u8>, MatRef<'_, B>, i32, &[i32]),
            stage: &OutputStage<'_>,
            col_major_c: bool,
            scratch: &mut [i32],
            (c_kind, col_major_a): (&str, bool),
        ) {
            let op = QGemm { a, a_zero: 9, b, b_zero: PerChannel::Tensor(b_zero), bias: Some(bias) };
            fn view<Y: Copy>(c: &mut [Y], col_major: bool) -> MatMut<'_, Y> {
                if col_major { MatMut::col_major(c, M, N) } else { MatMut::row_major(c, M, N) }.unwrap()
            }
            let (mut got, mut want) = ([Y::narrow(1); M * N], [Y::narrow(0); M * N]);
            let kernel = QKernel::generic();
            let len = qgemm_scratch_len(kernel, M, N, K, 1).unwrap();
            let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len] };
            qgemm_with(&op, stage, view(&mut got, col_major_c), ws).unwrap();
            qgemm_reference(&op, stage, view(&mut want, col_major_c)).unwrap();
            assert_eq!(got, want, "{c_kind} C, A col-major {col_major_a}");
        }
        let b_i8: [i8; K * N] = core::array::from_fn(|e| rb[e] as i8);
        let b_u8: [u8; K * N] = rb;
        let mut scratch = [0i32; 8192];
        for col_major_a in [false, true] {
            let am = if col_major_a { MatRef::col_major(&ra, M, K) } else { MatRef::row_major(&ra, M, K) }.unwrap();
            // Under Miri (slow) a column-major A, which changes only the packing, with one stage.
            let stages = if cfg!(miri) && col_major_a { &stages[..1] } else { &stages[..] };
            for (stage, stage_u8) in stages {
                let b = MatRef::row_major(&b_i8, K, N).unwrap();
                check::<_, i8>((am, b, 0, &bias), stage, false, &mut scratch, ("i8 row-major", col_major_a));
                let b = MatRef::row_major(&b_u8, K, N).unwrap();
                check::<_, u8>((am, b, 128, &bias), stage_u8, true, &mut scratch, ("u8 column-major", col_major_a));
            }
        }
    }

    /// The word-at-a-time widening (a Cortex-M's row fill) equals the byte-at-a-time one: values
    /// in order, top bits flipped where asked, the sum across its 128-word folds and the tail.
    #[test]
    fn word_widening_equals_the_bytes() {
        let src: [u8; 1031] = bytes(5);
        for len in [0, 1, 3, 4, 8, 13, 511, 512, 513, 1031] {
            for flip in [None, Some(0x8080_8080)] {
                let mut got = [-1i16; 1031];
                let sum = widen_words(&src[..len], flip, &mut got[..len]);
                let want: [i16; 1031] = core::array::from_fn(|i| i16::from(src[i] ^ flip.map_or(0, |_| 0x80)));
                assert_eq!(got[..len], want[..len], "{len} {flip:?}");
                assert!(got[len..].iter().all(|&v| v == -1), "{len}");
                assert_eq!(sum, want[..len].iter().map(|&v| i32::from(v)).sum::<i32>(), "{len} {flip:?}");
            }
        }
    }

    /// B's pair groups (AVX2's and the Cortex-M's `i16` format) from a strided B, whole groups
    /// (two at a time) and the padded rest: element `(g * nr + jj) * 2 + q` of the panel is `B(2g
    /// + q, jj) + off`, zero past `k` and `nv`, and each column's sum is added.
    #[test]
    fn pair_groups_pack_two_at_a_time() {
        let (k, n, nr) = (7, 3, 4);
        let b: [i8; 7 * 5] = core::array::from_fn(|e| (e as i32 * 37 % 251 - 125) as i8);
        for nv in [n, nr] {
            // B(p, jj) at p * 5 + jj (rows 5 apart), the panel's `nv` columns.
            let src = PanelSource { src: b.as_ptr(), rs: 5, cs: 1, k, nv, nr, groups: k.div_ceil(2), off: -3 };
            let mut panel = [0i16; 4 * 2 * 4];
            let mut sums = [0i32; MAX_NR];
            // SAFETY: B holds (p, jj) for p < 7, jj < 5 at p * 5 + jj; the panel groups * nr * 2.
            unsafe { src.pack::<i16, 2>(panel.as_mut_ptr(), &mut sums) };
            for g in 0..k.div_ceil(2) {
                for jj in 0..nr {
                    for q in 0..2 {
                        let p = 2 * g + q;
                        let want = if p < k && jj < nv { i32::from(b[p * 5 + jj]) - 3 } else { 0 };
                        assert_eq!(i32::from(panel[(g * nr + jj) * 2 + q]), want, "nv {nv} g {g} column {jj} q {q}");
                    }
                }
            }
            for jj in 0..nr {
                let want: i32 = if jj < nv { (0..k).map(|p| i32::from(b[p * 5 + jj]) - 3).sum() } else { 0 };
                assert_eq!(sums[jj], want, "nv {nv} column {jj}");
            }
        }
    }

    /// The pair format's panels: group `g` of row `ii` is word `g * mr + ii`, for the
    /// Cortex-M's two rows (its own loop) and for AVX2's six.
    #[test]
    fn pairs_interleave_by_group() {
        for mr in [2, 6] {
            let groups = 5;
            let buf: [i16; 60] = core::array::from_fn(|e| e as i16 * 7 - 100);
            let mut panel = [0u32; 30];
            // SAFETY: `buf` holds `mr` rows of `2 * groups` i16; the panel `groups * mr` words.
            unsafe { interleave(QPack::Pairs16, &buf[..mr * 2 * groups], mr, groups, panel.as_mut_ptr().cast()) };
            for g in 0..groups {
                for ii in 0..mr {
                    let (lo, hi) = (buf[ii * 2 * groups + 2 * g], buf[ii * 2 * groups + 2 * g + 1]);
                    // The two i16 as they lie in memory, read as one word.
                    let ([a, b], [c, d]) = (lo.to_ne_bytes(), hi.to_ne_bytes());
                    assert_eq!(panel[g * mr + ii], u32::from_ne_bytes([a, b, c, d]), "mr {mr} g {g} row {ii}");
                }
            }
        }
    }

    /// `k = 0` with several B panels: empty operands (B's slice may be empty), the bias alone.
    #[test]
    fn empty_reduction_gives_the_bias() {
        let (a, b): ([u8; 0], [i8; 0]) = ([], []);
        let bias: [i32; 9] = core::array::from_fn(|j| j as i32 * 7 - 20);
        let op = QGemm {
            a: MatRef::row_major(&a, 3, 0).unwrap(),
            a_zero: 5,
            b: MatRef::row_major(&b, 0, 9).unwrap(),
            b_zero: PerChannel::Tensor(2),
            bias: Some(&bias),
        };
        let mut scratch = [0i32; 2048];
        for kernel in [QKernel::generic(), QKernel::best()] {
            let len = qgemm_scratch_len(kernel, 3, 9, 0, 1).unwrap();
            let mut got = [0i32; 27];
            let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len] };
            qgemm_with(&op, &OutputStage::ACCUMULATOR, MatMut::row_major(&mut got, 3, 9).unwrap(), ws).unwrap();
            assert!(got.iter().enumerate().all(|(e, &v)| v == bias[e % 9]), "{}: {got:?}", kernel.id());
        }
    }

    #[test]
    fn every_operand_type_pair_matches_the_oracle_exactly() {
        let zb = |j: usize| (j as i32 % 7) - 3;
        case(|x| x, |x| x as i8, 7, zb);
        case(|x| x as i8, |x| x as i8, -9, zb);
        let zbu = |j: usize| [128, 131, 126, 0, 255][j % 5];
        case(|x| x, |x| x, 255, zbu);
        case(|x| x as i8, |x| x, 127, zbu);
        // Every canonical B zero point 0 (i8 at 0, u8 at 128): no row terms, so full tiles
        // with the fixed-point stage take the kernel's fused form (`QKernel::fixed`).
        case(|x| x, |x| x as i8, 7, |_| 0);
        case(|x| x as i8, |x| x, -9, |_| 128);
    }
}
