//! The `sparkle` binary end to end: .npy round trips against the oracle, every bad input an
//! exit code 2 with one line on stderr and no output file, `--help` everywhere, and the demo.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sparkle_core::check::{gpu_tolerance, max_error, tolerance, Backend};
use sparkle_core::conv::reference::conv2d_reference_f64;
use sparkle_core::gemm::reference::gemm_reference_f64;
use sparkle_core::{Activation, Conv2dParams, Epilogue, MatRef, Padding, Precision, TensorLayout};
use sparkle_std::demo::fill;
use sparkle_std::npy;

#[path = "../../tests/src/skip.rs"]
#[allow(dead_code)]
mod skip;

/// The `--device` values every op is checked on: `cpu` and `auto` always, `vulkan` where a Vulkan
/// device exists (skipped loudly otherwise; `SPARKLE_REQUIRE_VULKAN=1` makes that a failure).
fn devices() -> Vec<&'static str> {
    let listed = String::from_utf8_lossy(&sparkle(&["devices"]).stdout).into_owned();
    if listed.contains("vulkan:0") {
        vec!["cpu", "vulkan", "auto"]
    } else {
        skip::skip("VULKAN", "no Vulkan device: the CLI's --device vulkan is not checked");
        vec!["cpu", "auto"]
    }
}

/// `sparkle devices` says which cache blocking the CPU path uses and where it came from.
#[test]
fn devices_says_the_blocking_and_why() {
    let out = String::from_utf8_lossy(&sparkle(&["devices"]).stdout).into_owned();
    assert!(out.contains("blocking: mc ") && out.contains("from the caches"), "{out}");
    // The few-row slices: measured (every candidate's figures) or the rule, on 1 thread and more.
    assert!(out.contains("few-row GEMMs (<= 64 rows, B in place, rows 4 KiB apart) on 1 thread(s): kc "), "{out}");
    let measured = out.matches(" measured, GFLOPS (geometric mean").count() == 2;
    assert!(measured || out.contains("not measured"), "{out}");
    // Winograd against the direct conv: from which channels, measured (each race's figures) or
    // the rule.
    let wino = "3x3 stride-1 NCHW convs that Winograd and the direct conv both take: Winograd ";
    assert!(out.contains(wino), "{out}");
    let raced = out.contains("; measured, GFLOPS Winograd/direct by channels@size: 1 thread(s) 32@112 ");
    assert!(raced || out.contains("; the rule (not measured"), "{out}");
    let forced = sparkle_within(&["devices"], &[("SPARKLE_BLOCKING", "96,256,1024")], 600);
    let out = String::from_utf8_lossy(&forced.stdout).into_owned();
    assert!(out.contains("blocking: mc 96, kc 256, nc 1024, from SPARKLE_BLOCKING"), "{out}");
    assert!(out.contains("kc 256 on 1 thread, 256 on more, from SPARKLE_BLOCKING"), "{out}");
    let rule = "Winograd at any channel count on 1 thread, at any channel count on 2, direct on more threads (from 16 channels) (the rule";
    assert!(out.contains(rule), "{out}");
    let forced = sparkle_within(&["devices"], &[("SPARKLE_BLOCKING", "96,256,1024,32,128")], 600);
    let out = String::from_utf8_lossy(&forced.stdout).into_owned();
    assert!(out.contains("kc 32 on 1 thread, 128 on more, from SPARKLE_BLOCKING"), "{out}");
}

/// The tolerance a result from `device` is held to.
fn tol(device: &str, k: usize) -> f64 {
    if device == "cpu" {
        tolerance(k)
    } else {
        gpu_tolerance(k)
    }
}

fn sparkle(args: &[&str]) -> Output {
    sparkle_within(args, &[], 600)
}

/// A fresh scratch folder per test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sparkle-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn save(dir: &Path, name: &str, shape: &[usize], seed: u64) -> (String, Vec<f32>) {
    let mut data = vec![0.0; shape.iter().product()];
    fill(&mut data, seed);
    let path = dir.join(name);
    npy::write(&path, shape, &data).unwrap();
    (path.to_string_lossy().into_owned(), data)
}

/// A .npy file with an arbitrary header (for the bad-input cases).
fn raw_npy(path: &Path, header: &str, payload: &[u8]) {
    let mut dict = header.to_string();
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    bytes.extend_from_slice(dict.as_bytes());
    bytes.extend_from_slice(payload);
    std::fs::write(path, bytes).unwrap();
}

/// A .npy file of shape `(r, c)` with no data (legal when `r` or `c` is 0), for huge-output cases.
fn empty_npy(dir: &Path, name: &str, r: usize, c: usize) -> String {
    let p = dir.join(name);
    raw_npy(&p, &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({r}, {c}), }}"), &[]);
    p.to_str().unwrap().to_string()
}

fn assert_fails(out: &Output, output_file: &Path, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: exit code; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line on stderr, got: {err}");
    assert!(err.starts_with("sparkle:"), "{what}: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{what}: {err}");
    assert!(!output_file.exists(), "{what}: an output file was left behind");
}

#[test]
fn conv2d_round_trip_matches_oracle() {
    let d = dir("conv");
    for device in devices() {
        for (layout, name) in [(TensorLayout::Nchw, "nchw"), (TensorLayout::Nhwc, "nhwc")] {
            let p = Conv2dParams::new(2, 6, 11, 9, 4, 3, 2)
                .stride(2, 1)
                .pad(Padding::new(1, 0, 2, 1))
                .dilation(1, 2)
                .groups(2)
                .layout(layout);
            let g = p.validate().unwrap();
            let in_shape = match layout {
                TensorLayout::Nchw => vec![2, 6, 11, 9],
                TensorLayout::Nhwc => vec![2, 11, 9, 6],
            };
            let (x, xd) = save(&d, "x.npy", &in_shape, 1);
            let (w, wd) = save(&d, "w.npy", &[4, 3, 3, 2], 2);
            let (b, bd) = save(&d, "b.npy", &[4], 3);
            let y = d.join(format!("y-{name}.npy"));
            let out = sparkle(&[
                "conv2d",
                "--input",
                &x,
                "--weight",
                &w,
                "--bias",
                &b,
                "--stride",
                "2,1",
                "--pad",
                "1,0,2,1",
                "--dilation",
                "1,2",
                "--groups",
                "2",
                "--activation",
                "gelu",
                "--layout",
                name,
                "--device",
                device,
                "--output",
                y.to_str().unwrap(),
            ]);
            assert!(out.status.success(), "{device}: {}", String::from_utf8_lossy(&out.stderr));
            let said = String::from_utf8_lossy(&out.stdout).into_owned();
            let on = if device == "auto" { "on " } else { &format!("on {device}") };
            assert!(said.contains(on), "{device}: {said}");
            let got = npy::read(&y).unwrap();
            let want_shape = match layout {
                TensorLayout::Nchw => vec![2, 4, g.ho(), g.wo()],
                TensorLayout::Nhwc => vec![2, g.ho(), g.wo(), 4],
            };
            assert_eq!(got.shape, want_shape);
            let mut want = vec![0.0; g.output_len()];
            let epi = Epilogue::activation(Activation::Gelu).with_bias(&bd);
            conv2d_reference_f64(&g, &xd, &wd, &epi, &mut want).unwrap();
            let (err, at) = max_error(&got.data, &want);
            assert!(err <= tol(device, g.gemm_dims().2), "{device} {name}: error {err:e} at {at:?}");
        }
    }
}

#[test]
fn gemm_round_trip_matches_oracle() {
    let d = dir("gemm");
    let (a, ad) = save(&d, "a.npy", &[17, 9], 4);
    let (b, bd) = save(&d, "b.npy", &[9, 23], 5);
    let (c, cd) = save(&d, "c.npy", &[17, 23], 6);
    let y = d.join("y.npy");
    let mut want = vec![0.0; 17 * 23];
    let (av, bv, cv) = (
        MatRef::row_major(&ad, 17, 9).unwrap(),
        MatRef::row_major(&bd, 9, 23).unwrap(),
        MatRef::row_major(&cd, 17, 23).unwrap(),
    );
    gemm_reference_f64(-0.5, av, bv, 2.0, Some(cv), &Epilogue::NONE, &mut want).unwrap();
    for device in devices() {
        for precision in Precision::ALL {
            let out = sparkle(&[
                "gemm",
                "--a",
                &a,
                "--b",
                &b,
                "--c",
                &c,
                "--alpha",
                "-0.5",
                "--beta",
                "2",
                "--device",
                device,
                "--precision",
                precision.name(),
                "--explain",
                "--output",
                y.to_str().unwrap(),
            ]);
            assert!(out.status.success(), "{device}: {}", String::from_utf8_lossy(&out.stderr));
            let said = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(said.contains("predicted on "), "--explain: {said}");
            let got = npy::read(&y).unwrap();
            assert_eq!(got.shape, vec![17, 23]);
            let (err, at) = max_error(&got.data, &want);
            let bound = tol(device, 9).max(precision.tolerance(Backend::Vulkan, 9));
            assert!(err <= bound, "{device} {}: error {err:e} at {at:?}", precision.name());
        }
    }
    let out = sparkle(&["gemm", "--a", &a, "--b", &b, "--precision", "low", "--output", y.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn gemm_f16_round_trip_matches_oracle() {
    use sparkle_core::check::{tolerance_for, Backend, DType};
    use sparkle_core::f16::{f16, gemm_half_reference_f64};
    let d = dir("gemm-f16");
    let (m, n, k) = (19, 37, 70);
    let half = |len: usize, seed: u64| -> Vec<f16> {
        let mut v = vec![0.0f32; len];
        fill(&mut v, seed);
        v.iter().map(|&x| f16::from_f32(x)).collect()
    };
    let (ad, bd) = (half(m * k, 7), half(k * n, 8));
    let (a, b, bias, y) = (d.join("a.npy"), d.join("b.npy"), d.join("bias.npy"), d.join("y.npy"));
    npy::write(&a, &[m, k], &ad).unwrap();
    npy::write(&b, &[k, n], &bd).unwrap();
    let mut bias_d = vec![0.0f32; n];
    fill(&mut bias_d, 9);
    npy::write(&bias, &[n], &bias_d).unwrap();
    let mut want = vec![0.0f64; m * n];
    let (av, bv) = (MatRef::row_major(&ad, m, k).unwrap(), MatRef::row_major(&bd, k, n).unwrap());
    gemm_half_reference_f64(&av, &bv, sparkle_core::MatMut::row_major(&mut want, m, n).unwrap()).unwrap();
    for (e, w) in want.iter_mut().enumerate() {
        *w += f64::from(bias_d[e % n]);
    }
    for device in devices() {
        let args = ["gemm", "--a", a.to_str().unwrap(), "--b", b.to_str().unwrap(), "--bias", bias.to_str().unwrap()];
        let out = sparkle(&[&args[..], &["--device", device, "--explain", "--output", y.to_str().unwrap()]].concat());
        assert!(out.status.success(), "{device}: {}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(said.contains("predicted on ") && said.contains("gemm f16"), "{said}");
        let got =
            npy::read_typed_within::<f16>(&y, sparkle_std::budget::MemoryBudget::default_for_this_machine()).unwrap();
        assert_eq!(got.shape, vec![m, n]);
        // The f32 result within the GEMM's tolerance, then rounded to f16 (half an ulp: 2^-11
        // relative).
        let backend = if device == "cpu" { Backend::Cpu } else { Backend::Vulkan };
        for (i, (g, w)) in got.data.iter().zip(&want).enumerate() {
            let bound = tolerance_for(backend, DType::F16, k) * w.abs().max(1.0) + w.abs() / 2048.0;
            assert!((g.to_f64() - w).abs() <= bound, "{device}: y[{i}] = {g}, want {w}");
        }
    }
    // A float32 B with a float16 A is one clear line, exit 2.
    let (b32, _) = save(&d, "b32.npy", &[k, n], 3);
    let out =
        sparkle(&["gemm", "--a", a.to_str().unwrap(), "--b", &b32, "--output", d.join("z.npy").to_str().unwrap()]);
    assert_fails(&out, &d.join("z.npy"), "must be float16");
}

#[test]
fn conv2d_f16_round_trip_matches_oracle() {
    use sparkle_core::check::{tolerance_for, Backend, DType};
    use sparkle_core::f16::f16;
    let d = dir("conv-f16");
    let p = Conv2dParams::new(2, 6, 11, 9, 4, 3, 2).stride(2, 1).pad(Padding::new(1, 0, 2, 1)).groups(2);
    let g = p.validate().unwrap();
    let half = |len: usize, seed: u64| -> Vec<f16> {
        let mut v = vec![0.0f32; len];
        fill(&mut v, seed);
        v.iter().map(|&x| f16::from_f32(x)).collect()
    };
    let (xd, wd) = (half(g.input_len(), 11), half(g.weight_len(), 12));
    let (x, w, y) = (d.join("x.npy"), d.join("w.npy"), d.join("y.npy"));
    npy::write(&x, &[2, 6, 11, 9], &xd).unwrap();
    npy::write(&w, &[4, 3, 3, 2], &wd).unwrap();
    let (b, bd) = save(&d, "b.npy", &[4], 13);
    let widen = |v: &[f16]| v.iter().map(|h| h.to_f32()).collect::<Vec<f32>>();
    let mut want = vec![0.0; g.output_len()];
    let epi = Epilogue::activation(Activation::Relu).with_bias(&bd);
    conv2d_reference_f64(&g, &widen(&xd), &widen(&wd), &epi, &mut want).unwrap();
    for device in devices() {
        let out = sparkle(&[
            "conv2d",
            "--input",
            x.to_str().unwrap(),
            "--weight",
            w.to_str().unwrap(),
            "--bias",
            &b,
            "--stride",
            "2,1",
            "--pad",
            "1,0,2,1",
            "--groups",
            "2",
            "--activation",
            "relu",
            "--device",
            device,
            "--explain",
            "--output",
            y.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{device}: {}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(said.contains("predicted on ") && said.contains("conv2d f16"), "{said}");
        let got =
            npy::read_typed_within::<f16>(&y, sparkle_std::budget::MemoryBudget::default_for_this_machine()).unwrap();
        assert_eq!(got.shape, vec![2, 4, g.ho(), g.wo()]);
        let backend = if device == "cpu" { Backend::Cpu } else { Backend::Vulkan };
        let k = g.gemm_dims().2;
        for (i, (gv, wv)) in got.data.iter().zip(&want).enumerate() {
            let bound = tolerance_for(backend, DType::F16, k) * wv.abs().max(1.0) + wv.abs() / 2048.0;
            assert!((gv.to_f64() - wv).abs() <= bound, "{device}: y[{i}] = {gv}, want {wv}");
        }
    }
}

/// Two processes placing ops at once learn into one model file: both finish, the file is a
/// valid model afterwards, and a third process starts from it.
#[test]
fn two_processes_learn_into_one_model() {
    let d = dir("two");
    let (a, _) = save(&d, "a.npy", &[64, 48], 1);
    let (b, _) = save(&d, "b.npy", &[48, 80], 2);
    let cache = d.join("cache");
    let run = |y: &str| {
        Command::new(env!("CARGO_BIN_EXE_sparkle"))
            .args(["gemm", "--a", &a, "--b", &b, "--device", "cpu", "--output", y])
            .env("SPARKLE_CACHE_DIR", &cache)
            .spawn()
            .unwrap()
    };
    let (y1, y2) = (d.join("y1.npy"), d.join("y2.npy"));
    let (mut p1, mut p2) = (run(y1.to_str().unwrap()), run(y2.to_str().unwrap()));
    assert!(p1.wait().unwrap().success() && p2.wait().unwrap().success());
    let show = || {
        let out = Command::new(env!("CARGO_BIN_EXE_sparkle"))
            .args(["model", "show"])
            .env("SPARKLE_CACHE_DIR", &cache)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(show().contains("cpu gemm: "), "{}", show());
    // A third process learning another size keeps what the first two saved (merge on save).
    let (a2, _) = save(&d, "a2.npy", &[512, 512], 3);
    let y3 = d.join("y3.npy");
    let out = Command::new(env!("CARGO_BIN_EXE_sparkle"))
        .args(["gemm", "--a", &a2, "--b", &a2, "--device", "cpu", "--output", y3.to_str().unwrap()])
        .env("SPARKLE_CACHE_DIR", &cache)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(show().contains("in 2 size buckets"), "{}", show());
}

/// SIGTERM while the output is being written: the handler removes the temporary file and the
/// process exits 130, leaving neither a partial output nor a stray temporary.
#[test]
fn a_killed_write_leaves_nothing_behind() {
    let d = dir("sigterm");
    let empty = |name: &str, r: usize, c: usize| empty_npy(&d, name, r, c);
    // A 12000 x 12000 output of zeros (576 MB): instant to compute, seconds to write.
    let (a, b) = (empty("a.npy", 12_000, 0), empty("b.npy", 0, 12_000));
    let y = d.join("y.npy");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparkle"))
        .args(["gemm", "--a", &a, "--b", &b, "--device", "cpu", "--output", y.to_str().unwrap()])
        .env("SPARKLE_CACHE_DIR", d.join("cache"))
        .spawn()
        .unwrap();
    let temporaries = || -> Vec<std::ffi::OsString> {
        std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with(".sparkle-"))
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while temporaries().is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "the write finished before it could be interrupted");
        assert!(std::time::Instant::now() < deadline, "no temporary file appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(temporaries().is_empty(), "temporary file left: {:?}", temporaries());
    assert!(!y.exists(), "a partial output was left");
}

#[test]
fn bad_inputs_exit_2_with_one_line_and_no_output() {
    let d = dir("bad");
    let (x, _) = save(&d, "x.npy", &[1, 2, 5, 5], 1);
    let (w, _) = save(&d, "w.npy", &[3, 2, 3, 3], 2);
    let (w_wrong_c, _) = save(&d, "w3.npy", &[3, 3, 3, 3], 3);
    let (b_wrong, _) = save(&d, "b.npy", &[4], 4);
    let f64_file = d.join("f64.npy");
    raw_npy(&f64_file, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2, 5, 5), }", &[0u8; 400]);
    let fortran = d.join("fortran.npy");
    raw_npy(&fortran, "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2, 5, 5), }", &[0u8; 200]);
    let truncated = d.join("truncated.npy");
    raw_npy(&truncated, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 5, 5), }", &[0u8; 100]);
    let absurd = d.join("absurd.npy");
    raw_npy(&absurd, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }", &[0u8; 16]);
    let garbage = d.join("garbage.npy");
    std::fs::write(&garbage, b"this is not a numpy file").unwrap();
    let y = d.join("y.npy");
    let ys = y.to_str().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("float64 input", vec![s(&f64_file), w.clone()]),
        ("Fortran order", vec![s(&fortran), w.clone()]),
        ("truncated data", vec![s(&truncated), w.clone()]),
        ("absurd header", vec![s(&absurd), w.clone()]),
        ("garbage", vec![s(&garbage), w.clone()]),
        ("missing file", vec![s(&d.join("nope.npy")), w.clone()]),
        ("channels mismatch", vec![x.clone(), w_wrong_c.clone()]),
        ("weight not 4-d", vec![x.clone(), b_wrong.clone()]),
    ];
    for (what, files) in cases {
        let out = sparkle(&["conv2d", "--input", &files[0], "--weight", &files[1], "--output", ys]);
        assert_fails(&out, &y, what);
    }
    let flag_cases: Vec<(&str, Vec<&str>)> = vec![
        ("bias length", vec!["--bias", &b_wrong]),
        ("zero stride", vec!["--stride", "0"]),
        ("three pads", vec!["--pad", "1,2,3"]),
        ("bad number", vec!["--dilation", "two"]),
        ("kernel larger than input", vec!["--dilation", "9"]),
        ("zero groups", vec!["--groups", "0"]),
        ("unknown activation", vec!["--activation", "swish"]),
    ];
    for (what, extra) in flag_cases {
        let mut args = vec!["conv2d", "--input", &x, "--weight", &w, "--output", ys];
        args.extend(extra);
        assert_fails(&sparkle(&args), &y, what);
    }
    let unwritable = d.join("no-such-dir").join("y.npy");
    let out = sparkle(&["conv2d", "--input", &x, "--weight", &w, "--output", unwritable.to_str().unwrap()]);
    assert_fails(&out, &unwritable, "unwritable output");
    // GEMM shape mismatch and a missing C with beta != 0.
    let (a, _) = save(&d, "a.npy", &[3, 4], 5);
    let out = sparkle(&["gemm", "--a", &a, "--b", &a, "--output", ys]);
    assert_fails(&out, &y, "gemm inner dimensions");
    let (b2, _) = save(&d, "b2.npy", &[4, 2], 6);
    let out = sparkle(&["gemm", "--a", &a, "--b", &b2, "--beta", "1", "--output", ys]);
    assert_fails(&out, &y, "beta without C");
    let out = sparkle(&["gemm", "--a", &a, "--b", &b2, "--alpha", "nan", "--output", ys]);
    assert_fails(&out, &y, "NaN alpha");
    // No leftover temporary files either.
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Runs sparkle with extra environment, killing it (and failing) if it runs past `secs`.
fn sparkle_within(args: &[&str], env: &[(&str, &str)], secs: u64) -> Output {
    // Caches (the juggler's model, Vulkan pipelines) go to a per-process folder, not the user's.
    let cache = std::env::temp_dir().join(format!("sparkle-cli-cache-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparkle"))
        .args(args)
        .env("SPARKLE_CACHE_DIR", cache)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sparkle");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("sparkle {args:?} still running after {secs} s (hung?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The red team's cases: tiny files that asked for gigabytes, a FIFO that hung, inputs read
/// whole before the header was checked, panics from byte-count overflow, names and paths that
/// broke the temporary file or the one-line error. Each now ends in a one-line error (exit 2, no
/// output file) or the right result, within bounded time and memory.
#[test]
fn hostile_inputs_get_one_line_errors_in_bounded_time_and_memory() {
    let d = dir("hostile");
    let y = d.join("y.npy");
    let ys = y.to_str().unwrap();
    let (w, _) = save(&d, "w.npy", &[3, 2, 3, 3], 2);
    let (x, _) = save(&d, "x.npy", &[1, 2, 5, 5], 1);
    let small = [("SPARKLE_MEMORY_BUDGET", "64M")];

    // A FIFO with no writer, as conv --input and gemm --a: refused at once, not waited on.
    let fifo = d.join("fifo.npy");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let fifo_s = fifo.to_str().unwrap();
    let out = sparkle_within(&["conv2d", "--input", fifo_s, "--weight", &w, "--output", ys], &[], 20);
    assert_fails(&out, &y, "FIFO input");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    let out = sparkle_within(&["gemm", "--a", fifo_s, "--b", &w, "--output", ys], &[], 20);
    assert_fails(&out, &y, "FIFO as A");

    // Endless devices are not regular files either.
    for dev in ["/dev/zero", "/dev/urandom"] {
        let out = sparkle_within(&["conv2d", "--input", dev, "--weight", &w, "--output", ys], &[], 20);
        assert_fails(&out, &y, dev);
    }

    // A 1.5 GiB sparse file that holds a 4-byte array: the declared size is compared with the
    // file's length before any data is read.
    let sparse = d.join("sparse.npy");
    raw_npy(&sparse, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", &[0u8; 4]);
    std::fs::OpenOptions::new().write(true).open(&sparse).unwrap().set_len(3 << 29).unwrap();
    let out = sparkle_within(&["gemm", "--a", sparse.to_str().unwrap(), "--b", &w, "--output", ys], &[], 20);
    assert_fails(&out, &y, "sparse file");
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs 4 bytes of data"), "{out:?}");

    // A 1x1 input padded by 16384 asks for a 4 GiB output: over a 64 MiB budget, from the
    // environment or the flag, and nothing is allocated for it.
    let (one, _) = save(&d, "one.npy", &[1, 1, 1, 1], 3);
    let (w1, _) = save(&d, "w1.npy", &[1, 1, 1, 1], 4);
    let pad = ["conv2d", "--input", &one, "--weight", &w1, "--pad", "16384", "--output", ys];
    let out = sparkle_within(&pad, &small, 20);
    assert_fails(&out, &y, "pad 16384");
    assert!(String::from_utf8_lossy(&out.stderr).contains("over the memory budget"), "{out:?}");
    let mut flagged = pad.to_vec();
    flagged.extend(["--memory-budget", "64M"]);
    let out = sparkle_within(&flagged, &[], 20);
    assert_fails(&out, &y, "pad 16384, --memory-budget");
    assert!(String::from_utf8_lossy(&out.stderr).contains("memory budget of 64.0 MiB"), "{out:?}");
    let mut bad_flag = pad.to_vec();
    bad_flag.extend(["--memory-budget", "lots"]);
    let out = sparkle_within(&bad_flag, &[], 20);
    assert_fails(&out, &y, "bad --memory-budget");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--memory-budget"), "{out:?}");

    // GEMMs of empty operands whose outputs are huge: 10 GB (over 64 MiB), 4 TiB (over the
    // default), 2^62 elements (the byte count overflows: an error, not a panic).
    let empty = |name: &str, r: usize, c: usize| empty_npy(&d, name, r, c);
    for (what, (m, n), env) in [
        ("50000x0 @ 0x50000", (50_000, 50_000), &small[..]),
        ("1x0 @ 0x2^40", (1, 1 << 40), &[][..]),
        ("2^31x0 @ 0x2^31", (1 << 31, 1 << 31), &[][..]),
    ] {
        let (a, b) = (empty("ea.npy", m, 0), empty("eb.npy", 0, n));
        let out = sparkle_within(&["gemm", "--a", &a, "--b", &b, "--output", ys], env, 20);
        assert_fails(&out, &y, what);
        assert!(String::from_utf8_lossy(&out.stderr).contains("memory budget"), "{what}: {out:?}");
    }
    // Within the budget, the same shapes give the right (all-zero) result.
    let (a, b) = (empty("ea.npy", 3, 0), empty("eb.npy", 0, 5));
    let out = sparkle_within(&["gemm", "--a", &a, "--b", &b, "--output", ys], &small, 20);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(npy::read(&y).unwrap(), npy::Array { shape: vec![3, 5], data: vec![0.0; 15] });
    std::fs::remove_file(&y).unwrap();

    // Legal names of 250 bytes work (the temporary name does not grow with them).
    let long = d.join("y".repeat(246) + ".npy");
    let out = sparkle_within(&["conv2d", "--input", &x, "--weight", &w, "--output", long.to_str().unwrap()], &[], 60);
    assert!(out.status.success(), "{out:?}");

    // An existing 0600 output stays 0600.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&long, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = sparkle_within(&["conv2d", "--input", &x, "--weight", &w, "--output", long.to_str().unwrap()], &[], 60);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::metadata(&long).unwrap().permissions().mode() & 0o777, 0o600);

    // A newline in a path: still one line.
    let odd = d.join("two\nlines.npy");
    let out = sparkle_within(&["conv2d", "--input", odd.to_str().unwrap(), "--weight", &w, "--output", ys], &[], 20);
    assert_fails(&out, &y, "newline in a path");
    assert!(String::from_utf8_lossy(&out.stderr).contains("two\\nlines"), "{out:?}");

    // Infinite alpha names its flag.
    let (a, _) = save(&d, "a.npy", &[3, 4], 5);
    let out = sparkle_within(&["gemm", "--a", &a, "--b", &a, "--alpha", "inf", "--output", ys], &[], 20);
    assert_fails(&out, &y, "infinite alpha");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--alpha"), "{out:?}");

    // No temporary file left anywhere.
    let left: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".sparkle-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// The subcommands a help text lists under `Commands:` (clap's own `help` left out).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Walks the whole command tree from `sparkle --help` down, so a new command cannot go
/// unchecked: every path prints its usage and exits 0.
#[test]
fn help_for_every_command() {
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut seen = Vec::new();
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = sparkle(&args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("Usage"), "{args:?}: {text}");
        for sub in subcommands(&text) {
            let mut next = path.clone();
            next.push(sub);
            todo.push(next);
        }
        seen.push(path.join(" "));
    }
    // The tree as of this writing: the walk must find at least these (19 paths with the root).
    for must in ["", "conv2d", "gemm", "bench gemm", "bench split", "juggler replay", "model reset", "stream"] {
        assert!(seen.iter().any(|p| p == must), "`sparkle {must} --help` not reached; walked {seen:?}");
    }
    assert!(seen.len() >= 19, "walked only {} command paths: {seen:?}", seen.len());
}

#[test]
fn demo_runs_learns_and_persists() {
    // A model folder of its own: the other tests' ops learn into the shared one meanwhile.
    let cache = dir("demo-cache");
    let env = [("SPARKLE_CACHE_DIR", cache.to_str().unwrap())];
    let sparkle = |args: &[&str]| sparkle_within(args, &env, 300);
    let out = sparkle(&["demo", "--small"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.matches("PASS").count() >= 5, "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    assert!(text.contains("starting from priors"), "{text}");
    // The second run starts from what the first learned.
    let again = String::from_utf8_lossy(&sparkle(&["demo", "--small"]).stdout).into_owned();
    assert!(again.contains("model loaded"), "{again}");
    let show = String::from_utf8_lossy(&sparkle(&["model", "show"]).stdout).into_owned();
    assert!(show.contains("cpu conv2d"), "{show}");
    // A corrupt model is reported and replaced, never trusted.
    let path = String::from_utf8_lossy(&sparkle(&["model", "path"]).stdout).trim().to_string();
    std::fs::write(&path, "sparkle-juggler v1\ngarbage").unwrap();
    let third = String::from_utf8_lossy(&sparkle(&["demo", "--small"]).stdout).into_owned();
    assert!(third.contains("ignoring the saved model"), "{third}");
    assert!(String::from_utf8_lossy(&sparkle(&["model", "show"]).stdout).contains("cpu conv2d"));
    // Calibration adds GEMM to what the juggler knows.
    let cal = sparkle(&["calibrate", "--max", "64", "--small"]);
    assert!(cal.status.success(), "{}", String::from_utf8_lossy(&cal.stderr));
    assert!(String::from_utf8_lossy(&sparkle(&["model", "show"]).stdout).contains("cpu gemm"));
}

#[test]
fn bench_draws_a_plot() {
    let d = dir("plot");
    let svg = d.join("g.svg");
    let out = sparkle(&["bench", "gemm", "--shapes", "16,24", "--seconds", "0.01", "--plot", svg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.contains("sparkle") && text.contains("peak"),
        "{}",
        &text[..200.min(text.len())]
    );
}

/// The conv2d bench names the path each layer ran on (a layer file's layers, small enough to be
/// quick): direct for a strided 3x3 of 16 channels, the implicit GEMM for one with KRSC weights.
#[test]
fn bench_conv2d_names_the_paths() {
    let d = dir("bench-paths");
    let layers = d.join("layers.txt");
    std::fs::write(
        &layers,
        "a c=16 h=8 w=8 k=16 r=3 s=3 pad=1 stride=2\nb c=16 h=8 w=8 k=16 r=3 s=3 pad=1 weights=krsc\n",
    )
    .unwrap();
    let out = sparkle(&["bench", "conv2d", "--layers", layers.to_str().unwrap(), "--seconds", "0.01"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // NCHW runs direct on kernels that read B in place (x86, NEON); the portable kernel runs the
    // implicit GEMM.
    let a = if sparkle_std::cpu::Cpu::new().unwrap().kernel.gemm().b_in_place() { "direct" } else { "implicit-gemm" };
    assert!(text.contains(&format!("f32 paths: a: {a}, b: implicit-gemm")), "{text}");
}

/// `--dtype i8` is `--dtypes int8`; a conv bench refuses a precision (GEMMs only), as the GEMM
/// bench refuses one on the CPU.
#[test]
fn bench_flags_take_their_other_names_and_refuse_what_does_not_apply() {
    let out = sparkle(&["bench", "gemm", "--dtype", "i8", "--shapes", "16", "--seconds", "0.01"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sparkle-int8"));
    let y = Path::new("/nonexistent/none");
    for (args, what) in [
        (&["bench", "conv2d", "--precision", "high", "--device", "vulkan"][..], "conv2d runs f32 at highest"),
        (&["bench", "gemm", "--precision", "medium"][..], "runs on Vulkan only"),
        (&["bench", "gemm", "--dtypes", "i4"][..], "`i4` is not f32, int8 (i8), bf16 or f16"),
    ] {
        let out = sparkle(args);
        assert_fails(&out, y, what);
        assert!(String::from_utf8_lossy(&out.stderr).contains(what), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn stream_runs_every_policy_and_checks_every_output() {
    let out = sparkle(&["stream", "--small", "--rounds", "2", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for key in ["\"always cpu\"", "\"balanced fixed\"", "\"juggler\"", "juggler_over_best_fixed", "uploaded_bytes"] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
    // Every run is complete, none fell back, and the juggler (one Sparkle handle) placed nothing
    // on a CPU-type Vulkan device beside the CPU path.
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let cpu_type: Vec<String> = sparkle_std::vk::devices()
        .unwrap_or_default()
        .iter()
        .filter(|d| d.device_type == "CPU")
        .map(|d| format!("vulkan:{}", d.index))
        .collect();
    for run in v["runs"].as_array().unwrap() {
        let placements = run["placements"].as_array().unwrap();
        assert_eq!(placements.len(), 2 * v["layers"].as_array().unwrap().len(), "{run}");
        assert_eq!(run["fallbacks"], 0, "{run}");
        if run["policy"] == "juggler" {
            assert!(placements.iter().all(|p| !cpu_type.iter().any(|c| p == c.as_str())), "{run}");
        }
    }
    assert!(v["worst_error_over_tolerance"].as_f64().unwrap() <= 1.0, "{v}");
    let bad = sparkle(&["stream", "--rounds", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);
}

#[test]
fn juggler_replay_reports_seeds_and_held_out_metrics_per_trace_and_policy() {
    let rec = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/juggler/samples-xeon16-h200.csv");
    let out = sparkle(&["juggler", "replay", "--samples", rec, "--seeds", "2", "--trace", "T4", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    let policies: Vec<&str> = rows.iter().map(|r| r["policy"].as_str().unwrap()).collect();
    for p in ["oracle", "always-cpu", "always-gpu", "starpu-dmda", "starpu-dmda-nl", "sparkle"] {
        assert!(policies.contains(&p), "{p} missing: {policies:?}");
    }
    let s = rows.iter().find(|r| r["policy"] == "sparkle").unwrap();
    assert_eq!((s["trace"].as_str(), s["seeds"].as_u64()), (Some("T4"), Some(2)), "{s}");
    let (lo, mean, hi) = (
        s["regret_pct_min"].as_f64().unwrap(),
        s["regret_pct_mean"].as_f64().unwrap(),
        s["regret_pct_max"].as_f64().unwrap(),
    );
    assert!(lo <= mean && mean <= hi, "{s}");
    assert!(s["pick_accuracy_heldout"].as_f64().unwrap() > 0.9, "{s}");
    assert!(s["median_pred_error_pct"].as_f64().is_some(), "{s}");
    // StarPU's history cannot predict a shape it has not calibrated: no prediction error.
    let h = rows.iter().find(|r| r["policy"] == "starpu-dmda").unwrap();
    assert!(h["median_pred_error_pct"].is_null(), "{h}");
    let bad = sparkle(&["juggler", "replay", "--samples", rec, "--seeds", "0"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn juggler_record_writes_a_recording_that_replays() {
    let d = dir("record");
    let out_csv = d.join("rec.csv");
    let path = out_csv.to_str().unwrap();
    // Bad arguments are refused before any device is opened.
    for bad in [&["--batches", "1,x"][..], &["--batches", "0"], &["--max", "0"], &["--max", "8", "--batches", ""]] {
        let args = [&["juggler", "record", "--out", path][..], bad].concat();
        let out = sparkle(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!out_csv.exists(), "{bad:?} wrote a file");
    }
    if devices().len() < 3 {
        return; // no Vulkan device: skipped loudly by `devices`
    }
    // GEMMs only (an empty batch list), up to 32: the three square ones, on both devices.
    let out = sparkle(&["juggler", "record", "--out", path, "--max", "32", "--batches", ""]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&out_csv).unwrap();
    let rows: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.starts_with("device,")).collect();
    assert_eq!(rows.len(), 6, "{text}");
    for op in ["gemm 16 16 16", "gemm 24 24 24", "gemm 32 32 32"] {
        for device in ["0", "1"] {
            assert!(rows.iter().any(|r| r.starts_with(&format!("{device},{op},"))), "{op} on {device}: {text}");
        }
    }
    let replay = sparkle(&["juggler", "replay", "--samples", path, "--seeds", "1", "--trace", "T1"]);
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    assert!(String::from_utf8_lossy(&replay.stdout).contains("near-square GEMMs"));
    let _ = std::fs::remove_dir_all(&d);
}

/// Runs every golden case under `tests/data/<set>` (written by benches/quant/ort_check.py with
/// onnxruntime 1.32.0): `sparkle <op>` with the case's operands (`inputs`, file names in its
/// folder) and flags must reproduce ONNX Runtime's `want.npy` bit for bit.
fn golden_cases(set: &str, op: &str, inputs: [(&str, &str); 2], device: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(set);
    let d = dir(set);
    let mut cases = 0;
    for case in std::fs::read_dir(&root).unwrap().flatten() {
        let c = case.path();
        let flags = std::fs::read_to_string(c.join("args.txt")).unwrap();
        let flags: Vec<String> = flags
            .lines()
            .map(|f| if f.ends_with(".npy") { c.join(f).to_string_lossy().into_owned() } else { f.to_string() })
            .collect();
        let y = d.join("y.npy");
        let files: Vec<String> = inputs.iter().map(|(_, f)| c.join(f).to_string_lossy().into_owned()).collect();
        let out_path = y.to_str().unwrap();
        let mut args =
            vec![op, inputs[0].0, &files[0], inputs[1].0, &files[1], "--output", out_path, "--device", device];
        args.extend(flags.iter().map(String::as_str));
        let out = sparkle(&args);
        assert!(out.status.success(), "{} on {device}: {}", c.display(), String::from_utf8_lossy(&out.stderr));
        if device == "vulkan" {
            // Ran there, not on the CPU after a failure.
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(said.contains(" on vulkan:") && !said.contains("re-ran on the CPU"), "{}: {said}", c.display());
        }
        let got = npy::read_any_within(&y, sparkle_std::budget::MemoryBudget::UNLIMITED).unwrap();
        let want = npy::read_any_within(&c.join("want.npy"), sparkle_std::budget::MemoryBudget::UNLIMITED).unwrap();
        assert_eq!(got, want, "{} on {device}", c.display());
        cases += 1;
    }
    assert!(cases >= 10, "only {cases} golden cases found in {}", root.display());
}

/// `sparkle gemm` on int8 `.npy` files against ONNX Runtime (QLinearMatMul and MatMulInteger,
/// u8 x u8 and s8 x s8, per-tensor and per-column zero points and scales), on every device.
#[test]
fn int8_gemm_matches_onnx_runtime_bit_for_bit() {
    for device in devices() {
        golden_cases("ort_qgemm", "gemm", [("--a", "a.npy"), ("--b", "b.npy")], device);
    }
}

/// `sparkle conv2d` on int8 `.npy` files against ONNX Runtime (QLinearConv and ConvInteger:
/// groups, strides, dilations, asymmetric padding, per-channel weights, int32 bias), on every
/// device.
#[test]
fn int8_conv2d_matches_onnx_runtime_bit_for_bit() {
    for device in devices() {
        golden_cases("ort_qconv", "conv2d", [("--input", "x.npy"), ("--weight", "w.npy")], device);
    }
}

/// `--requant fixed` with per-channel scales against the core's integer oracle (TFLite's
/// QuantizeMultiplier on the f64 scale products), and a bias.
#[test]
fn int8_gemm_fixed_point_matches_the_integer_oracle() {
    use sparkle_core::quant::reference::qgemm_reference;
    use sparkle_core::quant::{quantize_multiplier, OutputStage, PerChannel, QGemm};
    use sparkle_core::MatMut;
    let d = dir("qfixed");
    let (m, k, n) = (7, 29, 5);
    let a: Vec<i8> = (0..m * k).map(|i| (i * 37 % 256) as u8 as i8).collect();
    let b: Vec<i8> = (0..k * n).map(|i| (i * 91 % 251) as u8 as i8).collect();
    let bias: Vec<i32> = vec![100, -2000, 0, 31, 7];
    let w_scale: Vec<f32> = vec![0.01, 0.02, 0.003, 0.05, 0.011];
    let p = |name: &str| d.join(name).to_string_lossy().into_owned();
    npy::write(&d.join("a.npy"), &[m, k], &a).unwrap();
    npy::write(&d.join("b.npy"), &[k, n], &b).unwrap();
    npy::write(&d.join("bias.npy"), &[n], &bias).unwrap();
    npy::write(&d.join("ws.npy"), &[n], &w_scale).unwrap();
    let out = sparkle(&[
        "gemm",
        "--a",
        &p("a.npy"),
        "--b",
        &p("b.npy"),
        "--bias",
        &p("bias.npy"),
        "--x-scale",
        "0.02",
        "--x-zero-point",
        "-3",
        "--w-scale",
        &p("ws.npy"),
        "--y-scale",
        "0.1",
        "--y-zero-point",
        "5",
        "--requant",
        "fixed",
        "--output",
        &p("y.npy"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = npy::read_typed_within::<i8>(&d.join("y.npy"), sparkle_std::budget::MemoryBudget::UNLIMITED).unwrap();
    let (mult, shift): (Vec<i32>, Vec<i32>) =
        w_scale.iter().map(|&w| quantize_multiplier(0.02f32 as f64 * w as f64 / 0.1f32 as f64).unwrap()).unzip();
    let op = QGemm {
        a: MatRef::row_major(&a, m, k).unwrap(),
        a_zero: -3,
        b: MatRef::row_major(&b, k, n).unwrap(),
        b_zero: PerChannel::Tensor(0),
        bias: Some(&bias),
    };
    let mut want = vec![0i8; m * n];
    let stage = OutputStage::fixed(PerChannel::Channel(&mult), PerChannel::Channel(&shift), 5, -128, 127);
    qgemm_reference(&op, &stage, MatMut::row_major(&mut want, m, n).unwrap()).unwrap();
    assert_eq!(got.shape, vec![m, n]);
    assert_eq!(got.data, want);
    assert!(want.iter().any(|&v| v != want[0]), "a degenerate case proves nothing");
}

/// Bad quantization parameters: one line on stderr, exit 2, no output file.
#[test]
fn int8_gemm_bad_parameters_exit_2() {
    let d = dir("qbad");
    let p = |name: &str| d.join(name).to_string_lossy().into_owned();
    npy::write(&d.join("a.npy"), &[2, 3], &[1u8, 2, 3, 4, 5, 6]).unwrap();
    npy::write(&d.join("b.npy"), &[3, 2], &[1i8, -2, 3, -4, 5, -6]).unwrap();
    npy::write(&d.join("ws3.npy"), &[3], &[0.1f32, 0.2, 0.3]).unwrap();
    npy::write(&d.join("zp_f.npy"), &[2], &[0.0f32, 1.0]).unwrap();
    npy::write(&d.join("bias_f.npy"), &[2], &[0.0f32, 1.0]).unwrap();
    npy::write(&d.join("b32.npy"), &[3, 2], &[1i32; 6]).unwrap();
    let (fa, _) = save(&d, "fa.npy", &[2, 3], 1);
    let y = d.join("y.npy");
    let base = ["gemm", "--a", &p("a.npy"), "--b", &p("b.npy"), "--output", y.to_str().unwrap()];
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "zero scale",
            vec!["--x-scale".into(), "1".into(), "--w-scale".into(), "0".into(), "--y-scale".into(), "1".into()],
        ),
        (
            "negative y scale",
            vec!["--x-scale".into(), "1".into(), "--w-scale".into(), "1".into(), "--y-scale".into(), "-1".into()],
        ),
        (
            "negative w scale",
            vec!["--x-scale".into(), "1".into(), "--w-scale".into(), "-1".into(), "--y-scale".into(), "1".into()],
        ),
        (
            "a multiplier past float32",
            vec![
                "--x-scale".into(),
                "1e30".into(),
                "--w-scale".into(),
                "1e30".into(),
                "--y-scale".into(),
                "1e-30".into(),
            ],
        ),
        ("x zero point out of u8", vec!["--x-zero-point".into(), "300".into()]),
        ("w zero point out of i8", vec!["--w-zero-point".into(), "-129".into()]),
        (
            "y zero point out of u8",
            vec![
                "--x-scale".into(),
                "1".into(),
                "--w-scale".into(),
                "1".into(),
                "--y-scale".into(),
                "1".into(),
                "--y-zero-point".into(),
                "-1".into(),
            ],
        ),
        (
            "per-channel length",
            vec!["--x-scale".into(), "1".into(), "--w-scale".into(), p("ws3.npy"), "--y-scale".into(), "1".into()],
        ),
        ("float zero points", vec!["--w-zero-point".into(), p("zp_f.npy")]),
        ("y scale without x scale", vec!["--w-scale".into(), "1".into(), "--y-scale".into(), "1".into()]),
        ("x scale without y scale", vec!["--x-scale".into(), "1".into()]),
        ("float bias", vec!["--bias".into(), p("bias_f.npy")]),
        ("alpha on int8", vec!["--alpha".into(), "2".into()]),
        (
            "neither number nor npy",
            vec!["--w-scale".into(), "abc".into(), "--x-scale".into(), "1".into(), "--y-scale".into(), "1".into()],
        ),
    ];
    for (what, extra) in cases {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra.iter().map(String::as_str));
        assert_fails(&sparkle(&args), &y, what);
    }
    // The errors name the flags.
    for (flags, says) in [
        (["1", "-1", "1"], "--w-scale -1 is not a positive finite number"),
        (["-0.5", "1", "1"], "--x-scale -0.5 is not a positive finite number"),
        (["1e30", "1e30", "1e-30"], "--x-scale * --w-scale / --y-scale = 1e30 * 1e30 / 1e-30 is inf in float32"),
    ] {
        let scales = ["--x-scale", flags[0], "--w-scale", flags[1], "--y-scale", flags[2]];
        let out = sparkle(&[&base[..], &scales[..]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flags:?}: {err}");
    }
    let out = sparkle(&["gemm", "--a", &p("a.npy"), "--b", &p("b32.npy"), "--output", y.to_str().unwrap()]);
    assert_fails(&out, &y, "int32 B");
    let out = sparkle(&["gemm", "--a", &fa, "--b", &fa, "--x-zero-point", "1", "--output", y.to_str().unwrap()]);
    assert_fails(&out, &y, "quantization flags on float32");
    // conv2d: an activation other than relu, relu on the accumulator, a float bias.
    npy::write(&d.join("x.npy"), &[1, 2, 4, 4], &[3u8; 32]).unwrap();
    npy::write(&d.join("w.npy"), &[2, 2, 3, 3], &[1i8; 36]).unwrap();
    let conv = ["conv2d", "--input", &p("x.npy"), "--weight", &p("w.npy"), "--output", y.to_str().unwrap()];
    let scales = ["--x-scale", "0.1", "--w-scale", "0.1", "--y-scale", "0.1"];
    let bias_f = p("bias_f.npy");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("sigmoid on int8", [&scales[..], &["--activation", "sigmoid"]].concat()),
        ("relu on the accumulator", vec!["--activation", "relu"]),
        ("float bias", vec!["--bias", &bias_f]),
        ("w zero point out of i8", vec!["--w-zero-point", "200"]),
    ];
    for (what, extra) in cases {
        let mut args: Vec<&str> = conv.to_vec();
        args.extend(extra);
        assert_fails(&sparkle(&args), &y, what);
    }
    // And one that works: relu clamps at the output zero point.
    let mut args: Vec<&str> = conv.to_vec();
    args.extend(scales);
    args.extend(["--y-zero-point", "100", "--activation", "relu", "--pad", "1"]);
    let out = sparkle(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let y8 = npy::read_typed_within::<u8>(&y, sparkle_std::budget::MemoryBudget::UNLIMITED).unwrap();
    assert_eq!(y8.shape, vec![1, 2, 4, 4]);
    // Corner: 4 taps in range x 2 channels x 3 x 1 x 0.1 x 0.1 / 0.1 = 2.4 -> 2, plus 100.
    assert_eq!(y8.data[0], 102);
}

/// `sparkle conv2d` on int8 `.npy` files in both requantization modes, both layouts and both
/// input types (u8 and s8 x s8 weights), with per-channel scales, a bias, an input zero point,
/// per-channel weight zero points (ONNX's mode) and ReLU, against the core's integer oracle, on
/// every device.
#[test]
fn int8_conv2d_round_trips_match_the_integer_oracle() {
    let d = dir("qconv_rt");
    for device in devices() {
        for layout in [TensorLayout::Nchw, TensorLayout::Nhwc] {
            for fixed in [false, true] {
                qconv_round_trip::<u8>(&d, device, layout, fixed, 7);
                qconv_round_trip::<i8>(&d, device, layout, fixed, -5);
            }
        }
    }
}

fn qconv_round_trip<X>(d: &Path, device: &str, layout: TensorLayout, fixed: bool, x_zero: i32)
where
    X: sparkle_core::quant::QOperand + npy::Element + PartialEq,
{
    use sparkle_core::quant::conv::{qconv2d_reference, QConv};
    use sparkle_core::quant::{quantize_multiplier, OutputStage, PerChannel};
    let what = format!(
        "{device} {layout:?} {} {}",
        if fixed { "fixed" } else { "onnx" },
        <X as sparkle_core::quant::QElem>::NAME
    );
    let p = Conv2dParams::new(2, 6, 9, 8, 4, 3, 3).stride(2, 1).pad(Padding::new(1, 0, 2, 1)).groups(2).layout(layout);
    let g = p.validate().unwrap();
    let in_shape = match layout {
        TensorLayout::Nchw => vec![2, 6, 9, 8],
        TensorLayout::Nhwc => vec![2, 9, 8, 6],
    };
    // Every byte value, in an order the geometry does not line up with.
    let x: Vec<X> = (0..g.input_len()).map(|i| byte::<X>(i * 37 + 11)).collect();
    let w: Vec<i8> = (0..g.weight_len()).map(|i| byte::<i8>(i * 91 + 5)).collect();
    let bias: Vec<i32> = vec![900, -4000, 0, 17];
    let w_scale: Vec<f32> = vec![0.01, 0.02, 0.003, 0.05];
    // TFLite's fixed point takes symmetric weights; ONNX's mode any zero points.
    let w_zero: Vec<i32> = if fixed { vec![0; 4] } else { vec![0, 3, -7, 1] };
    let (x_scale, y_scale, y_zero) = (0.05f32, 0.4f32, if X::MIN == 0 { 20 } else { -9 });
    let at = |name: &str| d.join(name).to_string_lossy().into_owned();
    npy::write(&d.join("x.npy"), &in_shape, &x).unwrap();
    npy::write(&d.join("w.npy"), &[4, 3, 3, 3], &w).unwrap();
    npy::write(&d.join("bias.npy"), &[4], &bias).unwrap();
    npy::write(&d.join("ws.npy"), &[4], &w_scale).unwrap();
    npy::write(&d.join("wz.npy"), &[4], &w_zero).unwrap();
    let y = d.join("y.npy");
    let _ = std::fs::remove_file(&y);
    let (xs, ys, xz, yz) = (x_scale.to_string(), y_scale.to_string(), x_zero.to_string(), y_zero.to_string());
    let layout_name = if layout == TensorLayout::Nchw { "nchw" } else { "nhwc" };
    let out = sparkle(&[
        "conv2d",
        "--input",
        &at("x.npy"),
        "--weight",
        &at("w.npy"),
        "--bias",
        &at("bias.npy"),
        "--stride",
        "2,1",
        "--pad",
        "1,0,2,1",
        "--groups",
        "2",
        "--activation",
        "relu",
        "--layout",
        layout_name,
        "--x-scale",
        &xs,
        "--x-zero-point",
        &xz,
        "--w-scale",
        &at("ws.npy"),
        "--w-zero-point",
        &at("wz.npy"),
        "--y-scale",
        &ys,
        "--y-zero-point",
        &yz,
        "--requant",
        if fixed { "fixed" } else { "onnx" },
        "--device",
        device,
        "--output",
        y.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    let got = npy::read_typed_within::<X>(&y, sparkle_std::budget::MemoryBudget::UNLIMITED).unwrap();
    let op = QConv { input: &x, x_zero, weight: &w, w_zero: PerChannel::Channel(&w_zero), bias: Some(&bias) };
    let (mult, shift): (Vec<i32>, Vec<i32>) = w_scale
        .iter()
        .map(|&ws| quantize_multiplier(f64::from(x_scale) * f64::from(ws) / f64::from(y_scale)).unwrap())
        .unzip();
    let mut stage = if fixed {
        OutputStage::fixed(PerChannel::Channel(&mult), PerChannel::Channel(&shift), y_zero, X::MIN, X::MAX)
    } else {
        OutputStage::onnx(x_scale, PerChannel::Channel(&w_scale), y_scale, y_zero)
    };
    // ReLU clamps at the output's zero point.
    stage.min = y_zero;
    let mut want = vec![byte::<X>(0); g.output_len()];
    qconv2d_reference(&g, &op, &stage, &mut want).unwrap();
    let want_shape = match layout {
        TensorLayout::Nchw => vec![2, 4, g.ho(), g.wo()],
        TensorLayout::Nhwc => vec![2, g.ho(), g.wo(), 4],
    };
    assert_eq!(got.shape, want_shape, "{what}");
    assert!(got.data == want, "{what}: differs from the integer oracle");
    let distinct = want.iter().filter(|&&v| v != want[0]).count();
    assert!(distinct > want.len() / 4, "{what}: a degenerate case proves nothing");
}

/// The `i mod 256`-th value of `X`'s range.
fn byte<X: sparkle_core::quant::QOperand>(i: usize) -> X {
    X::narrow(X::MIN + (i % 256) as i32)
}
