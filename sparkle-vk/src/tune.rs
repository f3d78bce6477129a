//! Per-device tuning: which GEMM kernel serves which problem size on this device, measured by a
//! short autotune on first use (a few resident GEMMs of growing size, well under a second on a
//! GPU) and remembered in the cache directory next to the pipeline cache, keyed by device UUID,
//! driver version and crate version. A file that cannot be parsed is reported and re-measured.
//! The autotune itself ([`Context::retune`]) and the context's tuning accessors live here too.

use std::path::PathBuf;

use crate::context::Context;
use crate::device::DeviceInfo;
use crate::error::Result;
use crate::params::gemm_params;
pub use crate::plan::Tuning;
use crate::plan::{gemm_plan, Plan};

impl Context {
    pub(crate) fn min_vec4_tiles(&self) -> u32 {
        self.tuning().min_vec4_tiles
    }

    /// This device's kernel choices: set by [`Context::set_tuning`], else remembered from an
    /// earlier run, else measured now by [`Context::retune`] (and [`Tuning::DEFAULT`] if that
    /// fails).
    pub fn tuning(&self) -> Tuning {
        if let Some(t) = *self.tuning.lock().unwrap_or_else(|e| e.into_inner()) {
            return t;
        }
        let t = match load(self.info()) {
            Some(t) => t,
            None => self.retune().unwrap_or_else(|e| {
                eprintln!("sparkle: the Vulkan autotune failed on {} ({e}); using defaults", self.info().name);
                Tuning::DEFAULT
            }),
        };
        *self.tuning.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        t
    }

    /// Uses `t` from now on in this context (not saved).
    pub fn set_tuning(&self, t: Tuning) {
        *self.tuning.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }

    /// Measures this device's kernel choices, uses and saves them. Square row-major GEMMs of
    /// growing size run on both kernels until the 64x64 one takes over 0.1 s (so a slow device
    /// such as lavapipe stops early); the vec4 kernel takes over from the size where it wins at
    /// every larger measured size.
    pub fn retune(&self) -> Result<Tuning> {
        let mut points = Vec::new();
        for s in [256u32, 512, 1024, 2048, 4096] {
            let n = s as usize;
            let params = gemm_params(1.0, [n, n, n, 1], [n, 1], 0.0, [n, n, 1])?;
            let small = gemm_plan(&params, u32::MAX)?;
            let big = gemm_plan(&params, 0)?;
            let len = (s * s) as usize;
            let time = |plan: &Plan| -> Result<f64> {
                let one = self.time_resident(plan, [len; 3], 1)?;
                let reps = (0.02 / one).clamp(1.0, 50.0) as u32;
                self.time_resident(plan, [len; 3], reps)
            };
            let general = time(&small)?;
            points.push((big.groups[0] * big.groups[1], time(&big)? / general));
            if general > 0.1 {
                break;
            }
        }
        let t = Tuning { min_vec4_tiles: threshold(&points), ..Tuning::DEFAULT };
        save(self.info(), &t);
        self.set_tuning(t);
        Ok(t)
    }
}

const HEADER: &str = "sparkle-vk tuning 3";

/// Where `info`'s tuning lives, if a cache directory is known.
pub(crate) fn path(info: &DeviceInfo) -> Option<PathBuf> {
    let uuid: String = info.uuid.iter().map(|b| format!("{b:02x}")).collect();
    Some(sparkle_files::cache_dir()?.join(format!(
        "vk-tuning-{uuid}-{:08x}-{}.txt",
        info.driver_version,
        env!("CARGO_PKG_VERSION")
    )))
}

pub(crate) fn render(t: &Tuning) -> String {
    // The closing `end` makes a truncated file (which could still hold a number) unreadable.
    format!("{HEADER}\nmin_vec4_tiles {}\nmin_winograd_tiles {}\nend\n", t.min_vec4_tiles, t.min_winograd_tiles)
}

pub(crate) fn parse(text: &str) -> Option<Tuning> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let min_vec4_tiles = lines.next()?.strip_prefix("min_vec4_tiles ")?.parse().ok()?;
    let min_winograd_tiles = lines.next()?.strip_prefix("min_winograd_tiles ")?.parse().ok()?;
    (lines.next()? == "end" && lines.next().is_none()).then_some(Tuning { min_vec4_tiles, min_winograd_tiles })
}

/// The remembered tuning of this device, if there is a valid file.
pub(crate) fn load(info: &DeviceInfo) -> Option<Tuning> {
    let path = path(info)?;
    let text = std::fs::read_to_string(&path).ok()?;
    let t = parse(&text);
    if t.is_none() {
        eprintln!("sparkle: ignoring the unreadable Vulkan tuning file {}; re-measuring", path.display());
    }
    t
}

/// Writes the tuning atomically (temporary file, then rename); failures are ignored (it is
/// re-measured next time).
pub(crate) fn save(info: &DeviceInfo, t: &Tuning) {
    let Some(path) = path(info) else { return };
    crate::cache::write_atomic(&path, render(t).as_bytes());
}

/// The threshold from measurements `(tiles, vec4 time / general time)` in increasing size: the
/// smallest size from which the vec4 kernel is faster at every larger measured size too, or
/// never when it loses at the largest.
pub(crate) fn threshold(points: &[(u32, f64)]) -> u32 {
    let mut min = u32::MAX;
    for &(tiles, ratio) in points.iter().rev() {
        if ratio >= 1.0 {
            break;
        }
        min = tiles;
    }
    min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let t = Tuning { min_vec4_tiles: 64, min_winograd_tiles: 12345 };
        assert_eq!(parse(&render(&t)), Some(t));
        assert_eq!(parse(""), None);
        assert_eq!(parse("sparkle-vk tuning 3\nmin_vec4_tiles x\nmin_winograd_tiles 1\nend\n"), None);
        assert_eq!(parse("sparkle-vk tuning 3\nmin_vec4_tiles 4\nmin_winograd_tiles 1\nend\nmore\n"), None);
        assert_eq!(
            parse("sparkle-vk tuning 2\nmin_vec4_tiles 4\nmin_winograd_flops 1\nend\n"),
            None,
            "an older version"
        );
        let text = render(&t);
        assert_eq!(parse(&text[..text.len() - 3]), None, "truncated");
    }

    #[test]
    fn threshold_is_where_vec4_wins_from_then_on() {
        assert_eq!(threshold(&[(4, 1.5), (16, 1.1), (64, 0.9), (256, 0.7)]), 64);
        assert_eq!(threshold(&[(4, 0.9), (16, 1.1), (64, 0.9)]), 64, "a loss in between restarts");
        assert_eq!(threshold(&[(4, 0.9), (16, 0.8)]), 4);
        assert_eq!(threshold(&[(4, 0.9), (16, 1.2)]), u32::MAX);
        assert_eq!(threshold(&[]), u32::MAX);
    }
}
