//! Strided matrix views over slices: `MatRef` (shared) and `MatMut` (exclusive), of `f32` unless
//! another element type is named (`MatRef<'_, i8>` for quantized operands).
//!
//! Element `(i, j)` lives at `i * rs + j * cs` from the start of the slice. Strides are
//! non-negative; a transposed operand is the same view with `rs` and `cs` swapped ([`MatRef::t`]).
//! Construction validates, with checked arithmetic, that every element is inside the slice, and
//! for [`MatMut`] that no two elements share memory, so the accessors below never go out of
//! bounds and a kernel writing through a `MatMut` never races with itself.

use crate::error::{add, mul, Error, Param, Result};

/// Number of slice elements a `rows x cols` view with strides `rs`, `cs` spans
/// (0 for an empty view), or an overflow error.
pub fn required_len(rows: usize, cols: usize, rs: usize, cs: usize) -> Result<usize> {
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    let last_row = mul(rows - 1, rs, Param::Rows)?;
    let last_col = mul(cols - 1, cs, Param::Cols)?;
    add(add(last_row, last_col, Param::Rows)?, 1, Param::Rows)
}

const fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// True when two distinct elements `(i, j) != (i', j')` of the view map to the same offset.
///
/// `i*rs + j*cs == i'*rs + j'*cs` needs `di*rs == dj*cs` with `0 < |di| < rows`,
/// `0 < |dj| < cols` of opposite signs (or one stride zero). The smallest such pair is
/// `di = cs/g`, `dj = rs/g` with `g = gcd(rs, cs)`, so the test is exact.
pub const fn aliases(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return false;
    }
    if (rows > 1 && rs == 0) || (cols > 1 && cs == 0) {
        return true;
    }
    if rows == 1 || cols == 1 {
        return false;
    }
    let g = gcd(rs, cs);
    cs / g < rows && rs / g < cols
}

/// A shared, strided, bounds-checked view of a `rows x cols` matrix of `T` (f32 by default).
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T = f32> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// An exclusive, strided, bounds-checked, alias-free view of a `rows x cols` matrix of `T` (f32
/// by default).
#[derive(Debug)]
pub struct MatMut<'a, T = f32> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

fn check_len(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Result<()> {
    let required = required_len(rows, cols, rs, cs)?;
    if required > len {
        return Err(Error::TooSmall { param: Param::Rows, required, found: len });
    }
    Ok(())
}

impl<'a, T: Copy> MatRef<'a, T> {
    /// A view with explicit strides; fails if any element would fall outside `data`.
    pub fn new(data: &'a [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Result<Self> {
        check_len(data.len(), rows, cols, rs, cs)?;
        Ok(Self { data, rows, cols, rs, cs })
    }

    /// A dense row-major view (`rs = cols`, `cs = 1`).
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A dense column-major view (`rs = 1`, `cs = rows`).
    pub fn col_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, 1, rows)
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Row stride in elements.
    pub fn rs(&self) -> usize {
        self.rs
    }
    /// Column stride in elements.
    pub fn cs(&self) -> usize {
        self.cs
    }
    /// The underlying slice (at least [`required_len`] long).
    pub fn as_slice(&self) -> &'a [T] {
        self.data
    }

    /// Element `(i, j)`, or `None` outside the view.
    pub fn get(&self, i: usize, j: usize) -> Option<T> {
        (i < self.rows && j < self.cols).then(|| self.data[i * self.rs + j * self.cs])
    }

    /// Element `(i, j)`; panics only if `(i, j)` is outside the view (a caller bug).
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> T {
        assert!(i < self.rows && j < self.cols, "({i}, {j}) outside {}x{} view", self.rows, self.cols);
        // In bounds: validated at construction, so the offset cannot overflow either.
        self.data[i * self.rs + j * self.cs]
    }

    /// The `rows x cols` sub-view starting at `(row, col)`.
    pub fn submatrix(&self, row: usize, col: usize, rows: usize, cols: usize) -> Result<Self> {
        sub_check(self.rows, self.cols, row, col, rows, cols)?;
        if rows == 0 || cols == 0 {
            return Ok(Self { data: &self.data[..0], rows, cols, rs: self.rs, cs: self.cs });
        }
        let start = row * self.rs + col * self.cs;
        Self::new(&self.data[start..], rows, cols, self.rs, self.cs)
    }
}

fn sub_check(rows: usize, cols: usize, r0: usize, c0: usize, nr: usize, nc: usize) -> Result<()> {
    let end_r = add(r0, nr, Param::Rows)?;
    let end_c = add(c0, nc, Param::Cols)?;
    if end_r > rows {
        return Err(Error::TooSmall { param: Param::Rows, required: end_r, found: rows });
    }
    if end_c > cols {
        return Err(Error::TooSmall { param: Param::Cols, required: end_c, found: cols });
    }
    Ok(())
}

impl<'a, T: Copy> MatMut<'a, T> {
    /// A view with explicit strides; fails if an element falls outside `data` or two elements alias.
    pub fn new(data: &'a mut [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Result<Self> {
        check_len(data.len(), rows, cols, rs, cs)?;
        if aliases(rows, cols, rs, cs) {
            return Err(Error::Aliasing { rows, cols, rs, cs });
        }
        Ok(Self { data, rows, cols, rs, cs })
    }

    /// A dense row-major view (`rs = cols`, `cs = 1`).
    pub fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A dense column-major view (`rs = 1`, `cs = rows`).
    pub fn col_major(data: &'a mut [T], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, 1, rows)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Row stride in elements.
    pub fn rs(&self) -> usize {
        self.rs
    }
    /// Column stride in elements.
    pub fn cs(&self) -> usize {
        self.cs
    }

    /// A shared view of the same elements.
    pub fn rb(&self) -> MatRef<'_, T> {
        MatRef { data: self.data, rows: self.rows, cols: self.cols, rs: self.rs, cs: self.cs }
    }

    /// A shorter-lived exclusive view of the same elements.
    pub fn rb_mut(&mut self) -> MatMut<'_, T> {
        MatMut { data: self.data, rows: self.rows, cols: self.cols, rs: self.rs, cs: self.cs }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Element `(i, j)`, or `None` outside the view.
    pub fn get(&self, i: usize, j: usize) -> Option<T> {
        self.rb().get(i, j)
    }

    /// Element `(i, j)`; panics only if `(i, j)` is outside the view (a caller bug).
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> T {
        self.rb().at(i, j)
    }

    /// Writes `v` at `(i, j)`; panics only if `(i, j)` is outside the view (a caller bug).
    #[inline]
    pub fn set(&mut self, i: usize, j: usize, v: T) {
        assert!(i < self.rows && j < self.cols, "({i}, {j}) outside {}x{} view", self.rows, self.cols);
        self.data[i * self.rs + j * self.cs] = v;
    }

    /// The underlying slice, element `(0, 0)` first (gaps between rows or columns included).
    pub fn as_slice(&self) -> &[T] {
        self.data
    }

    /// The underlying slice, mutably (gaps included: they belong to the caller's buffer).
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.data
    }

    /// Raw parts for kernels: base pointer, and the guarantee that every `(i, j)` in range is
    /// in bounds of the allocation and no two of them alias.
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.data.as_mut_ptr()
    }

    /// Splits into rows `[0, row)` and `[row, rows)`, two exclusive views over disjoint memory.
    /// Possible when every row lies below the next one in memory (`(cols - 1) * cs < rs`, e.g.
    /// row-major); otherwise (column-major) the rows interleave and this is an error.
    pub fn split_rows_at(self, row: usize) -> Result<(Self, Self)> {
        if row > self.rows {
            return Err(Error::TooSmall { param: Param::Rows, required: row, found: self.rows });
        }
        let (rows, cols, rs, cs) = (self.rows, self.cols, self.rs, self.cs);
        if cols > 1 && rows > 1 && (cols - 1) * cs >= rs {
            return Err(Error::Aliasing { rows, cols, rs, cs });
        }
        let at = row.checked_mul(rs).ok_or(Error::Overflow { param: Param::Rows })?.min(self.data.len());
        let (head, tail) = self.data.split_at_mut(at);
        Ok((Self::new(head, row, cols, rs, cs)?, Self::new(tail, rows - row, cols, rs, cs)?))
    }

    /// The `rows x cols` exclusive sub-view starting at `(row, col)`.
    pub fn submatrix(self, row: usize, col: usize, rows: usize, cols: usize) -> Result<Self> {
        sub_check(self.rows, self.cols, row, col, rows, cols)?;
        let (rs, cs) = (self.rs, self.cs);
        if rows == 0 || cols == 0 {
            return Ok(Self { data: &mut self.data[..0], rows, cols, rs, cs });
        }
        let start = row * rs + col * cs;
        Self::new(&mut self.data[start..], rows, cols, rs, cs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliasing_is_exact_on_small_cases() {
        // Brute force over small shapes and strides.
        for rows in 0..5usize {
            for cols in 0..5usize {
                for rs in 0..7usize {
                    for cs in 0..7usize {
                        let mut seen = [false; 64];
                        let mut brute = false;
                        for i in 0..rows {
                            for j in 0..cols {
                                let o = i * rs + j * cs;
                                brute |= seen[o];
                                seen[o] = true;
                            }
                        }
                        assert_eq!(aliases(rows, cols, rs, cs), brute, "{rows}x{cols} rs={rs} cs={cs}");
                    }
                }
            }
        }
    }

    #[test]
    fn out_of_bounds_and_overflow_rejected() {
        let d = [0.0f32; 12];
        assert!(MatRef::row_major(&d, 3, 4).is_ok());
        assert_eq!(
            MatRef::row_major(&d, 4, 4).unwrap_err(),
            Error::TooSmall { param: Param::Rows, required: 16, found: 12 }
        );
        assert_eq!(MatRef::new(&d, 2, 2, usize::MAX, 1).unwrap_err(), Error::Overflow { param: Param::Rows });
        assert!(MatRef::new(&d, 0, 5, usize::MAX, usize::MAX).is_ok());
    }

    #[test]
    fn split_rows_is_disjoint_or_refused() {
        let mut d = [0.0f32; 12];
        let (mut top, mut bottom) = MatMut::row_major(&mut d, 3, 4).unwrap().split_rows_at(1).unwrap();
        top.set(0, 3, 1.0);
        bottom.set(1, 0, 2.0);
        assert_eq!((d[3], d[8]), (1.0, 2.0));
        let mut e = [0.0f32; 12];
        assert!(MatMut::col_major(&mut e, 3, 4).unwrap().split_rows_at(1).is_err());
        let mut f = [0.0f32; 12];
        let (a, b) = MatMut::row_major(&mut f, 3, 4).unwrap().split_rows_at(3).unwrap();
        assert_eq!((a.rows(), b.rows()), (3, 0));
    }

    #[test]
    fn transpose_and_submatrix() {
        let d: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let a = MatRef::row_major(&d, 2, 3).unwrap();
        assert_eq!(a.t().at(2, 1), 6.0);
        let s = a.submatrix(1, 1, 1, 2).unwrap();
        assert_eq!((s.at(0, 0), s.at(0, 1)), (5.0, 6.0));
        assert!(a.submatrix(1, 1, 2, 1).is_err());
    }
}
