//! The peer comparison runs and reports every in-process peer beside Sparkle (each result was
//! checked against the oracle before it was timed: a wrong one is an error, exit 2).

use std::process::Command;

fn peers(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_peers")).args(args).output().expect("peers runs")
}

#[test]
fn gemm_reports_every_rust_peer_beside_sparkle() {
    let out = peers(&["gemm", "--shapes", "17,8x9x10", "--seconds", "0.01", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for shape in ["17x17x17", "8x9x10"] {
        for who in ["sparkle", "matrixmultiply", "gemm"] {
            let record = format!(r#""op":"gemm","key":"{shape}","threads":1,"impl":"{who}","gflops":"#);
            assert!(text.contains(&record), "no {who} at {shape}: {text}");
        }
    }
}

#[test]
fn conv2d_reports_sparkle_and_its_unfused_baseline() {
    let dir = std::env::temp_dir().join(format!("sparkle-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("layers.txt");
    std::fs::write(&file, "small c=3 h=9 w=9 k=4 r=3 s=3 pad=1\n").unwrap();
    let out = peers(&["conv2d", "--layers", file.to_str().unwrap(), "--seconds", "0.01"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.starts_with("small")).unwrap_or_else(|| panic!("{text}"));
    // sparkle and sparkle-im2col: two figures (PyTorch too where it is installed).
    assert!(row.split_whitespace().count() >= 3, "{text}");
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let out = peers(&["gemm", "--shapes", "0x1x1"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
