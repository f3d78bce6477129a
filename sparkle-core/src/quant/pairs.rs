//! The Cortex-M's form of the int8 depthwise conv (horizontal stride and dilation 1): pairs of
//! horizontal taps as one dual 16-bit multiply-accumulate (`smlad` on the Armv7E-M DSP).
//!
//! Per output row and chunk of outputs, each kernel row's inputs (less the input zero point, 0 in
//! the padding) are staged as words of two `i16` twice, interleaved: from an even column (`E[i] =
//! (v[2i], v[2i+1])`, word `2i`) and from an odd one (`O[i] = (v[2i+1], v[2i+2])`, word `2i+1`).
//! With the kernel row's weights as pairs `W[j] = (w[2j], w[2j+1])` (a last odd tap paired with
//! 0), output `2i` of the chunk sums `smlad(E[i+j], W[j])` over `j` and output `2i+1` sums
//! `smlad(O[i+j], W[j])`: `ceil(s/2)` instructions per kernel row for `s` products, every load
//! aligned, the two outputs' words side by side. The sums run kernel row by kernel row over the
//! chunk's accumulators, which keeps the loop in the Cortex-M's registers. At vertical stride and
//! dilation 1 a whole row of outputs is one chunk where it fits, and moving down one output row
//! stages only the new kernel row (the others stay in their slots of a ring).
//!
//! Portable code but for `smlad`; the unit tests run it on any host against the oracle, and the
//! firmware checks the Cortex-M4's build bit for bit on the target.

use crate::arch::quant::smlad;
use crate::conv::Conv2d;
use crate::layout::TensorLayout;
use crate::quant::QOperand;

/// Words of staged rows (1 KiB of stack).
const WORDS: usize = 256;
/// Outputs per chunk at most.
pub(crate) const CHUNK: usize = 64;
/// Kernel rows and tap pairs per row at most.
const MAX_ROWS: usize = 8;
const MAX_PAIRS: usize = 4;

/// Two values (each in `i16`'s range) as one word: `lo` in the low half.
#[inline(always)]
fn pair(lo: i32, hi: i32) -> u32 {
    u32::from(lo as u16) | (u32::from(hi as u16) << 16)
}

/// `f(i, [&run[2 i s], &run[(2 i + 1) s]])` for each `i < n` (`s = stride`), in order. Panics
/// unless `run` holds those elements. Through a pointer: `step_by`'s and `chunks`' bounds checks
/// doubled the staging loop of NHWC images on a Cortex-M (19 instructions a pair against 11).
#[allow(unsafe_code)]
#[inline(always)]
fn strided_pairs<X>(run: &[X], stride: usize, n: usize, mut f: impl FnMut(usize, [&X; 2])) {
    if n == 0 {
        return;
    }
    let last = n.checked_mul(2).and_then(|e| (e - 1).checked_mul(stride));
    assert!(last.is_some_and(|last| last < run.len()), "the run holds every pair");
    let mut at = run.as_ptr();
    for i in 0..n {
        // SAFETY: elements `2 i s` and `(2 i + 1) s` of `run`, at most `(2n - 1) s`, which is
        // inside it (checked above); `at` is element `2 i s` (past the last pair it is formed by
        // wrapping arithmetic and never read).
        let xs = unsafe { [&*at, &*at.add(stride)] };
        f(i, xs);
        at = at.wrapping_add(2 * stride);
    }
}

/// Whether the pair form runs `g` (one input channel per group).
pub(crate) fn fits(g: &Conv2d) -> bool {
    let p = g.params();
    p.stride[1] == 1 && p.dilation[1] == 1 && p.r <= MAX_ROWS && p.s.div_ceil(2) <= MAX_PAIRS && g.wo() > 0
}

/// The staged kernel rows of one chunk and the weights of one channel.
pub(crate) struct PairRows {
    /// Slot `q` (a staged kernel row): `rw` pairs of words from an even and an odd column.
    words: [u32; WORDS],
    /// Each kernel row's weights as pairs, row-major (`pairs` a row).
    taps: [u32; MAX_ROWS * MAX_PAIRS],
    /// Outputs per chunk (even, at most [`CHUNK`]).
    pub(crate) chunk: usize,
    /// Pairs of words per staged row: `chunk / 2 + pairs`.
    rw: usize,
    /// Tap pairs per kernel row.
    pairs: usize,
    /// Kernel rows.
    rows: usize,
    /// Whether moving down one output row reuses the staged rows (vertical stride and dilation
    /// 1, one chunk a row).
    ring: bool,
}

impl PairRows {
    /// For `g`, where [`fits`].
    pub(crate) fn new(g: &Conv2d) -> Self {
        let p = g.params();
        let (rows, pairs) = (p.r, p.s.div_ceil(2));
        // The largest even chunk up to CHUNK (and the row) whose rows fit: `chunk / 2 + pairs`
        // pairs of words per kernel row. Two outputs always fit (8 x (1 + 4) x 2 words).
        let fit = 2 * (WORDS / (2 * rows) - pairs);
        let chunk = g.wo().next_multiple_of(2).min(CHUNK).min(fit);
        let ring = p.stride[0] == 1 && p.dilation[0] == 1 && chunk >= g.wo();
        PairRows { words: [0; WORDS], taps: [0; MAX_ROWS * MAX_PAIRS], chunk, rw: chunk / 2 + pairs, pairs, rows, ring }
    }

    /// Whether a chunk is a whole output row, and consecutive rows reuse the staged ones.
    pub(crate) fn whole_rows(&self) -> bool {
        self.ring
    }

    /// Channel `k`'s weights less `zw`, as pairs.
    pub(crate) fn weights<W: QOperand>(&mut self, g: &Conv2d, weight: &[W], k: usize, zw: i32) {
        let s = g.params().s;
        let w = |r: usize, t: usize| if t < s { weight[g.weight_index(k, 0, r, t)].widen() - zw } else { 0 };
        for r in 0..self.rows {
            for j in 0..self.pairs {
                self.taps[r * self.pairs + j] = pair(w(r, 2 * j), w(r, 2 * j + 1));
            }
        }
    }

    /// Slot of kernel row `r` for output row `oy`.
    fn slot(&self, oy: usize, r: usize) -> usize {
        if self.ring {
            (oy + r) % self.rows
        } else {
            r
        }
    }

    /// Stages the kernel rows of output row `oy`, chunk from column `ox0`, of the channel plane
    /// at `plane` (its first element) of `input`, less `zx`. `fresh`: true unless the previous
    /// call staged output row `oy - 1` of the same image, channel and chunk (then, on a ring,
    /// only the new kernel row is staged).
    pub(crate) fn stage<X: QOperand>(
        &mut self,
        g: &Conv2d,
        input: &[X],
        (plane, oy, ox0, zx): (usize, usize, usize, i32),
        fresh: bool,
    ) {
        let p = g.params();
        let (ystride, xstride) = match p.layout {
            TensorLayout::Nchw => (p.w, 1),
            TensorLayout::Nhwc => (p.w * p.c, p.c),
        };
        let first_row = if self.ring && !fresh { self.rows - 1 } else { 0 };
        // Values 0 ..= 2 * rw of the row: input columns ox0 - left ...
        let count = 2 * self.rw + 1;
        let left = p.pad.left;
        // Values [lo, hi) are inside the input (column ox0 + c - left), the rest padding.
        let lo = left.saturating_sub(ox0).min(count);
        let hi = (p.w + left).saturating_sub(ox0).min(count).max(lo);
        for r in first_row..self.rows {
            let at = self.slot(oy, r) * 2 * self.rw;
            let words = &mut self.words[at..at + 2 * self.rw];
            let Some(iy) = g.input_y(oy, r).filter(|_| hi > lo) else {
                words.fill(0);
                continue;
            };
            // The input row from value `lo`'s column, and value `c` (0 in the padding).
            let row = &input[plane + iy * ystride + (ox0 + lo - left) * xstride..][..(hi - lo - 1) * xstride + 1];
            let v = |c: usize| if (lo..hi).contains(&c) { row[(c - lo) * xstride].widen() - zx } else { 0 };
            // Pair i takes values 2i + 1 and 2i + 2 (and 2i, the last one's): those from pair
            // `body.start` to `body.end` are all inside the row, read as a run.
            let body = lo.saturating_sub(1).div_ceil(2).min(self.rw)..(hi.saturating_sub(1) / 2).min(self.rw);
            let body = body.start..body.end.max(body.start);
            let mut last = v(2 * body.start);
            let (head, rest) = words.split_at_mut(2 * body.start);
            let (middle, tail) = rest.split_at_mut(2 * body.len());
            // Head and tail pairs wholly in the padding are zeros.
            let edge = |i: usize, w: &mut [u32]| {
                let (a, b, c) =
                    if 2 * i + 2 < lo || 2 * i >= hi { (0, 0, 0) } else { (v(2 * i), v(2 * i + 1), v(2 * i + 2)) };
                (w[0], w[1]) = (pair(a, b), pair(b, c));
            };
            for (i, w) in head.chunks_exact_mut(2).enumerate() {
                edge(i, w);
            }
            // (Empty where the body is: its first value may lie past the row.)
            let run = row.get((2 * body.start + 1).saturating_sub(lo) * xstride..).unwrap_or(&[]);
            let mut put = |w: &mut [u32], xs: [&X; 2]| {
                let (b, c) = (xs[0].widen() - zx, xs[1].widen() - zx);
                (w[0], w[1]) = (pair(last, b), pair(b, c));
                last = c;
            };
            if xstride == 1 {
                // NCHW: a contiguous run (through `strided_pairs` at stride 1 the firmware's
                // depthwise case cost 8.44 instructions per MAC instead of 8.19).
                let run = run.chunks_exact(2).map(|xs| [&xs[0], &xs[1]]);
                middle.chunks_exact_mut(2).zip(run).for_each(|(w, xs)| put(w, xs));
            } else {
                // NHWC: every `xstride`-th value. The run holds the body's: pair `i` of it
                // reads values `2i` and `2i + 1` of the run, and the body ends where the row's
                // values do.
                strided_pairs(run, xstride, middle.len() / 2, |i, xs| put(&mut middle[2 * i..2 * i + 2], xs));
            }
            for (i, w) in (body.end..).zip(tail.chunks_exact_mut(2)) {
                edge(i, w);
            }
        }
    }

    /// The chunk's sums from `bias` for output row `oy` into `acc` (an even length, at most
    /// `chunk`).
    pub(crate) fn sums(&self, oy: usize, bias: i32, acc: &mut [i32]) {
        debug_assert!(acc.len().is_multiple_of(2) && acc.len() <= self.chunk);
        acc.fill(bias);
        let rw = self.rw;
        for r in 0..self.rows {
            let at = self.slot(oy, r) * 2 * rw;
            let row = &self.words[at..at + 2 * rw];
            let ws = &self.taps[r * self.pairs..][..self.pairs];
            if let [w0, w1] = *ws {
                // Words 2i .. 2i + 4 of the row: E[i], O[i], E[i + 1], O[i + 1].
                let next = row[2..].chunks_exact(2);
                for ((out, x), y) in acc.chunks_exact_mut(2).zip(row.chunks_exact(2)).zip(next) {
                    out[0] = smlad(y[0], w1, smlad(x[0], w0, out[0]));
                    out[1] = smlad(y[1], w1, smlad(x[1], w0, out[1]));
                }
            } else {
                for (i, out) in acc.chunks_exact_mut(2).enumerate() {
                    for (j, &w) in ws.iter().enumerate() {
                        let x = &row[2 * (i + j)..][..2];
                        out[0] = smlad(x[0], w, out[0]);
                        out[1] = smlad(x[1], w, out[1]);
                    }
                }
            }
        }
    }
}
