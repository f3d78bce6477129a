//! `sparkle demo`: the ResNet-50 layers through one Sparkle handle, every layer checked against the
//! oracle on every device.

use std::process::ExitCode;

use crate::Failure;
use sparkle_std::juggler::store;

pub fn run(small: bool) -> Result<ExitCode, Failure> {
    let sparkle = sparkle_std::Sparkle::new()?;
    let path = sparkle.model_path().map(|p| p.display().to_string()).unwrap_or_default();
    match sparkle.model_status() {
        Some(Ok(store::Loaded::Same)) => println!("juggler: model loaded from {path}"),
        Some(Ok(store::Loaded::Foreign)) => println!("juggler: model from another machine/driver kept as a weak prior"),
        Some(Err(why)) => println!("juggler: ignoring the saved model ({why}); it will be replaced"),
        _ => println!("juggler: no saved model yet; starting from priors"),
    }
    let which = if small { sparkle_std::demo::Layers::Small } else { sparkle_std::demo::Layers::ResNet50 };
    let gpu = sparkle.gpus().into_iter().next();
    println!(
        "sparkle demo: conv + bias + ReLU at batch 1 through one Sparkle handle (devices {:?}), every layer checked against the f64 oracle on every device\n",
        sparkle.devices()
    );
    println!(
        "{:<24} {:<14} {:<10} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10}  ok",
        "layer", "path", "device", "pred ms", "ms", "GFLOPS", "cpu ms", "gpu ms", "max err"
    );
    let reports = sparkle_std::demo::run(&sparkle, which).map_err(|e| -> Failure { e.to_string().into() })?;
    let mut all_ok = true;
    let (mut total, mut total_cpu, mut total_gpu) = (0.0, 0.0, 0.0);
    for r in &reports {
        println!(
            "{:<24} {:<14} {:<10} {:>10.3} {:>10.3} {:>8.1} {:>10.3} {:>10} {:>10.2e}  {}",
            r.name,
            r.path.name(),
            r.device.to_string(),
            r.predicted * 1e3,
            r.seconds * 1e3,
            r.gflops(),
            r.cpu_seconds * 1e3,
            r.gpu_seconds.map_or("-".to_string(), |t| format!("{:.3}", t * 1e3)),
            r.max_error,
            if r.passed() { "PASS" } else { "FAIL" }
        );
        all_ok &= r.passed();
        total += r.seconds;
        total_cpu += r.cpu_seconds;
        total_gpu += r.gpu_seconds.unwrap_or(f64::NAN);
    }
    print!("\ntotal: juggler {:.2} ms, always-CPU {:.2} ms", total * 1e3, total_cpu * 1e3);
    match &gpu {
        Some(g) => println!(", always-GPU {:.2} ms ({}, copies included)", total_gpu * 1e3, g.name),
        None => println!(" (no GPU for always-GPU; a CPU-type Vulkan device such as lavapipe is not placed on)"),
    }
    match sparkle.save() {
        Ok(()) => println!("juggler: model saved to {path}"),
        Err(e) => println!("juggler: could not save the model ({e})"),
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
