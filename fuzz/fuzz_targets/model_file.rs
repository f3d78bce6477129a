//! The juggler's persisted model fed arbitrary bytes: an error or a valid model, never a panic;
//! a valid model normalises to a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sparkle_std::juggler::store::normalize;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(once) = normalize(&text) {
        assert_eq!(normalize(&once).as_deref(), Ok(once.as_str()), "normalising is idempotent");
    }
});
