//! GEMMs of a few rows (up to [`ROWS_MAX_M`] or [`DOTS_MAX_M`]: a GEMV, a linear layer at batch
//! 1-24), streamed; from four rows with B row-major the blocked driver reads B in place.
//!
//! The blocked driver runs them on its register tiles (AVX-512's 12 rows: one valid of twelve at `m = 1`)
//! over a packed B, or a B read 128 bytes a row, every row a page of its own: memory-bound at
//! a fraction of the bandwidth (1 x 4096 x 4096 on one Zen 4 core: 3 GFLOPS, the peers 10-16).
//! Here B is read in place, each pass streaming a few of its rows (or, transposed, of B^T's)
//! from start to end:
//! - B row-major: `C[i, j] += sum_q alpha * A[i, p + q] * B[p + q, j]` for four rows `p..`
//!   of B at a time, along the row, C's rows (blocks of 16 KiB) staying in L1.
//!   C is set to `beta * C` (0 where `beta == 0`: not read) first, and the bias and activation
//!   are applied last.
//! - B transposed (B^T row-major) with A row-major: `C[i, j]` is a dot product of A's row `i`
//!   and B^T's row `j`, both contiguous: two to eight of B^T's rows at a time, in vectors along
//!   `k`, each sum reduced across lanes at the end, then the whole epilogue.
//!
//! Small problems with A and B row-major ([`tiles_fit`]: up to 256^3, 32^3 on a Cortex-M4) skip
//! the packing too: register tiles read A's rows and B's strips in place
//! (`arch::tiles::tiles_body`, the ragged edges under masks; the Cortex-M4's 4 x 4 tiles in
//! `arch/arm.rs`, the last ones moved up and left over elements already done).
//!
//! The kernels ([`crate::arch::GemmKernel`]'s `small` and `tiles`) are the bodies of
//! `arch/small.rs` and `arch/tiles.rs` compiled per ISA (and `arch/arm.rs`'s tiles); this file
//! chooses the path and form, and `driver.rs` (`run_small`) splits the work.
#![allow(unsafe_code)]

use crate::arch::small::{DOTS_MAX_M, ROWS_MAX_M};
use crate::view::MatRef;

/// Whether the streamed path runs `A (m x k) * B` into C (`cs_c`): C's rows contiguous, and B
/// row-major with at most [`ROWS_MAX_M`] rows, or (not on 32-bit Arm) B^T row-major with A
/// row-major and at most [`DOTS_MAX_M`] rows.
pub(crate) fn takes(a: &MatRef<'_>, b: &MatRef<'_>, cs_c: usize) -> bool {
    // The Cortex-M4's streamed kernel has the row-major form only (`arch/arm.rs`).
    cs_c == 1 && (rows_fit(a, b) || (cfg!(not(target_arch = "arm")) && dots_fit(a, b)))
}

/// The narrowest B the row-major form takes on 32-bit Arm: the Cortex-M4's strips are twelve
/// columns wide (the last moved left over columns already done).
const ARM_ROWS_MIN_N: usize = 12;

/// Whether the row-major form can run it.
fn rows_fit(a: &MatRef<'_>, b: &MatRef<'_>) -> bool {
    b.cs() == 1 && a.rows() <= ROWS_MAX_M && (cfg!(not(target_arch = "arm")) || b.cols() >= ARM_ROWS_MIN_N)
}

/// Whether the dot-product form can run it.
fn dots_fit(a: &MatRef<'_>, b: &MatRef<'_>) -> bool {
    b.rs() == 1 && a.cs() == 1 && a.rows() <= DOTS_MAX_M
}

/// Whether a case [`takes`] admits runs as dot products: where only they fit, or where both do
/// (a `k x 1` B is both row- and column-major) and C is narrower than a vector, which the
/// row-major form would run in one-lane loads and stores of C.
pub(crate) fn dots(a: &MatRef<'_>, b: &MatRef<'_>) -> bool {
    cfg!(not(target_arch = "arm")) && dots_fit(a, b) && (!rows_fit(a, b) || b.cols() < 16)
}

/// The most multiply-adds ([`tiles_fit`]) a problem may have to run in register tiles straight
/// from A and B: 256^3. Measured on one Zen 4 core (AVX-512), GFLOPS tiles against the blocked
/// driver: 16^3 46 / 23, 32^3 87 / 71, 64^3 104 / 99, 128^3 109 / 107, 256^3 113 / 110,
/// 64 x 64 x 256 101 / 96, 128 x 512 x 256 113 / 106; past it level up to 768^3 (105 / 107),
/// behind at 1024^3 (92 / 108). On the Cortex-M4 (instructions per multiply-add, QEMU
/// `-icount`, tiles against the blocked driver): 16^3 1.68 / 2.00, 32^3 1.42 / 1.43, 64^3 1.35 /
/// 1.29 (B read in place costs its tiles a load and an add a step that the packed panel saves).
const TILES_MAX_FMAS: usize = if cfg!(target_arch = "arm") { 1 << 15 } else { 1 << 24 };

/// The deepest reduction [`tiles_fit`] takes: a strip of B (`k` rows of 32 floats, AVX-512's
/// widest tile) then fills at most half of a Zen 4's L2 (64 x 64 x 512: 111-115 / 110).
const TILES_MAX_K: usize = 512;

/// The deepest reduction [`tiles_fit`] takes over a B whose rows are a multiple of 4 KiB apart:
/// a strip's rows then share the L1's sets (16 x 1024 x 1024: 87-91 against 94-95 packed;
/// 64 x 1024 x 256 level).
const TILES_ALIASED_MAX_K: usize = 256;

/// The fewest rows [`tiles_fit`] takes: every kernel set's smallest tile fits in them.
const TILES_MIN_M: usize = 4;

/// The fewest columns [`tiles_fit`] takes on 32-bit Arm: the Cortex-M4's tiles load four of B's
/// columns at a time (a narrower last strip moves left over columns already done). x86's tiles
/// take any width (the last columns under masks).
const ARM_TILES_MIN_N: usize = 4;

/// Whether `A (m x k) * B` into C (`cs_c`) runs in register tiles read straight from A and B
/// (the kernel set's `tiles`): C's rows, A's and B's contiguous, at least [`TILES_MIN_M`] rows
/// (and on 32-bit Arm [`ARM_TILES_MIN_N`] columns), at most [`TILES_MAX_K`] deep ([`TILES_ALIASED_MAX_K`] over B's rows 4 KiB apart) and
/// [`TILES_MAX_FMAS`] multiply-adds.
pub(crate) fn tiles_fit(a: &MatRef<'_>, b: &MatRef<'_>, cs_c: usize) -> bool {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let aliased = (b.rs() * core::mem::size_of::<f32>()).is_multiple_of(4096);
    let max_k = if aliased { TILES_ALIASED_MAX_K } else { TILES_MAX_K };
    cs_c == 1
        && a.cs() == 1
        && b.cs() == 1
        && m >= TILES_MIN_M
        && (cfg!(not(target_arch = "arm")) || n >= ARM_TILES_MIN_N)
        && k <= max_k
        && m.saturating_mul(n).saturating_mul(k) <= TILES_MAX_FMAS
}
