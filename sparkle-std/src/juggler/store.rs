//! The learned model on disk (each device's cost models and its learned bus): a small text file,
//! checksummed, written atomically (a temporary file, then a rename), keyed by a fingerprint of
//! the machine. A corrupt, truncated or foreign-version file is reported and replaced, never
//! trusted; a file from another fingerprint (new driver, new CPU) is kept as a weak prior (each
//! bucket counts as one sample); two processes saving at once each merge what is on disk first,
//! so the better-measured bucket of either survives. Each shape's own history is not kept: a new
//! process learns shapes again.

use std::collections::HashMap;
use std::path::Path;

use super::clock::Clock;
use super::model::{variant, Bucket, CostModel, ModelKey, OpKind, BANDS, BUCKETS};
use super::policy::Juggler;

const HEADER: &str = "sparkle-juggler v2";
/// Files of the previous version (size buckets only, no learned overhead) are still read.
const HEADER_V1: &str = "sparkle-juggler v1";
/// Where a model's learned overhead sits in its entry: after the size buckets.
const OVERHEAD: usize = BUCKETS;

/// A fingerprint of everything the learned speeds depend on (CPU brand/cores/ISA, each GPU's
/// vendor/device/driver, crate version, kernel ids), as a short hex string.
pub fn fingerprint(parts: &[&str]) -> String {
    format!("{:016x}", sparkle_core::check::fnv1a(parts.join("\n").as_bytes()))
}

/// What [`load`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// No file yet.
    Missing,
    /// The model of this machine.
    Same,
    /// A model from another fingerprint, kept as a weak prior.
    Foreign,
}

/// Per (device, model): the size buckets, then the learned overhead (index [`OVERHEAD`]).
type Entries = HashMap<(String, String), Vec<Bucket>>;

const KINDS: [(OpKind, &str); 2] = [(OpKind::Gemm, "gemm"), (OpKind::Conv2d, "conv2d")];

/// A model's name in the file: the op kind (`gemm`, `conv2d`), then `-` and the variant for a
/// conv2d other than the dense one (`conv2d-1x1`, `conv2d-dw`, `conv2d-3x3`), an op on half
/// inputs (`gemm-f16`, `gemm-bf16`, `conv2d-dense-f16`, `conv2d-3x3-bf16`...), then `.` and the
/// shape band unless it is 0 (`gemm.2`). Band 0 of the dense variant is named as version 1 files
/// named the kind's one model.
fn model_name(key: ModelKey) -> String {
    let mut name = KINDS.iter().find(|k| k.0 == key.kind).map_or("?", |k| k.1).to_string();
    if let Some(v) = variant::NAMES.get(usize::from(key.variant)).filter(|v| !v.is_empty()) {
        name = format!("{name}-{v}");
    }
    if key.band != 0 {
        name = format!("{name}.{}", key.band);
    }
    name
}

/// [`model_name`]'s inverse; `None` for a name this version does not know (kept in the file,
/// not loaded).
fn parse_model_name(name: &str) -> Option<ModelKey> {
    let (name, band) = match name.split_once('.') {
        // One digit, as `model_name` writes it (not `01` or `+1`).
        Some((name, band)) if band.len() == 1 => (name, band.parse::<u8>().ok().filter(|b| (1..BANDS).contains(b))?),
        Some(_) => return None,
        None => (name, 0),
    };
    let (kind, variant) = match name.split_once('-') {
        Some((kind, v)) => (kind, variant::NAMES.iter().skip(1).position(|n| *n == v)? + 1),
        None => (name, 0),
    };
    let kind = KINDS.iter().find(|k| k.1 == kind)?.0;
    variant::belongs(kind, variant as u8).then_some(ModelKey { kind, variant: variant as u8, band })
}

fn parse(text: &str) -> Result<(String, Entries), String> {
    let (body, sum_line) = text.trim_end().rsplit_once('\n').ok_or("truncated")?;
    let sum = sum_line.strip_prefix("checksum ").ok_or("no checksum line (truncated?)")?;
    if u64::from_str_radix(sum, 16).ok() != Some(sparkle_core::check::fnv1a(body.as_bytes())) {
        return Err("checksum mismatch (corrupt or truncated)".into());
    }
    let mut lines = body.lines();
    if !matches!(lines.next(), Some(HEADER | HEADER_V1)) {
        return Err("not a sparkle juggler model of this version".into());
    }
    let fp = lines.next().and_then(|l| l.strip_prefix("fingerprint ")).ok_or("no fingerprint")?.to_string();
    let mut entries = Entries::new();
    for line in lines {
        let f: Vec<&str> = line.split(' ').collect();
        let (device, kind, bucket, log_eff, weight) = match f[..] {
            ["model", device, kind, bucket, log_eff, weight] => {
                let bucket: usize = bucket.parse().map_err(|_| format!("bad bucket in `{line}`"))?;
                if bucket >= BUCKETS {
                    return Err(format!("bucket out of range in `{line}`"));
                }
                (device, kind, bucket, log_eff, weight)
            }
            ["overhead", device, kind, log_eff, weight] => (device, kind, OVERHEAD, log_eff, weight),
            _ => return Err(format!("bad line `{line}`")),
        };
        let log_eff: f64 = log_eff.parse().map_err(|_| format!("bad value in `{line}`"))?;
        let weight: f64 = weight.parse().map_err(|_| format!("bad weight in `{line}`"))?;
        // An efficiency is at most 1 (log <= 0); an overhead scale may be either side of 1.
        let range = if bucket == OVERHEAD { -30.0..=30.0 } else { -1e300..=0.0 };
        if bucket > OVERHEAD || !log_eff.is_finite() || !range.contains(&log_eff) || !(0.0..=1e6).contains(&weight) {
            return Err(format!("value out of range in `{line}`"));
        }
        let e = entries
            .entry((device.to_string(), kind.to_string()))
            .or_insert_with(|| vec![Bucket::default(); OVERHEAD + 1]);
        e[bucket] = Bucket { log_eff, weight, streak: 0 };
    }
    Ok((fp, entries))
}

fn render(fp: &str, entries: &Entries) -> String {
    let mut keys: Vec<_> = entries.keys().collect();
    keys.sort();
    let mut body = format!("{HEADER}\nfingerprint {fp}");
    for key in keys {
        for (i, b) in entries[key].iter().enumerate().filter(|(_, b)| b.weight > 0.0) {
            if i == OVERHEAD {
                body.push_str(&format!("\noverhead {} {} {:e} {}", key.0, key.1, b.log_eff, b.weight));
            } else {
                body.push_str(&format!("\nmodel {} {} {i} {:e} {}", key.0, key.1, b.log_eff, b.weight));
            }
        }
    }
    let sum = sparkle_core::check::fnv1a(body.as_bytes());
    format!("{body}\nchecksum {sum:016x}\n")
}

/// The entry that holds a device's learned bus (its scale, at index [`OVERHEAD`]: written as an
/// `overhead <device> bus ...` line, which older versions keep but do not load).
const BUS: &str = "bus";

fn entries_of<C: Clock>(j: &Juggler<C>) -> Entries {
    let mut e = Entries::new();
    for d in &j.devices {
        if d.bus.weight > 0.0 {
            let mut v = vec![Bucket::default(); OVERHEAD + 1];
            v[OVERHEAD] = d.bus;
            e.insert((d.id.to_string(), BUS.to_string()), v);
        }
        for (key, m) in &d.models {
            let mut v = m.buckets.clone();
            v.push(m.overhead);
            e.insert((d.id.to_string(), model_name(*key)), v);
        }
    }
    e
}

/// Loads what was learned into `j`'s devices. A corrupt file is an `Err` with the reason (the
/// caller reports it; the next [`save`] replaces the file).
pub fn load<C: Clock>(j: &mut Juggler<C>, path: &Path, fp: &str) -> Result<Loaded, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(e.to_string()),
    };
    let (file_fp, entries) = parse(&text)?;
    let same = file_fp == fp;
    for d in &mut j.devices {
        let device = d.id.to_string();
        for ((_, name), buckets) in entries.iter().filter(|((dev, _), _)| *dev == device) {
            if name == BUS {
                if buckets[OVERHEAD].weight > 0.0 {
                    d.bus = Bucket::adopted(buckets[OVERHEAD], same);
                }
                continue;
            }
            let Some(key) = parse_model_name(name) else { continue };
            let prior = d.prior;
            let m = d.models.entry(key).or_insert_with(|| CostModel::new(prior));
            for (mine, theirs) in m.buckets.iter_mut().chain(std::iter::once(&mut m.overhead)).zip(buckets) {
                if theirs.weight > 0.0 {
                    *mine = Bucket::adopted(*theirs, same);
                }
            }
        }
    }
    Ok(if same { Loaded::Same } else { Loaded::Foreign })
}

/// What a juggler has learned, copied out so it can be saved without holding the juggler.
#[derive(Clone, Debug)]
pub struct Snapshot(Entries);

/// A copy of what `j` has learned, for [`save_snapshot`].
pub fn snapshot<C: Clock>(j: &Juggler<C>) -> Snapshot {
    Snapshot(entries_of(j))
}

/// Saves `j`'s model atomically, first merging a valid file of the same fingerprint that another
/// process may have written (per bucket, the better-measured one wins).
pub fn save<C: Clock>(j: &Juggler<C>, path: &Path, fp: &str) -> std::io::Result<()> {
    save_snapshot(snapshot(j), path, fp)
}

/// [`save`] of a [`snapshot`].
pub fn save_snapshot(snapshot: Snapshot, path: &Path, fp: &str) -> std::io::Result<()> {
    let mut entries = snapshot.0;
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok((file_fp, theirs)) = parse(&text) {
            if file_fp == fp {
                for (key, buckets) in theirs {
                    let mine = entries.entry(key).or_insert_with(|| vec![Bucket::default(); OVERHEAD + 1]);
                    for (m, t) in mine.iter_mut().zip(buckets) {
                        if t.weight > m.weight {
                            *m = t;
                        }
                    }
                }
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = render(fp, &entries);
    crate::files::write_atomic(path, |w| w.write_all(text.as_bytes()))
}

/// A model file's text parsed and written out again (buckets sorted, numbers in one format), or
/// why it is not a valid model: for the `model_file` fuzz target, which checks that this never
/// panics and that normalising twice changes nothing.
pub fn normalize(text: &str) -> Result<String, String> {
    let (fp, entries) = parse(text)?;
    Ok(render(&fp, &entries))
}

/// Where the model lives: `SPARKLE_CACHE_DIR` or the user cache directory.
pub fn default_path() -> Option<std::path::PathBuf> {
    Some(sparkle_files::cache_dir()?.join("juggler-model.txt"))
}

/// The devices a file mentions (for `sparkle model show`).
pub fn describe(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let (fp, entries) = parse(&text)?;
    let mut out = format!("fingerprint {fp}\n");
    let mut keys: Vec<_> = entries.keys().collect();
    keys.sort();
    for key in keys {
        if key.1 == BUS {
            let b = entries[key][OVERHEAD];
            out.push_str(&format!(
                "{} bus: {:.3}x the prior's bandwidth, {} samples\n",
                key.0,
                b.log_eff.exp(),
                b.weight
            ));
            continue;
        }
        let buckets = &entries[key][..BUCKETS];
        let n: f64 = buckets.iter().map(|b| b.weight).sum();
        out.push_str(&format!(
            "{} {}: {} samples in {} size buckets\n",
            key.0,
            key.1,
            n,
            buckets.iter().filter(|b| b.weight > 0.0).count()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::clock::FakeClock;
    use super::super::model::{OpDesc, Prior};
    use super::super::policy::DeviceId;
    use super::*;

    const CPU: Prior = Prior { overhead: 2e-6, peak: 2e11, half: 1e6, bandwidth: f64::INFINITY };

    fn trained(seconds: f64) -> Juggler<FakeClock> {
        let mut j = Juggler::new(FakeClock::default());
        j.add_device(DeviceId::Cpu, CPU, false);
        for n in [64, 256, 1024] {
            for _ in 0..5 {
                j.record(DeviceId::Cpu, &OpDesc::gemm(n, n, n), false, seconds * (n as f64).powi(3) / 1e9, false);
                j.record(DeviceId::Cpu, &OpDesc::gemm(8, n, n), false, seconds * (n as f64).powi(2) / 1e7, false);
            }
        }
        j
    }

    #[test]
    fn every_model_name_parses_back_and_foreign_variants_do_not() {
        for (kind, _) in KINDS {
            for v in 0..variant::NAMES.len() as u8 {
                for band in 0..BANDS {
                    let key = ModelKey { kind, variant: v, band };
                    let back = parse_model_name(&model_name(key));
                    assert_eq!(back, variant::belongs(kind, v).then_some(key), "{}", model_name(key));
                }
            }
        }
        assert_eq!(
            model_name(ModelKey { kind: OpKind::Conv2d, variant: variant::CONV_BF16 + 3, band: 2 }),
            "conv2d-3x3-bf16.2"
        );
        assert_eq!(model_name(ModelKey { kind: OpKind::Gemm, variant: variant::F16, band: 0 }), "gemm-f16");
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sparkle-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip_then_torture() {
        let d = dir("torture");
        let path = d.join("model.txt");
        let j = trained(1.0);
        save(&j, &path, "fp1").unwrap();
        let op = OpDesc::gemm(256, 256, 256);
        let want = j.model_of(DeviceId::Cpu, &op).unwrap().predict(&op, 0.0);
        let mut fresh = trained(0.0);
        fresh.devices[0].models.clear();
        assert_eq!(load(&mut fresh, &path, "fp1"), Ok(Loaded::Same));
        let got = fresh.model_of(DeviceId::Cpu, &op).unwrap().predict(&op, 0.0);
        assert!((got / want - 1.0).abs() < 1e-9);
        // The skinny band's model is its own, and round-trips too.
        let skinny = OpDesc::gemm(8, 1024, 1024);
        assert_eq!(skinny.band(), 2);
        let (want, got) =
            (j.model_of(DeviceId::Cpu, &skinny).unwrap(), fresh.model_of(DeviceId::Cpu, &skinny).unwrap());
        assert!(want.confidence(&skinny) > 0.0 && want.predict(&skinny, 0.0) == got.predict(&skinny, 0.0));
        assert_ne!(want.predict(&skinny, 0.0), j.model_of(DeviceId::Cpu, &op).unwrap().predict(&skinny, 0.0));
        let good = std::fs::read(&path).unwrap();
        // Truncated, flipped, garbage, empty: reported, never trusted.
        for bad in [&good[..good.len() / 2], &[b'x'; 40][..], b"", &good[..good.len() - 3]] {
            std::fs::write(&path, bad).unwrap();
            let mut j = trained(0.0);
            assert!(load(&mut j, &path, "fp1").is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x04;
        std::fs::write(&path, &flipped).unwrap();
        assert!(load(&mut trained(0.0), &path, "fp1").is_err());
        // A save over a corrupt file replaces it with a valid one.
        save(&j, &path, "fp1").unwrap();
        assert_eq!(load(&mut trained(0.0), &path, "fp1"), Ok(Loaded::Same));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_learned_overhead_is_kept_and_version_1_files_still_load() {
        let d = dir("overhead");
        let path = d.join("model.txt");
        // Tiny ops on a CPU whose fixed cost is a quarter of the prior's: the overhead is learned.
        let mut j = trained(1.0);
        let tiny = OpDesc::gemm(4, 4, 4);
        for _ in 0..40 {
            j.record(DeviceId::Cpu, &tiny, false, 0.25 * CPU.overhead, false);
        }
        let model = j.model_of(DeviceId::Cpu, &tiny).unwrap();
        let learned = model.overhead();
        assert!(learned < 0.5 * CPU.overhead, "{learned}");
        let predicted = model.predict(&tiny, 0.0);
        assert!((predicted / (0.25 * CPU.overhead) - 1.0).abs() < 0.1, "{predicted}");
        save(&j, &path, "fp1").unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("\noverhead cpu gemm "));
        let mut fresh = trained(0.0);
        fresh.devices[0].models.clear();
        load(&mut fresh, &path, "fp1").unwrap();
        assert_eq!(fresh.model_of(DeviceId::Cpu, &tiny).unwrap().overhead(), learned);
        // A version-1 file (no overhead lines) loads, with the prior's overhead.
        let body = format!("{HEADER_V1}\nfingerprint fp1\nmodel cpu gemm 20 -1e0 5");
        let v1 = format!("{body}\nchecksum {:016x}\n", sparkle_core::check::fnv1a(body.as_bytes()));
        std::fs::write(&path, v1).unwrap();
        let mut old = trained(0.0);
        old.devices[0].models.clear();
        assert_eq!(load(&mut old, &path, "fp1"), Ok(Loaded::Same));
        assert_eq!(old.model_of(DeviceId::Cpu, &tiny).unwrap().overhead(), CPU.overhead);
        // A size bucket past the last is corrupt, not an overhead.
        let body = format!("{HEADER}\nfingerprint fp1\nmodel cpu gemm {BUCKETS} -1e0 5");
        let bad = format!("{body}\nchecksum {:016x}\n", sparkle_core::check::fnv1a(body.as_bytes()));
        assert!(normalize(&bad).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_learned_bus_is_kept() {
        let d = dir("bus");
        let path = d.join("model.txt");
        let gpu = Prior { overhead: 20e-6, peak: 4e13, half: 1e9, bandwidth: 2e10 };
        let fresh = || {
            let mut j = Juggler::new(FakeClock::default());
            j.add_device(DeviceId::Cpu, CPU, false);
            j.add_device(DeviceId::Vulkan(0), gpu, true);
            j
        };
        // Copy-bound runs at 5 GB/s against the prior's 20.
        let mut j = fresh();
        let skinny = OpDesc::gemm(1, 4096, 4096);
        for _ in 0..20 {
            j.record(DeviceId::Vulkan(0), &skinny, false, 20e-6 + skinny.bytes / 5e9, false);
        }
        let learned = j.copy_seconds(DeviceId::Vulkan(0), 1e9);
        assert!(learned > 0.1, "{learned}");
        save(&j, &path, "fp").unwrap();
        assert!(describe(&path).unwrap().contains("vulkan:0 bus: "), "{}", describe(&path).unwrap());
        let mut back = fresh();
        assert_eq!(load(&mut back, &path, "fp"), Ok(Loaded::Same));
        assert_eq!(back.copy_seconds(DeviceId::Vulkan(0), 1e9), learned);
        // Not the prior's: a fresh juggler copies 1 GB in 0.05 s.
        assert!((fresh().copy_seconds(DeviceId::Vulkan(0), 1e9) - 0.05).abs() < 1e-12);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_new_fingerprint_keeps_the_old_model_as_a_weak_prior() {
        let d = dir("fp");
        let path = d.join("model.txt");
        save(&trained(1.0), &path, "old-driver").unwrap();
        let mut j = Juggler::new(FakeClock::default());
        j.add_device(DeviceId::Cpu, CPU, false);
        assert_eq!(load(&mut j, &path, "new-driver"), Ok(Loaded::Foreign));
        let op = OpDesc::gemm(256, 256, 256);
        let m = j.model_of(DeviceId::Cpu, &op).unwrap();
        assert!(m.confidence(&op) <= 1.0, "weak prior");
        assert!(m.confidence(&op) > 0.0, "but not wiped");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn concurrent_writers_lose_nothing_that_matters() {
        let d = dir("concurrent");
        let path = d.join("model.txt");
        let mut gemm_only = trained(1.0);
        let mut conv_only = Juggler::new(FakeClock::default());
        conv_only.add_device(DeviceId::Cpu, CPU, false);
        let g = sparkle_core::Conv2dParams::new(1, 16, 16, 16, 16, 3, 3).validate().unwrap();
        for _ in 0..5 {
            conv_only.record(DeviceId::Cpu, &OpDesc::conv2d(&g), false, 1e-4, false);
        }
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| save(&gemm_only, &path, "fp").unwrap());
                s.spawn(|| save(&conv_only, &path, "fp").unwrap());
            }
        });
        // One more save each, as the processes would do on their next run: both kinds survive.
        save(&conv_only, &path, "fp").unwrap();
        save(&gemm_only, &path, "fp").unwrap();
        gemm_only.devices[0].models.clear();
        assert_eq!(load(&mut gemm_only, &path, "fp"), Ok(Loaded::Same));
        let conv = gemm_only.model_of(DeviceId::Cpu, &OpDesc::conv2d(&g)).unwrap();
        assert!(conv.confidence(&OpDesc::conv2d(&g)) > 0.0, "conv model survived");
        let gemm = gemm_only.model_of(DeviceId::Cpu, &OpDesc::gemm(256, 256, 256)).unwrap();
        assert!(gemm.confidence(&OpDesc::gemm(256, 256, 256)) > 0.0, "gemm model survived");
        let _ = std::fs::remove_dir_all(&d);
    }
}
