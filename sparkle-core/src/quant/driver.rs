//! The int8 GEMM driver: packs B once (shared), packs blocks of A per worker, runs the
//! microkernel on `mr x nr` tiles and finishes each tile in safe code: zero-point corrections,
//! bias and the output stage ([`OutputStage::apply`], the oracle's own function).
//!
//! ## The arithmetic
//! Operands are canonicalised while packing: A to `u8` (an `i8` A is shifted by +128, its zero
//! point with it), B to `i8` (a `u8` B by -128). With `a'`, `b'`, `za'`, `zb'` the shifted values,
//!
//! ```text
//! sum_p (a' - za')(b' - zb') = sum_p a' b'  -  za' * colsum(b')[j]  -  zb'[j] * rowsum(a')[i]  +  k za' zb'[j]
//! ```
//! The kernels compute the first term; the column terms (with the bias) are summed while B is
//! packed, the row sums while A is packed. Everything is wrapping `i32`, exact because the true
//! result fits (the accumulator bound of [`QGemm::check`]).
//!
//! ```text
//! phase 1 (all workers): pack B's nr-panels (worker w: panels w, w+W, ...) and their column terms
//! phase 2 (all workers): items = (block of mc rows) x (chunk of NC_PANELS panels), worker w takes
//!   w, w+W, ...: pack the A block (unless it already holds it), then per B panel, per A panel:
//!   microkernel -> tile -> finish into C
//! ```
#![allow(unsafe_code)]

use crate::arch::quant::{QKernel, QMicroArgs, QPack};
use crate::error::{mul, Error, Param, Result};
use crate::gemm::driver::{Executor, Pinned};
use crate::quant::{OutputStage, QElem, QGemm, QGemmDims};
use crate::view::{MatMut, MatRef};

/// mr-panels per block of A rows.
const MC_PANELS: usize = 8;
/// nr-panels per chunk of columns (one work item).
const NC_PANELS: usize = 16;

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

/// The scratch layout for one problem, in `i32` words.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// k-groups (k rounded up to the kernel's group).
    groups: usize,
    /// nr-panels of B.
    n_panels: usize,
    /// Rows per block of A (a multiple of mr, at most the rounded-up m).
    mc: usize,
    /// Words of the column terms (`n_panels * nr`).
    col_words: usize,
    /// Words of packed B.
    b_words: usize,
    /// Words of one packed A block.
    a_words: usize,
    /// Words per worker: its A block, its row sums (`mc`) and its tile (`mr * nr`).
    per_worker: usize,
}

fn words(bytes: usize) -> usize {
    bytes.div_ceil(4)
}

fn layout(kernel: &QKernel, m: usize, n: usize, k: usize) -> Result<Layout> {
    let p = Param::Scratch;
    let (mr, nr, pack) = (kernel.mr, kernel.nr, kernel.pack);
    let groups = k.div_ceil(pack.group());
    let n_panels = n.div_ceil(nr);
    let mc = (MC_PANELS * mr).min(mul(m.div_ceil(mr), mr, p)?);
    // Bytes of one panel: groups x (mr or nr) x group x element bytes.
    let panel_bytes = |rows: usize| mul(mul(mul(groups, rows, p)?, pack.group(), p)?, pack.elem_bytes(), p);
    let col_words = mul(n_panels, nr, p)?;
    let b_words = words(mul(panel_bytes(nr)?, n_panels, p)?);
    let a_words = words(mul(panel_bytes(mr)?, mc / mr, p)?);
    let per_worker =
        a_words.checked_add(mc).and_then(|w| w.checked_add(mr * nr)).ok_or(Error::Overflow { param: p })?;
    Ok(Layout { groups, n_panels, mc, col_words, b_words, a_words, per_worker })
}

/// `i32` words of scratch [`qgemm_with`] needs for an `m x n x k` problem on `workers` workers.
pub fn qgemm_scratch_len(kernel: &QKernel, m: usize, n: usize, k: usize, workers: usize) -> Result<usize> {
    let l = layout(kernel, m, n, k)?;
    let shared = l.col_words.checked_add(l.b_words).ok_or(Error::Overflow { param: Param::Scratch })?;
    mul(l.per_worker, workers.max(1), Param::Scratch)?
        .checked_add(shared)
        .ok_or(Error::Overflow { param: Param::Scratch })
}

/// `C <- out(A * B)` (see [`crate::quant`]) in `ws`: validates the op, the output stage, the
/// workers and the scratch, then runs. The result is bit-identical to
/// [`crate::quant::reference::qgemm_reference`].
pub fn qgemm_with<A: QElem, B: QElem, Y: QElem>(
    op: &QGemm<'_, A, B>,
    out: &OutputStage<'_>,
    mut c: MatMut<'_, Y>,
    ws: QWorkspace<'_>,
) -> Result<QGemmDims> {
    let d = op.check(out, &c)?;
    let exec = Pinned::new(ws.exec)?;
    let required = qgemm_scratch_len(ws.kernel, d.m, d.n, d.k, exec.workers())?;
    if ws.scratch.len() < required {
        return Err(Error::TooSmall { param: Param::Scratch, required, found: ws.scratch.len() });
    }
    if d.m > 0 && d.n > 0 {
        let l = layout(ws.kernel, d.m, d.n, d.k)?;
        // SAFETY: the op, the stage and the scratch were validated above; `c` is an exclusive,
        // alias-free `m x n` view; the executor is pinned.
        unsafe { qgemm_unchecked(op, out, &mut c, ws.kernel, &exec, ws.scratch, &l, d) };
    }
    Ok(d)
}

/// A raw pointer that may cross threads: workers write disjoint parts of what it points to.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
impl<T> Shared<T> {
    /// A method (not the field) so closures capture the whole `Sync` wrapper.
    fn ptr(self) -> *mut T {
        self.0
    }
}
// SAFETY: each worker writes its own panels, columns, A block and tiles of C; the phase that
// writes packed B and the column terms ends (`Executor::run` returns) before any worker reads them.
unsafe impl<T> Sync for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Send for Shared<T> {}

/// The shift that takes `T` to the canonical operand range: +128 for an `i8` A, -128 for a `u8` B.
const fn a_offset<T: QElem>() -> i32 {
    if T::MIN < 0 {
        128
    } else {
        0
    }
}
const fn b_offset<T: QElem>() -> i32 {
    if T::MIN < 0 {
        0
    } else {
        -128
    }
}

/// Writes canonical value `v` as packed element `idx` of a panel in `pack`'s format.
///
/// # Safety
/// `dst` must be valid for element `idx` of that format.
#[inline(always)]
unsafe fn put(pack: QPack, dst: *mut u8, idx: usize, v: i32) {
    // SAFETY: forwarded contract; `v` fits the element (a u8 or i8 value, or either as i16).
    unsafe {
        match pack {
            QPack::Bytes4 => *dst.add(idx) = v as u8,
            QPack::Pairs16 => dst.cast::<i16>().add(idx).write_unaligned(v as i16),
        }
    }
}

/// Packs nr-panel `jp` of B (canonical `i8`) and the column terms of its columns:
/// `bias[j] - za' * colsum(b')[j] + k * za' * zb'[j]`. Reads B along its rows (contiguous when
/// row-major).
///
/// # Safety
/// `dst` must be valid for the panel (`groups * nr * group` elements) and `cols` for `nr` words.
unsafe fn pack_b_panel<B: QElem>(
    b: &MatRef<'_, B>,
    op_cols: (usize, i32, &crate::quant::PerChannel<'_, i32>, Option<&[i32]>),
    kernel: &QKernel,
    groups: usize,
    jp: usize,
    dst: *mut u8,
    cols: *mut i32,
) {
    let (k, za, b_zero, bias) = op_cols;
    let (nr, pack) = (kernel.nr, kernel.pack);
    let gsz = pack.group();
    let off = b_offset::<B>();
    let j0 = jp * nr;
    let nv = nr.min(b.cols() - j0);
    let (data, rs, cs) = (b.as_slice(), b.rs(), b.cs());
    let mut sums = [0i32; MAX_NR];
    for g in 0..groups {
        for q in 0..gsz {
            let p = g * gsz + q;
            for jj in 0..nr {
                let v = if p < k && jj < nv { data[p * rs + (j0 + jj) * cs].widen() + off } else { 0 };
                sums[jj] = sums[jj].wrapping_add(v);
                // SAFETY: `(g * nr + jj) * gsz + q` is inside the panel.
                unsafe { put(pack, dst, (g * nr + jj) * gsz + q, v) };
            }
        }
    }
    for (jj, &sum) in sums[..nr].iter().enumerate() {
        let term = if jj < nv {
            let j = j0 + jj;
            let zb = b_zero.at(j) + off;
            let base = bias.map_or(0, |b| b[j]);
            base.wrapping_sub(za.wrapping_mul(sum)).wrapping_add((k as i32).wrapping_mul(za).wrapping_mul(zb))
        } else {
            0
        };
        // SAFETY: `jj < nr` words of `cols`.
        unsafe { *cols.add(jj) = term };
    }
}

/// The widest register tile of any kernel (the column sums of one panel live on the stack).
const MAX_NR: usize = 32;

/// Packs rows `i0 .. i0 + rows` of A (canonical `u8`) as `ceil(rows/mr)` panels and their row
/// sums; rows past `m` are zero. Reads A along its rows (contiguous when row-major).
///
/// # Safety
/// `dst` must be valid for `mc / mr` panels and `sums` for `mc` words (`rows <= mc`).
unsafe fn pack_a_block<A: QElem>(
    a: &MatRef<'_, A>,
    kernel: &QKernel,
    groups: usize,
    i0: usize,
    rows: usize,
    dst: *mut u8,
    sums: *mut i32,
) {
    let (mr, pack) = (kernel.mr, kernel.pack);
    let gsz = pack.group();
    let (m, k) = (a.rows(), a.cols());
    let (data, rs, cs) = (a.as_slice(), a.rs(), a.cs());
    let off = a_offset::<A>();
    for ip in 0..rows.div_ceil(mr) {
        // SAFETY: panel `ip < mc / mr` of the block.
        let panel = unsafe { dst.add(ip * groups * mr * gsz * pack.elem_bytes()) };
        for ii in 0..mr {
            let i = i0 + ip * mr + ii;
            let mut sum = 0i32;
            let row = if i < m && k > 0 { &data[i * rs..] } else { &data[..0] };
            let valid = if i < m { k } else { 0 };
            for g in 0..groups {
                for q in 0..gsz {
                    let p = g * gsz + q;
                    let v = if p < valid { row[p * cs].widen() + off } else { 0 };
                    sum = sum.wrapping_add(v);
                    // SAFETY: inside the panel (`g < groups`, `q < gsz`).
                    unsafe { put(pack, panel, (g * mr + ii) * gsz + q, v) };
                }
            }
            // SAFETY: `ip * mr + ii < mc`.
            unsafe { *sums.add(ip * mr + ii) = sum };
        }
    }
}

/// [`qgemm_with`] without validation.
///
/// # Safety
/// Everything [`qgemm_with`] checks must hold, `m, n > 0`, `l` is the layout of this problem and
/// `scratch` holds at least [`qgemm_scratch_len`] words for `exec.workers()`.
#[allow(clippy::too_many_arguments)]
unsafe fn qgemm_unchecked<A: QElem, B: QElem, Y: QElem>(
    op: &QGemm<'_, A, B>,
    out: &OutputStage<'_>,
    c: &mut MatMut<'_, Y>,
    kernel: &QKernel,
    exec: &Pinned<'_>,
    scratch: &mut [i32],
    l: &Layout,
    d: QGemmDims,
) {
    let workers = exec.workers();
    let (mr, nr) = (kernel.mr, kernel.nr);
    let panel_bytes = |rows: usize| l.groups * rows * kernel.pack.group() * kernel.pack.elem_bytes();
    let base = Shared(scratch.as_mut_ptr());
    let za = op.a_zero + a_offset::<A>();
    let b_off = b_offset::<B>();

    // Phase 1: B's panels and column terms.
    exec.run(&|w| {
        for jp in (w..l.n_panels).step_by(workers) {
            // SAFETY: panel `jp` and its `nr` column words are inside the shared regions, and
            // only worker `jp % workers` writes them.
            unsafe {
                let cols = base.ptr().add(jp * nr);
                let dst = base.ptr().add(l.col_words).cast::<u8>().add(jp * panel_bytes(nr));
                pack_b_panel(&op.b, (d.k, za, &op.b_zero, op.bias), kernel, l.groups, jp, dst, cols);
            }
        }
    });

    // Phase 2: tiles.
    let out_ptr = Shared(c.as_mut_ptr());
    let (rs_c, cs_c) = (c.rs(), c.cs());
    let row_blocks = d.m.div_ceil(l.mc);
    let chunks = l.n_panels.div_ceil(NC_PANELS);
    let items = row_blocks * chunks;
    exec.run(&|w| {
        // SAFETY: worker `w < workers` owns words `[shared + w * per_worker, +per_worker)`.
        let (a_buf, sums, tile) = unsafe {
            let mine = base.ptr().add(l.col_words + l.b_words + w * l.per_worker);
            (mine.cast::<u8>(), mine.add(l.a_words), mine.add(l.a_words + l.mc))
        };
        let mut packed_block = usize::MAX;
        for t in (w..items).step_by(workers) {
            let (rb, cc) = (t / chunks, t % chunks);
            let i0 = rb * l.mc;
            let rows = l.mc.min(d.m - i0);
            if packed_block != rb {
                // SAFETY: the worker's own A block and row sums (`rows <= mc`).
                unsafe { pack_a_block(&op.a, kernel, l.groups, i0, rows, a_buf, sums) };
                packed_block = rb;
            }
            for jp in cc * NC_PANELS..((cc + 1) * NC_PANELS).min(l.n_panels) {
                // SAFETY: panel `jp` of packed B, written in phase 1.
                let b_panel = unsafe { base.ptr().add(l.col_words).cast::<u8>().add(jp * panel_bytes(nr)) };
                for ip in 0..rows.div_ceil(mr) {
                    let args = QMicroArgs {
                        groups: l.groups,
                        // SAFETY: panel `ip` of the worker's block.
                        a: unsafe { a_buf.add(ip * panel_bytes(mr)) },
                        b: b_panel,
                        c: tile,
                    };
                    // SAFETY: the kernel's ISA is proved by `QKernel`; the panels hold `groups`
                    // groups in its format; the tile holds `mr * nr` words.
                    unsafe { (kernel.run)(&args) };
                    let (mv, nv) = (mr.min(rows - ip * mr), nr.min(d.n - jp * nr));
                    for jj in 0..nv {
                        let j = jp * nr + jj;
                        let stage = out.channel::<Y>(j);
                        let zb = op.b_zero.at(j) + b_off;
                        // SAFETY: the column terms were written in phase 1.
                        let col = unsafe { *base.ptr().add(j) };
                        for ii in 0..mv {
                            let i = i0 + ip * mr + ii;
                            // SAFETY: the tile, and the row sums of this worker's block.
                            let (raw, row_sum) = unsafe { (*tile.add(ii * nr + jj), *sums.add(ip * mr + ii)) };
                            let acc = raw.wrapping_add(col).wrapping_sub(zb.wrapping_mul(row_sum));
                            // SAFETY: `(i, j)` is inside the validated, alias-free view of C and
                            // only this item writes it.
                            unsafe { *out_ptr.ptr().add(i * rs_c + j * cs_c) = stage.apply::<Y>(acc) };
                        }
                    }
                }
            }
        }
    });
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
    fn case<A: QElem, B: QElem>(
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
        let stages = [
            OutputStage::onnx(0.05, PerChannel::Channel(&scales), 0.1, 3),
            OutputStage::fixed(PerChannel::Tensor(1_518_500_250), PerChannel::Tensor(-9), -5, -128, 100),
        ];
        let mut scratch = [0i32; 4096];
        for kernel in [QKernel::generic(), QKernel::best()] {
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

    #[test]
    fn every_operand_type_pair_matches_the_oracle_exactly() {
        let zb = |j: usize| (j as i32 % 7) - 3;
        case(|x| x, |x| x as i8, 7, zb);
        case(|x| x as i8, |x| x as i8, -9, zb);
        let zbu = |j: usize| [128, 131, 126, 0, 255][j % 5];
        case(|x| x, |x| x, 255, zbu);
        case(|x| x as i8, |x| x, 127, zbu);
    }
}
