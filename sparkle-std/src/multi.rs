//! One GEMM or conv2d split across devices: the rows of C (and A), or the images of a conv2d
//! batch, are divided in proportion to each device's predicted speed for the whole op, so all
//! parts finish together; the parts run concurrently, each writing its own rows or images in
//! place; a part whose device fails is re-run on the first device (the CPU) and the result is
//! still complete.

use std::ops::Range;
use std::time::Instant;

use sparkle_core::{Conv2d, Conv2dParams, Epilogue, MatMut};

use crate::backend::{Backend, Conv2dOp, DeviceError, DeviceErrorKind, GemmOp};
use crate::juggler::DeviceId;
use crate::SparkleError;

/// What one device did.
#[derive(Clone, Debug, PartialEq)]
pub struct PartReport {
    /// The device that was assigned the rows.
    pub device: DeviceId,
    /// Rows of C (GEMM) or images of the batch (conv2d) it was assigned.
    pub rows: Range<usize>,
    /// Seconds its part took (including a re-run elsewhere if it failed).
    pub seconds: f64,
    /// The error, if its device failed and the part was re-run on the first device.
    pub failed: Option<DeviceError>,
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
pub fn gemm_split(
    parts: &[&dyn Backend],
    rows: &[Range<usize>],
    op: &GemmOp<'_>,
    c: MatMut<'_>,
) -> Result<Vec<PartReport>, SparkleError> {
    let GemmOp { alpha, a, b, beta, ref epi } = *op;
    sparkle_core::gemm::check(alpha, &a, &b, beta, &c, epi)?;
    if parts.is_empty() || parts.len() != rows.len() {
        return Err(SparkleError::Config(format!("{} devices but {} row ranges", parts.len(), rows.len())));
    }
    let covered =
        rows.windows(2).all(|w| w[0].end == w[1].start) && rows[0].start == 0 && rows[rows.len() - 1].end == c.rows();
    if !covered {
        return Err(SparkleError::Config("the row ranges must cover C exactly, in order".into()));
    }
    // Cut C into the parts' rows (disjoint memory), A alongside.
    let mut pieces = Vec::with_capacity(rows.len());
    let mut rest = c;
    for r in rows {
        let (head, tail) = rest.split_rows_at(r.len())?;
        pieces.push(head);
        rest = tail;
    }
    // Each part's op: A's rows (and a per-row bias) cut to the part's rows.
    let part_op = |r: &Range<usize>| -> Result<GemmOp<'_>, sparkle_core::Error> {
        let epi = match epi.bias {
            sparkle_core::Bias::Row(v) => {
                Epilogue { bias: sparkle_core::Bias::Row(&v[r.clone()]), activation: epi.activation }
            }
            _ => *epi,
        };
        Ok(GemmOp { a: a.submatrix(r.start, 0, r.len(), a.cols())?, epi, ..*op })
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
    let jobs: Vec<_> = pieces
        .into_iter()
        .zip(parts.iter().zip(rows))
        .map(|(mut piece, (part, r))| {
            move || {
                let t = Instant::now();
                let res = match part_op(r) {
                    Ok(_) if r.is_empty() => Ok(()),
                    Ok(sub) => part.gemm(&sub, piece.rb_mut()),
                    Err(e) => {
                        Err(DeviceError { device: part.id(), kind: DeviceErrorKind::Invalid, message: e.to_string() })
                    }
                };
                (res, t.elapsed().as_secs_f64(), piece)
            }
        })
        .collect();
    let results = concurrently(jobs);
    let mut reports = Vec::with_capacity(rows.len());
    for (((res, seconds, mut piece), (part, r)), saved) in results.into_iter().zip(parts.iter().zip(rows)).zip(saved) {
        let mut report = PartReport { device: part.id(), rows: r.clone(), seconds, failed: None };
        if let Err(e) = res {
            let t = Instant::now();
            // Whatever the failed device wrote is discarded: C's rows are restored first.
            for (idx, v) in saved.into_iter().enumerate() {
                piece.set(idx / piece.cols(), idx % piece.cols(), v);
            }
            parts[0].gemm(&part_op(r)?, piece.rb_mut()).map_err(|e2| rerun_failed(&e, e2))?;
            report.seconds += t.elapsed().as_secs_f64();
            report.failed = Some(e);
        }
        reports.push(report);
    }
    Ok(reports)
}

/// The error when a failed part's re-run on the first device failed too.
fn rerun_failed(first: &DeviceError, rerun: DeviceError) -> SparkleError {
    SparkleError::Device(DeviceError { message: format!("{}; after {first}", rerun.message), ..rerun })
}

/// Runs every job at once and returns their results in order. The first runs on the calling
/// thread (the CPU backend keeps its packing scratch per thread; a fresh thread would allocate
/// it again), the others on threads of their own.
fn concurrently<R: Send>(jobs: Vec<impl FnOnce() -> R + Send>) -> Vec<R> {
    let mut jobs = jobs.into_iter();
    let Some(first) = jobs.next() else { return Vec::new() };
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs.map(|job| s.spawn(job)).collect();
        let mut all = vec![first()];
        all.extend(handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("a part panicked"))));
        all
    })
}

/// `output = act(conv2d(input, weight) + bias)` with the batch split across `parts` as `images`
/// says (from [`split_rows`] over the batch). Each image's input and output are contiguous in
/// both layouts, so every part reads and writes its own slices in place. A part whose device
/// fails is re-run on the first device (the output is overwritten, not accumulated, so nothing
/// needs saving).
pub fn conv2d_split(
    parts: &[&dyn Backend],
    images: &[Range<usize>],
    op: &Conv2dOp<'_>,
    output: &mut [f32],
) -> Result<Vec<PartReport>, SparkleError> {
    let Conv2dOp { g, input, weight, ref epi } = *op;
    g.check_buffers(input.len(), weight.len(), None, output.len())?;
    sparkle_core::conv::check_epilogue(g, epi)?;
    let n = g.params().n;
    if parts.is_empty() || parts.len() != images.len() {
        return Err(SparkleError::Config(format!("{} devices but {} image ranges", parts.len(), images.len())));
    }
    let covered =
        images.windows(2).all(|w| w[0].end == w[1].start) && images[0].start == 0 && images[images.len() - 1].end == n;
    if !covered {
        return Err(SparkleError::Config("the image ranges must cover the batch exactly, in order".into()));
    }
    let (in_per, out_per) = (g.input_len() / n, g.output_len() / n);
    // Every part's geometry is validated before anything runs.
    let geoms = images
        .iter()
        .map(|r| Conv2dParams { n: r.len().max(1), ..*g.params() }.validate())
        .collect::<Result<Vec<_>, _>>()?;
    let mut pieces = Vec::with_capacity(images.len());
    let mut rest = output;
    for r in images {
        let (head, tail) = rest.split_at_mut(r.len() * out_per);
        pieces.push(head);
        rest = tail;
    }
    let part_input = |r: &Range<usize>| &input[r.start * in_per..r.end * in_per];
    let run = |part: &dyn Backend, sub: &Conv2d, r: &Range<usize>, out: &mut [f32]| {
        if r.is_empty() {
            return Ok(());
        }
        part.conv2d(&Conv2dOp { g: sub, input: part_input(r), ..*op }, out)
    };
    let jobs: Vec<_> = pieces
        .into_iter()
        .zip(parts.iter().zip(images.iter().zip(&geoms)))
        .map(|(piece, (part, (r, sub)))| {
            move || {
                let t = Instant::now();
                let res = run(*part, sub, r, piece);
                (res, t.elapsed().as_secs_f64(), piece)
            }
        })
        .collect();
    let mut reports = Vec::with_capacity(images.len());
    for ((res, seconds, piece), (part, (r, sub))) in
        concurrently(jobs).into_iter().zip(parts.iter().zip(images.iter().zip(&geoms)))
    {
        let mut report = PartReport { device: part.id(), rows: r.clone(), seconds, failed: None };
        if let Err(e) = res {
            let t = Instant::now();
            run(parts[0], sub, r, piece).map_err(|e2| rerun_failed(&e, e2))?;
            report.seconds += t.elapsed().as_secs_f64();
            report.failed = Some(e);
        }
        reports.push(report);
    }
    Ok(reports)
}
