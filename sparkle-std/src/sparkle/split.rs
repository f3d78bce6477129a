//! One large op split over every device of a handle at once: the rows of C (GEMM) or the images
//! of the batch (conv2d) are divided in proportion to each device's predicted speed for the whole
//! op (the juggler's model: it learns from every op the handle runs), the parts run concurrently
//! through the handle's pinned path, and a part whose device fails is re-run on the CPU.

use std::ops::Range;
use std::sync::Mutex;

use sparkle_core::{Conv2d, Epilogue, MatMut, MatRef};

use super::{DeviceError, DeviceErrorKind, Run, Sparkle, SparkleError};
use crate::backend::{Backend, Conv2dOp, GemmOp};
use crate::juggler::{DeviceId, OpDesc};
use crate::multi::{conv2d_split, gemm_split, split_rows, PartReport};

/// One device of a handle as a [`Backend`]: every op pinned there through the handle (learned
/// from, falling back to the CPU), and its [`Run`] kept.
struct Pinned<'s> {
    sparkle: &'s Sparkle,
    device: DeviceId,
    runs: Mutex<Vec<Run>>,
}

impl Pinned<'_> {
    fn keep(&self, run: Result<Run, SparkleError>) -> Result<(), DeviceError> {
        let run = run.map_err(|e| match e {
            SparkleError::Device(e) => e,
            SparkleError::Cpu(e) => DeviceError::from_cpu(&e),
            SparkleError::Invalid(e) => {
                DeviceError { device: self.device, kind: DeviceErrorKind::Invalid, message: e.to_string() }
            }
            e => DeviceError { device: self.device, kind: DeviceErrorKind::Other, message: e.to_string() },
        })?;
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).push(run);
        Ok(())
    }
}

impl Backend for Pinned<'_> {
    fn id(&self) -> DeviceId {
        self.device
    }
    fn name(&self) -> String {
        self.device.to_string()
    }
    fn gemm(&self, op: &GemmOp<'_>, c: MatMut<'_>) -> Result<(), DeviceError> {
        self.keep(self.sparkle.gemm_on(self.device, op.alpha, op.a, op.b, op.beta, c, &op.epi))
    }
    fn conv2d(&self, op: &Conv2dOp<'_>, output: &mut [f32]) -> Result<(), DeviceError> {
        self.keep(self.sparkle.conv2d_on(self.device, op.g, op.input, op.weight, &op.epi, output))
    }
}

/// Rows of GPU work per part are multiples of this (the GEMM tile).
const ALIGN: usize = 64;

impl Sparkle {
    /// [`Sparkle::gemm`] split by rows of C over every device the juggler places on, in
    /// proportion to each one's predicted speed for the whole op; the parts run at once. C must
    /// be splittable by rows (row-major-like). Returns each part's device, rows and time, and
    /// the device failure its part fell back from, if any.
    pub fn gemm_split<'a>(
        &self,
        alpha: f32,
        a: MatRef<'a>,
        b: MatRef<'a>,
        beta: f32,
        c: MatMut<'a>,
        epi: &Epilogue<'a>,
    ) -> Result<Vec<PartReport>, SparkleError> {
        let d = sparkle_core::gemm::check(alpha, &a, &b, beta, &c, epi)?;
        let (parts, rows) = self.split_plan(&OpDesc::gemm_at(d.m, d.n, d.k, self.precision()), d.m, ALIGN);
        let backends: Vec<&dyn Backend> = parts.iter().map(|p| p as &dyn Backend).collect();
        let reports = gemm_split(&backends, &rows, &GemmOp { alpha, a, b, beta, epi: *epi }, c)?;
        Ok(with_fallbacks(reports, &parts))
    }

    /// [`Sparkle::conv2d`] split by images of the batch, as [`Sparkle::gemm_split`].
    pub fn conv2d_split<'a>(
        &self,
        g: &Conv2d,
        input: &'a [f32],
        weight: &'a [f32],
        epi: &Epilogue<'a>,
        output: &mut [f32],
    ) -> Result<Vec<PartReport>, SparkleError> {
        g.check_buffers(input.len(), weight.len(), None, output.len())?;
        sparkle_core::conv::check_epilogue(g, epi)?;
        let (parts, images) = self.split_plan(&OpDesc::conv2d(g), g.params().n, 1);
        let backends: Vec<&dyn Backend> = parts.iter().map(|p| p as &dyn Backend).collect();
        let reports = conv2d_split(&backends, &images, &Conv2dOp { g, input, weight, epi: *epi }, output)?;
        Ok(with_fallbacks(reports, &parts))
    }

    /// The parts (one per placeable device, the CPU first when it is one) and their shares of
    /// `rows`, in proportion to the predicted speed for the whole op.
    fn split_plan(&self, op: &OpDesc, rows: usize, align: usize) -> (Vec<Pinned<'_>>, Vec<Range<usize>>) {
        let mut devices = self.devices();
        if devices.is_empty() {
            devices.push(DeviceId::Cpu);
        }
        let speeds: Vec<f64> = {
            let st = self.state();
            devices.iter().map(|&d| st.juggler.predict_on(d, op, false).map_or(0.0, |t| 1.0 / t)).collect()
        };
        let parts = devices.into_iter().map(|device| Pinned { sparkle: self, device, runs: Mutex::default() });
        (parts.collect(), split_rows(rows, &speeds, align))
    }
}

/// The reports, with each part's fallback (the handle re-ran it on the CPU) noted.
fn with_fallbacks(mut reports: Vec<PartReport>, parts: &[Pinned<'_>]) -> Vec<PartReport> {
    for (r, p) in reports.iter_mut().zip(parts) {
        let runs = p.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = runs.iter().find_map(|run| run.fallback.as_ref()) {
            r.failed.get_or_insert_with(|| e.clone());
        }
    }
    reports
}
