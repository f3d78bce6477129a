//! Exact cover of a tiling for arbitrary sizes and tile shapes (checked by counting on small
//! outputs, and by arithmetic on huge ones).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sparkle_core::Tiling;

fuzz_target!(|x: (usize, usize, usize, usize, usize)| {
    let (rows, cols, tr, tc, probe) = x;
    let Ok(t) = Tiling::new(rows, cols, tr, tc) else { return };
    if rows.saturating_mul(cols) <= 1 << 14 {
        let mut hits = vec![0u8; rows * cols];
        for tile in t.iter() {
            for i in tile.row..tile.row + tile.rows {
                for j in tile.col..tile.col + tile.cols {
                    hits[i * cols + j] += 1;
                }
            }
        }
        assert!(hits.iter().all(|&h| h == 1));
    } else if !t.is_empty() {
        let tile = t.tile(probe % t.len()).unwrap();
        assert!(tile.rows >= 1 && tile.cols >= 1 && tile.rows <= tr && tile.cols <= tc);
        assert!(tile.row.checked_add(tile.rows).is_some_and(|e| e <= rows));
        assert!(tile.col.checked_add(tile.cols).is_some_and(|e| e <= cols));
    }
    assert!(t.tile(t.len()).is_none());
});
