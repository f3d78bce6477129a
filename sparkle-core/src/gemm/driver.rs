//! The BLIS loop nest around a microkernel, with caller-provided scratch and a pluggable
//! executor for threads.
//!
//! ```text
//! loop 5  jc: columns of C in blocks of nc
//!   loop 4  pc: the reduction in slices of kc      -> pack B (kc x nc), one buffer per worker
//!     loop 3  ic: rows of C in blocks of mc          -> pack A (mc x kc), one buffer per worker
//!       loop 2  jr: nr-panels of packed B
//!         loop 1  ir: mr-panels of packed A        -> microkernel on an mr x nr tile of C
//! ```
//! Workers take rectangles of C on a grid (`Split`). Where a grid splits rows, B is costly to
//! pack (the conv's im2col gather) and the scratch has room for it ([`SHARED_B_MAX`] at most),
//! B is packed whole first, each worker packing a share of its panels, and
//! loop 4 reads it instead of packing: the phases are two `Executor::run` calls, the first
//! returning before the second starts.
//! The first slice of the reduction scales C by `beta` (never reading it when `beta == 0`), the
//! later ones accumulate into it, and only the last applies bias and activation.
#![allow(unsafe_code)]

use crate::arch::small::SmallArgs;
use crate::arch::{Kernel, MicroArgs, TileBias};
use crate::epilogue::{Activation, Bias, Epilogue};
use crate::error::{mul, Error, Param, Result};
use crate::gemm::blocking::Blocking;
use crate::gemm::pack::{pack_a, pack_b, Block};
use crate::gemm::{check, GemmDims};
use crate::gemm::{small, split_k};
use crate::view::{MatMut, MatRef};
use core::ops::Range;

/// Runs `f(worker)` for every worker `0..workers()`, possibly in parallel, and returns when all
/// have finished.
///
/// # Safety
/// The drivers hand worker `w` its own part of the output and of the scratch, so an
/// implementation must call `f` exactly once for each index in `0..workers()` and return only
/// after every call has finished. Two concurrent calls with one index would be a data race.
pub unsafe trait Executor {
    /// Number of workers.
    fn workers(&self) -> usize;
    /// Runs `f` once per worker index.
    fn run(&self, f: &(dyn Fn(usize) + Sync));
}

/// The workers a driver plans for on `exec` (inside the drivers, a [`Pinned`] executor): its
/// count with the `parallel` feature, else a constant 1, so that the planning for several
/// workers (2-D splits, shared packings, jobs run together) is not compiled (a Cortex-M4
/// firmware's f32 kernel set 4.3 KiB smaller, its int8 set 0.7 KiB, as linked).
#[inline(always)]
pub(crate) fn planned_workers<E: Executor + ?Sized>(exec: &E) -> usize {
    if cfg!(feature = "parallel") {
        exec.workers()
    } else {
        1
    }
}

/// One worker, the calling thread: the `no_std` executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sequential;

// SAFETY: calls `f(0)` once, on this thread, for its one worker.
unsafe impl Executor for Sequential {
    fn workers(&self) -> usize {
        1
    }
    fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        f(0)
    }
}

/// How and where a driver runs: the kernels, the cache blocking, the workers, and caller scratch
/// of at least [`gemm_scratch_len`] (GEMM) or [`crate::conv::fused::conv2d_scratch_len`] (conv)
/// floats for `exec`'s workers. The drivers validate all of it before running.
pub struct Workspace<'a> {
    /// The kernels (their ISA proved by the `Kernel`).
    pub kernel: &'a Kernel,
    /// Cache blocking.
    pub blocking: &'a Blocking,
    /// The workers.
    pub exec: &'a (dyn Executor + Sync),
    /// Packing scratch.
    pub scratch: &'a mut [f32],
}

impl core::fmt::Debug for Workspace<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Workspace")
            .field("kernel", &self.kernel.id())
            .field("blocking", self.blocking)
            .field("workers", &self.exec.workers())
            .field("scratch", &self.scratch.len())
            .finish()
    }
}

impl Workspace<'_> {
    /// Checks the blocking, reads the worker count once (see [`Pinned`]) and checks the scratch
    /// against `required(workers)`; then runs `f` with the pinned executor.
    pub(crate) fn validated<T>(
        &mut self,
        required: impl FnOnce(usize) -> Result<usize>,
        f: impl FnOnce(&mut Workspace<'_>) -> T,
    ) -> Result<T> {
        let b = self.blocking;
        if b.mc == 0 || b.kc == 0 || b.nc == 0 {
            return Err(Error::Zero { param: Param::Tile });
        }
        let exec = Pinned::new(self.exec)?;
        let required = required(planned_workers(&exec))?;
        if self.scratch.len() < required {
            return Err(Error::TooSmall { param: Param::Scratch, required, found: self.scratch.len() });
        }
        let mut pinned = Workspace { kernel: self.kernel, blocking: self.blocking, exec: &exec, scratch: self.scratch };
        Ok(f(&mut pinned))
    }
}

/// Where C is for [`gemm_operands`]: element `(i, j)` at `ptr + i*rs + j*cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutPtr {
    pub ptr: *mut f32,
    pub rs: usize,
    pub cs: usize,
}

/// An executor with its worker count read once: the drivers size the scratch and split the work
/// by this one number whatever a later `workers()` would say, and indices past it are ignored.
/// Without the `parallel` feature the count is 1 and the one worker is the calling thread (the
/// inner executor is not run).
pub(crate) struct Pinned<'a> {
    inner: &'a (dyn Executor + Sync),
    workers: usize,
}

impl<'a> Pinned<'a> {
    /// Reads `inner.workers()`; zero workers would leave the output unwritten, so it is an error.
    pub(crate) fn new(inner: &'a (dyn Executor + Sync)) -> Result<Self> {
        match inner.workers() {
            0 => Err(Error::Zero { param: Param::Workers }),
            workers => Ok(Self { inner, workers: if cfg!(feature = "parallel") { workers } else { 1 } }),
        }
    }
}

// SAFETY: forwards to an executor that keeps the contract for its own count, and passes on only
// the indices below the count read once (each at most once, as the inner executor calls them).
unsafe impl Executor for Pinned<'_> {
    fn workers(&self) -> usize {
        self.workers
    }
    fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if !cfg!(feature = "parallel") {
            return f(0);
        }
        let n = self.workers;
        self.inner.run(&|w| {
            if w < n {
                f(w)
            }
        })
    }
}

fn round_up(x: usize, to: usize) -> Result<usize> {
    mul(x.div_ceil(to), to, Param::Scratch)
}

/// Effective block sizes for a problem: never larger than the (rounded-up) problem.
pub(crate) fn effective(kernel: &Kernel, blocking: &Blocking, d: &GemmDims) -> Result<(usize, usize, usize)> {
    let mc = blocking.mc.min(round_up(d.m.max(1), kernel.mr())?);
    let kc = blocking.kc.min(d.k).max(1);
    let nc = blocking.nc.min(round_up(d.n.max(1), kernel.nr())?);
    Ok((round_up(mc, kernel.gemm.mr)?, kc, round_up(nc, kernel.gemm.nr)?))
}

/// Floats of scratch [`gemm_with`] runs fastest with for an `m x n x k` problem with `workers`
/// workers: each worker packs its own B block and A block (a matrix B is cheaper to pack again
/// than to share: `Split`), and a GEMM of a few rows on several workers sums partial products of
/// bands of the reduction (`split_k`, at most 4 MiB). It needs only the packing's room (the
/// `TooSmall` error names it); with less than this the reduction is not split.
pub fn gemm_scratch_len(
    kernel: &Kernel,
    blocking: &Blocking,
    m: usize,
    n: usize,
    k: usize,
    workers: usize,
) -> Result<usize> {
    operands_scratch_len(kernel, blocking, m, n, k, workers)?
        .checked_add(split_k::partials_len(m, n, k, workers))
        .ok_or(Error::Overflow { param: Param::Scratch })
}

/// [`gemm_scratch_len`] without the partials: what [`gemm_operands`] and [`gemm_batch`] (the conv
/// paths' GEMMs, never split along the reduction) need.
pub(crate) fn operands_scratch_len(
    kernel: &Kernel,
    blocking: &Blocking,
    m: usize,
    n: usize,
    k: usize,
    workers: usize,
) -> Result<usize> {
    // Either orientation may run (a column-major C is computed as C^T = B^T A^T).
    let d = GemmDims { m: m.max(n), n: m.max(n), k };
    let (mc, kc, nc) = effective(kernel, blocking, &d)?;
    let per_worker = mul(kc, nc, Param::Scratch)?
        .checked_add(mul(mc, kc, Param::Scratch)?)
        .ok_or(Error::Overflow { param: Param::Scratch })?;
    mul(per_worker, workers.max(1), Param::Scratch)
}

/// [`operands_scratch_len`] and, with more than one worker, room for an `n`-column B packed once and
/// shared (where that is at most [`SHARED_B_MAX`] floats): what [`gemm_operands`] runs fastest
/// with when B is costly to pack (the conv's im2col gather). It uses the room when it is there.
pub(crate) fn shared_scratch_len(
    kernel: &Kernel,
    blocking: &Blocking,
    (m, n, k): (usize, usize, usize),
    workers: usize,
) -> Result<usize> {
    let own = operands_scratch_len(kernel, blocking, m, n, k, workers)?;
    let shared = if workers > 1 { shared_b_len(kernel, n, k).unwrap_or(0) } else { 0 };
    own.checked_add(shared).ok_or(Error::Overflow { param: Param::Scratch })
}

/// The most floats a reduction slice of a row-major B may span (`kc` rows times its row stride,
/// 128 KiB) to be read in place rather than packed: small problems, whose packing is a large
/// share of their time, and whose rows stay in the first caches and the TLB.
const B_IN_PLACE_MAX: usize = 1 << 15;

/// The rows of C (at most this) for which a row-major B of any size is read in place: a packed
/// B would be read by few row tiles (AVX-512's 12-row tiles: one to six), and reading it in
/// place, each row prefetched ahead by the kernel, is faster. The whole problem's rows, not a
/// worker's: a tall C split into strips on many threads keeps its packed B (not measured on
/// many threads). Measured on one Zen 4 core with the AVX-512 kernel, GFLOPS packed -> in
/// place: 16 x 4096 x 1024 42-51 -> 41-75, 32 x 4096 x 4096 57-60 -> 65-68, 48 x 2048 x 2048
/// 74-79 -> 80-86, 64 x 1024 x 1024 96 -> 111; one row tile (below it, the streamed path of
/// `gemm/small.rs` takes row-major B): 8 x 1024 x 1024 52 -> 106, 12 x 1024 x 1024 63 -> 108,
/// 8 x 4096 x 1024 34 -> 68-71, but B from memory 8 x 4096 x 4096 25 -> 17, hence [`STREAM_KC`].
const B_IN_PLACE_ROWS: usize = 64;

/// The reduction slice (rows of B) of one row tile over a B read in place of at least
/// [`STREAM_B_MIN`] floats: each slice runs across every column panel before the next, so B
/// streams along its rows, which the hardware prefetchers follow, rather than down `kc` rows of
/// a panel, a page each, which they do not. C's tile is written and read again every slice.
/// Measured on one Zen 4 core (AVX-512), GFLOPS at kc 512 (the caches' blocking) / 8 / 12 / 16 /
/// 20 / 32: 8 x 4096 x 4096 17-19 / 40 / 45 / 38-47 / 40 / 25, 12 x 8192 x 4096 33 / 35 / 42 /
/// 49 / 50 / -, 8 x 8192 x 2048 17 / - / - / 40 / - / 25; two row tiles gain nothing (16 x 4096
/// x 4096 48 at 512 and 16), more lose (32 x 4096 x 4096 71 -> 57).
const STREAM_KC: usize = 16;

/// Floats of B from which one row tile streams it ([`STREAM_KC`]): 16 MiB, half this Zen 4's
/// L3, whose share for one process varies with what else runs (its neighbours in a cloud):
/// 8 x 4096 x 1024 ran 68-71 GFLOPS in `kc` slices in one measurement and 19-29 in the next
/// few, streamed 47-60; B of 8 MiB still runs better in slices (8 x 2048 x 1024 97-98 against
/// 64-67 streamed, 8 x 1024 x 1024 (4 MiB) 82-106 against 63-67).
const STREAM_B_MIN: usize = 1 << 22;

/// The most floats of B the workers pack together and share (16 MiB): above it each worker packs
/// the B its columns need, as on one thread.
pub const SHARED_B_MAX: usize = 1 << 22;

/// Floats of B packed whole (`n` columns as whole nr-panels, `k` deep), if at most [`SHARED_B_MAX`].
fn shared_b_len(kernel: &Kernel, n: usize, k: usize) -> Option<usize> {
    let len = n.div_ceil(kernel.gemm.nr).checked_mul(kernel.gemm.nr)?.checked_mul(k)?;
    (len <= SHARED_B_MAX).then_some(len)
}

/// How the workers share C: a grid of `wr x wc` rectangles of whole panels. With `shared_b` all
/// workers first pack B together, once (each worker a `1/W` share of its panels), and then read
/// it; without, each worker packs the B its own columns need, so `wr` row bands pack it `wr`
/// times. Splitting columns repeats the packing of A (free when A is read in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Split {
    pub wr: usize,
    pub wc: usize,
    pub shared_b: bool,
}

/// Multiply-adds a microkernel runs in the time one element is read: the weight of data
/// movement against compute in [`Split::plan`] (AVX2 and AVX-512 kernels run two vector FMAs,
/// 16-32 multiply-adds, a cycle; packing moves about an element a cycle).
const FMAS_PER_READ: usize = 16;

/// Reads one element of B packed by another worker costs (in another core's cache).
const SHARED_READ: usize = 2;

/// What one more `Executor::run` costs (fork and join: 5-20 µs on 16 threads), in element reads.
const PHASE_READS: usize = 20_000;

impl Split {
    /// The grid with the least work for its busiest worker, in element reads: its microkernel
    /// tiles (`mr * nr` multiply-adds each, [`FMAS_PER_READ`] to a read), the A rows it packs
    /// (`a_cost` reads an element, or 1 to read it in place) once per `nc` columns, the B it
    /// packs (`b_cost` an element) or, shared, its `1/W` share of packing plus reading its own
    /// columns ([`SHARED_READ`] an element), all per step of the `k`-deep reduction; a shared B
    /// adds a phase ([`PHASE_READS`]). Ties keep the earlier candidate: fewer row bands, B packed
    /// per worker.
    ///
    /// Why: a 256 -> 256 3x3 conv at 14x14 (NCHW) is 22 x 7 panels; on 16 threads the old rule
    /// (rows alone when there are fewer column panels than workers) had every worker gather the
    /// whole im2col B for 1-2 row panels, and the layer ran 1.6x faster than on one thread. A
    /// plain B (`b_cost` 1) is cheaper to pack from the source than to read packed by another
    /// core ([`SHARED_READ`]), so it is never shared, and splitting the columns of a tall,
    /// narrow GEMM would read its A twice.
    pub(crate) fn plan(
        workers: usize,
        panels: (usize, usize),
        dims: (usize, usize, usize, usize),
        costs: (Option<usize>, usize),
        shared_ok: bool,
    ) -> Split {
        Self::plan_cost(workers, panels, dims, costs, shared_ok).1
    }

    /// [`plan`](Self::plan) with the busiest worker's cost.
    fn plan_cost(
        workers: usize,
        (row_panels, col_panels): (usize, usize),
        (mr, nr, nc, k): (usize, usize, usize, usize),
        (a_cost, b_cost): (Option<usize>, usize),
        shared_ok: bool,
    ) -> (usize, Split) {
        let workers = workers.max(1);
        let mut best = (usize::MAX, Split { wr: 1, wc: 1, shared_b: false });
        for wr in 1..=workers.min(row_panels.max(1)) {
            let wc = (workers / wr).min(col_panels.max(1));
            let (rows, cols) = (row_panels.div_ceil(wr) * mr, col_panels.div_ceil(wc) * nr);
            let compute = rows * cols / FMAS_PER_READ;
            let a = rows * cols.div_ceil(nc.max(1)) * a_cost.unwrap_or(1);
            for shared_b in [false, true] {
                if shared_b && (wr == 1 || !shared_ok) {
                    continue;
                }
                let b = if shared_b {
                    b_cost * (col_panels * nr).div_ceil(workers) + SHARED_READ * cols
                } else {
                    b_cost * cols
                };
                let cost =
                    (compute + a + b).saturating_mul(k.max(1)).saturating_add(if shared_b { PHASE_READS } else { 0 });
                if cost < best.0 {
                    best = (cost, Split { wr, wc, shared_b });
                }
            }
        }
        best
    }

    /// Worker `w`'s rectangle of C (empty for workers past `wr * wc`), in whole panels.
    pub(crate) fn rect(
        &self,
        w: usize,
        (row_panels, col_panels): (usize, usize),
        (mr, nr): (usize, usize),
        (m, n): (usize, usize),
    ) -> (Range<usize>, Range<usize>) {
        if w >= self.wr * self.wc {
            return (0..0, 0..0);
        }
        let (i, j) = (w / self.wc, w % self.wc);
        let r0 = (row_panels * i / self.wr) * mr;
        let r1 = ((row_panels * (i + 1) / self.wr) * mr).min(m);
        let c0 = (col_panels * j / self.wc) * nr;
        let c1 = ((col_panels * (j + 1) / self.wc) * nr).min(n);
        (r0..r1.max(r0), c0..c1.max(c0))
    }
}

/// `C <- act(alpha * A * B + beta * C + bias)` in `ws` (its kernels, blocking, workers and
/// scratch of at least [`gemm_scratch_len`] floats; none for an empty C or where [`gemm_path`]
/// is not [`GemmPath::Packed`]). Validates everything first.
pub fn gemm_with(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    mut c: MatMut<'_>,
    epi: &Epilogue<'_>,
    mut ws: Workspace<'_>,
) -> Result<GemmDims> {
    let d = check(alpha, &a, &b, beta, &c, epi)?;
    let (kernel, blocking) = (ws.kernel, ws.blocking);
    // An empty C, and the unpacked paths (streamed rows, register tiles), use no scratch.
    let no_scratch = d.m == 0 || d.n == 0 || gemm_path(kernel, &a, &b, &c) != GemmPath::Packed;
    ws.validated(
        // The packing's room is required; the split reduction's partials are taken only where
        // the scratch also holds them (`split_k_parts`).
        |workers| match no_scratch {
            true => Ok(0),
            false => operands_scratch_len(kernel, blocking, d.m, d.n, d.k, workers),
        },
        |ws| {
            if d.m > 0 && d.n > 0 {
                // SAFETY: shapes, epilogue, blocking and scratch were validated; `c` is an
                // exclusive, alias-free view; the executor is pinned.
                unsafe { gemm_unchecked(alpha, a, b, beta, &mut c, epi, ws) };
            }
        },
    )?;
    Ok(d)
}

/// How [`gemm_with`] runs `A * B` into C on a kernel set ([`gemm_path`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmPath {
    /// The blocked driver, packing A and B into panels: [`gemm_scratch_len`]'s scratch.
    Packed,
    /// A few rows of C streamed over B in place (a GEMV, `gemm::small::takes`): no scratch.
    Streamed,
    /// A small row-major problem in register tiles read straight from A and B
    /// (`gemm::small::tiles_fit`): no scratch. `parts`: how many its workers can split it into
    /// (4 rows or 16 columns each). A caller choosing the worker count weighs them: nothing is
    /// packed twice there, so a second worker pays on less work than on the packed path.
    Tiles {
        /// Parts of C the workers can take.
        parts: usize,
    },
}

/// The path [`gemm_with`] takes for these operands on `kernel`'s set (shapes not checked here:
/// `gemm_with` does), judged on them as the kernels see them (a column-major C computed
/// transposed). Only [`GemmPath::Packed`] reads scratch; an empty C reads none either.
pub fn gemm_path(kernel: &Kernel, a: &MatRef<'_>, b: &MatRef<'_>, c: &MatMut<'_>) -> GemmPath {
    let o = oriented(a, b, c);
    match unpacked_path(kernel, &o.a, &o.b, o.cs_c) {
        None => GemmPath::Packed,
        Some((_, Unpacked::Streamed)) => GemmPath::Streamed,
        Some((_, Unpacked::Tiles)) => GemmPath::Tiles { parts: (o.a.rows() / 4).max(o.b.cols().div_ceil(16)) },
    }
}

/// An unpacked path's kernel (a kernel set's `small` or `tiles`).
type SmallFn = unsafe fn(&SmallArgs<'_>);

/// The unpacked paths of [`gemm_unchecked`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unpacked {
    /// A few rows streamed ([`small::takes`], the set's `small`).
    Streamed,
    /// Register tiles read straight from A and B ([`small::tiles_fit`], the set's `tiles`).
    Tiles,
}

/// The kernel and unpacked path that run `A * B` into C (`cs_c`), operands as the kernels see
/// them, where the kernel set has one that takes them.
fn unpacked_path(kernel: &Kernel, a: &MatRef<'_>, b: &MatRef<'_>, cs_c: usize) -> Option<(SmallFn, Unpacked)> {
    if let Some(f) = kernel.gemm.small.filter(|_| small::takes(a, b, cs_c)) {
        return Some((f, Unpacked::Streamed));
    }
    kernel.gemm.tiles.filter(|_| small::tiles_fit(a, b, cs_c)).map(|f| (f, Unpacked::Tiles))
}

/// The operands as the kernels see them: they store whole vectors along rows of C, so a
/// column-major C is computed transposed (`C^T = B^T A^T`).
struct Oriented<'a> {
    a: MatRef<'a>,
    b: MatRef<'a>,
    rs_c: usize,
    cs_c: usize,
    /// Whether C^T is computed (A and B swapped and transposed).
    transposed: bool,
}

/// [`Oriented`]'s view of `A * B` into `c`.
fn oriented<'a>(a: &MatRef<'a>, b: &MatRef<'a>, c: &MatMut<'_>) -> Oriented<'a> {
    match c.cs() != 1 && c.rs() == 1 {
        true => Oriented { a: b.t(), b: a.t(), rs_c: c.cs(), cs_c: c.rs(), transposed: true },
        false => Oriented { a: *a, b: *b, rs_c: c.rs(), cs_c: c.cs(), transposed: false },
    }
}

/// A raw pointer that may cross threads: workers write disjoint parts of what it points to. The
/// f32, int8 and bf16 drivers share it.
pub(crate) struct Shared<T>(pub(crate) *mut T);
impl<T> Shared<T> {
    /// A method (not the field) so closures capture the whole `Sync` wrapper.
    pub(crate) fn ptr(&self) -> *mut T {
        self.0
    }
}
impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<T> {}

// SAFETY: every driver hands each worker a disjoint region of the output and of the scratch, and
// separates the phase that writes shared packed panels from the phase that reads them by
// `Executor::run` returning.
unsafe impl<T> Sync for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Send for Shared<T> {}

/// A GEMM operand the driver can pack into micro-panels: a strided matrix ([`MatRef`]), or an
/// implicit one such as a conv input seen through im2col (which is then never materialised).
///
/// # Safety
/// Implementations must write exactly the documented panel extents and read only their own data.
pub(crate) unsafe trait Operand: Sync {
    /// Rows of the (logical) matrix.
    fn rows(&self) -> usize;
    /// Columns of the (logical) matrix.
    fn cols(&self) -> usize;
    /// Packs the `mc x kc` block at `(row, col)` as A: `ceil(mc/mr)` panels of `kc` groups of
    /// `mr` values, zero-padded.
    ///
    /// # Safety
    /// The block is inside the matrix; `dst` is valid for `ceil(mc/mr)*mr*kc` floats.
    unsafe fn pack_a(&self, blk: Block, mr: usize, dst: *mut f32);
    /// Packs nr-panels `panels` of the `kc x nc` block at `(row, col)` as B: panel `j` at
    /// `dst + j*nr*kc`, `kc` groups of `nr` values, zero-padded.
    ///
    /// # Safety
    /// The block is inside the matrix, `panels.end <= ceil(nc/nr)`, and `dst` is valid for those panels.
    unsafe fn pack_b(&self, blk: Block, nr: usize, panels: core::ops::Range<usize>, dst: *mut f32);
    /// When columns `cols` of every row can be read in place by the kernels as A: `(pointer to
    /// element (0, cols.start), row stride)`, with unit column stride. An empty range asks
    /// whether the operand is read in place at all (for [`Split::plan`]'s costs).
    fn in_place(&self, cols: Range<usize>) -> Option<(*const f32, usize)> {
        let _ = cols;
        None
    }
    /// When rows `rows` of whole nr-panels can be read in place by the kernels as B: where
    /// element `(rows.start, 0)` is and how to step between rows, with unit column stride.
    /// `few_rows`: the rectangle of C being computed has few rows ([`B_IN_PLACE_ROWS`]), so a
    /// packed B would be read by few tiles.
    fn b_in_place(&self, rows: Range<usize>, few_rows: bool) -> Option<InPlaceB> {
        let _ = (rows, few_rows);
        None
    }
    /// Reads packing one element costs, as B (`as_b`) or as A, against 1 for reading a packed
    /// one: how [`Split::plan`] weighs repeating the packing against sharing it.
    fn pack_cost(&self, as_b: bool) -> usize {
        let _ = as_b;
        2
    }
}

// SAFETY: packing reads only elements inside the validated view and writes the documented extents.
unsafe impl Operand for MatRef<'_> {
    fn rows(&self) -> usize {
        MatRef::rows(self)
    }
    fn cols(&self) -> usize {
        MatRef::cols(self)
    }
    unsafe fn pack_a(&self, blk: Block, mr: usize, dst: *mut f32) {
        // SAFETY: forwarded contract.
        unsafe { pack_a(self, blk, mr, dst) }
    }
    unsafe fn pack_b(&self, blk: Block, nr: usize, panels: core::ops::Range<usize>, dst: *mut f32) {
        // SAFETY: forwarded contract.
        unsafe { pack_b(self, blk, nr, panels, dst) }
    }
    /// A copy along contiguous rows (B) or columns (A) costs what reading the packed panel
    /// would; a strided gather twice that.
    fn pack_cost(&self, as_b: bool) -> usize {
        if (as_b && self.cs() == 1) || (!as_b && self.rs() == 1) {
            1
        } else {
            2
        }
    }
    /// Row-major B, read in place for the small problems [`gemm_rect`] sees (a reduction slice
    /// that spans at most [`B_IN_PLACE_MAX`] floats) and for C rectangles of few rows, whatever
    /// B's size.
    fn b_in_place(&self, rows: Range<usize>, few_rows: bool) -> Option<InPlaceB> {
        let small = few_rows || rows.len().saturating_mul(self.rs()) <= B_IN_PLACE_MAX;
        // `wrapping_add`: the pointer is only formed, and `rows` lies inside the matrix.
        (self.cs() == 1 && small)
            .then(|| InPlaceB::rows(self.as_slice().as_ptr().wrapping_add(rows.start * self.rs()), self.rs()))
    }
    /// Row-major A is read in place, unless its rows are a multiple of 4 KiB apart: then all mr
    /// rows fall into one L1 set and thrash it (measured on one Zen 4 core: in place 94 vs packed
    /// 104 GFLOPS at 2048^3; 106 vs 103 at 2000^3, where in place wins).
    fn in_place(&self, cols: Range<usize>) -> Option<(*const f32, usize)> {
        let aliasing = (self.rs() * core::mem::size_of::<f32>()).is_multiple_of(4096);
        (self.cs() == 1 && !aliasing).then(|| (self.as_slice().as_ptr().wrapping_add(cols.start), self.rs()))
    }
}

/// A B block the kernels read in place ([`Operand::b_in_place`]): row `p` at `ptr + p * rs`, or
/// with `taps` (see [`MicroArgs::taps`]) row `c * ntaps + t` at `ptr + c * rs + taps[t]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InPlaceB {
    pub ptr: *const f32,
    pub rs: usize,
    pub taps: *const usize,
    pub ntaps: usize,
}

impl InPlaceB {
    /// Evenly spaced rows.
    pub(crate) fn rows(ptr: *const f32, rs: usize) -> Self {
        InPlaceB { ptr, rs, taps: core::ptr::null(), ntaps: 0 }
    }
}

/// The validated problem, in the orientation the kernels want (C with unit column stride when
/// possible), shared read-only by all workers.
pub(crate) struct Problem<'a> {
    a: &'a dyn Operand,
    b: &'a dyn Operand,
    c: Shared<f32>,
    rs_c: usize,
    cs_c: usize,
    alpha: f32,
    beta: f32,
    bias: Bias<'a>,
    act: Activation,
    kernel: &'a Kernel,
    mc: usize,
    /// Rows per block where A is read in place ([`Blocking::mc_in_place`], at least `mc`).
    mc_in_place: usize,
    kc: usize,
    nc: usize,
    /// The reduction slice of few rows over a plain B in place ([`Blocking::kc_few_rows`]).
    kc_few: usize,
}

impl<'a> Problem<'a> {
    /// The operands and C, the epilogue `(alpha, beta, bias, activation)`, the kernel, the
    /// effective blocking `(mc, kc, nc)` with `kc_few` (at most `kc`), and `blocking` for what
    /// else it says.
    pub(crate) fn new(
        (a, b, c): (&'a dyn Operand, &'a dyn Operand, OutPtr),
        (alpha, beta, bias, act): (f32, f32, Bias<'a>, Activation),
        kernel: &'a Kernel,
        (mc, kc, nc, kc_few): (usize, usize, usize, usize),
        blocking: &Blocking,
    ) -> Self {
        let (rs_c, cs_c) = (c.rs, c.cs);
        let mc_in_place = blocking.mc_in_place.max(mc);
        Problem { a, b, c: Shared(c.ptr), rs_c, cs_c, alpha, beta, bias, act, kernel, mc, mc_in_place, kc, nc, kc_few }
    }
}

/// The operands' costs for [`Split::plan`]: A's packing per element (`None` where it is read
/// in place) and B's.
fn split_costs(a: &dyn Operand, b: &dyn Operand) -> (Option<usize>, usize) {
    (a.in_place(0..0).is_none().then(|| a.pack_cost(false)), b.pack_cost(true))
}

/// [`gemm_with`] without validation.
///
/// # Safety
/// Everything [`gemm_with`] checks must hold: matching shapes, a valid epilogue, `m, n > 0`,
/// non-zero blocking, and `scratch.len() >= gemm_scratch_len(...)` for `exec.workers()`.
pub(crate) unsafe fn gemm_unchecked(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut MatMut<'_>,
    epi: &Epilogue<'_>,
    ws: &mut Workspace<'_>,
) {
    let Oriented { a, b, rs_c, cs_c, transposed } = oriented(&a, &b, c);
    // Transposed, a bias per row of C is one per column of C^T.
    let bias = match (transposed, epi.bias) {
        (true, Bias::Row(v)) => Bias::Col(v),
        (true, Bias::Col(v)) => Bias::Row(v),
        (_, bias) => bias,
    };
    let epi = Epilogue { bias, activation: epi.activation };
    let out = OutPtr { ptr: c.as_mut_ptr(), rs: rs_c, cs: cs_c };
    // A few rows (a GEMV) stream B in place, and small row-major problems run in register tiles
    // straight from A and B, where the kernel set has the path.
    if let Some(path) = unpacked_path(ws.kernel, &a, &b, cs_c) {
        // SAFETY: forwarded contract; `unpacked_path` checked the path's conditions (`tiles_fit`:
        // `m >= 4`, every set's smallest tile) and picked the set's kernel for it.
        unsafe { run_small(path, alpha, &a, &b, beta, out, &epi, ws.exec) };
        return;
    }
    // Few rows on several workers over a row-major B: bands of B's rows (`split_k`).
    if let Some(parts) = split_k_parts(&a, &b, ws) {
        // SAFETY: forwarded contract; `split_k_parts` checked the plan, B's layout, the kernel
        // and the scratch.
        unsafe { split_k::run(parts, (alpha, &a, &b, beta), out, &epi, ws) };
        return;
    }
    // SAFETY: forwarded contract; the transposed C view is the same memory.
    unsafe { gemm_operands(alpha, &a, &b, beta, out, &epi, ws) }
}

/// [`split_k::plan`]'s parts with their blocking, where B is row-major with rows a multiple of 4
/// KiB apart, read in place by the kernels, and the scratch holds the partials.
pub(crate) fn split_k_parts(a: &MatRef<'_>, b: &MatRef<'_>, ws: &Workspace<'_>) -> Option<split_k::Parts> {
    // Rows of B 4 KiB apart: pieces of them, all at the same offsets within their pages, crowd
    // a few of the caches' sets (`split_k`'s docs); other strides were not measured to gain.
    let aliased = (b.rs() * core::mem::size_of::<f32>()).is_multiple_of(4096);
    if b.cs() != 1 || !aliased || !ws.kernel.gemm.b_in_place {
        return None;
    }
    let d = GemmDims { m: a.rows(), n: b.cols(), k: a.cols() };
    let workers = planned_workers(ws.exec).max(1);
    let (bands, pieces) = split_k::plan(d.m, d.n, d.k, workers)?;
    let (mc, kc, nc) = effective(ws.kernel, ws.blocking, &d).ok()?;
    let per_worker = kc * nc + mc * kc;
    let need = per_worker.checked_mul(workers)?.checked_add(bands * d.m * d.n)?;
    (need <= ws.scratch.len()).then_some(split_k::Parts { bands, pieces, mc, kc, nc, per_worker })
}

/// `C <- act(alpha * A * B + beta * C + bias)` on an unpacked path (streamed, or in register
/// tiles), C's columns split over the executor's workers in whole vectors (16 floats), or for
/// register tiles its rows in bands of 4, whichever leaves the busiest worker less.
///
/// # Safety
/// The path and kernel are [`unpacked_path`]'s for these operands, on a CPU that runs the set; shapes, epilogue and scalars
/// validated as `gemm_with` does, `m, n > 0`; every element of C valid, exclusive and alias-free.
#[allow(clippy::too_many_arguments)]
unsafe fn run_small(
    (kernel, path): (SmallFn, Unpacked),
    alpha: f32,
    a: &MatRef<'_>,
    b: &MatRef<'_>,
    beta: f32,
    c: OutPtr,
    epi: &Epilogue<'_>,
    exec: &(dyn Executor + Sync),
) {
    let (m, n) = (a.rows(), b.cols());
    let dots = small::dots(a, b);
    let workers = planned_workers(exec).max(1);
    let out = Shared(c.ptr);
    // Register tiles may split C's rows instead, in bands of a multiple of 4 (each at least the
    // smallest tile), where the busiest worker then has less to do (112^3 on two: 48 and 64
    // columns, or 56 rows each).
    let (row_parts, col_parts) = (m / 4, n.div_ceil(16));
    let by_rows = path == Unpacked::Tiles && row_parts.div_ceil(workers) * 4 * n < col_parts.div_ceil(workers) * 16 * m;
    let share = |w: usize, len: usize, parts: usize, unit: usize| {
        let first = parts * w / workers * unit;
        (first, if w + 1 == workers { len } else { parts * (w + 1) / workers * unit })
    };
    let part = |w: usize| {
        let (rows, cols) = match by_rows {
            true => (share(w, m, row_parts, 4), (0, n)),
            false => ((0, m), share(w, n, col_parts, 16)),
        };
        if w >= workers || rows.0 >= rows.1 || cols.0 >= cols.1 {
            return;
        }
        let bias = match epi.bias {
            Bias::Row(v) => Bias::Row(&v[rows.0..rows.1]),
            bias => bias,
        };
        let epi = Epilogue { bias, activation: epi.activation };
        let args = SmallArgs {
            m: rows.1 - rows.0,
            k: a.cols(),
            // Wrapping: row rows.0 of A, inside it unless `k == 0` (then never read).
            a: a.as_slice().as_ptr().wrapping_add(rows.0 * a.rs()),
            rs_a: a.rs(),
            cs_a: a.cs(),
            b: b.as_slice().as_ptr(),
            rs_b: b.rs(),
            cs_b: b.cs(),
            // Wrapping: row rows.0 of C, inside it (rows.0 < m).
            c: out.ptr().wrapping_add(rows.0 * c.rs),
            rs_c: c.rs,
            alpha,
            beta,
            epi: &epi,
            dots,
            cols,
        };
        // SAFETY: the caller's contract; worker w's rows and columns are its own.
        unsafe { kernel(&args) };
    };
    if workers == 1 {
        part(0);
    } else {
        exec.run(&part);
    }
}

/// The driver over any operands: `C <- act(alpha * A * B + beta * C + bias)` with C at `c`. Operands are trait objects: packing is called
/// once per block, so dynamic dispatch costs nothing measurable, and one copy of the loop nest
/// serves GEMM and both conv layouts (it was three, 7.6 KiB of Cortex-M4 code).
///
/// # Safety
/// `a.cols() == b.rows()`, `m, n > 0`; every C element valid, exclusive and alias-free; the
/// epilogue's bias matches `m x n`; blocking non-zero; `scratch` at least
/// `operands_scratch_len(kernel, blocking, m, n, k, exec.workers())` floats (B is shared only where
/// it holds [`shared_scratch_len`]).
pub(crate) unsafe fn gemm_operands(
    alpha: f32,
    a: &dyn Operand,
    b: &dyn Operand,
    beta: f32,
    c: OutPtr,
    epi: &Epilogue<'_>,
    ws: &mut Workspace<'_>,
) {
    let (kernel, blocking, exec) = (ws.kernel, ws.blocking, ws.exec);
    let d = GemmDims { m: a.rows(), n: b.cols(), k: a.cols() };
    // Cannot fail: operands_scratch_len computed the same quantities with checked arithmetic.
    let Ok((mc, kc, nc)) = effective(kernel, blocking, &d) else { return };
    let workers = planned_workers(exec).max(1);
    let kc_few = blocking.few_rows_kc(workers, kc);
    let prob = Problem::new((a, b, c), (alpha, beta, epi.bias, epi.activation), kernel, (mc, kc, nc, kc_few), blocking);
    let per_worker = kc * nc + mc * kc;
    let (mr, nr) = (kernel.gemm.mr, kernel.gemm.nr);
    let panels = (d.m.div_ceil(mr), d.n.div_ceil(nr));
    // B packed once, after every worker's own region, where the scratch was sized for it.
    let shared_len = shared_b_len(kernel, d.n, d.k).filter(|&len| {
        workers > 1
            && per_worker.checked_mul(workers).and_then(|x| x.checked_add(len)).is_some_and(|x| x <= ws.scratch.len())
    });
    let split = Split::plan(workers, panels, (mr, nr, nc, d.k), split_costs(a, b), shared_len.is_some());
    let scratch = Shared(ws.scratch.as_mut_ptr());
    // SAFETY: the shared region starts after the workers' regions, inside the scratch (checked
    // above whenever `split.shared_b`).
    let shared_b = split.shared_b.then(|| Shared(unsafe { scratch.ptr().add(workers * per_worker) }));
    if let Some(dst) = shared_b {
        let k_blocks = d.k.div_ceil(kc).max(1);
        let units = k_blocks * panels.1;
        exec.run(&|w| {
            if w >= workers {
                return;
            }
            // Worker w packs units [u0, u1) of (reduction slice, panel), slice-major.
            let (u0, u1) = (units * w / workers, units * (w + 1) / workers);
            for pb in u0 / panels.1..u1.div_ceil(panels.1).min(k_blocks) {
                let (first, end) = (u0.max(pb * panels.1) - pb * panels.1, u1.min((pb + 1) * panels.1) - pb * panels.1);
                let pc = pb * kc;
                let kc_eff = kc.min(d.k - pc.min(d.k));
                if first < end {
                    // SAFETY: rows pc..pc+kc_eff of b; slice pb's panels start at pc * (panels
                    // * nr) in the shared region, and worker w alone writes panels first..end.
                    unsafe {
                        b.pack_b(
                            Block { row: pc, col: 0, rows: kc_eff, cols: d.n },
                            nr,
                            first..end,
                            dst.ptr().add(pc * panels.1 * nr),
                        )
                    };
                }
            }
        });
    }
    // `run` has returned: the shared panels are complete and only read from here on.
    exec.run(&|w| {
        // The callers pass a `Pinned` executor; this guard keeps an index past the count from
        // ever becoming an out-of-bounds write whatever executor reaches here.
        if w >= workers {
            return;
        }
        let (rows, cols) = split.rect(w, panels, (mr, nr), (d.m, d.n));
        if rows.is_empty() || cols.is_empty() {
            return;
        }
        let b = shared_b.map(|s| (s.ptr().cast_const(), panels.1 * nr));
        // SAFETY: worker w owns scratch slice w and the rectangle rows x cols of C, disjoint from
        // every other worker's; the shared B is complete; the caller's contract covers the rest.
        unsafe { gemm_rect(&prob, rows, cols, scratch.ptr().add(w * per_worker), b) };
    });
}

/// A batch of GEMMs of one shape for [`gemm_batch`]: the conv's (image, group) pairs, the 16
/// products of Winograd.
///
/// # Safety
/// Every job's operands have the same dimensions, `m, n > 0`; the outputs are valid, exclusive
/// and pairwise disjoint; each bias matches its job's `m x n`.
pub(crate) unsafe trait Batch: Sync {
    /// Jobs in the batch.
    fn jobs(&self) -> usize;
    /// Calls `f` with job `i`'s A, B, C and bias (built per call: an implicit operand is a view).
    fn with_job(&self, i: usize, f: &mut JobFn<'_>);
}

/// What [`Batch::with_job`] hands a job to: its A, B, C and bias.
pub(crate) type JobFn<'f> = dyn FnMut(&dyn Operand, &dyn Operand, OutPtr, Bias<'_>) + 'f;

/// `C_i <- act(alpha * A_i * B_i + beta * C_i + bias_i)` for every job of `batch`. One job runs
/// as [`gemm_operands`]. More run either one after another, each on all workers, or together in
/// one parallel region where every worker takes a run of (job, rectangle) items, each job split
/// `s` ways: whichever [`Split::plan`]'s costs, with one `Executor::run` per region, say is
/// faster. Small jobs on many workers (Winograd's 16 GEMMs of `k x tiles x c` on 16 threads)
/// otherwise pay a fork and join each for a few microseconds of work.
///
/// # Safety
/// As [`gemm_operands`] for every job, and [`Batch`]'s contract.
pub(crate) unsafe fn gemm_batch(batch: &dyn Batch, alpha: f32, beta: f32, act: Activation, ws: &mut Workspace<'_>) {
    let jobs = batch.jobs();
    if jobs == 0 {
        return;
    }
    let (kernel, exec) = (ws.kernel, ws.exec);
    let workers = planned_workers(exec).max(1);
    // The shape and costs, from job 0 (every job has the same).
    let mut shape = None;
    batch.with_job(0, &mut |a, b, _, _| {
        shape = Some((GemmDims { m: a.rows(), n: b.cols(), k: a.cols() }, split_costs(a, b)));
    });
    let Some((d, costs)) = shape else { return };
    // Cannot fail: operands_scratch_len computed the same quantities with checked arithmetic.
    let Ok((mc, kc, nc)) = effective(kernel, ws.blocking, &d) else { return };
    let (mr, nr) = (kernel.gemm.mr, kernel.gemm.nr);
    let panels = (d.m.div_ceil(mr), d.n.div_ceil(nr));
    let dims = (mr, nr, nc, d.k);
    let Some((per_job, split)) = batch_plan(jobs, workers, panels, dims, costs) else {
        for i in 0..jobs {
            // SAFETY: forwarded contract, one job at a time.
            batch.with_job(i, &mut |a, b, c, bias| unsafe {
                gemm_operands(alpha, a, b, beta, c, &Epilogue { bias, activation: act }, ws)
            });
        }
        return;
    };
    let items = jobs * per_job;
    let kc_few = ws.blocking.few_rows_kc(workers, kc);
    let per_worker = kc * nc + mc * kc;
    let scratch = Shared(ws.scratch.as_mut_ptr());
    exec.run(&|w| {
        if w >= workers {
            return;
        }
        for item in items * w / workers..items * (w + 1) / workers {
            let (rows, cols) = split.rect(item % per_job, panels, (mr, nr), (d.m, d.n));
            if rows.is_empty() || cols.is_empty() {
                continue;
            }
            batch.with_job(item / per_job, &mut |a, b, c, bias| {
                let prob = Problem::new((a, b, c), (alpha, beta, bias, act), kernel, (mc, kc, nc, kc_few), ws.blocking);
                // SAFETY: worker w owns scratch slice w; each (job, rectangle) item is one
                // worker's, and jobs' outputs are disjoint; the caller's contract covers the rest.
                unsafe { gemm_rect(&prob, rows.clone(), cols.clone(), scratch.ptr().add(w * per_worker), None) };
            });
        }
    });
}

/// How [`gemm_batch`] runs `jobs` GEMMs of one shape: `None` one after another on all workers,
/// or `Some((s, split))`, every job split into the `s` rectangles of `split` and the `jobs * s`
/// items dealt out in runs, whichever [`Split::plan`]'s costs say is faster, with
/// [`PHASE_READS`] for each `Executor::run`.
fn batch_plan(
    jobs: usize,
    workers: usize,
    panels: (usize, usize),
    dims: (usize, usize, usize, usize),
    costs: (Option<usize>, usize),
) -> Option<(usize, Split)> {
    if jobs <= 1 || workers <= 1 {
        return None;
    }
    // One job after another (B shared where `gemm_operands` would share it).
    let (one, _) = Split::plan_cost(workers, panels, dims, costs, true);
    let serial = jobs.saturating_mul(one.saturating_add(PHASE_READS));
    // Together: each job split s ways (no shared B).
    let mut together = (usize::MAX, None);
    for s in 1..=workers {
        let (cost, split) = Split::plan_cost(s, panels, dims, costs, false);
        let per_job = split.wr * split.wc;
        let makespan = jobs.saturating_mul(per_job).div_ceil(workers).saturating_mul(cost).saturating_add(PHASE_READS);
        if makespan < together.0 {
            together = (makespan, Some((per_job, split)));
        }
    }
    if serial <= together.0 {
        None
    } else {
        together.1
    }
}

/// The loop nest over one rectangle of C. With `packed_b = Some((ptr, width))` B is already
/// packed whole there (slice `pc`'s panel `j` at `ptr + pc * width + j * nr * kc_eff`, `width`
/// the columns rounded up to whole panels) and is only read.
///
/// # Safety
/// `rows`/`cols` inside C, panel-aligned at their start, and owned by this call; `scratch` valid
/// for `kc*nc + mc*kc` floats and owned by this call; a `packed_b` complete and unchanging while
/// this runs; the CPU supports the kernel.
pub(crate) unsafe fn gemm_rect(
    p: &Problem<'_>,
    rows: Range<usize>,
    cols: Range<usize>,
    scratch: *mut f32,
    packed_b: Option<(*const f32, usize)>,
) {
    let (mr, nr) = (p.kernel.gemm.mr, p.kernel.gemm.nr);
    let k = p.a.cols();
    let bbuf = scratch;
    // SAFETY: the A buffer follows the kc x nc B buffer inside this call's scratch.
    let abuf = unsafe { scratch.add(p.kc * p.nc) };
    // B may be read in place (by kernels that take its row stride), unless it is shared.
    let b_direct = packed_b.is_none() && p.kernel.gemm.b_in_place;
    // A C of few rows reads a row-major B of any size in place (`B_IN_PLACE_ROWS`).
    let few_rows = p.a.rows() <= B_IN_PLACE_ROWS;
    // One row tile over a row-major matrix B in place that the caches cannot hold: a few rows
    // of B at a time, across every column panel (`STREAM_KC`). Not the direct conv's image (its
    // slices are whole taps; not measured).
    let plain = if b_direct && few_rows { p.b.b_in_place(0..k, few_rows).filter(|v| v.taps.is_null()) } else { None };
    let streamed = plain.is_some() && p.a.rows() <= mr && k.saturating_mul(p.b.cols()) >= STREAM_B_MIN;
    // Few rows over a plain B in place whose rows are a multiple of 4 KiB apart (so a panel's
    // rows share the L1's sets): the slice measured for this CPU (`Blocking::kc_few_rows`).
    let aliased = plain.is_some_and(|v| (v.rs * core::mem::size_of::<f32>()).is_multiple_of(4096));
    let kc = if streamed {
        STREAM_KC.min(p.kc)
    } else if aliased {
        p.kc_few
    } else {
        p.kc
    };
    let k_blocks = k.div_ceil(kc).max(1);
    for jc in cols.clone().step_by(p.nc) {
        let nc_eff = p.nc.min(cols.end - jc);
        let col_panels = nc_eff.div_ceil(nr);
        for pb in 0..k_blocks {
            let pc = pb * kc;
            let kc_eff = kc.min(k - pc.min(k));
            let last = pb + 1 == k_blocks;
            let beta = if pb == 0 { p.beta } else { 1.0 };
            let (bias, act) = if last { (p.bias, p.act) } else { (Bias::None, Activation::None) };
            // Whole panels of B are read in place where the operand allows it (a small row-major
            // B, the direct conv's image); the rest is packed. The same for mr-row panels of A.
            let direct = if b_direct { p.b.b_in_place(pc..pc + kc_eff, few_rows) } else { None };
            let a_in_place = p.a.in_place(pc..pc + kc_eff);
            let direct_panels = if direct.is_some() { nc_eff / nr } else { 0 };
            let bbuf = match packed_b {
                // SAFETY: slice pc's panels of columns jc.. inside the shared packed B.
                Some((base, width)) => unsafe { base.add(pc * width + jc / nr * nr * kc_eff) },
                None => {
                    if direct_panels < col_panels {
                        // SAFETY: rows pc..pc+kc_eff and columns jc..jc+nc_eff are inside b;
                        // the panels fit the kc x nc buffer.
                        unsafe {
                            p.b.pack_b(
                                Block { row: pc, col: jc, rows: kc_eff, cols: nc_eff },
                                nr,
                                direct_panels..col_panels,
                                bbuf,
                            )
                        };
                    }
                    bbuf.cast_const()
                }
            };
            let mc = if a_in_place.is_some() { p.mc_in_place } else { p.mc };
            for ic in rows.clone().step_by(mc) {
                let mc_eff = mc.min(rows.end - ic);
                let full_panels = if a_in_place.is_some() { mc_eff / mr } else { 0 };
                // Pack what is not read in place: everything, or only the ragged last panel.
                let packed_from = full_panels * mr;
                if packed_from < mc_eff {
                    // SAFETY: rows ic+packed_from..ic+mc_eff and columns pc..pc+kc_eff are inside a;
                    // the packed panels fit the mc x kc buffer.
                    unsafe {
                        p.a.pack_a(
                            Block { row: ic + packed_from, col: pc, rows: mc_eff - packed_from, cols: kc_eff },
                            mr,
                            abuf,
                        )
                    };
                }
                for jp in 0..col_panels {
                    // What depends on the column panel only, set once for its tiles (a tile's call
                    // costs the Cortex-M4 about 30 instructions more when every field is rebuilt).
                    let jr = jp * nr;
                    let j = jc + jr;
                    let (b, rs_b, taps, ntaps) = match direct {
                        // Wrapping: rows pc.. and whole columns jc+jr..jc+jr+nr of b; with
                        // `k == 0` b may be an empty slice, and the kernel reads nothing.
                        Some(v) if jp < direct_panels => (v.ptr.wrapping_add(j), v.rs, v.taps, v.ntaps),
                        // SAFETY: panel offset inside the packed B block.
                        _ => (unsafe { bbuf.add(jp * nr * kc_eff) }, nr, core::ptr::null(), 0),
                    };
                    let mut args = MicroArgs {
                        k: kc_eff,
                        a: abuf.cast_const(),
                        rs_a: 1,
                        cs_a: mr,
                        b,
                        rs_b,
                        taps,
                        ntaps,
                        c: p.c.ptr(),
                        rs_c: p.rs_c,
                        cs_c: p.cs_c,
                        m: mr,
                        n: nr.min(nc_eff - jr),
                        alpha: p.alpha,
                        beta,
                        bias: TileBias::None,
                        act,
                    };
                    // Edge tiles run on the kernel's smaller register tiles, where it has them:
                    // the last row panel, and every tile of a ragged column panel.
                    let edge = p.kernel.gemm.edge.unwrap_or(p.kernel.gemm.run);
                    let run_row = if args.n < nr { edge } else { p.kernel.gemm.run };
                    // The arguments of the row tile at `ir`: A's source, the bias, C, valid rows.
                    let place = |args: &mut MicroArgs, ir: usize| {
                        let i = ic + ir;
                        (args.a, args.rs_a, args.cs_a) =
                            if let (true, Some((base, rs))) = (ir < packed_from, a_in_place) {
                                // Wrapping: row i of a, where mr whole rows of kc_eff follow; with
                                // `k == 0` a may be an empty slice, and the kernel reads nothing.
                                (base.wrapping_add(i * rs), rs, 1)
                            } else {
                                // SAFETY: inside the packed A buffer.
                                (unsafe { abuf.add((ir - packed_from) * kc_eff) }.cast_const(), 1, mr)
                            };
                        // i < m and j < n index the validated bias vectors.
                        args.bias = TileBias::at(&bias, i, j);
                        // SAFETY: (i, j) is inside C.
                        args.c = unsafe { p.c.ptr().add(i * p.rs_c + j * p.cs_c) };
                        args.m = mr.min(rows.end - i);
                    };
                    // Whole tiles in columns where the kernel set runs them so: those whose A is
                    // read in place, then the whole packed ones; the tiles left one by one.
                    let mut first = 0;
                    if let Some(column) = p.kernel.gemm.column.filter(|_| args.n == nr) {
                        let in_place_step = a_in_place.map_or(0, |(_, rs)| mr * rs);
                        let whole = packed_from + (mc_eff - packed_from) / mr * mr;
                        for (end, a_step) in [(packed_from, in_place_step), (whole, mr * kc_eff)] {
                            if end > first {
                                place(&mut args, first);
                                // SAFETY: as `run` below, for each of these whole tiles (m = mr,
                                // n = nr), A in place up to `packed_from`, packed from there.
                                if !unsafe { column(&args, (end - first) / mr, a_step) } {
                                    break;
                                }
                                first = end;
                            }
                        }
                    }
                    for ir in (first..mc_eff).step_by(mr) {
                        place(&mut args, ir);
                        let run = if args.m < mr { edge } else { run_row };
                        // SAFETY: the CPU supports the kernel; panels hold kc_eff*mr and kc_eff*nr
                        // readable floats; the tile's m x n elements of C are in bounds and owned.
                        unsafe { run(&args) };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Split;

    /// Every plan's rectangles cover each tile of C exactly once, with at most one rectangle per
    /// worker and a shared B only where allowed and where rows are split.
    #[test]
    fn splits_cover_c_once() {
        let (mr, nr) = (3, 4);
        // Fewer worker counts under Miri, which runs these loops a thousand times slower.
        let counts: &[usize] = if cfg!(miri) { &[1, 5, 16] } else { &[1, 2, 3, 5, 8, 16, 37] };
        for &workers in counts {
            for (rp, cp) in [(1, 1), (1, 9), (9, 1), (7, 5), (22, 7), (30, 2)] {
                for (a_packed, shared_ok) in [(false, false), (false, true), (true, false), (true, true)] {
                    let a_cost = a_packed.then_some(2);
                    let s = Split::plan(workers, (rp, cp), (mr, nr, 2 * nr, 50), (a_cost, 4), shared_ok);
                    assert!(s.wr * s.wc <= workers && s.wr >= 1 && s.wc >= 1, "{s:?}");
                    assert!(!s.shared_b || (shared_ok && s.wr > 1), "{s:?}");
                    let (m, n) = (rp * mr - 1, cp * nr - 2);
                    let mut seen = [0u8; 90 * 40];
                    for w in 0..workers + 2 {
                        let (rows, cols) = s.rect(w, (rp, cp), (mr, nr), (m, n));
                        assert!(rows.start.is_multiple_of(mr) && cols.start.is_multiple_of(nr));
                        for i in rows {
                            for j in cols.clone() {
                                seen[i * n + j] += 1;
                            }
                        }
                    }
                    assert!(seen[..m * n].iter().all(|&x| x == 1), "{workers} workers, {rp}x{cp} panels: {s:?}");
                }
            }
        }
    }

    /// Winograd's 16 products of 64 x 784 x 64 (64 -> 64 3x3 at 56x56) on 16 workers run
    /// together, a job each; on one worker, and a single job, one after another.
    #[test]
    fn batches_run_together_where_jobs_are_small() {
        let dims = (12, 32, 800, 64);
        assert_eq!(
            super::batch_plan(16, 16, (6, 25), dims, (Some(2), 1)),
            Some((1, Split { wr: 1, wc: 1, shared_b: false }))
        );
        assert_eq!(super::batch_plan(16, 1, (6, 25), dims, (Some(2), 1)), None);
        assert_eq!(super::batch_plan(1, 16, (6, 25), dims, (Some(2), 1)), None);
        // Two large jobs on 16 workers: one after another, or each split 8 ways at least.
        if let Some((s, _)) = super::batch_plan(2, 16, (100, 100), (12, 32, 3200, 1000), (None, 1)) {
            assert!(s >= 8, "{s}");
        }
    }

    /// The cases the rule was made for, and the one it must leave alone.
    #[test]
    fn splits_share_b_where_rows_would_repeat_it() {
        // 256 -> 256 3x3 conv at 14x14 (NCHW) on 16 workers: 22 x 7 panels. Rows alone gave the
        // busiest worker 2 x 7 = 14 tiles and a whole im2col B to gather.
        // Now at most 11-12 tiles, and B gathered by at most two row bands unless shared.
        let s = Split::plan(16, (22, 7), (12, 32, 224, 2304), (None, 4), true);
        assert!(s.shared_b || s.wr <= 2, "{s:?}");
        assert!(22usize.div_ceil(s.wr) * 7usize.div_ceil(s.wc) <= 12, "{s:?}");
        // 512 -> 512 3x3 at 7x7: 43 x 2 panels, a 4608-deep gather; 16 row bands gathered it
        // 16 times. Shared, in 8 or more bands.
        let s = Split::plan(16, (43, 2), (12, 32, 64, 4608), (None, 4), true);
        assert!(s.shared_b && s.wr >= 8, "{s:?}");
        // A square GEMM on two workers, A read in place: two halves, B (plain) packed per worker.
        let s = Split::plan(2, (22, 8), (12, 32, 256, 256), (None, 1), true);
        assert!(!s.shared_b && s.wr * s.wc == 2, "{s:?}");
        // 12544 x 64 x 147 (conv1 as a GEMM) on 16: rows, its small plain B packed per worker, A
        // read once (a second column band would read it twice).
        assert_eq!(
            Split::plan(16, (1046, 2), (12, 32, 64, 147), (None, 1), true),
            Split { wr: 16, wc: 1, shared_b: false }
        );
        // Without room for a shared B, a tall problem still splits its rows.
        let s = Split::plan(4, (40, 1), (12, 32, 32, 100), (None, 4), false);
        assert_eq!((s.wr, s.shared_b), (4, false));
    }
}
