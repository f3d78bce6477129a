//! The replay benchmark on the recordings checked in under `benches/juggler/` (this machine's
//! kind with lavapipe, and an H200 host's CPU and GPU): the juggler's targets as tests.

use sparkle_std::juggler::replay::{run, Recording};

fn recording(name: &str) -> Recording {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/juggler").join(name);
    Recording::from_csv(&std::fs::read_to_string(&path).expect("recording")).expect("valid recording")
}

#[test]
fn targets_hold_on_every_recording() {
    for name in ["samples-zen4-2c-lavapipe.csv", "samples-xeon16-h200.csv"] {
        let out = run(&recording(name), None);
        let get = |t: &str, p: &str| out.iter().find(|o| o.trace == t && o.policy == p).unwrap().clone();
        for t in ["T1", "T2", "T3", "T4"] {
            let (s, starpu) = (get(t, "sparkle"), get(t, "starpu-dmda"));
            assert!(s.regret_pct <= 3.0, "{name} {t}: regret {s:?}");
            assert!(s.regret_pct < starpu.regret_pct, "{name} {t}: {s:?} vs {starpu:?}");
        }
        let t4 = get("T4", "sparkle");
        assert!(t4.first_pick_accuracy >= 0.9, "{name}: {t4:?}");
        let (s3, p3) = (get("T3", "sparkle"), get("T3", "starpu-dmda"));
        assert!(s3.calls_to_converge <= p3.calls_to_converge, "{name}: {s3:?} vs {p3:?}");
    }
}
