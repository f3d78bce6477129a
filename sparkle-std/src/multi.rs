//! One GEMM split across devices: the rows of C (and A) are divided in proportion to each
//! device's predicted speed for the whole op, so all parts finish together; the parts run
//! concurrently, each writing its own rows of C in place; a part whose device fails is re-run on
//! the first device (the CPU) and the result is still complete.

use std::ops::Range;
use std::time::Instant;

use sparkle_core::{Epilogue, MatMut, MatRef};

use crate::backend::Backend;
use crate::juggler::DeviceId;

/// What one device did.
#[derive(Clone, Debug, PartialEq)]
pub struct PartReport {
    /// The device that was assigned the rows.
    pub device: DeviceId,
    /// Rows of C it was assigned.
    pub rows: Range<usize>,
    /// Seconds its part took (including a re-run elsewhere if it failed).
    pub seconds: f64,
    /// The error, if its device failed and the part was re-run on the first device.
    pub failed: Option<String>,
}

/// Rows per device in proportion to `speeds` (work per second), each rounded to the nearest
/// multiple of `align` (the GPU tile), the remainder to the last device with a non-zero share.
pub fn split_rows(m: usize, speeds: &[f64], align: usize) -> Vec<Range<usize>> {
    let total: f64 = speeds.iter().filter(|s| s.is_finite() && **s > 0.0).sum();
    let mut out = Vec::with_capacity(speeds.len());
    let mut start = 0;
    let last = speeds.iter().rposition(|s| s.is_finite() && *s > 0.0).unwrap_or(0);
    for (i, &s) in speeds.iter().enumerate() {
        let share = if total > 0.0 && s.is_finite() && s > 0.0 { s / total } else { 0.0 };
        let end = if i == last {
            m
        } else {
            // The nearest multiple of the alignment.
            let align = align.max(1);
            let want = ((share * m as f64) / align as f64).round() as usize * align;
            (start + want).min(m)
        };
        out.push(start..end.max(start));
        start = end.max(start);
    }
    out
}

/// `C <- act(alpha * A * B + beta * C + bias)` with the rows split across `parts` as `rows`
/// says (from [`split_rows`]). C must be splittable by rows (row-major-like); a per-column bias
/// is fine, a per-row bias is split along with the rows.
#[allow(clippy::too_many_arguments)]
pub fn gemm_split(
    parts: &[&dyn Backend],
    rows: &[Range<usize>],
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
    epi: &Epilogue<'_>,
) -> Result<Vec<PartReport>, String> {
    sparkle_core::gemm::check(alpha, &a, &b, beta, &c, epi).map_err(|e| e.to_string())?;
    if parts.is_empty() || parts.len() != rows.len() {
        return Err(format!("{} devices but {} row ranges", parts.len(), rows.len()));
    }
    let covered =
        rows.windows(2).all(|w| w[0].end == w[1].start) && rows[0].start == 0 && rows[rows.len() - 1].end == c.rows();
    if !covered {
        return Err("the row ranges must cover C exactly, in order".into());
    }
    // Cut C into the parts' rows (disjoint memory), A alongside.
    let mut pieces = Vec::with_capacity(rows.len());
    let mut rest = c;
    for r in rows {
        let (head, tail) = rest.split_rows_at(r.len()).map_err(|e| format!("C cannot be split by rows: {e}"))?;
        pieces.push(head);
        rest = tail;
    }
    let sub_epi = |r: &Range<usize>| match epi.bias {
        sparkle_core::Bias::Row(v) => {
            Epilogue { bias: sparkle_core::Bias::Row(&v[r.clone()]), activation: epi.activation }
        }
        _ => *epi,
    };
    // With beta != 0 the parts read C: keep each part's rows so a failed part can be re-run from
    // the original values, whatever the failed device wrote.
    let saved: Vec<Vec<f32>> = pieces
        .iter()
        .map(|p| {
            if beta != 0.0 {
                (0..p.rows()).flat_map(|i| (0..p.cols()).map(move |j| (i, j))).map(|(i, j)| p.at(i, j)).collect()
            } else {
                Vec::new()
            }
        })
        .collect();
    fn run_part<'c>(
        mut piece: MatMut<'c>,
        part: &dyn Backend,
        r: &Range<usize>,
        (alpha, a, b, beta, epi): (f32, MatRef<'_>, MatRef<'_>, f32, Epilogue<'_>),
    ) -> (Result<(), String>, f64, MatMut<'c>) {
        let t = Instant::now();
        let res = match a.submatrix(r.start, 0, r.len(), a.cols()) {
            Ok(_) if r.is_empty() => Ok(()),
            Ok(ap) => part.gemm(alpha, ap, b, beta, piece.rb_mut(), &epi),
            Err(e) => Err(e.to_string()),
        };
        (res, t.elapsed().as_secs_f64(), piece)
    }
    // The first part runs on the calling thread (the CPU backend keeps its packing scratch per
    // thread; a fresh thread would allocate it again), the others on threads of their own.
    let mut pieces = pieces.into_iter();
    let first = pieces.next().ok_or("no parts")?;
    let results: Vec<(Result<(), String>, f64, MatMut<'_>)> = std::thread::scope(|s| {
        let handles: Vec<_> = pieces
            .zip(parts.iter().zip(rows).skip(1))
            .map(|(piece, (part, r))| s.spawn(move || run_part(piece, *part, r, (alpha, a, b, beta, sub_epi(r)))))
            .collect();
        let mut all = vec![run_part(first, parts[0], &rows[0], (alpha, a, b, beta, sub_epi(&rows[0])))];
        all.extend(handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("a GEMM part panicked"))));
        all
    });
    let mut reports = Vec::with_capacity(rows.len());
    for (((res, seconds, mut piece), (part, r)), saved) in results.into_iter().zip(parts.iter().zip(rows)).zip(saved) {
        let mut report = PartReport { device: part.id(), rows: r.clone(), seconds, failed: None };
        if let Err(e) = res {
            let t = Instant::now();
            // Whatever the failed device wrote is discarded: C's rows are restored first.
            for (idx, v) in saved.into_iter().enumerate() {
                piece.set(idx / piece.cols(), idx % piece.cols(), v);
            }
            let ap = a.submatrix(r.start, 0, r.len(), a.cols()).map_err(|e| e.to_string())?;
            parts[0]
                .gemm(alpha, ap, b, beta, piece.rb_mut(), &sub_epi(r))
                .map_err(|e2| format!("{e}; the re-run failed too: {e2}"))?;
            report.seconds += t.elapsed().as_secs_f64();
            report.failed = Some(e);
        }
        reports.push(report);
    }
    Ok(reports)
}
