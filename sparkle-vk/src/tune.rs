//! Per-device tuning: which GEMM kernel serves which problem size on this device, measured by a
//! short autotune on first use (a few resident GEMMs of growing size, well under a second on a
//! GPU) and remembered in the cache directory next to the pipeline cache, keyed by device UUID,
//! driver version and crate version. A file that cannot be parsed is reported and re-measured.
//! The autotune itself ([`Context::retune`]) and the context's tuning accessors live here too.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::context::Context;
use crate::device::DeviceInfo;
use crate::error::Result;
use crate::params::gemm_params;
use crate::plan::{gemm_plan, Plan};
pub use crate::plan::{TileDtype, TileRules, Tuning};

/// What `known` finds, else what `measure` loads or measures (and stores, for `known`): one
/// measurement however many threads ask at once, because it runs holding `gate` and a thread
/// that waited for the gate looks again first. The f32 kernel choices and each dtype's tile rules
/// have gates of their own (the tile autotune may reach the f32 choices: the tile gate is taken
/// first where both are).
fn measured_once<T>(gate: &Mutex<()>, known: impl Fn() -> Option<T>, measure: impl FnOnce() -> T) -> T {
    if let Some(t) = known() {
        return t;
    }
    let _gate = gate.lock().unwrap_or_else(|e| e.into_inner());
    known().unwrap_or_else(measure)
}

impl Context {
    pub(crate) fn min_vec4_tiles(&self) -> u32 {
        self.tuning().min_vec4_tiles
    }

    /// This device's kernel choices: set by [`Context::set_tuning`], else remembered from an
    /// earlier run, else measured now by [`Context::retune`] (and [`Tuning::DEFAULT`] if that
    /// fails).
    pub fn tuning(&self) -> Tuning {
        let known = || *self.tuning.lock().unwrap_or_else(|e| e.into_inner());
        measured_once(&self.f32_tuning, known, || {
            let t = match load(self.info()) {
                Some(t) => t,
                None => self.retune().unwrap_or_else(|e| {
                    eprintln!("sparkle: the Vulkan autotune failed on {} ({e}); using defaults", self.info().name);
                    Tuning::DEFAULT
                }),
            };
            self.set_tuning(t);
            t
        })
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

impl Context {
    /// This device's tile rules for `dtype`'s GEMM kernels: set by [`Context::set_tile_rules`],
    /// else remembered from an earlier run, else measured now by [`Context::retune_tiles`] (and
    /// [`TileRules::rule`] if that fails). Measured on the dtype's first use, so that an f32 user
    /// never waits for the half and int8 kernels. `SPARKLE_VK_TILES=rule` takes the rule without
    /// measuring (to compare the two).
    pub fn tile_rules(&self, dtype: TileDtype) -> TileRules {
        let slot = dtype as usize;
        let known = || self.tile_rules.lock().unwrap_or_else(|e| e.into_inner())[slot];
        measured_once(&self.tile_tuning, known, || {
            let r = if TileRules::forced() {
                TileRules::rule(dtype)
            } else if let Some(r) = load_tiles(self.info(), dtype) {
                r
            } else {
                self.retune_tiles(dtype).unwrap_or_else(|e| {
                    eprintln!(
                        "sparkle: the Vulkan {} tile autotune failed on {} ({e}); using the rule",
                        dtype.name(),
                        self.info().name
                    );
                    TileRules::rule(dtype)
                })
            };
            self.set_tile_rules(dtype, r);
            r
        })
    }

    /// Which of `dtype`'s tile choices this device makes: `(large, split)`, whether a larger
    /// kernel than the 64x64 tiles runs `dtype`'s GEMMs (f16 and int8 on cooperative matrices,
    /// bf16 on workgroup-scope ones) and whether they split the reduction (f16, and bf16 on the
    /// shader cores). Neither: [`TileRules::rule`] has nothing to measure.
    pub fn tile_choices(&self, dtype: TileDtype) -> (bool, bool) {
        match dtype {
            TileDtype::F16 => (self.coopmat_f16, true),
            TileDtype::Bf16 => (self.coopmat2_bf16, !self.coopmat2_bf16),
            TileDtype::Int8 => (self.coopmat_i8, false),
        }
    }

    /// Uses `rules` for `dtype` from now on in this context (not saved).
    pub fn set_tile_rules(&self, dtype: TileDtype, rules: TileRules) {
        self.tile_rules.lock().unwrap_or_else(|e| e.into_inner())[dtype as usize] = Some(rules);
    }

    /// Measures `dtype`'s tile rules on this device, uses and saves them; what the device lacks
    /// keeps [`TileRules::rule`]'s value. After 0.1 s of warm-up (a GPU idling at a low clock):
    ///
    /// - **Large or 64x64 tiles** (a device with both for `dtype`: f16 and int8 on cooperative
    ///   matrices, bf16 on workgroup-scope ones): square GEMMs of 256^2 up, each on both, until
    ///   the 64x64 one takes over 50 ms; the large kernel takes over from the size where it
    ///   wins at every larger measured size.
    /// - **128x256 tiles** (f16 on cooperative matrices without a workgroup-scope kernel):
    ///   2048^2 to 6144^2 against 128x128, the same way.
    /// - **Split-K** (f16, and bf16 on the shader cores): 64 x 1024 x 4096, 16 tiles of 64x64,
    ///   in 1, 2, 4, 8 and 16 parts, until more parts stop gaining; the workgroups to reach are
    ///   16 times the fewest parts within 3% of the fastest. On a CPU's
    ///   Vulkan (no warm-up), 64 x 1024 x 1024 in up to 4 parts.
    pub fn retune_tiles(&self, dtype: TileDtype) -> Result<TileRules> {
        let mut rules = TileRules::rule(dtype);
        let (large, split) = self.tile_choices(dtype);
        let never = TileRules { min_full_tiles: u32::MAX, min_large_tiles: u32::MAX, split_k_groups: 0 };
        // A CPU's Vulkan (lavapipe) needs no warm-up, and its split-K is measured over a quarter
        // of the reduction (up to 4 parts): its f16 kernel runs at a few GFLOPS.
        let cpu = self.info().device_type == "CPU";
        if (large || split) && !cpu {
            self.time_tiles(dtype, [1024, 1024, 1024], &never, 0.1)?;
        }
        if large {
            let full = TileRules { min_full_tiles: 0, ..never };
            let squares = [256, 512, 768, 1024, 1536, 2048, 3072, 4096];
            rules.min_full_tiles = threshold(&self.race(dtype, &squares, |s| (s / 128).pow(2), [&never, &full])?);
            if dtype == TileDtype::F16 && !self.coopmat2_f16 {
                let wide = TileRules { min_large_tiles: 0, ..full };
                let sizes = [2048, 3072, 4096, 6144];
                rules.min_large_tiles =
                    threshold(&self.race(dtype, &sizes, |s| s / 128 * (s / 256), [&full, &wide])?);
            }
        }
        if split {
            // 16 tiles of 64x64 over 128 slices of 32: up to 16 parts of 8 slices.
            let (k, most) = if cpu { (1024, 4) } else { (4096, 16) };
            let mut times = Vec::new();
            for parts in [1u32, 2, 4, 8, 16].into_iter().filter(|&p| p <= most) {
                let r = TileRules { split_k_groups: 16 * parts, ..never };
                times.push((parts, self.time_tiles(dtype, [64, 1024, k], &r, 0.0)?));
                let best = times.iter().map(|t| t.1).fold(f64::INFINITY, f64::min);
                if times.last().is_some_and(|t| t.1 > best * 1.03) {
                    break;
                }
            }
            rules.split_k_groups = 16 * fewest_near_best(&times);
        }
        save_tiles(self.info(), dtype, &rules);
        self.set_tile_rules(dtype, rules);
        Ok(rules)
    }

    /// `(tiles(s), time under b / time under a)` for square GEMMs of `dtype` of each size `s` in
    /// turn, until one under `a` takes over 50 ms: [`threshold`]'s points.
    fn race(
        &self,
        dtype: TileDtype,
        sizes: &[usize],
        tiles: fn(usize) -> usize,
        [a, b]: [&TileRules; 2],
    ) -> Result<Vec<(u32, f64)>> {
        let mut points = Vec::new();
        for &s in sizes {
            let under_a = self.time_tiles(dtype, [s; 3], a, 0.0)?;
            points.push((tiles(s) as u32, self.time_tiles(dtype, [s; 3], b, 0.0)? / under_a));
            if under_a > 0.05 {
                break;
            }
        }
        Ok(points)
    }

    /// Seconds per row-major `[m, n, k]` GEMM of `dtype` planned under `rules`, after `warm_up`
    /// seconds of the same: the best of three runs of about 10 ms (one run where one GEMM takes
    /// over 20 ms).
    fn time_tiles(&self, dtype: TileDtype, [m, n, k]: [usize; 3], rules: &TileRules, warm_up: f64) -> Result<f64> {
        let time = |reps: u32, warm_up: f64| -> Result<f64> {
            match dtype {
                TileDtype::Int8 => {
                    let plan = crate::quant::qgemm_plan(m, n, k, (self.coopmat_i8, true), rules)?;
                    self.time_qplan(&plan, reps, warm_up)
                }
                _ => {
                    let plan = self.half_plan_with(m, n, k, dtype == TileDtype::Bf16, rules)?;
                    self.time_plan(&plan, m * n, reps, warm_up)
                }
            }
        };
        let one = time(1, warm_up)?;
        let reps = (0.01 / one).clamp(1.0, 50.0) as u32;
        if one > 0.02 {
            return Ok(one);
        }
        Ok(time(reps, 0.0)?.min(time(reps, 0.0)?).min(time(reps, 0.0)?))
    }
}

/// Of `(parts, seconds)`, the fewest parts within 3% of the fastest (more parts cost a workspace
/// and a reduction for nothing); 1 for none.
pub(crate) fn fewest_near_best(times: &[(u32, f64)]) -> u32 {
    let best = times.iter().map(|t| t.1).fold(f64::INFINITY, f64::min);
    times.iter().filter(|t| t.1 <= best * 1.03).map(|t| t.0).min().unwrap_or(1)
}

const TILES_HEADER: &str = "sparkle-vk tiles 1";

/// Where `info`'s tile rules for `dtype` live, if a cache directory is known.
pub(crate) fn tiles_path(info: &DeviceInfo, dtype: TileDtype) -> Option<PathBuf> {
    let file = path(info)?;
    let name = file.file_name()?.to_str()?.replacen("vk-tuning-", &format!("vk-tiles-{}-", dtype.name()), 1);
    Some(file.with_file_name(name))
}

pub(crate) fn render_tiles(r: &TileRules) -> String {
    format!(
        "{TILES_HEADER}\nmin_full_tiles {}\nmin_large_tiles {}\nsplit_k_groups {}\nend\n",
        r.min_full_tiles, r.min_large_tiles, r.split_k_groups
    )
}

pub(crate) fn parse_tiles(text: &str) -> Option<TileRules> {
    let mut lines = text.lines();
    if lines.next()? != TILES_HEADER {
        return None;
    }
    let mut field = |name: &str| lines.next()?.strip_prefix(name)?.strip_prefix(' ')?.parse().ok();
    let min_full_tiles = field("min_full_tiles")?;
    let min_large_tiles = field("min_large_tiles")?;
    let split_k_groups = field("split_k_groups")?;
    (lines.next()? == "end" && lines.next().is_none()).then_some(TileRules {
        min_full_tiles,
        min_large_tiles,
        split_k_groups,
    })
}

/// The remembered tile rules of this device for `dtype`, if there is a valid file.
fn load_tiles(info: &DeviceInfo, dtype: TileDtype) -> Option<TileRules> {
    let path = tiles_path(info, dtype)?;
    let text = std::fs::read_to_string(&path).ok()?;
    let r = parse_tiles(&text);
    if r.is_none() {
        eprintln!("sparkle: ignoring the unreadable Vulkan tile rules {}; re-measuring", path.display());
    }
    r
}

/// Writes the rules atomically; failures are ignored (they are re-measured next time).
fn save_tiles(info: &DeviceInfo, dtype: TileDtype, r: &TileRules) {
    let Some(path) = tiles_path(info, dtype) else { return };
    crate::cache::write_atomic(&path, render_tiles(r).as_bytes());
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
    fn tile_rules_round_trip_and_reject_damage() {
        let r = TileRules { min_full_tiles: 64, min_large_tiles: u32::MAX, split_k_groups: 128 };
        assert_eq!(parse_tiles(&render_tiles(&r)), Some(r));
        let text = render_tiles(&r);
        assert_eq!(parse_tiles(&text[..text.len() - 3]), None, "truncated");
        assert_eq!(parse_tiles(&text.replace("64", "x")), None);
        assert_eq!(parse_tiles(&text.replace("split_k_groups", "split_k_group")), None);
        assert_eq!(parse_tiles(&format!("{text}more\n")), None);
        assert_eq!(parse_tiles(&text.replace("tiles 1", "tiles 0")), None, "another version");
    }

    #[test]
    fn split_k_takes_the_fewest_parts_near_the_fastest() {
        assert_eq!(fewest_near_best(&[(1, 4.0), (2, 2.1), (4, 1.0), (8, 1.02), (16, 1.2)]), 4);
        assert_eq!(fewest_near_best(&[(1, 4.0), (2, 2.1), (4, 1.05), (8, 1.0)]), 8);
        assert_eq!(fewest_near_best(&[(1, 1.0), (2, 1.2)]), 1);
        assert_eq!(fewest_near_best(&[]), 1);
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
