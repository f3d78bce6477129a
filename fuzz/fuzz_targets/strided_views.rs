//! Arbitrary strides and lengths: validation never accepts an out-of-bounds or aliasing view.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sparkle_core::{MatMut, MatRef};

fuzz_target!(|x: (u8, u8, u16, u16, u16, usize, usize)| {
    let (rows, cols, rs, cs, len, big_rs, big_cs) = x;
    let (rows, cols, rs, cs, len) = (rows as usize % 24, cols as usize % 24, rs as usize, cs as usize, len as usize);
    let mut data = vec![0.0f32; len];
    // Brute force the footprint.
    let mut seen = std::collections::HashSet::new();
    let mut collide = false;
    let mut fits = true;
    for i in 0..rows {
        for j in 0..cols {
            let o = i * rs + j * cs;
            fits &= o < len;
            collide |= !seen.insert(o);
        }
    }
    assert_eq!(MatRef::new(&data, rows, cols, rs, cs).is_ok(), fits);
    assert_eq!(MatMut::new(&mut data, rows, cols, rs, cs).is_ok(), fits && !collide);
    // Huge strides must be an error (never an overflowed, accepted view).
    if rows > 1 && cols > 1 {
        if let Ok(v) = MatRef::new(&data, rows, cols, big_rs, big_cs) {
            assert!((rows - 1) * big_rs + (cols - 1) * big_cs < len);
            let _ = v.get(rows - 1, cols - 1);
        }
    }
});
