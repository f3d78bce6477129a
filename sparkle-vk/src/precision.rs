//! f32 GEMMs at a chosen [`Precision`] ([`Context::gemm_with_precision`]): on a device with f16
//! cooperative matrices, `high` runs three f16 products per f32 product on the tensor cores
//! (`gemm_coopmat.comp` with SPLIT) and `medium` one (the f16 GEMM's kernels: large ones on
//! `gemm_cm2.comp` where the device has `VK_NV_cooperative_matrix2`); `highest`, and every choice on a device
//! without them, runs the f32 kernels. [`Context::gemm_split`] runs the split algorithm on any
//! device (on plain shader cores through `gemm_half.comp`, which is how CI checks it on lavapipe).
//!
//! The host scales each row of A and column of B by a power of two and splits it into f16 planes
//! (`sparkle_core::precision`), packed as the half kernels' operands (`half.rs`): hi then lo for
//! `high`, hi alone for `medium`. The kernel returns the raw sums; the host scales them back and
//! applies `alpha`, `beta * C`, the bias and the activation, as the f32 kernels do.

use sparkle_core::epilogue::{Activation, Epilogue};
use sparkle_core::gemm::{check, GemmDims};
use sparkle_core::precision::{scale_exponent, split, unscale, within_high_span};
use sparkle_core::{Error, MatMut, MatRef, Param, Precision};

use crate::context::Context;
use crate::error::{Result, VkError};
use crate::half::{half_plan, zeroed_words, HalfPlan, COOP_TILES};
use crate::params::{u32_of, with_epilogue};
use crate::plan::{Kind, TileDtype, TileRules, MAX_GROUPS};

/// Rows x columns of C per workgroup of the split kernels (`gemm_coopmat.comp` with SPLIT:
/// two planes of each operand fill 37 of the 48 KiB of shared memory; 64 x 64 where the f16
/// GEMM would take it, for small C; `gemm_half.comp`: 64 x 64).
const SPLIT_TILE: [usize; 2] = [128, 128];
const SPLIT_TILE_SIMT: [usize; 2] = [64, 64];

/// The plan of an `m x n x k` f32 GEMM at `precision` (not `Highest`) computed from f16 planes,
/// on cooperative matrices (`coopmat`; `medium` on the workgroup-scope kernel where `coopmat2`
/// and the f16 GEMM would take it) or the shader cores.
pub(crate) fn split_plan(
    m: usize,
    n: usize,
    k: usize,
    (coopmat, coopmat2): (bool, bool),
    precision: Precision,
    rules: &TileRules,
) -> Result<HalfPlan> {
    let plan = half_plan(m, n, k, (coopmat, coopmat2 && precision == Precision::Medium, false), rules)?;
    if precision != Precision::High {
        return Ok(plan);
    }
    let overflow = |param| VkError::Core(Error::Overflow { param });
    let a_words = plan.a_words.checked_mul(2).ok_or(overflow(Param::A))?;
    let b_words = plan.b_words.checked_mul(2).ok_or(overflow(Param::B))?;
    // The shaders index both planes with 32-bit words.
    u32_of(a_words, Param::A)?;
    u32_of(b_words, Param::B)?;
    // The 128x256 tile's two planes would not fit in shared memory: 128x128 in its place.
    let small = coopmat && plan.kind == Kind::CoopmatF16 { tile: 2 };
    let [tm, tn] = match (coopmat, small) {
        (true, false) => SPLIT_TILE,
        (true, true) => COOP_TILES[2],
        (false, _) => SPLIT_TILE_SIMT,
    };
    let groups = [u32_of(n.div_ceil(tn), Param::N)?, u32_of(m.div_ceil(tm), Param::M)?, 1];
    if groups[0] > MAX_GROUPS || groups[1] > MAX_GROUPS {
        return Err(overflow(if groups[0] > MAX_GROUPS { Param::N } else { Param::M }));
    }
    // The split kernels have no split-K: one part, no reduction.
    let params = crate::params::Params { splits: 1, ..plan.params };
    Ok(HalfPlan { kind: Kind::SplitF16 { coopmat, small }, params, groups, a_words, b_words, reduce: None })
}

/// The scale exponent of each row of `x` (of each column with `by_cols`), or `None` when `x`
/// holds an infinity or a NaN (which the f32 kernels propagate as IEEE arithmetic does) or, with
/// `span`, when a row (column) spans more than [`sparkle_core::precision::HIGH_SPAN`] (where `high` would lose bits of its
/// smallest elements). Reads `x` row by row either way.
fn scales(x: &MatRef<'_, f32>, by_cols: bool, span: bool) -> Option<Vec<i32>> {
    let lines = if by_cols { x.cols() } else { x.rows() };
    let (mut most, mut least) = (vec![0.0f32; lines], vec![f32::INFINITY; lines]);
    let mut finite = true;
    for i in 0..x.rows() {
        let row = Row::of(x, i);
        for j in 0..x.cols() {
            let v = row.at(j).abs();
            finite &= v.is_finite();
            let l = if by_cols { j } else { i };
            most[l] = most[l].max(v);
            if span && v != 0.0 {
                least[l] = least[l].min(v);
            }
        }
    }
    let spanned = !span || most.iter().zip(&least).all(|(&m, &l)| within_high_span(m, l));
    (finite && spanned).then(|| most.into_iter().map(scale_exponent).collect())
}

/// Row i of a view: a slice where its elements are contiguous (the common row-major case, read
/// without per-element index arithmetic), else the view.
enum Row<'a> {
    Slice(&'a [f32]),
    View(MatRef<'a, f32>, usize),
}

impl<'a> Row<'a> {
    fn of(x: &MatRef<'a, f32>, i: usize) -> Self {
        if x.cs() == 1 && x.cols() > 0 {
            Row::Slice(&x.as_slice()[i * x.rs()..i * x.rs() + x.cols()])
        } else {
            Row::View(*x, i)
        }
    }

    #[inline]
    fn at(&self, j: usize) -> f32 {
        match self {
            Row::Slice(r) => r[j],
            Row::View(x, i) => x.at(*i, j),
        }
    }
}

/// Rows per band when `rows` rows of `cols` elements are shared among the host's cores: one band
/// below about 64 Ki elements (a thread costs more than it saves there).
fn band_rows(rows: usize, cols: usize) -> usize {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let by_size = (rows.saturating_mul(cols) / (1 << 16)).max(1);
    rows.div_ceil(threads.min(by_size)).max(1)
}

/// `x`'s `rows x cols` split into `planes` (1: hi; 2: hi then lo) of `padded_rows x padded_cols`
/// halves packed two to a word (zero-padded, as `half.rs` packs), row i scaled by `2^row_s[i]`
/// and column j by `2^col_s[j]` (one of the two is all zeros); bands of rows on every core.
fn pack_split(
    x: &MatRef<'_, f32>,
    row_s: &[i32],
    col_s: &[i32],
    planes: usize,
    padded_rows: usize,
    padded_cols: usize,
) -> Result<Vec<u32>> {
    let words = padded_cols / 2;
    let mut out = zeroed_words(padded_rows * words * planes)?;
    let (hi, lo) = out.split_at_mut(padded_rows * words);
    let band = band_rows(x.rows(), x.cols());
    let pack = |r0: usize, hi: &mut [u32], mut lo: Option<&mut [u32]>| {
        for (di, &si) in row_s.iter().skip(r0).take(band.min(x.rows().saturating_sub(r0))).enumerate() {
            let row = Row::of(x, r0 + di);
            for (j, &sj) in col_s.iter().enumerate().take(x.cols()) {
                let (h, l) = split(row.at(j), si + sj);
                let (w, shift) = (di * words + j / 2, 16 * (j % 2));
                hi[w] |= u32::from(h.to_bits()) << shift;
                if let Some(lo) = lo.as_deref_mut() {
                    lo[w] |= u32::from(l.to_bits()) << shift;
                }
            }
        }
    };
    std::thread::scope(|scope| {
        let mut lo_bands = lo.chunks_mut(band * words);
        for (b, hi_band) in hi.chunks_mut(band * words).enumerate().take(x.rows().div_ceil(band)) {
            let lo_band = lo_bands.next();
            scope.spawn(move || pack(b * band, hi_band, lo_band));
        }
    });
    Ok(out)
}

/// `C <- act(alpha * unscaled + beta * C + bias)` from the kernel's raw row-major sums `raw`
/// (finished in place, in bands of rows on every core, then copied into C).
#[allow(clippy::too_many_arguments)]
fn finish(raw: &mut [f32], sa: &[i32], sb: &[i32], alpha: f32, beta: f32, mut c: MatMut<'_>, epi: &Epilogue<'_>) {
    let n = c.cols();
    if n == 0 {
        return;
    }
    let band = band_rows(c.rows(), n);
    let old = &c;
    std::thread::scope(|scope| {
        for (b, rows) in raw.chunks_mut(band * n).enumerate() {
            scope.spawn(move || {
                for (e, v) in rows.iter_mut().enumerate() {
                    let (i, j) = (b * band + e / n, e % n);
                    let mut x = alpha * unscale(*v, sa[i], sb[j]);
                    if beta != 0.0 {
                        x += beta * old.at(i, j);
                    }
                    *v = epi.apply(i, j, x);
                }
            });
        }
    });
    let (rs, cs) = (c.rs(), c.cs());
    for (i, row) in raw.chunks(n).enumerate() {
        if cs == 1 {
            c.as_mut_slice()[i * rs..i * rs + n].copy_from_slice(row);
        } else {
            for (j, &v) in row.iter().enumerate() {
                c.set(i, j, v);
            }
        }
    }
}

impl Context {
    /// How f32 GEMMs at `precision` run on this device ([`Context::gemm_with_precision`]).
    pub fn precision_path(&self, precision: Precision) -> &'static str {
        match (precision, self.coopmat_f16) {
            (Precision::Highest, _) | (_, false) => "f32 on shader cores",
            (Precision::High, true) => "3 f16 products on cooperative matrices",
            (Precision::Medium, true) => "1 f16 product on cooperative matrices",
        }
    }

    /// [`Context::gemm`] computed at `precision` or better: the split algorithm
    /// ([`Context::gemm_split`]) where the device has f16 cooperative matrices (tensor cores),
    /// else the f32 kernels, which are faster than it on shader cores. Within
    /// [`Precision::tolerance`] of the f64 oracle on the f32 inputs.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_with_precision(
        &self,
        precision: Precision,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        c: MatMut<'_>,
        epi: &Epilogue<'_>,
    ) -> Result<GemmDims> {
        if precision == Precision::Highest || !self.coopmat_f16 {
            return self.gemm(alpha, a, b, beta, c, epi);
        }
        self.gemm_split(precision, alpha, a, b, beta, c, epi)
    }

    /// `C <- act(alpha * A * B + beta * C + bias)` on f32 data from f16 products (see the
    /// module): `High` three per f32 product, `Medium` one, on cooperative matrices where the
    /// device has them, else on the shader cores; `Highest` is [`Context::gemm`]. Operands holding
    /// an infinity or a NaN also run [`Context::gemm`], and so does `High` where a row of A or a
    /// column of B spans more than [`sparkle_core::precision::HIGH_SPAN`] (its smallest elements
    /// would lose bits). Validated first: on an error C is untouched.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_split(
        &self,
        precision: Precision,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        c: MatMut<'_>,
        epi: &Epilogue<'_>,
    ) -> Result<GemmDims> {
        let d = check(alpha, &a, &b, beta, &c, epi)?;
        if precision == Precision::Highest {
            return self.gemm(alpha, a, b, beta, c, epi);
        }
        if d.m == 0 || d.n == 0 {
            return Ok(d);
        }
        let span = precision == Precision::High;
        let (Some(sa), Some(sb)) = (scales(&a, false, span), scales(&b, true, span)) else {
            return self.gemm(alpha, a, b, beta, c, epi);
        };
        let plan = self.fits(
            split_plan(
                d.m,
                d.n,
                d.k,
                (self.coopmat_f16, self.coopmat2_f16),
                precision,
                &self.tile_rules(TileDtype::F16),
            )?,
            d.m * d.n,
        )?;
        let params = with_epilogue(plan.params, 0, Activation::None)?;
        let planes = if precision == Precision::High { 2 } else { 1 };
        let kp = plan.params.k as usize;
        let a_words = pack_split(&a, &sa, &vec![0; d.k], planes, d.m, kp)?;
        let b_words = pack_split(&b, &vec![0; d.k], &sb, planes, kp, 8 * plan.params.b_rs as usize)?;
        let mut out = self.run_packed(&plan, &params, &a_words, &b_words, &[])?;
        finish(&mut out, &sa, &sb, alpha, beta, c, epi);
        Ok(d)
    }

    /// Seconds per row-major `m x n x k` f32 GEMM at `precision` with the operands already on the
    /// device, as [`Context::gemm_with_precision`] runs it (the split kernel's dispatch alone,
    /// or [`Context::time_gemm_resident`]'s), warmed up as [`Context::time_gemm_half_resident`].
    #[allow(clippy::too_many_arguments)]
    pub fn time_gemm_precision_resident(
        &self,
        precision: Precision,
        m: usize,
        n: usize,
        k: usize,
        reps: u32,
        warm_up: f64,
    ) -> Result<f64> {
        if precision == Precision::Highest || !self.coopmat_f16 {
            return self.time_gemm_resident(m, n, k, reps, warm_up);
        }
        let plan = self.fits(
            split_plan(m, n, k, (true, self.coopmat2_f16), precision, &self.tile_rules(TileDtype::F16))?,
            m.saturating_mul(n),
        )?;
        self.time_plan(&plan, m * n, reps, warm_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: TileRules = TileRules::rule(TileDtype::F16);

    #[test]
    fn high_doubles_the_operands_and_keeps_one_tile() {
        let p = split_plan(8192, 8192, 100, (true, false), Precision::High, &RULE).unwrap();
        let one = split_plan(8192, 8192, 100, (true, false), Precision::Medium, &RULE).unwrap();
        // `medium` is the f16 GEMM: on the workgroup-scope kernel where the device has it;
        // `high`'s two planes stay on the KHR split kernel.
        let wide = split_plan(8192, 8192, 100, (true, true), Precision::Medium, &RULE).unwrap();
        assert_eq!(wide.kind, Kind::Coopmat2 { bf16: false });
        let split = split_plan(8192, 8192, 100, (true, true), Precision::High, &RULE).unwrap();
        assert_eq!(split.kind, Kind::SplitF16 { coopmat: true, small: false });
        assert_eq!(p.kind, Kind::SplitF16 { coopmat: true, small: false });
        assert_eq!(one.kind, Kind::CoopmatF16 { tile: 1 });
        assert_eq!((p.a_words, p.b_words), (2 * one.a_words, 2 * one.b_words));
        assert_eq!(p.groups, [64, 64, 1]);
        let p = split_plan(65, 129, 7, (false, false), Precision::High, &RULE).unwrap();
        assert_eq!((p.kind, p.groups), (Kind::SplitF16 { coopmat: false, small: false }, [3, 2, 1]));
        let p = split_plan(1024, 1024, 64, (true, false), Precision::High, &RULE).unwrap();
        assert_eq!((p.kind, p.groups), (Kind::SplitF16 { coopmat: true, small: true }, [16, 16, 1]));
        // Two planes past 32-bit indices are an error, not a wrapped index.
        assert!(split_plan(1 << 16, 8, 1 << 16, (true, false), Precision::High, &RULE).is_err());
        assert!(split_plan(1 << 16, 8, 1 << 16, (true, false), Precision::Medium, &RULE).is_ok());
        // 128x128 in place of the f16 plan's 128x256: more workgroups along n than a dispatch takes.
        assert!(split_plan(128, 65535 * 256, 1, (true, false), Precision::Medium, &RULE).is_ok());
        assert!(split_plan(128, 65535 * 256, 1, (true, false), Precision::High, &RULE).is_err());
    }

    #[test]
    fn rows_and_columns_get_their_own_scales() {
        let x = [1.0f32, 1000.0, 0.5, -3.0e-5];
        let m = MatRef::row_major(&x, 2, 2).unwrap();
        assert_eq!(scales(&m, false, true).unwrap(), vec![scale_exponent(1000.0), scale_exponent(0.5)]);
        assert_eq!(scales(&m, true, true).unwrap(), vec![scale_exponent(1.0), scale_exponent(1000.0)]);
        let bad = [1.0f32, f32::NAN];
        assert!(scales(&MatRef::row_major(&bad, 1, 2).unwrap(), true, false).is_none());
        // A row 2^30 wide: `high` falls back, `medium` does not care; zeros do not count.
        let wide = [1.0f32, 2.0f32.powi(-30), 0.0, 2.0f32.powi(-30)];
        let w = MatRef::row_major(&wide, 2, 2).unwrap();
        assert!(scales(&w, false, true).is_none());
        assert!(scales(&w, false, false).is_some());
        assert!(scales(&w, true, true).is_some(), "columns (1, 0) and (2^-30, 2^-30) are narrow");
    }

    #[test]
    fn planes_hold_hi_then_lo() {
        let x = [1.0f32 + 2.0f32.powi(-20), 3.0];
        let m = MatRef::row_major(&x, 1, 2).unwrap();
        let w = pack_split(&m, &[0], &[0, 0], 2, 1, 8).unwrap();
        let (hi, lo) = split(x[0], 0);
        let (hi3, lo3) = split(3.0, 0);
        assert_eq!(w.len(), 8);
        assert_eq!(w[0], u32::from(hi.to_bits()) | u32::from(hi3.to_bits()) << 16);
        assert_eq!(w[4], u32::from(lo.to_bits()) | u32::from(lo3.to_bits()) << 16);
        assert_eq!(lo.to_f64(), 2.0f64.powi(-9), "the remainder 2^-20, times 2^11");
        assert_eq!(lo3.to_bits(), 0);
    }
}
