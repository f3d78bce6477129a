//! `sparkle calibrate`: measure every device up front so the juggler starts from a good model.

use std::process::ExitCode;

use crate::Failure;
use sparkle_std::juggler::DeviceId;

pub fn run(max: usize, small: bool) -> Result<ExitCode, Failure> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // The CPU's measured blocking first, afresh: the handle below (and every later process) uses it.
    if sparkle_std::cpu::backend::blocking_override().is_none() {
        let t = sparkle_std::cpu::tune::retune(sparkle_std::cpu::isa::gemm_kernel()?);
        let [one, all] = &t.few_rows;
        let winograd = sparkle_std::cpu::tune::winograd_from(t.convs.winograd_min_channels);
        println!(
            "calibrate: CPU few-row GEMMs take kc {} on 1 thread, {} on {}; 3x3 NCHW convs run as Winograd {winograd} \
             (`sparkle devices` shows the measurements)",
            one.kc, all.kc, all.threads
        );
    }
    // Each Vulkan device's kernel choices, afresh: f32 tiles and every dtype's tile rules.
    for d in sparkle_std::vk::devices().unwrap_or_default() {
        let Ok(ctx) = sparkle_std::vk::Context::new(d.index) else { continue };
        match ctx.retune() {
            Ok(t) => println!(
                "calibrate: vulkan:{} f32 GEMMs on 128x128 vec4 tiles from {} tiles of C",
                d.index, t.min_vec4_tiles
            ),
            Err(e) => println!("calibrate: vulkan:{} f32 autotune failed ({e})", d.index),
        }
        for dt in sparkle_std::vk::TileDtype::ALL {
            if let Err(e) = ctx.retune_tiles(dt) {
                println!("calibrate: vulkan:{} {} tile autotune failed ({e})", d.index, dt.name());
            } else if let Some(line) = crate::devices::tile_line(&ctx, dt) {
                println!("calibrate: vulkan:{} {} GEMM tiles: {line}", d.index, dt.name());
            }
        }
    }
    // The same handle and model every op uses: each measurement below is an op pinned on a device,
    // which the handle learns from (a device's first op of a kind is set-up, not learned).
    let sparkle = sparkle_std::Sparkle::new()?;
    if let Some(Err(why)) = sparkle.model_status() {
        eprintln!("sparkle: ignoring the saved model ({why}); it will be replaced");
    }
    let path = sparkle.model_path().ok_or("no cache directory on this system; set SPARKLE_CACHE_DIR")?.to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
    let devices = sparkle.devices();
    let gemms: Vec<usize> = [16usize, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]
        .into_iter()
        .filter(|&n| n <= max)
        .collect();
    let mut convs = sparkle_std::demo::layers(sparkle_std::demo::Layers::Small);
    if !small {
        convs.extend(sparkle_std::demo::layers(sparkle_std::demo::Layers::ResNet50));
    }
    let steps = ((gemms.len() + convs.len()) * devices.len()) as u64;
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut measured = 0;
    'sweep: for &dev in &devices {
        for &n in &gemms {
            if stop.load(Ordering::SeqCst) {
                break 'sweep;
            }
            bar.set_message(format!("{dev} gemm {n}^3"));
            let a = vec![0.5f32; n * n];
            let mut c = vec![0.0f32; n * n];
            // A cold CPU run (scratch pages, caches) is not learned: warm up on the CPU path
            // directly; a GPU's first op is set-up, which the handle does not learn either.
            if dev == DeviceId::Cpu {
                let av = sparkle_core::MatRef::row_major(&a, n, n)?;
                let cv = sparkle_core::MatMut::row_major(&mut c, n, n)?;
                sparkle.cpu().gemm(1.0, av, av, 0.0, cv, &sparkle_core::Epilogue::NONE)?;
            }
            for _ in 0..3 {
                let av = sparkle_core::MatRef::row_major(&a, n, n)?;
                let cv = sparkle_core::MatMut::row_major(&mut c, n, n)?;
                sparkle.gemm_on(dev, 1.0, av, av, 0.0, cv, &sparkle_core::Epilogue::NONE)?;
            }
            measured += 1;
            bar.inc(1);
        }
        for (name, p) in &convs {
            if stop.load(Ordering::SeqCst) {
                break 'sweep;
            }
            bar.set_message(format!("{dev} {name}"));
            let g = p.validate()?;
            let x = vec![0.25f32; g.input_len()];
            let w = vec![0.125f32; g.weight_len()];
            let mut y = vec![0.0f32; g.output_len()];
            if dev == DeviceId::Cpu {
                sparkle.cpu().conv2d(&g, &x, &w, &sparkle_core::Epilogue::NONE, &mut y)?;
            }
            for _ in 0..3 {
                sparkle.conv2d_on(dev, &g, &x, &w, &sparkle_core::Epilogue::NONE, &mut y)?;
            }
            measured += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    sparkle.save().map_err(|e| format!("{}: {e}", path.display()))?;
    let how = if stop.load(Ordering::SeqCst) { "interrupted; kept" } else { "measured" };
    println!("calibrate: {how} {measured} of {steps} ops; model saved to {}", path.display());
    Ok(ExitCode::SUCCESS)
}
