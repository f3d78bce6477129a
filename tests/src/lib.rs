//! Shared helpers of the cross-backend tests.
#![deny(missing_docs)]

pub use sparkle_std::demo::fill;

/// Whether the environment variable `SPARKLE_REQUIRE_<thing>` is set to 1: then a test that
/// would skip for lack of `thing` must fail instead.
pub fn required(thing: &str) -> bool {
    std::env::var(format!("SPARKLE_REQUIRE_{thing}")).is_ok_and(|v| v == "1")
}

/// Reports a skip loudly (once per `thing` and test binary), or panics when
/// `SPARKLE_REQUIRE_<thing>=1` forbids skipping.
pub fn skip(thing: &str, why: &str) {
    assert!(!required(thing), "SPARKLE_REQUIRE_{thing}=1 but {why}");
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
