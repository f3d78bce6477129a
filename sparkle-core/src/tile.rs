//! Partition of a 2-d output (a GEMM's C, or a conv's implicit-GEMM output) into tiles for
//! threads and workgroups. Tiles are row-major over the grid; edge tiles are clipped, so every
//! element is covered exactly once and no tile reaches outside the output.

use crate::error::{Error, Param, Result};

/// One tile: `rows x cols` elements starting at `(row, col)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tile {
    /// First row.
    pub row: usize,
    /// First column.
    pub col: usize,
    /// Rows in this tile (smaller than the tile height only at the bottom edge).
    pub rows: usize,
    /// Columns in this tile (smaller than the tile width only at the right edge).
    pub cols: usize,
}

/// A grid of tiles over a `rows x cols` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tiling {
    rows: usize,
    cols: usize,
    tile_rows: usize,
    tile_cols: usize,
    grid_rows: usize,
    grid_cols: usize,
}

impl Tiling {
    /// Tiles of `tile_rows x tile_cols` (both at least 1) over `rows x cols` (either may be 0).
    pub fn new(rows: usize, cols: usize, tile_rows: usize, tile_cols: usize) -> Result<Self> {
        if tile_rows == 0 || tile_cols == 0 {
            return Err(Error::Zero { param: Param::Tile });
        }
        let grid_rows = rows.div_ceil(tile_rows);
        let grid_cols = cols.div_ceil(tile_cols);
        // The number of tiles must itself be representable.
        grid_rows.checked_mul(grid_cols).ok_or(Error::Overflow { param: Param::Tile })?;
        Ok(Self { rows, cols, tile_rows, tile_cols, grid_rows, grid_cols })
    }

    /// Number of tiles.
    pub const fn len(&self) -> usize {
        self.grid_rows * self.grid_cols
    }

    /// True when the output is empty.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tiles down and across: `(grid_rows, grid_cols)`.
    pub const fn grid(&self) -> (usize, usize) {
        (self.grid_rows, self.grid_cols)
    }

    /// Tile number `idx` (row-major over the grid), or `None` past the end.
    pub const fn tile(&self, idx: usize) -> Option<Tile> {
        if idx >= self.len() {
            return None;
        }
        let tr = idx / self.grid_cols;
        let tc = idx % self.grid_cols;
        let row = tr * self.tile_rows;
        let col = tc * self.tile_cols;
        let rows = if self.rows - row < self.tile_rows { self.rows - row } else { self.tile_rows };
        let cols = if self.cols - col < self.tile_cols { self.cols - col } else { self.tile_cols };
        Some(Tile { row, col, rows, cols })
    }

    /// All tiles in order.
    pub fn iter(&self) -> impl Iterator<Item = Tile> + '_ {
        (0..self.len()).filter_map(|i| self.tile(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_cover_small() {
        for rows in 0..9 {
            for cols in 0..9 {
                for tr in 1..5 {
                    for tc in 1..5 {
                        let t = Tiling::new(rows, cols, tr, tc).unwrap();
                        let mut hit = [[0u8; 9]; 9];
                        for tile in t.iter() {
                            assert!(tile.rows >= 1 && tile.cols >= 1);
                            for row in &mut hit[tile.row..tile.row + tile.rows] {
                                row[tile.col..tile.col + tile.cols].iter_mut().for_each(|h| *h += 1);
                            }
                        }
                        for (i, row) in hit.iter().enumerate() {
                            for (j, &h) in row.iter().enumerate() {
                                assert_eq!(h, u8::from(i < rows && j < cols));
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        let t = Tiling::new(usize::MAX, 1, 1 << 20, 1).unwrap();
        let last = t.tile(t.len() - 1).unwrap();
        assert_eq!(last.row + last.rows, usize::MAX);
        assert_eq!(Tiling::new(usize::MAX, usize::MAX, 1, 1), Err(Error::Overflow { param: Param::Tile }));
    }
}
