//! `sparkle stream`: the demo's layers as a stream through one Sparkle handle, every policy
//! beside the juggler.

use std::process::ExitCode;

use crate::Failure;

/// `sparkle stream`.
pub fn run(batch: usize, rounds: usize, small: bool, json: bool) -> Result<ExitCode, Failure> {
    use sparkle_std::stream;
    if batch == 0 || rounds == 0 {
        return Err("--batch and --rounds must be at least 1".into());
    }
    // Every device by name, so each can be timed in the fixed assignments; the juggler still
    // places nothing on a CPU-type Vulkan device beside the CPU path.
    use sparkle_std::sparkle::DeviceSel;
    let mut devices = vec![DeviceSel::Cpu];
    devices.extend(sparkle_std::vk::devices().unwrap_or_default().iter().map(|d| DeviceSel::VulkanIndex(d.index)));
    let sparkle = sparkle_std::Sparkle::builder().devices(&devices).build()?;
    let which = if small { sparkle_std::demo::Layers::Small } else { sparkle_std::demo::Layers::ResNet50 };
    let layers = stream::demo_layers(which, batch)?;
    let c = stream::compare(&sparkle, &layers, rounds)?;
    let best = c.best_fixed().ok_or("no fixed run")?;
    let (best_policy, best_fixed) = (best.policy.clone(), best.report.seconds);
    if json {
        let runs: Vec<serde_json::Value> = c
            .runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "policy": r.policy, "seconds": r.report.seconds, "fallbacks": r.report.fallbacks,
                    "uploaded_bytes": r.report.uploaded, "downloaded_bytes": r.report.downloaded,
                    "placements": r.report.placements.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let out = serde_json::json!({
            "batch": batch, "rounds": rounds,
            "devices": c.devices.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "layers": layers.iter().map(|l| l.name).collect::<Vec<_>>(),
            "layer_seconds": c.seconds,
            "balanced_fixed": c.balanced.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "best_fixed_policy": best_policy,
            "juggler_over_best_fixed": c.juggler().map(|r| r.report.seconds / best_fixed),
            "runs": runs, "worst_error_over_tolerance": c.worst_error_ratio,
        });
        println!("{out}");
    } else {
        println!(
            "stream: {} layers x {rounds} rounds at batch {batch} through one Sparkle handle from {} threads; devices: {}",
            layers.len(),
            stream::default_workers(&sparkle),
            {
                let names: Vec<String> = c.devices.iter().map(|d| d.to_string()).collect();
                names.join(", ")
            }
        );
        for (l, t) in layers.iter().zip(&c.seconds) {
            let times: Vec<String> = t.iter().map(|s| format!("{:9.3} ms", s * 1e3)).collect();
            println!("  {:<26} {}", l.name, times.join(" "));
        }
        let picks: Vec<String> = c.balanced.iter().map(|d| d.to_string()).collect();
        println!("balanced fixed assignment (from those times): {}", picks.join(", "));
        for r in &c.runs {
            let mut count: std::collections::BTreeMap<String, usize> = Default::default();
            for d in &r.report.placements {
                *count.entry(d.to_string()).or_default() += 1;
            }
            println!(
                "{:<16} {:9.3} ms  ({:.2}x the best fixed)  up {:.1} MB, down {:.1} MB  ops per device {:?}",
                r.policy,
                r.report.seconds * 1e3,
                r.report.seconds / best_fixed,
                r.report.uploaded as f64 / 1e6,
                r.report.downloaded as f64 / 1e6,
                count
            );
        }
        println!("best fixed: {best_policy}; largest error over the oracle's tolerance: {:.3}", c.worst_error_ratio);
    }
    // Each output is held to the tolerance of the backend that computed it.
    if c.worst_error_ratio > 1.0 {
        return Err(format!("an output is off by {:.2}x the tolerance", c.worst_error_ratio).into());
    }
    Ok(ExitCode::SUCCESS)
}
