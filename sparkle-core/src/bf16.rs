//! bf16 GEMM: `C (f32) = A (bf16) * B (bf16)`, products exact, sums in f32 — what
//! `torch.matmul` on bf16 tensors with an f32 result computes. `vdpbf16ps` does twice an FMA's
//! products per instruction; whether that is faster depends on the core (see
//! [`crate::arch::bf16`]). Kernels differ in rounding order (and `vdpbf16ps` flushes denormals),
//! all within the tolerance.
//!
//! The oracle, [`gemm_bf16_reference_f64`], sums the same (already rounded) inputs in f64; a
//! result is within [`crate::check::tolerance_for`]`(Cpu, Bf16, k)` of it. To run f32 data
//! through bf16, round it first (`bf16::from_f32`, round-to-nearest-even): that rounding is the
//! caller's choice of precision, not an error of the GEMM.
//!
//! ```text
//! phase 1 (all workers): pack B's nr-panels as k-pairs (worker w: panels w, w+W, ...)
//! phase 2 (all workers): items = blocks of mc rows x chunks of NC_PANELS panels, worker w takes
//!   w, w+W, ...: pack the A block (unless it holds it), then per panel, per A panel: kernel ->
//!   tile -> C
//! ```
#![allow(unsafe_code)]

pub use half::bf16;

use crate::arch::bf16::{BKernel, BMicroArgs};
use crate::error::{mul, Error, Param, Result};
use crate::f16::{check_half as check, gemm_half_reference_f64};
use crate::gemm::driver::{planned_workers, Executor, Pinned, Shared};
use crate::gemm::GemmDims;
use crate::view::{MatMut, MatRef};

/// mr-panels per block of A rows.
const MC_PANELS: usize = 8;
/// nr-panels per work item.
const NC_PANELS: usize = 16;
/// k-pairs per kernel call: a B panel chunk of the widest kernel (32 columns) is 32 KiB, inside
/// L1 while the block's A panels stream past it.
const KC_PAIRS: usize = 256;
/// The largest tile of any kernel (`arch::bf16` checks it).
const MAX_TILE: usize = 32 * 32;
/// Pairs per block of the `tiles` packing.
const TILE_PAIRS: usize = 16;
/// Words per 64-byte line.
const LINE_WORDS: usize = 16;

/// The kernel's tile, on a 64-byte line (AMX stores it by rows of 64 bytes).
#[repr(C, align(64))]
struct Tile([f32; MAX_TILE]);

/// Where a bf16 GEMM runs: its kernel, its workers and caller scratch of at least
/// [`gemm_bf16_scratch_len`] words.
pub struct BWorkspace<'a> {
    /// The kernel (its ISA proved by the `BKernel`).
    pub kernel: &'a BKernel,
    /// The workers.
    pub exec: &'a (dyn Executor + Sync),
    /// Packing scratch.
    pub scratch: &'a mut [u32],
}

impl core::fmt::Debug for BWorkspace<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BWorkspace")
            .field("kernel", &self.kernel.id())
            .field("workers", &self.exec.workers())
            .field("scratch", &self.scratch.len())
            .finish()
    }
}

/// The scratch layout of one problem, in words.
#[derive(Clone, Copy, Debug)]
struct Layout {
    pairs: usize,
    n_panels: usize,
    mc: usize,
    /// Words of packed B (`n_panels * nr * pairs`).
    b_words: usize,
    /// Words per row and pair of packed A: 2 for kernels that take A widened, else 1.
    a_width: usize,
    /// Words of one worker's packed A block (`mc * pairs * a_width`).
    a_words: usize,
}

fn layout(kernel: &BKernel, m: usize, n: usize, k: usize) -> Result<Layout> {
    let p = Param::Scratch;
    let (mr, nr) = (kernel.mr, kernel.nr);
    let pairs = k.div_ceil(2);
    let pairs = if kernel.tiles { mul(pairs.div_ceil(TILE_PAIRS), TILE_PAIRS, p)? } else { pairs };
    let n_panels = n.div_ceil(nr);
    let mc = (MC_PANELS * mr).min(mul(m.div_ceil(mr), mr, p)?);
    let b_words = mul(mul(n_panels, nr, p)?, pairs, p)?;
    let a_width = if kernel.wide_a { 2 } else { 1 };
    let a_words = mul(mul(mc, pairs, p)?, a_width, p)?;
    Ok(Layout { pairs, n_panels, mc, b_words, a_width, a_words })
}

/// Words of scratch [`gemm_bf16_with`] needs for an `m x n x k` problem on `workers` workers
/// (with up to a line's worth more, to start the panels on a 64-byte line: every region is
/// then on one, `n_panels * nr` and `mc` being multiples of 16 for the AMX kernel, which needs
/// it most: its tile loads run at a fifth of their speed when rows straddle lines).
pub fn gemm_bf16_scratch_len(kernel: &BKernel, m: usize, n: usize, k: usize, workers: usize) -> Result<usize> {
    let l = layout(kernel, m, n, k)?;
    mul(l.a_words, workers.max(1), Param::Scratch)?
        .checked_add(l.b_words)
        .and_then(|w| w.checked_add(LINE_WORDS - 1))
        .ok_or(Error::Overflow { param: Param::Scratch })
}

/// The oracle: [`crate::f16::gemm_half_reference_f64`] on bf16 inputs.
pub fn gemm_bf16_reference_f64(a: &MatRef<'_, bf16>, b: &MatRef<'_, bf16>, c: MatMut<'_, f64>) -> Result<GemmDims> {
    gemm_half_reference_f64(a, b, c)
}

/// `C <- A * B` in `ws`: validates the shapes, the workers and the scratch, then runs. Every
/// element of C is written; for `k` beyond one chunk (512 steps), the later chunks'
/// sums are added to what the first wrote.
pub fn gemm_bf16_with(
    a: &MatRef<'_, bf16>,
    b: &MatRef<'_, bf16>,
    mut c: MatMut<'_, f32>,
    ws: BWorkspace<'_>,
) -> Result<GemmDims> {
    let d = check(a, b, &c)?;
    let exec = Pinned::new(ws.exec)?;
    let required = gemm_bf16_scratch_len(ws.kernel, d.m, d.n, d.k, planned_workers(&exec))?;
    if ws.scratch.len() < required {
        return Err(Error::TooSmall { param: Param::Scratch, required, found: ws.scratch.len() });
    }
    if d.m == 0 || d.n == 0 {
        return Ok(d);
    }
    // The layout was computed (and its arithmetic checked) by the scratch length above.
    let l = layout(ws.kernel, d.m, d.n, d.k)?;
    let (rs_c, cs_c) = (c.rs(), c.cs());
    let start = crate::quant::driver::line_start(ws.scratch);
    let ctx = Ctx {
        a,
        b,
        kernel: ws.kernel,
        l,
        d,
        workers: planned_workers(&exec),
        scratch: Shared(ws.scratch[start..].as_mut_ptr()),
        c: Shared(c.as_mut_ptr()),
        rs_c,
        cs_c,
    };
    // SAFETY: every worker index once; phase 1 ends (`run` returns) before phase 2 reads B.
    exec.run(&|w| unsafe { ctx.phase1(w) });
    // SAFETY: as above: phase 2 after phase 1; each item writes its own tiles of C.
    exec.run(&|w| unsafe { ctx.phase2(w) });
    Ok(d)
}

/// The pair word of two bf16: `lo` in the low half.
#[inline(always)]
fn pair(lo: bf16, hi: bf16) -> u32 {
    u32::from(lo.to_bits()) | u32::from(hi.to_bits()) << 16
}

struct Ctx<'a> {
    a: &'a MatRef<'a, bf16>,
    b: &'a MatRef<'a, bf16>,
    kernel: &'a BKernel,
    l: Layout,
    d: GemmDims,
    workers: usize,
    scratch: Shared<u32>,
    c: Shared<f32>,
    rs_c: usize,
    cs_c: usize,
}

impl Ctx<'_> {
    /// Phase 1, worker `w`: B's panels `w, w + W, ...` (panel `jp`, pair `g`, column `jj` at
    /// word `(jp * pairs + g) * nr + jj`; zero past k and n).
    ///
    /// # Safety
    /// `w < workers`, each index once, before phase 2.
    unsafe fn phase1(&self, w: usize) {
        let (nr, k, n, pairs) = (self.kernel.nr, self.d.k, self.d.n, self.l.pairs);
        let (data, rs, cs) = (self.b.as_slice(), self.b.rs(), self.b.cs());
        for jp in (w..self.l.n_panels).step_by(self.workers) {
            // SAFETY: panel `jp < n_panels` of packed B, this worker's alone.
            let panel = unsafe { self.scratch.ptr().add(jp * pairs * nr) };
            let (j0, nv) = (jp * nr, nr.min(n - jp * nr));
            if cs == 1 && nv == nr {
                // Row-major B, a whole panel: each pair interleaves two rows' runs of nr.
                let run = |p: usize| (p < k).then(|| &data[p * rs + j0..p * rs + j0 + nr]);
                for g in 0..pairs {
                    // SAFETY: words `g * nr ..` of the panel, this worker's alone.
                    let out = unsafe { core::slice::from_raw_parts_mut(panel.add(g * nr), nr) };
                    match (run(2 * g), run(2 * g + 1)) {
                        (Some(lo), Some(hi)) => {
                            for ((o, &l), &h) in out.iter_mut().zip(lo).zip(hi) {
                                *o = pair(l, h);
                            }
                        }
                        (Some(lo), None) => {
                            for (o, &l) in out.iter_mut().zip(lo) {
                                *o = pair(l, bf16::ZERO);
                            }
                        }
                        _ => out.fill(0),
                    }
                }
                continue;
            }
            // Pair by pair (B's rows 2g and 2g + 1, read along), the panel written in order.
            for g in 0..pairs {
                let (p0, p1) = (2 * g, 2 * g + 1);
                for jj in 0..nr {
                    let word = if jj < nv {
                        let j = j0 + jj;
                        let lo = if p0 < k { data[p0 * rs + j * cs] } else { bf16::ZERO };
                        let hi = if p1 < k { data[p1 * rs + j * cs] } else { bf16::ZERO };
                        pair(lo, hi)
                    } else {
                        0
                    };
                    // SAFETY: word `g * nr + jj` of the panel.
                    unsafe { *panel.add(g * nr + jj) = word };
                }
            }
        }
    }

    /// Packs rows `i0 .. i0 + rows` of A as panels at `dst` (rows past `rows` zero): panel `ip`,
    /// pair `g`, row `ii` at word `(ip * pairs + g) * mr + ii` (times two, the pair widened to
    /// two f32, for `wide_a` kernels).
    ///
    /// # Safety
    /// `dst` holds `mc * pairs * a_width` words (the layout's `a_words`), `rows <= mc`.
    unsafe fn pack_a(&self, i0: usize, rows: usize, dst: *mut u32) {
        let (mr, k, pairs, wide) = (self.kernel.mr, self.d.k, self.l.pairs, self.kernel.wide_a);
        let (data, rs, cs) = (self.a.as_slice(), self.a.rs(), self.a.cs());
        if self.kernel.tiles && cs == 1 {
            // Row-major A into tiles: a row's block of 16 pairs is its next 32 values, in order
            // (each pair word holds the even step in its low half).
            for ip in 0..rows.div_ceil(mr) {
                for ii in 0..mr {
                    let i = ip * mr + ii;
                    let row = if i < rows && k > 0 { &data[(i0 + i) * rs..(i0 + i) * rs + k] } else { &[][..] };
                    for q in (0..pairs).step_by(TILE_PAIRS) {
                        // SAFETY: the row's 16 words of block `q` of panel `ip < mc / mr`.
                        let out = unsafe {
                            core::slice::from_raw_parts_mut(
                                dst.add((ip * pairs + q) * mr + ii * TILE_PAIRS).cast::<bf16>(),
                                2 * TILE_PAIRS,
                            )
                        };
                        // The row's values in this block (none past the row, or for a row past `rows`).
                        let from = row.get(2 * q..).unwrap_or(&[]);
                        let from = &from[..from.len().min(2 * TILE_PAIRS)];
                        if let (Ok(to), Ok(from)) = (
                            <&mut [bf16; 2 * TILE_PAIRS]>::try_from(&mut *out),
                            <&[bf16; 2 * TILE_PAIRS]>::try_from(from),
                        ) {
                            // A whole block: a fixed-size copy (inline moves, not a call).
                            *to = *from;
                        } else {
                            out[..from.len()].copy_from_slice(from);
                            out[from.len()..].fill(bf16::ZERO);
                        }
                    }
                }
            }
            return;
        }
        for ip in 0..rows.div_ceil(mr) {
            for ii in 0..mr {
                let i = ip * mr + ii;
                for g in 0..pairs {
                    let word = if i < rows {
                        let (p0, p1, row) = (2 * g, 2 * g + 1, (i0 + i) * rs);
                        let lo = if p0 < k { data[row + p0 * cs] } else { bf16::ZERO };
                        let hi = if p1 < k { data[row + p1 * cs] } else { bf16::ZERO };
                        pair(lo, hi)
                    } else {
                        0
                    };
                    let at = if self.kernel.tiles {
                        let (q, gi) = (g / TILE_PAIRS * TILE_PAIRS, g % TILE_PAIRS);
                        (ip * pairs + q) * mr + ii * TILE_PAIRS + gi
                    } else {
                        (ip * pairs + g) * mr + ii
                    };
                    // SAFETY: word `at` (or words `2 * at`, `+ 1`) of panel `ip < mc / mr`.
                    unsafe {
                        if wide {
                            *dst.add(2 * at) = word << 16;
                            *dst.add(2 * at + 1) = word & 0xffff_0000;
                        } else {
                            *dst.add(at) = word;
                        }
                    }
                }
            }
        }
    }

    /// Phase 2, worker `w`: items `w, w + W, ...`.
    ///
    /// # Safety
    /// `w < workers`, each index once, after phase 1.
    unsafe fn phase2(&self, w: usize) {
        let (l, d, kernel) = (&self.l, &self.d, self.kernel);
        let (mr, nr) = (kernel.mr, kernel.nr);
        // SAFETY: worker `w < workers` owns words `[b_words + w * a_words, +a_words)`.
        let a_buf = unsafe { self.scratch.ptr().add(l.b_words + w * l.a_words) };
        let mut tile = Tile([0.0f32; MAX_TILE]);
        let chunks = l.n_panels.div_ceil(NC_PANELS);
        let items = d.m.div_ceil(l.mc) * chunks;
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
                // SAFETY: the worker's own block (`rows <= mc`).
                unsafe { self.pack_a(i0, rows, a_buf) };
                packed_block = rb;
            }
            // Panels are pair-major, so chunk `q` of a panel is contiguous: `pairs` words per
            // row or column, from pair `q * KC_PAIRS`. At least one chunk: with `k = 0` it
            // writes the zeros.
            for q in 0..l.pairs.div_ceil(KC_PAIRS).max(1) {
                let q0 = q * KC_PAIRS;
                let pairs = KC_PAIRS.min(l.pairs - q0);
                for jp in cc * NC_PANELS..((cc + 1) * NC_PANELS).min(l.n_panels) {
                    let nv = nr.min(d.n - jp * nr);
                    for ip in 0..rows.div_ceil(mr) {
                        let args = BMicroArgs {
                            pairs,
                            // SAFETY: chunk `q0 ..` of panel `ip` of the block, panel `jp` of B.
                            a: unsafe { a_buf.add((ip * l.pairs + q0) * mr * l.a_width) },
                            // SAFETY: as above.
                            b: unsafe { self.scratch.ptr().add((jp * l.pairs + q0) * nr) },
                            c: tile.0.as_mut_ptr(),
                        };
                        // SAFETY: the kernel proves its ISA; the panels hold `pairs` pairs from
                        // `q0`; the tile holds `mr * nr <= MAX_TILE` values.
                        unsafe { (kernel.run)(&args) };
                        let (row0, mv) = (i0 + ip * mr, mr.min(rows - ip * mr));
                        if self.cs_c == 1 {
                            for ii in 0..mv {
                                // SAFETY: row `row0 + ii`, columns `jp * nr .. + nv` of the
                                // validated, alias-free view with unit column stride; only this
                                // item writes them.
                                let out = unsafe {
                                    core::slice::from_raw_parts_mut(
                                        self.c.ptr().add((row0 + ii) * self.rs_c + jp * nr),
                                        nv,
                                    )
                                };
                                let sums = &tile.0[ii * nr..ii * nr + nv];
                                if q0 == 0 {
                                    out.copy_from_slice(sums);
                                } else {
                                    out.iter_mut().zip(sums).for_each(|(o, s)| *o += s);
                                }
                            }
                            continue;
                        }
                        for ii in 0..mv {
                            for jj in 0..nv {
                                // SAFETY: `(row0 + ii, jp * nr + jj)` is inside the validated,
                                // alias-free `m x n` view, and only this item writes it.
                                unsafe {
                                    let at = self.c.ptr().add((row0 + ii) * self.rs_c + (jp * nr + jj) * self.cs_c);
                                    let sum = tile.0[ii * nr + jj];
                                    *at = if q0 == 0 { sum } else { *at + sum };
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(session) = kernel.session {
            // SAFETY: `begin` ran above, on this thread.
            unsafe { (session.end)() };
        }
    }
}

#[cfg(test)]
mod tests {
    //! Small enough for Miri: the generic kernel (and the best outside Miri) against the oracle.
    use super::*;
    use crate::check::{max_error, tolerance_for, Backend, DType};
    use crate::gemm::driver::Sequential;

    const M: usize = 11;
    const N: usize = 37;
    const K: usize = 13;

    #[test]
    fn matches_the_oracle_within_tolerance() {
        let mut x = 0x1234_5678u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bf16::from_f32((x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0)
        };
        let a: [bf16; M * K] = core::array::from_fn(|_| next());
        let b: [bf16; K * N] = core::array::from_fn(|_| next());
        let (a, b) = (MatRef::row_major(&a, M, K).unwrap(), MatRef::col_major(&b, K, N).unwrap());
        let mut want = [0.0f64; M * N];
        gemm_bf16_reference_f64(&a, &b, MatMut::row_major(&mut want, M, N).unwrap()).unwrap();
        let mut scratch = [0u32; 2048];
        for kernel in [BKernel::generic(), BKernel::best()] {
            let len = gemm_bf16_scratch_len(kernel, M, N, K, 1).unwrap();
            let mut got = [f32::NAN; M * N];
            let ws = BWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len] };
            gemm_bf16_with(&a, &b, MatMut::row_major(&mut got, M, N).unwrap(), ws).unwrap();
            let (err, _) = max_error(&got, &want);
            assert!(err <= tolerance_for(Backend::Cpu, DType::Bf16, K), "{}: {err}", kernel.id());
            let ws = BWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len - 1] };
            let mut c = [0.0f32; M * N];
            assert!(gemm_bf16_with(&a, &b, MatMut::row_major(&mut c, M, N).unwrap(), ws).is_err());
        }
    }
}
