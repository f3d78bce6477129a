//! The `sparkle` binary end to end: .npy round trips against the oracle, every bad input an
//! exit code 2 with one line on stderr and no output file, `--help` everywhere, and the demo.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sparkle_core::check::{max_error, tolerance};
use sparkle_core::conv::reference::conv2d_reference_f64;
use sparkle_core::gemm::reference::gemm_reference_f64;
use sparkle_core::{Activation, Conv2dParams, Epilogue, MatRef, Padding, TensorLayout};
use sparkle_std::demo::fill;
use sparkle_std::npy;

fn sparkle(args: &[&str]) -> Output {
    // Caches (the juggler's model, Vulkan pipelines) go to a per-process folder, not the user's.
    let cache = std::env::temp_dir().join(format!("sparkle-cli-cache-{}", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_sparkle"))
        .args(args)
        .env("SPARKLE_CACHE_DIR", cache)
        .output()
        .expect("run sparkle")
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
            "--output",
            y.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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
        assert!(err <= tolerance(g.gemm_dims().2), "{name}: error {err:e} at {at:?}");
    }
}

#[test]
fn gemm_round_trip_matches_oracle() {
    let d = dir("gemm");
    let (a, ad) = save(&d, "a.npy", &[17, 9], 4);
    let (b, bd) = save(&d, "b.npy", &[9, 23], 5);
    let (c, cd) = save(&d, "c.npy", &[17, 23], 6);
    let y = d.join("y.npy");
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
        "--output",
        y.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = npy::read(&y).unwrap();
    assert_eq!(got.shape, vec![17, 23]);
    let mut want = vec![0.0; 17 * 23];
    let (av, bv, cv) = (
        MatRef::row_major(&ad, 17, 9).unwrap(),
        MatRef::row_major(&bd, 9, 23).unwrap(),
        MatRef::row_major(&cd, 17, 23).unwrap(),
    );
    gemm_reference_f64(-0.5, av, bv, 2.0, Some(cv), &Epilogue::NONE, &mut want).unwrap();
    let (err, at) = max_error(&got.data, &want);
    assert!(err <= tolerance(9), "error {err:e} at {at:?}");
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
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
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
    let _ = sparkle(&["model", "reset"]);
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

#[test]
fn stream_runs_every_policy_and_checks_every_output() {
    let out = sparkle(&["stream", "--small", "--rounds", "2", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for key in ["\"always cpu\"", "\"balanced fixed\"", "\"juggler\"", "juggler_over_best_fixed", "uploaded_bytes"] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
    let bad = sparkle(&["stream", "--rounds", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);
}
