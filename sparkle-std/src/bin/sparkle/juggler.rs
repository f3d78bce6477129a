//! `sparkle juggler record|replay`: the juggler's replay benchmark and its recordings.

use std::process::ExitCode;

use crate::Failure;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum JugglerCommand {
    /// Measure GEMMs (square, skinny, tall) and conv2d layers (ResNet-50's and MobileNet v1's,
    /// at each batch size) on the CPU and the preferred Vulkan device through one Sparkle handle
    /// (pinned; host tensors, copies included) and write a recording for `replay`.
    Record {
        /// Output CSV.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Largest GEMM side to measure (tall GEMMs go to 16x this in M).
        #[arg(long, default_value_t = 2048)]
        max: usize,
        /// Conv2d batch sizes, comma-separated (empty: GEMMs only).
        #[arg(long, default_value = "1,8,32")]
        batches: String,
    },
    /// Replay a recording through every policy (oracle, fixed rules, StarPU's dmda with its
    /// history and its regression model, epsilon-greedy, Sparkle) on traces T1-T4, over seeds.
    Replay {
        /// Recording CSV (from `record`).
        #[arg(long)]
        samples: std::path::PathBuf,
        /// T1, T2, T3, T4 or all.
        #[arg(long, default_value = "all")]
        trace: String,
        /// Seeds (each draws its own trace shapes and noise); rows show the mean and the range.
        #[arg(long, default_value_t = 8)]
        seeds: u64,
        /// One JSON array of records (one per trace and policy) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: JugglerCommand) -> Result<ExitCode, Failure> {
    use sparkle_std::juggler::replay;
    match cmd {
        JugglerCommand::Record { out, max, batches } => {
            let batches: Vec<usize> = batches
                .split(',')
                .filter(|b| !b.trim().is_empty())
                .map(|b| b.trim().parse::<usize>().ok().filter(|&b| b > 0))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("--batches {batches}: expected sizes of at least 1, comma-separated"))?;
            if max == 0 {
                return Err("--max must be at least 1".into());
            }
            if sparkle_std::bench::juggler_ops(max, &batches).len() < 2 {
                return Err(format!("--max {max} with no conv batch leaves fewer than 2 ops to record").into());
            }
            let r = sparkle_std::bench::juggler_recording(max, &batches, &mut |op| eprintln!("recorded {op}"))?;
            let csv = r.to_csv();
            sparkle_std::files::write_atomic(&out, |w| w.write_all(csv.as_bytes()))
                .map_err(|e| format!("{}: {e}", out.display()))?;
            println!("wrote {} samples to {}", r.samples.len(), out.display());
        }
        JugglerCommand::Replay { samples, trace, seeds, json } => {
            let text = std::fs::read_to_string(&samples).map_err(|e| format!("{}: {e}", samples.display()))?;
            let r = replay::Recording::from_csv(&text).map_err(|e| format!("{}: {e}", samples.display()))?;
            let only = match trace.as_str() {
                "all" => None,
                t @ ("T1" | "T2" | "T3" | "T4") => Some(t),
                t => return Err(format!("--trace {t}: expected T1, T2, T3, T4 or all").into()),
            };
            if seeds == 0 {
                return Err("--seeds must be at least 1".into());
            }
            let on = replay::replayed_on(&r).map_err(|e| format!("{}: {e}", samples.display()))?;
            let out = replay::run(&r, only, seeds).map_err(|e| format!("{}: {e}", samples.display()))?;
            let opt = |v: Option<f64>, digits: usize| v.map_or("null".to_string(), |v| format!("{v:.digits$}"));
            if json {
                let items: Vec<String> = out
                    .iter()
                    .map(|o| {
                        format!(
                            concat!(
                                r#"{{"trace":"{}","policy":"{}","seeds":{},"regret_pct_mean":{:.3},"regret_pct_min":{:.3},"#,
                                r#""regret_pct_max":{:.3},"first_pick_accuracy":{:.3},"pick_accuracy_heldout":{},"#,
                                r#""median_pred_error_pct":{},"calls_to_converge":{:.1},"decision_ns_p99":{:.0}}}"#
                            ),
                            o.trace,
                            o.policy,
                            seeds,
                            o.regret_pct_mean,
                            o.regret_pct_min,
                            o.regret_pct_max,
                            o.first_pick_accuracy,
                            opt(o.pick_accuracy_heldout, 3),
                            opt(o.median_pred_error_pct, 1),
                            o.calls_to_converge,
                            o.decision_ns_p99
                        )
                    })
                    .collect();
                println!("[{}]", items.join(",\n "));
            } else {
                println!(
                    "replay of {} ({}) on {on}, {seeds} seed(s): mean regret, and its range over seeds",
                    samples.display(),
                    r.machine
                );
                println!(
                    "{:<6} {:<16} {:>9} {:>17} {:>10} {:>10} {:>10} {:>9} {:>11}",
                    "trace",
                    "policy",
                    "regret %",
                    "min..max",
                    "1st pick",
                    "held-out",
                    "pred err%",
                    "converge",
                    "decide p99"
                );
                for o in &out {
                    println!(
                        "{:<6} {:<16} {:>9.2} {:>17} {:>10.3} {:>10} {:>10} {:>9.0} {:>8.0} ns",
                        o.trace,
                        o.policy,
                        o.regret_pct_mean,
                        format!("{:.2}..{:.2}", o.regret_pct_min, o.regret_pct_max),
                        o.first_pick_accuracy,
                        opt(o.pick_accuracy_heldout, 3).replace("null", "-"),
                        opt(o.median_pred_error_pct, 1).replace("null", "-"),
                        o.calls_to_converge,
                        o.decision_ns_p99
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
