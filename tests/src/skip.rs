//! Loud, countable skips: shared by the cross-backend tests (through this crate) and by
//! sparkle-std's CLI tests (which include this file by path: they cannot depend on this crate).

/// Whether the environment variable `SPARKLE_REQUIRE_<thing>` is set to 1: then a test that
/// would skip for lack of `thing` must fail instead.
pub fn required(thing: &str) -> bool {
    std::env::var(format!("SPARKLE_REQUIRE_{thing}")).is_ok_and(|v| v == "1")
}

/// Reports a skip loudly (once per `thing` and test binary), or panics when
/// `SPARKLE_REQUIRE_<thing>=1` forbids skipping. With `SPARKLE_SKIP_LOG=FILE` (the test script
/// sets it) the skipping test is also appended to FILE, one line per test and thing, so the
/// suite's closing line counts it as skipped, not passed.
pub fn skip(thing: &str, why: &str) {
    assert!(!required(thing), "SPARKLE_REQUIRE_{thing}=1 but {why}");
    log_skip(thing);
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.iter().any(|t| t == thing) {
        return;
    }
    seen.push(thing.to_string());
    // Straight to the stderr handle, not `eprintln!`: the test harness captures the macros'
    // output of passing tests, and a skip must be seen.
    use std::io::Write as _;
    let _ =
        writeln!(std::io::stderr(), "SKIPPED ({thing}): {why}; set SPARKLE_REQUIRE_{thing}=1 to make this a failure");
}

/// Appends `<test binary> <test name> <thing>` to `$SPARKLE_SKIP_LOG`, if set. The test's name
/// is its thread's (libtest names each test's thread after it).
fn log_skip(thing: &str) {
    let Some(path) = std::env::var_os("SPARKLE_SKIP_LOG") else { return };
    let exe = std::env::current_exe().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!("{} {test} {thing}\n", exe.as_deref().unwrap_or("?"));
    use std::io::Write as _;
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
    if let Err(e) = file.and_then(|mut f| f.write_all(line.as_bytes())) {
        panic!("cannot record the skip in SPARKLE_SKIP_LOG={}: {e}", path.to_string_lossy());
    }
}
