//! The .npy reader fed arbitrary bytes: an error or a consistent array, never a panic, and never
//! an allocation the bytes cannot back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = sparkle_std::npy::parse(std::path::Path::new("fuzz.npy"), data) {
        assert_eq!(a.shape.iter().product::<usize>(), a.data.len());
        assert!(a.data.len() * 4 <= data.len());
        // A valid array round-trips.
        let again =
            sparkle_std::npy::parse(std::path::Path::new("again.npy"), &sparkle_std::npy::to_bytes(&a.shape, &a.data))
                .unwrap();
        assert_eq!(again.shape, a.shape);
    }
});
