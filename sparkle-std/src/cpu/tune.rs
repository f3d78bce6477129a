//! Blocking measured on this CPU where a cache-size rule is not enough, remembered like the Vulkan
//! autotune: measured once on first use (about 0.2 s with a SIMD kernel), saved in the cache
//! folder (`SPARKLE_CACHE_DIR`) keyed by the CPU's name, the kernel, the thread count, the rule's
//! `kc`, the build (debug or release) and the crate version, and read back by every later
//! process. A file that cannot be parsed is reported and re-measured; `sparkle calibrate`
//! re-measures on purpose.
//!
//! What is measured: the reduction slice of few-row GEMMs over a B read in place whose rows are a
//! multiple of 4 KiB apart ([`Blocking::kc_few_rows`]), on one thread and on all. A panel reads
//! `kc` rows of B that share the L1's sets; on the H200 host's Xeon (one thread, 8-64 rows) kc
//! 32-64 ran 1.3-1.5x faster than the rule's 512 (geometric means of its own figures), while on a
//! Zen 4 512 was the fastest (BENCHMARKS.md, session 38).
//!
//! And which conv path a 3x3 stride-1 layer of channel planes (NCHW) takes where both Winograd
//! and the direct conv apply, by its channels ([`Blocking::winograd_min_channels`]): the rule
//! runs Winograd on one and two workers whatever the channels, but Winograd's 16 GEMMs reduce
//! over the channels and its transforms cost per channel, so it gains with channels, and where
//! it overtakes the direct conv differs between CPUs (one Zen 4 thread: direct 1.4x faster at 32
//! channels @112, Winograd 1.1x at 64 @56; a Xeon thread at 64 @56: Winograd 56-102 GFLOPS,
//! direct 91-131, BENCHMARKS.md sessions 30 and 47). Both run [`CONVS`] (32, 64 and 128
//! channels) on one worker and on two; Winograd keeps the channel counts from the smallest at
//! which it is not beaten by [`MARGIN`], there and at every larger one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sparkle_core::arch::Kernel;
use sparkle_core::conv::fused::{conv2d_scratch_len, conv2d_with, running_path};
use sparkle_core::conv::path::WINOGRAD_MAX_WORKERS;
use sparkle_core::conv::{Conv2d, Conv2dParams, Conv2dPath, Padding};
use sparkle_core::gemm::blocking::Blocking;
use sparkle_core::gemm::driver::{gemm_scratch_len, gemm_with, Workspace};
use sparkle_core::{Epilogue, MatMut, MatRef};

use super::caches::cache_sizes;
use super::workers::Workers;

/// The few-row reduction slices tried, besides the rule's `kc`.
pub const CANDIDATES: [usize; 4] = [32, 64, 128, 256];

/// The few-row GEMMs (`m x n x k`, B row-major) each candidate runs: 8 rows over B in the
/// caches, 16 over B past a core's L2, a whole few-row problem (64 rows). B's rows are 4 KiB
/// apart in all three, the only case the measured slice applies to (see `gemm/driver.rs`).
pub const SHAPES: [(usize, usize, usize); 3] = [(8, 1024, 1024), (16, 4096, 1024), (64, 1024, 1024)];

/// How much faster (geometric mean over [`SHAPES`], or on one of [`CONVS`]) a candidate must be
/// than the rule's choice to replace it: run-to-run noise on a shared machine is a few percent.
pub const MARGIN: f64 = 1.05;

/// The convs that race Winograd against the direct conv, `(channels in and out, height and
/// width)`, by channels: 3x3, stride 1, padding 1, NCHW, batch 1, 116-236 M multiply-adds
/// (ResNet-50's 64->64 @56 among them), each past Winograd's
/// [`MIN_TILES`](sparkle_core::conv::winograd::MIN_TILES). Past 128 channels Winograd is taken
/// to keep winning where it wins at 128. The threshold goes by channels alone: each channel
/// count is raced at one image size and batch 1, which stand in for every size and batch.
pub const CONVS: [(usize, usize); 3] = [(32, 112), (64, 56), (128, 40)];

/// The worker counts the convs race on: the rule runs Winograd on at most
/// [`WINOGRAD_MAX_WORKERS`] of them, and [`Blocking::winograd_min_channels`] has one threshold
/// for each.
pub const RACE_WORKERS: [usize; 2] = [1, WINOGRAD_MAX_WORKERS];
const _: () = assert!(WINOGRAD_MAX_WORKERS == 2, "winograd_min_channels holds one and two workers");

/// Timed rounds per shape after the warm-up (the best of them counts).
pub const ROUNDS: usize = 5;

/// A first run of the rule longer than this skips the measurement (a kernel without SIMD, or an
/// emulator): the rule is kept.
const SLOW_RUN: Duration = Duration::from_millis(20);

/// [`SLOW_RUN`] for a conv of [`CONVS`] (up to 22x the multiply-adds of the 8-row GEMM).
const SLOW_CONV: Duration = Duration::from_millis(100);

/// One measurement: a reduction slice and its GFLOPS on each of [`SHAPES`].
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// The reduction slice.
    pub kc: usize,
    /// GFLOPS on each shape, the best of [`ROUNDS`] runs.
    pub gflops: Vec<f64>,
}

impl Point {
    /// The geometric mean over the shapes.
    pub fn mean(&self) -> f64 {
        geometric_mean(&self.gflops)
    }
}

/// What was picked for one thread count, and the measurements behind it (empty where nothing
/// was measured).
#[derive(Clone, Debug, PartialEq)]
pub struct Pick {
    /// The chosen slice.
    pub kc: usize,
    /// Threads it was measured on.
    pub threads: usize,
    /// Every candidate's figures, the rule's `kc` last.
    pub points: Vec<Point>,
}

/// Winograd against the direct conv on one worker count: GFLOPS on each of [`CONVS`], the best
/// of [`ROUNDS`] runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Race {
    /// Workers both ran on.
    pub workers: usize,
    /// Winograd's GFLOPS per conv.
    pub winograd: Vec<f64>,
    /// The direct conv's GFLOPS per conv.
    pub direct: Vec<f64>,
}

impl Race {
    /// The fewest channels from which Winograd is never beaten by [`MARGIN`] on the convs of as
    /// many channels or more; `usize::MAX` where it is beaten on the largest.
    pub fn min_channels(&self) -> usize {
        let stays = |i: usize| self.direct[i] <= self.winograd[i] * MARGIN;
        let n = CONVS.len().min(self.winograd.len()).min(self.direct.len());
        (0..n).rev().take_while(|&i| stays(i)).last().map_or(usize::MAX, |i| CONVS[i].0)
    }
}

/// From how many channels Winograd runs on one worker and on two, and the races behind it (empty
/// where nothing was measured: the rule, 0).
#[derive(Clone, Debug, PartialEq)]
pub struct ConvPick {
    /// [`Blocking::winograd_min_channels`] (`usize::MAX`: never).
    pub winograd_min_channels: [usize; 2],
    /// One race per worker count of [`RACE_WORKERS`] measured, in order.
    pub races: Vec<Race>,
}

impl ConvPick {
    /// The rule, unmeasured: Winograd wherever it is chosen.
    const RULE: ConvPick = ConvPick { winograd_min_channels: [0; 2], races: Vec::new() };

    /// The counts the races give; with one race only (one thread), the same on two workers.
    pub fn from_races(races: Vec<Race>) -> Self {
        let one = races.first().map_or(0, Race::min_channels);
        let two = races.get(1).map_or(one, Race::min_channels);
        ConvPick { winograd_min_channels: [one, two], races }
    }
}

/// This CPU's measured blocking for one kernel: few-row slices on one thread and on all, and the
/// channels from which Winograd runs on one worker and on two.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    /// One thread, then all threads.
    pub few_rows: [Pick; 2],
    /// Winograd against the direct conv.
    pub convs: ConvPick,
}

impl Tuning {
    /// `rule` with the measured few-row slices and Winograd's channel thresholds.
    pub fn apply(&self, rule: Blocking) -> Blocking {
        Blocking {
            kc_few_rows: [self.few_rows[0].kc, self.few_rows[1].kc],
            winograd_min_channels: self.convs.winograd_min_channels,
            ..rule
        }
    }

    /// The rule alone (nothing measured).
    fn rule(rule: &Blocking, threads: usize) -> Self {
        let pick = |threads| Pick { kc: rule.kc, threads, points: Vec::new() };
        Tuning { few_rows: [pick(1), pick(threads)], convs: ConvPick::RULE }
    }
}

/// Where Winograd runs by [`Blocking::winograd_min_channels`], in words: "from 64 channels on 1
/// thread, from 128 channels on 2" (on a one-thread machine the second is the first's copy).
pub fn winograd_from([one, two]: [usize; 2]) -> String {
    let from = |c: usize| match c {
        0 => "at any channel count".to_string(),
        usize::MAX => "never".to_string(),
        c => format!("from {c} channels"),
    };
    format!("{} on 1 thread, {} on 2", from(one), from(two))
}

/// The geometric mean of `xs` (of positive figures).
pub fn geometric_mean(xs: &[f64]) -> f64 {
    let logs: f64 = xs.iter().map(|g| g.max(1e-9).ln()).sum();
    (logs / xs.len().max(1) as f64).exp()
}

/// Tunings already known in this process, by kernel id (locked briefly, never while measuring).
static KNOWN: Mutex<Option<HashMap<&'static str, Arc<Tuning>>>> = Mutex::new(None);

/// Held while measuring, by threads outside rayon's pool only: one measurement at a time, and
/// no pool thread ever waits for one (the measurement itself runs on the pool).
static MEASURING: Mutex<()> = Mutex::new(());

fn known(kernel: &Kernel) -> Option<Arc<Tuning>> {
    KNOWN.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).get(kernel.id()).cloned()
}

fn remember(kernel: &'static Kernel, t: Tuning) -> Arc<Tuning> {
    let t = Arc::new(t);
    KNOWN.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).insert(kernel.id(), t.clone());
    t
}

/// `kernel`'s blocking by the rule from this CPU's caches, which the measured slices refine.
pub fn rule(kernel: &Kernel) -> Blocking {
    Blocking::for_kernel(kernel, cache_sizes())
}

/// This CPU's tuning for `kernel` (over its [`rule`]): known in this process, else read from
/// the cache folder, else measured now and saved. Called on one of rayon's pool threads (a
/// user's parallel loop), it does not measure: the rule stands in, for this call only.
pub fn tuning(kernel: &'static Kernel) -> Arc<Tuning> {
    let rule = &rule(kernel);
    if let Some(t) = known(kernel) {
        return t;
    }
    let threads = rayon::current_num_threads();
    if rayon::current_thread_index().is_some() {
        return match load(kernel, threads, rule) {
            Some(t) => remember(kernel, t),
            None => Arc::new(Tuning::rule(rule, threads)),
        };
    }
    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = known(kernel) {
        return t;
    }
    let t = match load(kernel, threads, rule) {
        Some(t) => t,
        None => measure_and_save(kernel, rule, threads),
    };
    remember(kernel, t)
}

/// Measures `kernel`'s tuning again (for `sparkle calibrate`), saves it and uses it from now on
/// in this process.
pub fn retune(kernel: &'static Kernel) -> Arc<Tuning> {
    let rule = &rule(kernel);
    let threads = rayon::current_num_threads();
    let t = {
        let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
        measure_and_save(kernel, rule, threads)
    };
    remember(kernel, t)
}

/// [`measure`], saved only when something was measured: a run cut short (a slow build, a
/// refused size) keeps the rule for this process and is measured again by the next.
fn measure_and_save(kernel: &'static Kernel, rule: &Blocking, threads: usize) -> Tuning {
    let t = measure(kernel, rule, threads);
    if t.few_rows.iter().all(|p| !p.points.is_empty()) {
        save(kernel, threads, rule, &t);
    }
    t
}

/// The few-row slices ([`measure_few_rows`]), then, where they were measured (a build fast enough
/// to time), Winograd against the direct conv ([`race_convs`]) under the slices picked.
fn measure(kernel: &'static Kernel, rule: &Blocking, threads: usize) -> Tuning {
    let mut t = measure_few_rows(kernel, rule, threads);
    if t.few_rows.iter().all(|p| !p.points.is_empty()) {
        t.convs = race_convs(kernel, &t.apply(*rule), threads);
    }
    t
}

/// Runs every candidate on every shape on 1 and on `threads` threads (per shape a warm-up, then
/// [`ROUNDS`] alternating the candidates; the best time of each), and picks per thread count
/// among the candidates whose every result equals the rule's.
fn measure_few_rows(kernel: &'static Kernel, rule: &Blocking, threads: usize) -> Tuning {
    if !kernel.gemm().b_in_place() {
        return Tuning::rule(rule, threads);
    }
    let mut slices: Vec<usize> = CANDIDATES.into_iter().filter(|&c| c < rule.kc).collect();
    slices.push(rule.kc);
    let mut ops: Vec<Op> = SHAPES.iter().map(|&s| Op::new(s)).collect();
    let mut pick = |workers: usize| -> Option<Pick> {
        let mut best = vec![vec![Duration::MAX; ops.len()]; slices.len()];
        let mut wrong = vec![false; slices.len()];
        // Shape by shape (its operands stay in the caches, as in a benchmark's repeated runs),
        // a warm-up round, then [`ROUNDS`] rounds alternating the candidates; the rule first, so a
        // slow kernel is found by its first run.
        for (j, op) in ops.iter_mut().enumerate() {
            for round in 0..=ROUNDS {
                for (i, &kc) in slices.iter().enumerate().rev() {
                    let blocking = Blocking { kc_few_rows: [kc; 2], ..*rule };
                    let (t, agrees) = op.run(kernel, &blocking, workers)?;
                    wrong[i] |= !agrees;
                    if round == 0 && i + 1 == slices.len() && t > SLOW_RUN {
                        return None;
                    }
                    if round > 0 {
                        best[i][j] = best[i][j].min(t);
                    }
                }
            }
        }
        // A slice whose result differs from the rule's is a bug, never a choice (and without the
        // rule's own finite result there is nothing to compare with).
        if wrong.last() != Some(&false) {
            return None;
        }
        for (&kc, _) in slices.iter().zip(&wrong).filter(|(_, &w)| w) {
            eprintln!("sparkle: CPU tuning: few-row GEMMs in slices of {kc} differ from the rule's result; not used");
        }
        let points: Vec<Point> = slices
            .iter()
            .zip(&best)
            .zip(&wrong)
            .filter(|(_, &w)| !w)
            .map(|((&kc, times), _)| Point {
                kc,
                gflops: ops.iter().zip(times).map(|(op, t)| op.flops / t.as_secs_f64() / 1e9).collect(),
            })
            .collect();
        Some(Pick { kc: choose(&points), threads: workers, points })
    };
    let one = pick(1);
    let all = if threads > 1 { pick(threads) } else { one.clone().map(|p| Pick { threads, ..p }) };
    match (one, all) {
        (Some(one), Some(all)) => Tuning { few_rows: [one, all], convs: ConvPick::RULE },
        _ => Tuning::rule(rule, threads),
    }
}

/// Races Winograd against the direct conv on [`CONVS`] on each count of [`RACE_WORKERS`] up to
/// `threads` (a warm-up round, then [`ROUNDS`] rounds, each running every conv on both paths; the
/// best time of each), each path forced by the channel threshold: 0 (Winograd) or `usize::MAX`
/// (direct). The rule where this kernel or build cannot run both paths on these convs, where a run is
/// slow ([`SLOW_CONV`]: an unoptimized build), or where the two results differ: the operands are
/// small integers, so both paths' sums are exact and must be equal bit for bit.
fn race_convs(kernel: &'static Kernel, tuned: &Blocking, threads: usize) -> ConvPick {
    let mut ops: Vec<ConvOp> = CONVS.iter().map(|&(c, hw)| ConvOp::new(c, hw)).collect();
    let mut races = Vec::new();
    'race: for workers in RACE_WORKERS.into_iter().filter(|&w| w <= threads.max(1)) {
        let paths = [
            (Blocking { winograd_min_channels: [0; 2], ..*tuned }, Conv2dPath::Winograd),
            (Blocking { winograd_min_channels: [usize::MAX; 2], ..*tuned }, Conv2dPath::Direct),
        ];
        let mut best = [[Duration::MAX; CONVS.len()]; 2];
        for op in &mut ops {
            op.want = None;
        }
        // Round by round over every conv and both paths, so that a slow spell of a shared
        // machine (seconds long, at times) falls on all of them alike.
        for round in 0..=ROUNDS {
            for (j, op) in ops.iter_mut().enumerate() {
                for (i, (blocking, path)) in paths.iter().enumerate() {
                    let Some((t, agrees)) = op.run(kernel, blocking, workers, *path) else {
                        // Refused on the first count: this kernel does not run both paths here.
                        // On a later one, what was measured stands.
                        if races.is_empty() {
                            return ConvPick::RULE;
                        }
                        break 'race;
                    };
                    if !agrees {
                        eprintln!(
                            "sparkle: CPU tuning: Winograd and the direct conv differ on {} channels @{}; the rule stays",
                            op.g.params().c,
                            op.g.ho()
                        );
                        return ConvPick::RULE;
                    }
                    // An unoptimized build, found on the first count's first round (a later count's
                    // first round may include its threads' start).
                    if races.is_empty() && round == 0 && t > SLOW_CONV {
                        return ConvPick::RULE;
                    }
                    if round > 0 {
                        best[i][j] = best[i][j].min(t);
                    }
                }
            }
        }
        let gflops =
            |i: usize| ops.iter().zip(&best[i]).map(|(op, t)| op.flops / t.as_secs_f64() / 1e9).collect::<Vec<_>>();
        races.push(Race { workers, winograd: gflops(0), direct: gflops(1) });
    }
    ConvPick::from_races(races)
}

/// The candidate with the best geometric mean, if it beats the rule (the last point) by
/// [`MARGIN`] there and is faster on most shapes (one shape's outlier, such as a B of 16 MiB
/// competing with the neighbours for the L3, does not decide); else the rule.
pub fn choose(points: &[Point]) -> usize {
    let Some(rule) = points.last() else { return 0 };
    let best = points.iter().max_by(|a, b| a.mean().total_cmp(&b.mean())).unwrap_or(rule);
    let wins = best.gflops.iter().zip(&rule.gflops).filter(|(b, r)| b > r).count();
    if best.mean() > rule.mean() * MARGIN && 2 * wins > rule.gflops.len() {
        best.kc
    } else {
        rule.kc
    }
}

/// One few-row GEMM's operands.
struct Op {
    dims: (usize, usize, usize),
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    /// The first run's result (the rule's), which every later run must reproduce exactly: the
    /// operands are small integers, so every order of the sums is exact.
    want: Option<Vec<f32>>,
    scratch: Vec<f32>,
    flops: f64,
}

impl Op {
    fn new((m, n, k): (usize, usize, usize)) -> Self {
        let a = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let b = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
        Op {
            dims: (m, n, k),
            a,
            b,
            c: vec![0.0; m * n],
            want: None,
            scratch: Vec::new(),
            flops: 2.0 * (m * n * k) as f64,
        }
    }

    /// One timed run with `blocking` on `workers` threads, and whether its result is the first
    /// run's; `None` if the core refuses it.
    fn run(&mut self, kernel: &'static Kernel, blocking: &Blocking, workers: usize) -> Option<(Duration, bool)> {
        let (m, n, k) = self.dims;
        // Anything the GEMM leaves unwritten stays NaN and fails the comparison.
        self.c.fill(f32::NAN);
        // Written once, then reused: a fresh buffer's page faults would be timed too.
        let len = gemm_scratch_len(kernel, blocking, m, n, k, workers).ok()?;
        if self.scratch.len() < len {
            self.scratch = vec![1.0; len];
        }
        let (a, b) = (MatRef::row_major(&self.a, m, k).ok()?, MatRef::row_major(&self.b, k, n).ok()?);
        let cv = MatMut::row_major(&mut self.c, m, n).ok()?;
        let exec = Workers(workers);
        let ws = Workspace { kernel, blocking, exec: &exec, scratch: &mut self.scratch[..len] };
        let t = Instant::now();
        gemm_with(1.0, a, b, 0.0, cv, &Epilogue::NONE, ws).ok()?;
        let t = t.elapsed();
        Some((t, agrees(&mut self.want, &self.c)))
    }
}

/// One conv of [`CONVS`] and its operands.
struct ConvOp {
    g: Conv2d,
    input: Vec<f32>,
    weight: Vec<f32>,
    out: Vec<f32>,
    /// The first path's result on this worker count, which the other must equal.
    want: Option<Vec<f32>>,
    scratch: Vec<f32>,
    flops: f64,
}

impl ConvOp {
    fn new(c: usize, hw: usize) -> Self {
        let g = Conv2dParams::new(1, c, hw, hw, c, 3, 3).pad(Padding::uniform(1)).validate().expect("a valid conv");
        let input = (0..g.input_len()).map(|i| (i % 7) as f32 - 3.0).collect();
        let weight = (0..g.weight_len()).map(|i| (i % 5) as f32 - 2.0).collect();
        ConvOp { input, weight, out: vec![0.0; g.output_len()], want: None, scratch: Vec::new(), flops: g.flops(), g }
    }

    /// One timed run with `blocking` on `workers` threads, and whether its result is the first
    /// run's; `None` if the core refuses it or would not run it on `path`.
    fn run(
        &mut self,
        kernel: &'static Kernel,
        blocking: &Blocking,
        workers: usize,
        path: Conv2dPath,
    ) -> Option<(Duration, bool)> {
        let len = conv2d_scratch_len(&self.g, kernel, blocking, workers).ok()?;
        if running_path(&self.g, kernel, blocking, workers, len) != path {
            return None;
        }
        if self.scratch.len() < len {
            self.scratch = vec![1.0; len];
        }
        self.out.fill(f32::NAN);
        let exec = Workers(workers);
        let ws = Workspace { kernel, blocking, exec: &exec, scratch: &mut self.scratch[..len] };
        let t = Instant::now();
        conv2d_with(&self.g, &self.input, &self.weight, &Epilogue::NONE, &mut self.out, ws).ok()?;
        let t = t.elapsed();
        Some((t, agrees(&mut self.want, &self.out)))
    }
}

/// Whether `got` equals the first result, `want` (bit for bit); the first result itself (kept in
/// `want`) must be all finite.
fn agrees(want: &mut Option<Vec<f32>>, got: &[f32]) -> bool {
    match want {
        Some(w) => w == got,
        None => {
            *want = Some(got.to_vec());
            got.iter().all(|x| x.is_finite())
        }
    }
}

/// The file's first line; a new number retires files measured by an older driver (2: from 5
/// workers the 8-row shape runs split along the reduction, `sparkle_core::gemm::split_k`; 3: the
/// race of Winograd against the direct conv).
const HEADER: &str = "sparkle cpu tuning 3";

/// Where the tuning of `kernel` on `threads` threads lives: the CPU's name hashed (FNV-1a) into
/// the file name, with the kernel, the threads, the rule's `kc`, the build (an unoptimized
/// build's timings are not a release build's) and the crate version.
fn path(kernel: &Kernel, threads: usize, rule: &Blocking) -> Option<PathBuf> {
    let hash = sparkle_core::check::fnv1a(super::brand().as_bytes());
    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    Some(sparkle_files::cache_dir()?.join(format!(
        "cpu-tuning-{hash:016x}-{}-{threads}t-kc{}-{build}-{}.txt",
        kernel.id(),
        rule.kc,
        env!("CARGO_PKG_VERSION")
    )))
}

/// The file's text: the picks, then each measurement as `kc:gflops,gflops,...`.
pub fn render(t: &Tuning) -> String {
    let mut s = format!("{HEADER}\n");
    for (name, p) in ["one", "all"].iter().zip(&t.few_rows) {
        s += &format!("{name} {} {}", p.threads, p.kc);
        for point in &p.points {
            s += &format!(" {}:{}", point.kc, figures_text(&point.gflops));
        }
        s += "\n";
    }
    let channels = |c: usize| if c == usize::MAX { "never".to_string() } else { c.to_string() };
    let [one, two] = t.convs.winograd_min_channels;
    s += &format!("winograd {} {}", channels(one), channels(two));
    for r in &t.convs.races {
        s += &format!(" {}:{}/{}", r.workers, figures_text(&r.winograd), figures_text(&r.direct));
    }
    s += "\n";
    // The closing `end` makes a truncated file unreadable.
    s + "end\n"
}

/// GFLOPS figures as the file writes them: two decimals, comma-separated.
fn figures_text(xs: &[f64]) -> String {
    xs.iter().map(|g| format!("{g:.2}")).collect::<Vec<_>>().join(",")
}

/// [`figures_text`]'s `len` figures back; `None` for anything else.
fn parse_figures(text: &str, len: usize) -> Option<Vec<f64>> {
    let xs = text.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<f64>>>()?;
    (xs.len() == len).then_some(xs)
}

/// Reads [`render`]'s text back; `None` for anything else.
pub fn parse(text: &str) -> Option<Tuning> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut pick = |name: &str| -> Option<Pick> {
        let mut words = lines.next()?.strip_prefix(name)?.strip_prefix(' ')?.split(' ');
        let threads = words.next()?.parse().ok()?;
        let kc = words.next()?.parse().ok().filter(|&kc| kc > 0)?;
        let points = words
            .map(|w| {
                let (kc, g) = w.split_once(':')?;
                Some(Point { kc: kc.parse().ok()?, gflops: parse_figures(g, SHAPES.len())? })
            })
            .collect::<Option<Vec<Point>>>()?;
        Some(Pick { kc, threads, points })
    };
    let few_rows = [pick("one")?, pick("all")?];
    let mut words = lines.next()?.strip_prefix("winograd ")?.split(' ');
    let mut channels = || -> Option<usize> {
        match words.next()? {
            "never" => Some(usize::MAX),
            c => c.parse().ok(),
        }
    };
    let winograd_min_channels = [channels()?, channels()?];
    let races = words
        .map(|w| {
            let (workers, g) = w.split_once(':')?;
            let (winograd, direct) = g.split_once('/')?;
            let (winograd, direct) = (parse_figures(winograd, CONVS.len())?, parse_figures(direct, CONVS.len())?);
            Some(Race { workers: workers.parse().ok()?, winograd, direct })
        })
        .collect::<Option<Vec<Race>>>()?;
    let convs = ConvPick { winograd_min_channels, races };
    (lines.next()? == "end" && lines.next().is_none()).then_some(Tuning { few_rows, convs })
}

/// The saved tuning, if there is a valid file whose slices fit under `rule`'s `kc`. Read through
/// [`sparkle_files::open_regular`] (a FIFO or device planted there is refused, not waited on),
/// at most 64 KiB.
fn load(kernel: &Kernel, threads: usize, rule: &Blocking) -> Option<Tuning> {
    use std::io::Read;
    let path = path(kernel, threads, rule)?;
    let (file, _) = sparkle_files::open_regular(&path).ok()?;
    let mut text = String::new();
    let read = file.take(64 << 10).read_to_string(&mut text);
    let t = read.ok().and_then(|_| parse(&text));
    let fits = t.as_ref().is_some_and(|t| t.few_rows.iter().all(|p| p.kc <= rule.kc));
    if !fits {
        let why = if t.is_some() { "a slice above the rule's kc" } else { "unreadable, or an older version" };
        eprintln!("sparkle: ignoring the CPU tuning file {} ({why}); re-measuring", path.display());
        return None;
    }
    t
}

/// Writes the tuning atomically; a failure is ignored (it is measured again next time).
fn save(kernel: &Kernel, threads: usize, rule: &Blocking, t: &Tuning) {
    let Some(path) = path(kernel, threads, rule) else { return };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = sparkle_files::write_atomic(&path, |w| w.write_all(render(t).as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(kc: usize, g: f64) -> Point {
        Point { kc, gflops: vec![g; SHAPES.len()] }
    }

    #[test]
    fn the_rule_stays_unless_beaten_by_the_margin() {
        assert_eq!(choose(&[point(32, 71.0), point(64, 60.0), point(512, 53.0)]), 32);
        assert_eq!(choose(&[point(32, 54.0), point(512, 53.0)]), 512, "within the margin");
        assert_eq!(choose(&[point(32, 40.0), point(512, 53.0)]), 512);
        assert_eq!(choose(&[point(512, 53.0)]), 512);
        let mixed = Point { kc: 32, gflops: vec![100.0, 40.0, 60.0] };
        assert_eq!(choose(&[mixed, point(512, 60.0)]), 512, "the geometric mean, not the best shape");
        let outlier = Point { kc: 32, gflops: vec![59.0, 150.0, 59.0] };
        assert_eq!(choose(&[outlier, point(512, 60.0)]), 512, "one shape's outlier");
        let most = Point { kc: 32, gflops: vec![59.0, 75.0, 75.0] };
        assert_eq!(choose(&[most, point(512, 60.0)]), 32);
    }

    #[test]
    fn every_run_is_checked_against_the_first() {
        let kernel = crate::cpu::isa::gemm_kernel().unwrap();
        let rule = Blocking::new(4 * kernel.mr(), 64, 4 * kernel.nr());
        let mut op = Op::new((13, 2 * kernel.nr() + 5, 200));
        for (kc, workers) in [(64, 1), (8, 1), (24, 2)] {
            let (_, agrees) = op.run(kernel, &Blocking { kc_few_rows: [kc; 2], ..rule }, workers).unwrap();
            assert!(agrees, "kc {kc} on {workers}");
        }
        if let Some(w) = op.want.as_mut() {
            w[7] += 1.0;
        }
        assert!(!op.run(kernel, &rule, 1).unwrap().1, "a different result is caught");
    }

    fn race(workers: usize, winograd: [f64; 3], direct: [f64; 3]) -> Race {
        Race { workers, winograd: winograd.to_vec(), direct: direct.to_vec() }
    }

    #[test]
    fn winograd_keeps_the_channels_where_the_direct_conv_does_not_win_by_the_margin() {
        // One Zen 4 thread and two, by 32, 64 and 128 channels.
        let zen4 = vec![
            race(1, [75.0, 124.0, 120.0], [108.0, 109.0, 110.0]),
            race(2, [173.0, 236.0, 240.0], [212.0, 223.0, 220.0]),
        ];
        assert_eq!(ConvPick::from_races(zen4).winograd_min_channels, [64, 64]);
        assert_eq!(race(1, [100.0; 3], [104.0; 3]).min_channels(), 32, "within the margin");
        assert_eq!(race(1, [60.0, 70.0, 80.0], [110.0; 3]).min_channels(), usize::MAX, "never");
        assert_eq!(race(1, [60.0, 120.0, 80.0], [110.0; 3]).min_channels(), usize::MAX, "the largest decides");
        assert_eq!(race(1, [120.0, 70.0, 120.0], [110.0; 3]).min_channels(), 128, "from there up");
        let one = ConvPick::from_races(vec![race(1, [75.0, 124.0, 120.0], [108.0, 109.0, 110.0])]);
        assert_eq!(one.winograd_min_channels, [64, 64], "one thread: the same on two");
        assert_eq!(ConvPick::from_races(Vec::new()).winograd_min_channels, [0, 0]);
    }

    /// Both paths run on the machine's kernel and agree bit for bit, and a wrong result is caught.
    #[test]
    fn the_conv_race_checks_both_paths_against_each_other() {
        let kernel = crate::cpu::isa::gemm_kernel().unwrap();
        let rule = Blocking::for_kernel(kernel, sparkle_core::gemm::blocking::CacheSizes::DEFAULT);
        // 256 tiles of 2x2: the fewest Winograd runs on.
        let mut op = ConvOp::new(8, 32);
        let wino = Blocking { winograd_min_channels: [8; 2], ..rule };
        let direct = Blocking { winograd_min_channels: [9; 2], ..rule };
        let (_, first) = op.run(kernel, &wino, 1, Conv2dPath::Winograd).expect("Winograd runs");
        assert!(first);
        let (_, agrees) = op.run(kernel, &direct, 1, Conv2dPath::Direct).expect("the direct conv runs");
        assert!(agrees, "direct equals Winograd");
        assert!(op.run(kernel, &direct, 1, Conv2dPath::Winograd).is_none(), "the path is checked");
        if let Some(w) = op.want.as_mut() {
            w[5] += 1.0;
        }
        assert!(!op.run(kernel, &wino, 1, Conv2dPath::Winograd).unwrap().1, "a different result is caught");
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let t = Tuning {
            few_rows: [
                Pick { kc: 32, threads: 1, points: vec![point(32, 71.5), point(512, 53.25)] },
                Pick { kc: 512, threads: 16, points: Vec::new() },
            ],
            convs: ConvPick::from_races(vec![
                race(1, [60.5, 120.0, 130.0], [110.0; 3]),
                race(2, [190.0; 3], [300.25; 3]),
            ]),
        };
        let bare = Tuning { convs: ConvPick::RULE, ..t.clone() };
        assert_eq!(parse(&render(&bare)), Some(bare));
        let text = render(&t);
        assert_eq!(parse(&text), Some(t));
        assert_eq!(parse(&text[..text.len() - 4]), None, "truncated");
        assert_eq!(parse(&text.replace("one 1 32", "one 1 0")), None, "a zero slice");
        assert_eq!(parse(&text.replace("71.50", "x")), None);
        assert_eq!(parse(&text.replace(HEADER, "sparkle cpu tuning 1")), None, "an older version");
        assert_eq!(parse(&(text.clone() + "more\n")), None);
        assert_eq!(parse(&text.replace("130.00/", "130.00,1.00/")), None, "a figure too many");
        assert!(text.contains("\nwinograd 64 never 1:60.50,120.00,130.00/110.00,110.00,110.00 2:"), "{text}");
        assert_eq!(parse(&text.replace("\nwinograd 64", "\nwinograd x")), None);
        assert_eq!(parse(&text.replace("\nwinograd 64 never", "\nwinograd 64")), None, "one count");
    }
}
