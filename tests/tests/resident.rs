//! Resident tensors and asynchronous submission on every Vulkan device (lavapipe in CI): chains
//! of ops on device memory against the f64 oracle, several submissions in flight, timestamps,
//! and the errors a bad op gets before anything is recorded.
#![cfg(feature = "vulkan")]

use sparkle_core::check::{gpu_tolerance, max_error, tolerance};
use sparkle_core::conv::reference::conv2d_reference_f64;
use sparkle_core::gemm::reference::gemm_reference_f64;
use sparkle_core::{Activation, Bias, Conv2dParams, Epilogue, MatRef, Padding};
use sparkle_tests::fill;
use sparkle_vk::{Context, TensorBias, TensorMat, Tuning};

/// One context per device, each with the given tuning (so both kernels are reached).
fn contexts(min_vec4_tiles: u32) -> Vec<Context> {
    let all = sparkle_tests::vk_contexts();
    for ctx in &all {
        // Winograd wherever it applies when the vec4 kernel is forced, never otherwise.
        let min_winograd_tiles = if min_vec4_tiles == 0 { 0 } else { u32::MAX };
        ctx.set_tuning(Tuning { min_vec4_tiles, min_winograd_tiles });
    }
    all
}

fn filled(len: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0; len];
    fill(&mut v, seed);
    v
}

#[test]
fn a_conv_chain_stays_on_the_device_and_matches_the_oracle() {
    let g = Conv2dParams::new(2, 8, 10, 9, 8, 3, 3).pad(Padding::uniform(1)).validate().unwrap();
    let (x, w1, w2, b1) =
        (filled(g.input_len(), 1), filled(g.weight_len(), 2), filled(g.weight_len(), 3), filled(8, 4));
    let epi1 = Epilogue { bias: Bias::Row(&b1), activation: Activation::Relu };
    let epi2 = Epilogue::activation(Activation::Tanh);
    let mut y = vec![0.0; g.output_len()];
    let mut want = vec![0.0; g.output_len()];
    conv2d_reference_f64(&g, &x, &w1, &epi1, &mut y).unwrap();
    // The device keeps the intermediate in f32, so the oracle's second layer reads it so too.
    let y: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    conv2d_reference_f64(&g, &y, &w2, &epi2, &mut want).unwrap();
    for min_vec4_tiles in [0, u32::MAX] {
        for ctx in contexts(min_vec4_tiles) {
            let (xt, w1t, w2t, b1t) =
                (ctx.upload(&x).unwrap(), ctx.upload(&w1).unwrap(), ctx.upload(&w2).unwrap(), ctx.upload(&b1).unwrap());
            let (yt, zt) = (ctx.zeros(g.output_len()).unwrap(), ctx.zeros(g.output_len()).unwrap());
            let mut rec = ctx.record().unwrap();
            rec.conv2d(&g, &xt, &w1t, Some(&b1t), Activation::Relu, &yt).unwrap();
            rec.conv2d(&g, &yt, &w2t, None, Activation::Tanh, &zt).unwrap();
            let timing = rec.submit().unwrap().wait().unwrap();
            let got = ctx.download(&zt).unwrap();
            let (err, at) = max_error(&got, &want);
            assert!(err <= 4.0 * tolerance(g.gemm_dims().2) + 1e-5, "{}: error {err:e} at {at:?}", ctx.info().name);
            if let Some(d) = timing.device_seconds {
                assert!(d > 0.0 && d <= timing.wall_seconds * 1.5 + 1e-3, "{timing:?}");
            }
        }
    }
}

#[test]
fn resident_gemm_matches_the_oracle_in_every_layout() {
    let (m, n, k) = (132, 68, 200);
    let (a, b, c0, bias) = (filled(m * k, 5), filled(k * n, 6), filled(m * n, 7), filled(n, 8));
    for min_vec4_tiles in [0, u32::MAX, 16] {
        for ctx in contexts(min_vec4_tiles) {
            let (at, bt, biast) = (ctx.upload(&a).unwrap(), ctx.upload(&b).unwrap(), ctx.upload(&bias).unwrap());
            for (ta, tb) in [(false, false), (true, true)] {
                let av = if ta { MatRef::col_major(&a, m, k) } else { MatRef::row_major(&a, m, k) }.unwrap();
                let bv = if tb { MatRef::col_major(&b, k, n) } else { MatRef::row_major(&b, k, n) }.unwrap();
                let epi = Epilogue { bias: Bias::Col(&bias), activation: Activation::Gelu };
                let mut want = vec![0.0; m * n];
                let c0v = MatRef::row_major(&c0, m, n).unwrap();
                gemm_reference_f64(0.5, av, bv, -1.25, Some(c0v), &epi, &mut want).unwrap();
                let ct = ctx.upload(&c0).unwrap();
                let tam = if ta { TensorMat::col_major(&at, m, k) } else { TensorMat::row_major(&at, m, k) }.unwrap();
                let tbm = if tb { TensorMat::col_major(&bt, k, n) } else { TensorMat::row_major(&bt, k, n) }.unwrap();
                let mut rec = ctx.record().unwrap();
                let cm = TensorMat::row_major(&ct, m, n).unwrap();
                rec.gemm(0.5, tam, tbm, -1.25, cm, TensorBias::Col(&biast), Activation::Gelu).unwrap();
                rec.submit().unwrap().wait().unwrap();
                let (err, at_) = max_error(&ctx.download(&ct).unwrap(), &want);
                assert!(err <= gpu_tolerance(k), "{} {ta} {tb}: error {err:e} at {at_:?}", ctx.info().name);
            }
        }
    }
}

#[test]
fn several_submissions_in_flight_run_in_order() {
    let (m, k) = (64, 64);
    let a = filled(m * k, 9);
    for ctx in contexts(0) {
        let at = ctx.upload(&a).unwrap();
        let mats: Vec<_> = (0..4).map(|_| ctx.zeros(m * k).unwrap()).collect();
        // t1 = A*A, t2 = t1*A, t3 = t2*A, each its own submission, none waited for until the end.
        let mut pending = Vec::new();
        for i in 1..4 {
            let src = if i == 1 { &at } else { &mats[i - 1] };
            let mut rec = ctx.record().unwrap();
            let (x, y) = (TensorMat::row_major(src, m, k).unwrap(), TensorMat::row_major(&at, k, k).unwrap());
            rec.gemm(
                1.0 / 16.0,
                x,
                y,
                0.0,
                TensorMat::row_major(&mats[i], m, k).unwrap(),
                TensorBias::None,
                Activation::None,
            )
            .unwrap();
            pending.push(rec.submit().unwrap());
        }
        for p in pending.into_iter().rev() {
            p.wait().unwrap();
        }
        let mut want = a.clone();
        let mut want64 = Vec::new();
        for _ in 0..3 {
            let mut next = vec![0.0; m * k];
            let (x, y) = (MatRef::row_major(&want, m, k).unwrap(), MatRef::row_major(&a, k, k).unwrap());
            gemm_reference_f64(1.0 / 16.0, x, y, 0.0, None, &Epilogue::NONE, &mut next).unwrap();
            want = next.iter().map(|&v| v as f32).collect();
            want64 = next;
        }
        let want = want64;
        let (err, at_) = max_error(&ctx.download(&mats[3]).unwrap(), &want);
        assert!(err <= 6.0 * tolerance(k) + 1e-5, "{}: error {err:e} at {at_:?}", ctx.info().name);
    }
}

#[test]
fn bad_ops_are_errors_before_anything_runs() {
    let g = Conv2dParams::new(1, 4, 6, 6, 4, 3, 3).validate().unwrap();
    for ctx in contexts(0) {
        let x = ctx.upload(&filled(g.input_len(), 1)).unwrap();
        let w = ctx.upload(&filled(g.weight_len(), 2)).unwrap();
        let y = ctx.zeros(g.output_len()).unwrap();
        let short = ctx.zeros(g.output_len() - 1).unwrap();
        let mut rec = ctx.record().unwrap();
        assert!(rec.conv2d(&g, &x, &w, None, Activation::Relu, &short).is_err(), "output too short");
        assert!(rec.conv2d(&g, &x, &w, Some(&x), Activation::Relu, &y).is_err(), "bias of the wrong length");
        let sq = ctx.zeros(16).unwrap();
        let v = TensorMat::row_major(&sq, 4, 4).unwrap();
        assert!(rec.gemm(1.0, v, v, 0.0, v, TensorBias::None, Activation::None).is_err(), "C is also A and B");
        assert!(TensorMat::row_major(&sq, 4, 5).is_err(), "view past the tensor");
        assert!(TensorMat::new(&sq, usize::MAX, 2, usize::MAX, 1).is_err(), "overflowing view");
        let leaky = Activation::LeakyRelu { slope: f32::NAN };
        assert!(rec.conv2d(&g, &x, &w, None, leaky, &y).is_err(), "NaN slope");
        // A tensor of another context (another logical device) is refused.
        let other = Context::new(ctx.info().index).unwrap();
        let foreign = other.zeros(g.output_len()).unwrap();
        assert!(rec.conv2d(&g, &x, &w, None, Activation::Relu, &foreign).is_err(), "foreign tensor");
        assert!(ctx.download(&foreign).is_err());
        // Nothing was recorded by the failed calls: the recording still submits and runs.
        rec.conv2d(&g, &x, &w, None, Activation::Relu, &y).unwrap();
        rec.submit().unwrap().wait().unwrap();
        let mut want = vec![0.0; g.output_len()];
        let (xh, wh) = (filled(g.input_len(), 1), filled(g.weight_len(), 2));
        conv2d_reference_f64(&g, &xh, &wh, &Epilogue::activation(Activation::Relu), &mut want).unwrap();
        let (err, _) = max_error(&ctx.download(&y).unwrap(), &want);
        assert!(err <= gpu_tolerance(36), "{err:e}");
    }
}

#[test]
fn an_allocation_larger_than_the_device_is_an_error() {
    for ctx in contexts(0) {
        let heap = ctx.info().device_local_bytes as usize;
        // Twice the device's memory, and a length whose byte size overflows.
        for len in [heap / 2, usize::MAX / 2] {
            match ctx.zeros(len) {
                Err(e) => eprintln!("{}: zeros({len}) -> {e}", ctx.info().name),
                Ok(t) => panic!("{}: zeros({len}) gave a tensor of {}", ctx.info().name, t.len()),
            }
        }
        // The context still works afterwards.
        assert_eq!(ctx.download(&ctx.upload(&[1.0, 2.0]).unwrap()).unwrap(), vec![1.0, 2.0]);
    }
}

#[test]
fn threads_submitting_and_waiting_on_one_context_at_once() {
    // Several threads record, submit and wait on one context concurrently (as the Sparkle
    // handle's callers do). Each submission is chained after the context's latest one while
    // other threads wait on theirs: this once panicked inside vulkano (a waited-on future lost
    // its queue between two of vulkano's checks) and took the process down.
    for ctx in contexts(u32::MAX) {
        let (m, n, k) = (24, 20, 16);
        let (a, b) = (filled(m * k, 1), filled(k * n, 2));
        let mut want = vec![0.0; m * n];
        let (av, bv) = (MatRef::row_major(&a, m, k).unwrap(), MatRef::row_major(&b, k, n).unwrap());
        gemm_reference_f64(1.0, av, bv, 0.0, None, &Epilogue::NONE, &mut want).unwrap();
        let (at, bt) = (ctx.upload(&a).unwrap(), ctx.upload(&b).unwrap());
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..400 {
                        let c = ctx.zeros(m * n).unwrap();
                        let mut rec = ctx.record().unwrap();
                        let (a, b) =
                            (TensorMat::row_major(&at, m, k).unwrap(), TensorMat::row_major(&bt, k, n).unwrap());
                        let cm = TensorMat::row_major(&c, m, n).unwrap();
                        rec.gemm(1.0, a, b, 0.0, cm, TensorBias::None, Activation::None).unwrap();
                        let out = rec.download(&c).unwrap();
                        rec.submit().unwrap().wait().unwrap();
                        let mut got = vec![0.0; m * n];
                        out.read(&mut got).unwrap();
                        let (err, at) = max_error(&got, &want);
                        assert!(err <= gpu_tolerance(k), "{err:e} at {at:?}");
                    }
                });
            }
        });
    }
}
