//! The int8 GEMM microkernels: an `mr x nr` tile of raw `u8 x i8` products summed in wrapping
//! `i32`, over panels packed by `quant::driver` in the kernel's packing format. The zero
//! points, bias and requantization are applied by the driver afterwards, in safe code shared with
//! the oracle; the kernels only sum. The one exception is a kernel's fused form
//! (`QKernel::fixed`: the Cortex-M's, and the portable kernel's so that the path is tested on
//! every CPU and under Miri): for one-byte outputs with the fixed-point stage and no row terms,
//! full tiles' sums go through the same stage (`quant::FixedNarrow`) while still in registers,
//! which on a Cortex-M saves storing each tile and the driver's write-out loop (about 20
//! instructions per output).
//!
//! A [`QKernel`] is proof that this CPU runs its ISA, as a [`super::Kernel`] is: private fields,
//! a private table, and constructors that check [`Isa::is_available`].
//!
//! | kernel | ISA | tile | panels | products per instruction |
//! |---|---|---|---|---|
//! | `amxint8_qgemm_u8i8_32x32` | AMX-INT8 (Linux) | 32 x 32 | 64-byte blocks (tiles) | 16 384 (`tdpbusd`, 16 x 16 x 64) |
//! | `avx512vnni_qgemm_u8i8_8x32` | AVX-512 VNNI | 8 x 32 | 4 bytes per k-group | 64 (`vpdpbusd zmm`) |
//! | `avxvnni_qgemm_u8i8_6x16` | AVX2 + AVX-VNNI | 6 x 16 | 4 bytes per k-group | 32 (`vpdpbusd ymm`) |
//! | `avx2_qgemm_u8i8_6x16` | AVX2 | 6 x 16 | 2 `i16` per k-group | 16 (`vpmaddwd ymm`, + `vpaddd`) |
//! | `neoni8mm_qgemm_u8i8_8x12` | NEON + i8mm | 8 x 12 | 8 bytes per k-group | 32 (`usmmla`, a `2 x 8 . 8 x 2` block) |
//! | `neondot_qgemm_i8i8_8x12` | NEON + dot product | 8 x 12 | 4 bytes per k-group, A as `i8` | 16 (`sdot` by element) |
//! | `armdsp_qgemm_u8i8_2x2` | Armv7E-M DSP (Cortex-M4/M7) | 2 x 2 | 2 `i16` per k-group | 2 (`smlad`) |
//! | `generic_qgemm_u8i8_4x4` | any | 4 x 4 | 4 bytes per k-group | 1 |
//!
//! The dot product (Armv8.2) multiplies `i8 x i8` or `u8 x u8` only; its kernel gets A shifted
//! into `i8` by the driver (`QPack::SignedBytes4`). The Arm instructions are inline assembly
//! (their intrinsics are not stable Rust): one instruction per block with the registers left to
//! the compiler for NEON; the whole k-loop in one block for the Cortex-M's SMLAD kernel, whose
//! compiled schedule spilled registers.
//!
//! AMX's and AVX-512 VNNI's kernels also have a direct form (`QKernel::direct`) for stride-1
//! convs: A is read straight from a staged image whose pixels are whole 64-byte blocks of
//! channels, one pixel's channels apart (AMX loads 16 pixels as a tile; VNNI broadcasts each
//! of its 8 rows' 4-byte groups from the image as it would from a packed panel).
//!
//! AVX2's `vpmaddubsw` would multiply bytes directly, but saturates its `i16` pair sums
//! (`2 * 255 * -128` does not fit), which would break exactness; widening to `i16` at packing
//! time and `vpmaddwd` (exact `i16 x i16 -> i32` pair sums) keep every result exact.

use super::{Isa, Session};

/// `acc + lo(x) * lo(y) + hi(x) * hi(y)` on the signed 16-bit halves, wrapping: `smlad` on the
/// Armv7E-M DSP.
#[inline(always)]
pub(crate) fn smlad(x: u32, y: u32, acc: i32) -> i32 {
    #[cfg(all(target_arch = "arm", sparkle_arm_dsp))]
    {
        let r: i32;
        // SAFETY: register arithmetic only. (`smlad` also sets the sticky Q flag where the
        // accumulation overflows, which nothing reads: the sum wraps, as the portable form's.)
        unsafe {
            core::arch::asm!(
                "smlad {r}, {x}, {y}, {a}",
                r = lateout(reg) r,
                x = in(reg) x,
                y = in(reg) y,
                a = in(reg) acc,
                options(pure, nomem, nostack)
            )
        };
        r
    }
    #[cfg(not(all(target_arch = "arm", sparkle_arm_dsp)))]
    {
        let lo = i32::from(x as i16) * i32::from(y as i16);
        let hi = i32::from((x >> 16) as i16) * i32::from((y >> 16) as i16);
        acc.wrapping_add(lo).wrapping_add(hi)
    }
}

/// How the driver packs panels for a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QPack {
    /// k in groups of 4 bytes: A as `u8`, B as `i8`. Group `g`, row `i` of A at byte
    /// `(g * mr + i) * 4`; group `g`, column `j` of B at byte `(g * nr + j) * 4`.
    Bytes4,
    /// As [`QPack::Bytes4`] with A as `i8`: the driver shifts A's canonical `u8` values by -128
    /// (and its zero point with them), for kernels that multiply `i8 x i8` (`sdot`).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    SignedBytes4,
    /// k in groups of 8 bytes, `u8` A and `i8` B: group `g`, row `i` at byte `(g * mr + i) * 8`,
    /// so rows `2r` and `2r + 1` of a group form one 16-byte `2 x 8` matrix (`usmmla`'s operand).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    Bytes8,
    /// k in groups of 2 `i16` (A's `u8` and B's `i8` widened): the same layout with 2 elements
    /// of 2 bytes per group.
    #[cfg_attr(not(any(target_arch = "x86_64", all(target_arch = "arm", sparkle_arm_dsp))), allow(dead_code))]
    Pairs16,
    /// AMX's tiles: k in blocks of 64. A as `u8`, block `g`, row `i` at byte `(g * mr + i) *
    /// 64` (a block of the panel is `mr` rows of 64 bytes, as a tile loads them); B as `i8` in
    /// [`QPack::Bytes4`]'s layout with k padded to the block (block `g` is 16 groups of 4 bytes,
    /// `nr` columns each: a row of a B tile per group).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Tiles64,
}

impl QPack {
    /// Reduction steps per group.
    pub(crate) const fn group(self) -> usize {
        match self {
            QPack::Bytes4 | QPack::SignedBytes4 => 4,
            QPack::Bytes8 => 8,
            QPack::Pairs16 => 2,
            QPack::Tiles64 => 64,
        }
    }

    /// Bytes per packed element.
    pub(crate) const fn elem_bytes(self) -> usize {
        match self {
            QPack::Bytes4 | QPack::SignedBytes4 | QPack::Bytes8 | QPack::Tiles64 => 1,
            QPack::Pairs16 => 2,
        }
    }

    /// What the driver adds to A's canonical `u8` values (and zero point) for this format.
    pub(crate) const fn a_shift(self) -> i32 {
        match self {
            QPack::SignedBytes4 => -128,
            _ => 0,
        }
    }
}

/// One microkernel call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QMicroArgs {
    /// Number of k-groups (of [`QPack::group`] steps: for [`QPack::Tiles64`], 64-deep blocks).
    pub groups: usize,
    /// A micro-panel (`groups * mr` groups).
    pub a: *const u8,
    /// B micro-panel (`groups * nr` groups).
    pub b: *const u8,
    /// The `mr x nr` tile, row-major (`nr` apart), overwritten with the sums.
    pub c: *mut i32,
}

/// One call of a direct conv kernel ([`QKernel::direct`]): the `mr x nr` tile of an implicit
/// GEMM whose A is read from a staged image in place. Row `i` of the tile, tap `t`, reduction
/// step `q` of the tap's `blocks * 64` is the byte at `a + i * stride + taps[t] + q`; B is the
/// kernel's packed panel over those `ntaps * blocks * 64` steps, tap-major (for
/// [`QPack::Tiles64`], `ntaps * blocks` blocks; for [`QPack::Bytes4`], 16 groups a block).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(any(test, target_arch = "x86_64")), allow(dead_code))]
pub(crate) struct QDirectArgs {
    /// The staged image at the tile's first row.
    pub a: *const u8,
    /// Bytes from one row of the tile to the next.
    pub stride: usize,
    /// Byte offset of each tap from the row's pixel (non-negative).
    pub taps: *const i32,
    /// Taps (at least 1).
    pub ntaps: usize,
    /// 64-byte blocks per tap (at least 1).
    pub blocks: usize,
    /// B's packed panel.
    pub b: *const u8,
    /// The tile, row-major (`nr` apart), overwritten with the sums.
    pub c: *mut i32,
}

/// One call of a kernel's fused form ([`QKernel::fixed`]): a strip of `tiles` full tiles down
/// one B panel. Tile `t` is the `mr x nr` sums of `micro` with its A panel `t * a_step` bytes
/// on (the tile pointer unused); its row `i`, column `j` is the byte of
/// `FixedNarrow::new(mult[j], shift[j], zp, lo, hi).apply(sum + term[j])` stored at `out + t *
/// out_step + i * rs + j * cs`: the driver's write-out of full tiles of a GEMM whose canonical B
/// zero points are all 0 (no row term), into `i8` or `u8` (the byte is the value's either way).
/// The columns' stages are computed once for the strip.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QFixedArgs {
    /// The panels of the first tile.
    pub micro: QMicroArgs,
    /// Tiles, and bytes from one tile's A panel to the next's.
    pub tiles: usize,
    pub a_step: usize,
    /// Per column of the tile (`nr` each): the column term (bias and A's zero point), the Q31
    /// multiplier and the shift (validated: multiplier >= 0, shift in `[-31, 30]`).
    pub term: *const i32,
    pub mult: *const i32,
    pub shift: *const i32,
    /// The output zero point and clamp.
    pub zp: i32,
    pub lo: i32,
    pub hi: i32,
    /// The first tile's output `(0, 0)`, the byte strides of a tile's rows and columns, and
    /// bytes from one tile's output to the next's.
    pub out: *mut u8,
    pub rs: usize,
    pub cs: usize,
    pub out_step: usize,
}

/// [`QFixedArgs`]'s strip with `sums(a)` a tile's sums from its A panel at `a`: with every
/// column's stage in [`FixedFolded`]'s one multiply-add where all of them have it (TFLite's
/// usual shifts), else in [`FixedNarrow`]'s steps.
///
/// # Safety
/// As [`QKernel::fixed`], `sums` reading the panels as the kernel's `run` does.
///
/// [`FixedFolded`]: crate::quant::FixedFolded
/// [`FixedNarrow`]: crate::quant::FixedNarrow
#[inline(always)]
unsafe fn fixed_strip<const MR: usize, const NR: usize>(p: &QFixedArgs, sums: impl Fn(*const u8) -> [[i32; NR]; MR]) {
    use crate::quant::{FixedFolded, FixedNarrow};
    // SAFETY: `j < NR` (the contract).
    let column = |j| unsafe { (*p.term.add(j), *p.mult.add(j), *p.shift.add(j)) };
    let folded: [Option<(i32, FixedFolded)>; NR] = core::array::from_fn(|j| {
        let (term, m, shift) = column(j);
        FixedFolded::new(m, shift, p.zp, p.lo, p.hi).map(|f| (term, f))
    });
    if folded.iter().all(Option::is_some) {
        let cols = folded.map(|c| c.unwrap_or((0, FixedFolded::ZERO)));
        if cols[0].1.tops_i8() {
            // `i8` outputs (the stage's bounds are every column's).
            // SAFETY: forwarded contract.
            unsafe { strip_with(p, &cols, sums, |f, x| f.apply_i8(x)) }
        } else {
            // SAFETY: forwarded contract.
            unsafe { strip_with(p, &cols, sums, |f, x| f.apply(x)) }
        }
    } else {
        let cols: [(i32, FixedNarrow); NR] = core::array::from_fn(|j| {
            let (term, m, shift) = column(j);
            (term, FixedNarrow::new(m, shift, p.zp, p.lo, p.hi))
        });
        // SAFETY: forwarded contract.
        unsafe { strip_with(p, &cols, sums, |f, x| f.apply(x)) }
    }
}

/// [`fixed_strip`]'s loop, each column's `(term, stage)` in `cols` applied by `apply`.
///
/// # Safety
/// As [`fixed_strip`].
#[inline(always)]
unsafe fn strip_with<const MR: usize, const NR: usize, S>(
    p: &QFixedArgs,
    cols: &[(i32, S); NR],
    sums: impl Fn(*const u8) -> [[i32; NR]; MR],
    apply: impl Fn(&S, i32) -> i32,
) {
    for t in 0..p.tiles {
        // SAFETY: tile `t < tiles` of the strip (the contract); past the last the pointers are
        // not formed.
        let (a, out) = unsafe { (p.micro.a.add(t * p.a_step), p.out.add(t * p.out_step)) };
        let tile = sums(a);
        // Column by column: one column's stage live at a time.
        for (j, (term, stage)) in cols.iter().enumerate() {
            for (i, row) in tile.iter().enumerate() {
                // SAFETY: output `(i, j)` of tile `t` (the contract).
                unsafe { *out.add(i * p.rs + j * p.cs) = apply(stage, row[j].wrapping_add(*term)) as u8 };
            }
        }
    }
}

/// # Safety
/// As [`QKernel::fixed`] with `mr = nr = 4`, [`QPack::Bytes4`]: the portable kernel's sums, then
/// [`fixed_strip`]'s stores (so that the driver's fused path is tested on every CPU).
unsafe fn generic_fixed_4x4(p: &QFixedArgs) {
    // SAFETY: forwarded contract; the tile holds 4 x 4 words.
    unsafe {
        fixed_strip::<4, 4>(p, |a| {
            let mut tile = [[0i32; 4]; 4];
            generic_qgemm_u8i8_4x4(&QMicroArgs { a, c: tile.as_mut_ptr().cast::<i32>(), ..p.micro });
            tile
        })
    }
}

/// One row of a tile's write-out into a one-byte type with the ONNX stage: for `j < n`,
/// `out[j] = float_narrow(raw[j] + term[j] - zb[j] * row_sum, m[j], zp, lo, hi)` (see
/// `quant::float_narrow`, which defines it and which the scalar path calls).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FinishRow {
    pub n: usize,
    pub raw: *const i32,
    pub term: *const i32,
    pub zb: *const i32,
    pub m: *const f32,
    pub row_sum: i32,
    pub zp: i32,
    pub lo: i32,
    pub hi: i32,
    pub out: *mut i32,
}

impl FinishRow {
    /// The scalar form, for columns `from .. n`: what kernels without a vector form use, and the
    /// tail the vector forms leave.
    ///
    /// # Safety
    /// Every pointer of the row must be valid for `n` elements.
    #[inline(always)]
    pub(crate) unsafe fn scalar(&self, from: usize) {
        for j in from..self.n {
            // SAFETY: `j < n`.
            unsafe {
                let acc = crate::quant::corrected(*self.raw.add(j), *self.term.add(j), *self.zb.add(j), self.row_sum);
                *self.out.add(j) = crate::quant::float_narrow(acc, *self.m.add(j), self.zp, self.lo, self.hi);
            }
        }
    }
}

/// A tile's write-out into a one-byte type with the ONNX stage, the rows of [`FinishRow`] at
/// once: for `i < rows`, `j < n`, byte `out[i * out_stride + j]` is the one-byte output
/// `float_narrow(raw[i * raw_stride + j] + term[j] - zb[j] * row_sums[i], m[j], zp, lo, hi)`
/// (in the output type's range, so its low byte). Where `row_terms` is false every `zb[j]` is 0
/// and `row_sums` is not read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FinishTile {
    pub rows: usize,
    /// Columns, at most 32.
    pub n: usize,
    pub raw: *const i32,
    pub raw_stride: usize,
    pub term: *const i32,
    pub zb: *const i32,
    pub m: *const f32,
    pub row_sums: *const i32,
    pub row_terms: bool,
    pub zp: i32,
    pub lo: i32,
    pub hi: i32,
    pub out: *mut u8,
    pub out_stride: usize,
}

impl FinishTile {
    /// Row `i` as a [`FinishRow`] into `out`.
    ///
    /// # Safety
    /// `i < rows`; the pointers as the struct says.
    #[inline(always)]
    pub(crate) unsafe fn row(&self, i: usize, out: *mut i32) -> FinishRow {
        // SAFETY: forwarded contract.
        unsafe {
            FinishRow {
                n: self.n,
                raw: self.raw.add(i * self.raw_stride),
                term: self.term,
                zb: self.zb,
                m: self.m,
                row_sum: if self.row_terms { *self.row_sums.add(i) } else { 0 },
                zp: self.zp,
                lo: self.lo,
                hi: self.hi,
                out,
            }
        }
    }

    /// The tile row by row through `f` (a [`FinishRow`] form), each row's outputs then stored
    /// as bytes: the scalar form, and the AVX2 one.
    ///
    /// # Safety
    /// Every pointer valid for the elements the struct names; `n <= 32`; `f` runnable here.
    #[inline(always)]
    pub(crate) unsafe fn by_rows(&self, f: impl Fn(&FinishRow)) {
        let mut ys = [0i32; 32];
        for i in 0..self.rows {
            // SAFETY: forwarded contract; `ys` holds `n <= 32` words, row `i`'s bytes are at
            // `out + i * out_stride` (written, not read: they may be uninitialised).
            unsafe {
                f(&self.row(i, ys.as_mut_ptr()));
                let out = self.out.add(i * self.out_stride);
                for (j, &y) in ys[..self.n].iter().enumerate() {
                    out.add(j).write(y as u8);
                }
            }
        }
    }

    /// The scalar form.
    ///
    /// # Safety
    /// As [`FinishTile::by_rows`].
    pub(crate) unsafe fn scalar(&self) {
        // SAFETY: forwarded contract.
        unsafe { self.by_rows(|r| r.scalar(0)) }
    }
}

/// An int8 GEMM microkernel, obtainable only on a CPU that runs its ISA.
#[derive(Clone, Copy, Debug)]
pub struct QKernel {
    pub(crate) isa: Isa,
    /// `{isa}_qgemm_{a}{b}_{mr}x{nr}`: `u8i8` for `u8` A x `i8` B, `i8i8` where A is shifted to `i8`.
    pub(crate) id: &'static str,
    pub(crate) mr: usize,
    pub(crate) nr: usize,
    pub(crate) pack: QPack,
    /// # Safety
    /// The CPU must run `isa`; `a` must hold `groups * mr` and `b` `groups * nr` packed groups
    /// in `pack`'s format, and `c` must be valid for writing `mr * nr` `i32`.
    pub(crate) run: unsafe fn(&QMicroArgs),
    /// What a worker runs before its first and after its last call of `run` (with no other
    /// kernel's calls between), where the kernel keeps state in registers across calls: AMX's
    /// tile configuration.
    ///
    /// # Safety
    /// The CPU must run `isa`; `end` follows `begin` on the same thread.
    pub(crate) session: Option<Session>,
    /// The vector form of [`FinishTile`], where the ISA has one.
    ///
    /// # Safety
    /// The CPU must run `isa`; every pointer valid for the elements [`FinishTile`] names.
    pub(crate) finish_tile: Option<unsafe fn(&FinishTile)>,
    /// The direct conv form, where the kernel has one: the tile's A rows read in place from a
    /// staged image ([`QDirectArgs`]) instead of from packed panels; B packed as `pack` says.
    ///
    /// # Safety
    /// As `run` (the session included), with A as [`QDirectArgs`] describes.
    pub(crate) direct: Option<unsafe fn(&QDirectArgs)>,
    /// The fused form for one-byte outputs with the fixed-point stage, where the kernel has one:
    /// a strip of full tiles, each tile's sums (as `run`'s) requantized while in registers
    /// ([`QFixedArgs`]).
    ///
    /// # Safety
    /// The CPU must run `isa` (the session, where the kernel has one, begun); for each tile `t <
    /// tiles`, the A panel at `micro.a + t * a_step` holds `groups * mr` packed groups in
    /// `pack`'s format with `run`'s alignment, and `micro.b` `groups * nr`; `term`, `mult` and
    /// `shift` are readable for `nr` values; every byte `out + t * out_step + i * rs + j * cs`
    /// (`i < mr`, `j < nr`) is writable by the caller alone and overlaps no panel. (`micro.c` is
    /// not used. A stage that is not validated gives wrong bytes, never undefined behaviour.)
    pub(crate) fixed: Option<unsafe fn(&QFixedArgs)>,
    /// Packs `mr` gathered rows into an A panel in vectors, where the kernel has the form (a
    /// [`QPack::Bytes4`] kernel of 8 rows on AVX-512; each form is written for its kernel's `mr`,
    /// which the unit test checks): row `i`'s `kp` bytes at `src + i * kp`
    /// (`kp` a multiple of 4), group `g` of row `i` to `dst + (g * mr + i) * 4`. Otherwise the
    /// driver copies a group at a time.
    ///
    /// # Safety
    /// The CPU must run `isa`; `src` readable for `mr * kp` bytes, `dst` writable for `kp * mr`
    /// and overlapping neither.
    pub(crate) pack_rows: Option<unsafe fn(src: *const u8, kp: usize, dst: *mut u8)>,
}

impl QKernel {
    /// Reduction steps one packed group holds (the k padding).
    pub const fn k_group(&self) -> usize {
        self.pack.group()
    }
}

kernel_table_methods!(QKernel, Q_KERNELS, GENERIC_Q, "qgemm_{a}{b}");

/// # Safety
/// As [`QKernel::run`] with `mr = nr = 4`, [`QPack::Bytes4`].
unsafe fn generic_qgemm_u8i8_4x4(p: &QMicroArgs) {
    const MR: usize = 4;
    const NR: usize = 4;
    let mut acc = [[0i32; NR]; MR];
    for g in 0..p.groups {
        // SAFETY: group `g < groups` of each panel is readable (the caller's contract).
        let (a, b) = unsafe { (p.a.add(g * MR * 4), p.b.add(g * NR * 4).cast::<i8>()) };
        for (i, row) in acc.iter_mut().enumerate() {
            for (j, c) in row.iter_mut().enumerate() {
                for q in 0..4 {
                    // SAFETY: `i < MR`, `j < NR`, `q < 4`: inside group `g`.
                    let (x, y) = unsafe { (*a.add(i * 4 + q), *b.add(j * 4 + q)) };
                    *c = c.wrapping_add(i32::from(x) * i32::from(y));
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            // SAFETY: the tile holds `MR * NR` values.
            unsafe { *p.c.add(i * NR + j) = v };
        }
    }
}

pub(crate) const GENERIC_Q: QKernel = QKernel {
    isa: Isa::Generic,
    id: "generic_qgemm_u8i8_4x4",
    mr: 4,
    nr: 4,
    pack: QPack::Bytes4,
    run: generic_qgemm_u8i8_4x4,
    session: None,
    finish_tile: None,
    direct: None,
    fixed: Some(generic_fixed_4x4),
    pack_rows: None,
};

/// A portable kernel in AMX's formats (32 x 32 tiles, [`QPack::Tiles64`], a direct form), for
/// unit tests: it runs the driver's tile and direct-conv paths on every CPU and under Miri.
#[cfg(test)]
pub(crate) const GENERIC_TILES_Q: QKernel = QKernel {
    isa: Isa::Generic,
    id: "generic_qgemm_u8i8_32x32",
    mr: 32,
    nr: 32,
    pack: QPack::Tiles64,
    run: generic_tiles_32x32,
    session: None,
    finish_tile: None,
    direct: Some(generic_tiles_direct_32x32),
    fixed: None,
    pack_rows: None,
};

/// `c[i][j] += a(i, q) * b(q, j)` over the 64 steps `q` of one Tiles64 block of B at `b`
/// (step q of column j at byte `((q / 4) * 32 + j) * 4 + q % 4`).
///
/// # Safety
/// `b` holds the block; `a(i, q)` reads only what the caller's contract allows.
#[cfg(test)]
unsafe fn generic_tiles_block(c: &mut [[i32; 32]; 32], a: impl Fn(usize, usize) -> u8, b: *const u8) {
    for q in 0..64 {
        for j in 0..32 {
            // SAFETY: inside the block's 2048 bytes.
            let y = i32::from(unsafe { *b.add(((q / 4) * 32 + j) * 4 + q % 4) } as i8);
            // The panel's padding columns are zero: skipped, for Miri's sake.
            if y != 0 {
                for (i, row) in c.iter_mut().enumerate() {
                    row[j] = row[j].wrapping_add(i32::from(a(i, q)) * y);
                }
            }
        }
    }
}

/// # Safety
/// As [`QKernel::run`] with `mr = nr = 32`, [`QPack::Tiles64`].
#[cfg(test)]
unsafe fn generic_tiles_32x32(p: &QMicroArgs) {
    let mut c = [[0i32; 32]; 32];
    for g in 0..p.groups {
        // SAFETY: block `g` of each panel (the caller's contract): row `i` of A at `(g * 32 + i) * 64`.
        unsafe { generic_tiles_block(&mut c, |i, q| *p.a.add((g * 32 + i) * 64 + q), p.b.add(g * 2048)) };
    }
    // SAFETY: the tile holds 32 x 32 words.
    unsafe { core::ptr::copy_nonoverlapping(c.as_ptr().cast::<i32>(), p.c, 32 * 32) };
}

/// # Safety
/// As [`QKernel::direct`] with `mr = nr = 32`.
#[cfg(test)]
unsafe fn generic_tiles_direct_32x32(p: &QDirectArgs) {
    let mut c = [[0i32; 32]; 32];
    for t in 0..p.ntaps {
        // SAFETY: the caller's contract: `ntaps` offsets.
        let off = unsafe { *p.taps.add(t) } as usize;
        for cb in 0..p.blocks {
            let a = |i: usize, q: usize| {
                // SAFETY: row `i < 32` of the tap's `blocks * 64` bytes (the caller's contract).
                unsafe { *p.a.add(off + i * p.stride + cb * 64 + q) }
            };
            // SAFETY: block `t * blocks + cb` of the panel.
            unsafe { generic_tiles_block(&mut c, a, p.b.add((t * p.blocks + cb) * 2048)) };
        }
    }
    // SAFETY: the tile holds 32 x 32 words.
    unsafe { core::ptr::copy_nonoverlapping(c.as_ptr().cast::<i32>(), p.c, 32 * 32) };
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use core::arch::x86_64::*;

    use super::{FinishRow, FinishTile, Isa, QDirectArgs, QKernel, QMicroArgs, QPack};

    /// # Safety
    /// As [`FinishRow`]'s scalar form, on a CPU with AVX2. Eight columns at a time: the f32
    /// conversion and product are IEEE-exact as in the scalar form; the rounding is
    /// `vcvtps2dq`'s, round-half-even under the default MXCSR that Rust code runs with, after
    /// clamping to `[-2^30, 2^30]` as the scalar form does (beyond it the conversion would
    /// return `i32::MIN`).
    #[target_feature(enable = "avx2")]
    unsafe fn avx2_finish_narrow(f: &FinishRow) {
        let limit = _mm256_set1_ps(1_073_741_824.0);
        let neg = _mm256_set1_ps(-1_073_741_824.0);
        let (zp, lo, hi) = (_mm256_set1_epi32(f.zp), _mm256_set1_epi32(f.lo), _mm256_set1_epi32(f.hi));
        let rs = _mm256_set1_epi32(f.row_sum);
        let mut j = 0;
        while j + 8 <= f.n {
            // SAFETY: `j + 8 <= n`: every pointer holds these eight elements.
            unsafe {
                let raw = _mm256_loadu_si256(f.raw.add(j).cast());
                let term = _mm256_loadu_si256(f.term.add(j).cast());
                let zb = _mm256_loadu_si256(f.zb.add(j).cast());
                let acc = _mm256_sub_epi32(_mm256_add_epi32(raw, term), _mm256_mullo_epi32(zb, rs));
                let x = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_loadu_ps(f.m.add(j)));
                let x = _mm256_max_ps(_mm256_min_ps(x, limit), neg);
                let y = _mm256_add_epi32(_mm256_cvtps_epi32(x), zp);
                _mm256_storeu_si256(f.out.add(j).cast(), _mm256_min_epi32(_mm256_max_epi32(y, lo), hi));
            }
            j += 8;
        }
        // SAFETY: forwarded contract.
        unsafe { f.scalar(j) }
    }

    /// Row `i`'s columns `j .. j + 8` of a [`FinishTile`], as [`finish16`] (the ymm form, the
    /// same arithmetic): the outputs less `zp`.
    ///
    /// # Safety
    /// The CPU runs AVX2 (the caller's target feature, inlined); `i < rows`, `j + 8 <= n`.
    #[inline(always)]
    unsafe fn finish8(
        f: &FinishTile,
        (i, j): (usize, usize),
        (term, zb, m): (__m256i, __m256i, __m256),
        bounds: (__m256, __m256),
    ) -> __m256i {
        // SAFETY: the contract: row `i`, columns `j .. j + 8`.
        unsafe {
            let raw = _mm256_loadu_si256(f.raw.add(i * f.raw_stride + j).cast());
            let mut acc = _mm256_add_epi32(raw, term);
            if f.row_terms {
                acc = _mm256_sub_epi32(acc, _mm256_mullo_epi32(zb, _mm256_set1_epi32(*f.row_sums.add(i))));
            }
            let x = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), m);
            _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(x, bounds.1), bounds.0))
        }
    }

    /// # Safety
    /// As [`QKernel::finish_tile`], on a CPU with AVX2. A tile of 16 columns (the AVX2 kernels'
    /// width) as [`avx512_finish_tile`]'s 32: two rows at a time, the clamps before the rounding
    /// ([`finish8`]), narrowed by `vpackssdw`, `zp` added on i16 lanes, `vpackuswb` (`vpacksswb`
    /// for a negative `lo`) and one `vpermd`, 16 bytes a row. Narrower tiles:
    /// [`avx2_finish_narrow`] row by row.
    #[target_feature(enable = "avx2")]
    unsafe fn avx2_finish_tile(f: &FinishTile) {
        if f.n != 16 {
            // SAFETY: forwarded contract; this function runs AVX2.
            return unsafe { f.by_rows(|r| avx2_finish_narrow(r)) };
        }
        let bounds = (_mm256_set1_ps((f.lo - f.zp) as f32), _mm256_set1_ps((f.hi - f.zp) as f32));
        // SAFETY: columns 0 .. 16 (`n = 16`).
        let [c0, c1] = [0, 8].map(|j| unsafe {
            (
                _mm256_loadu_si256(f.term.add(j).cast()),
                _mm256_loadu_si256(f.zb.add(j).cast()),
                _mm256_loadu_ps(f.m.add(j)),
            )
        });
        let zp = _mm256_set1_epi16(f.zp as i16);
        // Lane `l` of the bytes holds columns 4l .. 4l + 4 and 8 + 4l .. of row i, then of row
        // i + 1 (as dwords: 4l .. 4l + 4).
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let unsigned = f.lo >= 0;
        let mut i = 0;
        while i < f.rows {
            // The last of an odd number of rows is packed with itself.
            let pair = i + 1 < f.rows;
            let i1 = if pair { i + 1 } else { i };
            // SAFETY: rows `i, i1 < rows`, columns 0 .. 16; each row's 16 bytes at
            // `out + row * out_stride`.
            unsafe {
                let h0 = _mm256_packs_epi32(finish8(f, (i, 0), c0, bounds), finish8(f, (i, 8), c1, bounds));
                let h1 = if pair {
                    _mm256_packs_epi32(finish8(f, (i1, 0), c0, bounds), finish8(f, (i1, 8), c1, bounds))
                } else {
                    h0
                };
                let (h0, h1) = (_mm256_add_epi16(h0, zp), _mm256_add_epi16(h1, zp));
                let bytes = if unsigned { _mm256_packus_epi16(h0, h1) } else { _mm256_packs_epi16(h0, h1) };
                let rows = _mm256_permutevar8x32_epi32(bytes, order);
                _mm_storeu_si128(f.out.add(i * f.out_stride).cast(), _mm256_castsi256_si128(rows));
                if pair {
                    _mm_storeu_si128(f.out.add(i1 * f.out_stride).cast(), _mm256_extracti128_si256::<1>(rows));
                }
            }
            i += 2;
        }
    }

    /// Row `i`'s columns `j .. j + 16` of a [`FinishTile`] (the lanes off `mask` read as zero),
    /// corrected by the columns' `(term, zb, m)` and the row's sum, scaled, clamped in f32 to
    /// `bounds` (`lo - zp`, `hi - zp`) and rounded by `vcvtps2dq` (half to even under the
    /// default MXCSR that Rust code runs with): the outputs less `zp`.
    ///
    /// # Safety
    /// The CPU runs AVX-512F (the caller's target feature, inlined); `i < rows`, and the lanes on
    /// `mask` are columns below `n`.
    #[inline(always)]
    unsafe fn finish16(
        f: &FinishTile,
        (i, j, mask): (usize, usize, __mmask16),
        (term, zb, m): (__m512i, __m512i, __m512),
        bounds: (__m512, __m512),
    ) -> __m512i {
        // SAFETY: the contract: row `i`, columns `j ..` on `mask`.
        unsafe {
            let raw = _mm512_maskz_loadu_epi32(mask, f.raw.add(i * f.raw_stride + j).cast());
            let mut acc = _mm512_add_epi32(raw, term);
            if f.row_terms {
                acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(zb, _mm512_set1_epi32(*f.row_sums.add(i))));
            }
            let x = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), m);
            _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(x, bounds.1), bounds.0))
        }
    }

    /// The constants `(term, zb, m)` of columns `j .. j + 16` on `mask` (the others zero).
    ///
    /// # Safety
    /// The CPU runs AVX-512F (the caller's target feature, inlined); the lanes on `mask` are
    /// columns below `n`.
    #[inline(always)]
    unsafe fn columns16(f: &FinishTile, j: usize, mask: __mmask16) -> (__m512i, __m512i, __m512) {
        // SAFETY: the contract.
        unsafe {
            (
                _mm512_maskz_loadu_epi32(mask, f.term.add(j).cast()),
                _mm512_maskz_loadu_epi32(mask, f.zb.add(j).cast()),
                _mm512_maskz_loadu_ps(mask, f.m.add(j)),
            )
        }
    }

    /// # Safety
    /// As [`QKernel::finish_tile`], on a CPU with AVX-512F and AVX512BW: [`avx2_finish_narrow`]'s
    /// arithmetic sixteen columns at a time ([`finish16`]), the columns' constants loaded once
    /// for all rows, with the clamps moved before the rounding: the product clamped in f32 to
    /// `[lo - zp, hi - zp]` (integers of at most 10 bits, exact in f32), rounded, then `zp`
    /// added. That is `float_narrow`'s value: rounding is monotone and keeps integers, so
    /// clamping to integer bounds before it or after it gives the same result (and its clamp to
    /// `2^30` never bites). A tile of 32 columns goes two rows at a time: the four halves
    /// narrowed to i16 by `vpackssdw`, `zp` added to 32 lanes at once, narrowed to bytes by
    /// `vpackuswb` (`vpacksswb` for a negative `lo`; the values lie in `[lo, hi]`, so no pack
    /// saturates), and put in order by one `vpermd`: 32 bytes a row, where one `vpmovdb` a
    /// vector did 16. Narrower tiles a row and 16 columns at a time, the last through masks.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn avx512_finish_tile(f: &FinishTile) {
        let bounds = (_mm512_set1_ps((f.lo - f.zp) as f32), _mm512_set1_ps((f.hi - f.zp) as f32));
        if f.n == 32 {
            // SAFETY: columns 0 .. 32 (`n = 32`).
            let (c0, c1) = unsafe { (columns16(f, 0, !0), columns16(f, 16, !0)) };
            let zp = _mm512_set1_epi16(f.zp as i16);
            // `vpack*` works within 128-bit lanes: lane `l` of the bytes holds the 4-column groups
            // `l` of row i's halves, then of row i + 1's (as dwords: 4l .. 4l + 4).
            let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
            let unsigned = f.lo >= 0;
            let mut i = 0;
            while i < f.rows {
                // The last of an odd number of rows is packed with itself.
                let pair = i + 1 < f.rows;
                let i1 = if pair { i + 1 } else { i };
                // SAFETY: rows `i, i1 < rows`, columns 0 .. 32; each row's 32 bytes at
                // `out + row * out_stride`.
                unsafe {
                    let h0 =
                        _mm512_packs_epi32(finish16(f, (i, 0, !0), c0, bounds), finish16(f, (i, 16, !0), c1, bounds));
                    let h1 = if pair {
                        _mm512_packs_epi32(finish16(f, (i1, 0, !0), c0, bounds), finish16(f, (i1, 16, !0), c1, bounds))
                    } else {
                        h0
                    };
                    let (h0, h1) = (_mm512_add_epi16(h0, zp), _mm512_add_epi16(h1, zp));
                    let bytes = if unsigned { _mm512_packus_epi16(h0, h1) } else { _mm512_packs_epi16(h0, h1) };
                    let rows = _mm512_permutexvar_epi32(order, bytes);
                    _mm256_storeu_si256(f.out.add(i * f.out_stride).cast(), _mm512_castsi512_si256(rows));
                    if pair {
                        _mm256_storeu_si256(f.out.add(i1 * f.out_stride).cast(), _mm512_extracti64x4_epi64::<1>(rows));
                    }
                }
                i += 2;
            }
            return;
        }
        let zp = _mm512_set1_epi32(f.zp);
        let mut j = 0;
        while j < f.n {
            let w = (f.n - j).min(16);
            let mask: __mmask16 = if w == 16 { 0xFFFF } else { (1 << w) - 1 };
            // SAFETY: columns `j .. j + w` (`w <= n - j`) of every pointer; masked-off lanes
            // are not read.
            unsafe {
                let cols = columns16(f, j, mask);
                for i in 0..f.rows {
                    let y = _mm512_add_epi32(finish16(f, (i, j, mask), cols, bounds), zp);
                    // In `[lo, hi]`: the low bytes are the outputs.
                    let bytes = _mm512_cvtepi32_epi8(y);
                    let out = f.out.add(i * f.out_stride + j);
                    if w == 16 {
                        _mm_storeu_si128(out.cast(), bytes);
                    } else {
                        let mut t = [0u8; 16];
                        _mm_storeu_si128(t.as_mut_ptr().cast(), bytes);
                        core::ptr::copy_nonoverlapping(t.as_ptr(), out, w);
                    }
                }
            }
            j += 16;
        }
    }

    /// The 6 x 16 tile both ymm kernels share: per group, one `i32` word per row (two `i16` or
    /// four bytes) broadcast against B's 16 columns (two ymm), `step(acc, a, b)` summing the
    /// products of one word into each lane.
    ///
    /// # Safety
    /// As [`QKernel::run`] with `mr = 6`, `nr = 16` and a format of 4 bytes per row and group,
    /// on a CPU with AVX2 and whatever `step` uses (the caller's target features, inlined).
    #[inline(always)]
    unsafe fn tile_6x16(p: &QMicroArgs, step: impl Fn(__m256i, __m256i, __m256i) -> __m256i) {
        const MR: usize = 6;
        // SAFETY: the caller runs AVX2 (the contract).
        let mut acc = unsafe { [[_mm256_setzero_si256(); 2]; MR] };
        let mut a = p.a.cast::<i32>();
        let mut b = p.b.cast::<__m256i>();
        for _ in 0..p.groups {
            // SAFETY: one group of B is 16 columns x 4 bytes (two ymm), one of A 6 rows x 4
            // bytes (six i32), inside the panels by the caller's contract, which also says
            // the CPU runs AVX2.
            unsafe {
                let b0 = _mm256_loadu_si256(b);
                let b1 = _mm256_loadu_si256(b.add(1));
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai = _mm256_set1_epi32(a.add(i).read_unaligned());
                    row[0] = step(row[0], ai, b0);
                    row[1] = step(row[1], ai, b1);
                }
                a = a.add(MR);
                b = b.add(2);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: the tile holds 6 x 16 i32.
            unsafe {
                _mm256_storeu_si256(p.c.add(i * 16).cast(), row[0]);
                _mm256_storeu_si256(p.c.add(i * 16 + 8).cast(), row[1]);
            }
        }
    }

    /// # Safety
    /// As [`QKernel::run`] with `mr = 6`, `nr = 16`, [`QPack::Pairs16`], on a CPU with AVX2:
    /// `vpmaddwd` (exact `i16 x i16` pair sums) and `vpaddd`.
    #[target_feature(enable = "avx2")]
    unsafe fn avx2_qgemm_u8i8_6x16(p: &QMicroArgs) {
        // SAFETY: forwarded contract; AVX2 is this function's target feature.
        unsafe { tile_6x16(p, |acc, a, b| _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))) }
    }

    /// # Safety
    /// As [`QKernel::run`] with `mr = 6`, `nr = 16`, [`QPack::Bytes4`], on a CPU with AVX2 and
    /// AVX-VNNI: the AVX2 kernel's tile with `vpdpbusd ymm` (four byte products per lane).
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn avxvnni_qgemm_u8i8_6x16(p: &QMicroArgs) {
        // SAFETY: forwarded contract; AVX-VNNI is this function's target feature.
        unsafe { tile_6x16(p, |acc, a, b| _mm256_dpbusd_avx_epi32(acc, a, b)) }
    }

    /// # Safety
    /// As [`QKernel::run`] with `mr = 8`, `nr = 32`, [`QPack::Bytes4`], on a CPU with AVX-512F
    /// and AVX512_VNNI.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn avx512vnni_qgemm_u8i8_8x32(p: &QMicroArgs) {
        let mut acc = [[_mm512_setzero_si512(); 2]; 8];
        let mut a = p.a.cast::<i32>();
        let mut b = p.b.cast::<__m512i>();
        for _ in 0..p.groups {
            // SAFETY: one group of B is 32 columns x 4 bytes (two zmm), one of A 8 rows x 4
            // bytes (eight i32), inside the panels by the caller's contract.
            unsafe {
                vnni_group_8x32(&mut acc, core::array::from_fn(|i| a.add(i)), b);
                a = a.add(8);
                b = b.add(2);
            }
        }
        // SAFETY: the tile holds 8 x 32 i32.
        unsafe { store_8x32(&acc, p.c) }
    }

    /// One k-group of the 8 x 32 VNNI tile: row `i`'s 4 bytes at `rows[i]` broadcast against
    /// B's 32 columns at `b` (two zmm), summed into `acc`.
    ///
    /// # Safety
    /// The CPU runs AVX-512F and AVX512_VNNI (the callers' target features, inlined); every
    /// `rows[i]` is readable for 4 bytes and `b` for 128.
    #[inline(always)]
    unsafe fn vnni_group_8x32(acc: &mut [[__m512i; 2]; 8], rows: [*const i32; 8], b: *const __m512i) {
        // SAFETY: the contract.
        unsafe {
            let b0 = _mm512_loadu_si512(b);
            let b1 = _mm512_loadu_si512(b.add(1));
            for (row, at) in acc.iter_mut().zip(rows) {
                let ai = _mm512_set1_epi32(at.read_unaligned());
                row[0] = _mm512_dpbusd_epi32(row[0], ai, b0);
                row[1] = _mm512_dpbusd_epi32(row[1], ai, b1);
            }
        }
    }

    /// Stores the 8 x 32 VNNI tile, row-major, 32 apart.
    ///
    /// # Safety
    /// The CPU runs AVX-512F (the callers' target feature, inlined); `c` is writable for 256 i32.
    #[inline(always)]
    unsafe fn store_8x32(acc: &[[__m512i; 2]; 8], c: *mut i32) {
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: row `i < 8` of the tile (the contract).
            unsafe {
                _mm512_storeu_si512(c.add(i * 32).cast(), row[0]);
                _mm512_storeu_si512(c.add(i * 32 + 16).cast(), row[1]);
            }
        }
    }

    /// # Safety
    /// As [`QKernel::direct`] with `mr = 8`, `nr = 32`, on a CPU with AVX-512F and
    /// AVX512_VNNI: B is [`QPack::Bytes4`] over the `ntaps * blocks * 64` steps, tap-major.
    /// The GEMM kernel's tile and loop, with row `i`'s 4 bytes of a group broadcast from the
    /// image (`a + i * stride + tap + 4 * group`) instead of from a packed panel.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn avx512vnni_qconv_direct_u8i8_8x32(p: &QDirectArgs) {
        let mut acc = [[_mm512_setzero_si512(); 2]; 8];
        let mut b = p.b.cast::<__m512i>();
        let (s1, s2, s3) = (p.stride, 2 * p.stride, 3 * p.stride);
        for t in 0..p.ntaps {
            // SAFETY: the caller's contract: `ntaps` non-negative offsets; rows 0..8 of the
            // tap's `blocks * 64` bytes are readable, so are their starts (`a4` is row 4).
            let (mut a0, mut a4) = unsafe {
                let a0 = p.a.add(*p.taps.add(t) as usize);
                (a0, a0.add(4 * s1))
            };
            for _ in 0..p.blocks * 16 {
                // SAFETY: one group of B is 32 columns x 4 bytes (two zmm) of the panel's
                // `ntaps * blocks * 16` groups; rows `a0 + {0,1,2,3} * stride` and `a4 + ...`
                // are rows 0-7 at this group's 4 bytes, inside the contract's reads.
                unsafe {
                    let rows = [a0, a0.add(s1), a0.add(s2), a0.add(s3), a4, a4.add(s1), a4.add(s2), a4.add(s3)];
                    vnni_group_8x32(&mut acc, rows.map(|r| r.cast::<i32>()), b);
                    a0 = a0.add(4);
                    a4 = a4.add(4);
                    b = b.add(2);
                }
            }
        }
        // SAFETY: the tile holds 8 x 32 i32.
        unsafe { store_8x32(&acc, p.c) }
    }

    pub(crate) const AVXVNNI_Q: QKernel = QKernel {
        isa: Isa::AvxVnni,
        id: "avxvnni_qgemm_u8i8_6x16",
        mr: 6,
        nr: 16,
        pack: QPack::Bytes4,
        run: avxvnni_qgemm_u8i8_6x16,
        session: None,
        finish_tile: Some(avx2_finish_tile),
        direct: None,
        fixed: None,
        pack_rows: None,
    };

    /// [`QKernel::pack_rows`] for 8 rows of [`QPack::Bytes4`] groups: 16 groups of the 8 rows at
    /// a time as an 8 x 16 transpose of 4-byte words (unpacks within 128-bit lanes, then lane
    /// shuffles), one 32-byte store a group; the last block's loads masked to the rows' ends and
    /// its stores to the groups there. One 4-byte copy a group and row was a third of conv1's
    /// time (3 -> 64 7x7 stride 2, NHWC, one Zen 4 thread).
    ///
    /// # Safety
    /// As [`QKernel::pack_rows`] with `mr = 8`, on a CPU with AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_pack_rows4_8(src: *const u8, kp: usize, dst: *mut u8) {
        let groups = kp / 4;
        let mut g0 = 0;
        while g0 < groups {
            let n = (groups - g0).min(16);
            let mask = ((1u32 << n) - 1) as __mmask16;
            // SAFETY: (whole block) row i's groups g0..g0 + n are inside its kp bytes (the mask
            // reads no others); group g0 + g < groups is inside the panel's kp * 8 bytes.
            unsafe {
                let r: [__m512i; 8] =
                    core::array::from_fn(|i| _mm512_maskz_loadu_epi32(mask, src.add(i * kp + g0 * 4).cast()));
                // Per 128-bit lane L (words 4L..4L + 4 of each row): pairs of rows, then fours.
                let t: [__m512i; 8] = core::array::from_fn(|i| {
                    let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                    if i % 2 == 0 {
                        _mm512_unpacklo_epi32(a, b)
                    } else {
                        _mm512_unpackhi_epi32(a, b)
                    }
                });
                // u[w] (rows 0-3) and v[w] (rows 4-7) hold word 4L + w of their rows in lane L.
                let fours = |a: __m512i, b: __m512i, c: __m512i, d: __m512i| {
                    [
                        _mm512_unpacklo_epi64(a, b),
                        _mm512_unpackhi_epi64(a, b),
                        _mm512_unpacklo_epi64(c, d),
                        _mm512_unpackhi_epi64(c, d),
                    ]
                };
                let (u, v) = (fours(t[0], t[2], t[1], t[3]), fours(t[4], t[6], t[5], t[7]));
                for w in 0..4 {
                    // [u0, v0, u2, v2]: groups w and 8 + w; [u1, v1, u3, v3]: 4 + w and 12 + w.
                    let even = _mm512_shuffle_i32x4::<0x88>(u[w], v[w]);
                    let odd = _mm512_shuffle_i32x4::<0xDD>(u[w], v[w]);
                    let (even, odd) =
                        (_mm512_shuffle_i32x4::<0xD8>(even, even), _mm512_shuffle_i32x4::<0xD8>(odd, odd));
                    for (g, x) in [
                        (w, _mm512_castsi512_si256(even)),
                        (8 + w, _mm512_extracti64x4_epi64::<1>(even)),
                        (4 + w, _mm512_castsi512_si256(odd)),
                        (12 + w, _mm512_extracti64x4_epi64::<1>(odd)),
                    ] {
                        if g < n {
                            _mm256_storeu_si256(dst.add((g0 + g) * 32).cast(), x);
                        }
                    }
                }
            }
            g0 += n;
        }
    }

    pub(crate) const AVX512VNNI_Q: QKernel = QKernel {
        isa: Isa::Avx512Vnni,
        id: "avx512vnni_qgemm_u8i8_8x32",
        mr: 8,
        nr: 32,
        pack: QPack::Bytes4,
        run: avx512vnni_qgemm_u8i8_8x32,
        session: None,
        finish_tile: Some(avx512_finish_tile),
        direct: Some(avx512vnni_qconv_direct_u8i8_8x32),
        fixed: None,
        pack_rows: Some(avx512_pack_rows4_8),
    };

    /// # Safety
    /// As [`QKernel::run`] with `mr = nr = 32`, [`QPack::Tiles64`], on a CPU with AMX-TILE and
    /// AMX-INT8 whose OS granted this process the tile state, inside the kernel's session on
    /// this thread: `tdpbusd` (16 x 16 x 64 products) on the 2 x 2 block of tiles of
    /// [`crate::arch::x86_64::amx`].
    unsafe fn amx_qgemm_u8i8_32x32(p: &QMicroArgs) {
        if p.groups == 0 {
            for i in 0..32 * 32 {
                // SAFETY: the tile holds 32 x 32 i32.
                unsafe { *p.c.add(i) = 0 };
            }
            return;
        }
        // SAFETY: the caller's contract: the CPU runs AMX, the tiles are configured; A and B
        // hold `groups` blocks of 2048 bytes (`groups * mr` and `groups * nr` 64-byte groups),
        // C 4096 bytes; `groups >= 1`.
        unsafe { crate::arch::x86_64::amx::amx_block_loop!("tdpbusd", p.a, p.b, p.c, p.groups) }
    }

    /// # Safety
    /// As [`QKernel::direct`] with `mr = nr = 32`: the CPU runs AMX-INT8 inside the kernel's
    /// session on this thread, and `p` describes readable rows and blocks (`ntaps`, `blocks`
    /// >= 1).
    unsafe fn amx_qconv_direct_u8i8_32x32(p: &QDirectArgs) {
        // SAFETY: the caller's contract, which is the loop's.
        unsafe { crate::arch::x86_64::amx::amx_direct_loop!(p.a, p.stride, p.taps, p.ntaps, p.blocks, p.b, p.c) }
    }

    pub(crate) const AMXINT8_Q: QKernel = QKernel {
        isa: Isa::AmxInt8,
        id: "amxint8_qgemm_u8i8_32x32",
        mr: 32,
        nr: 32,
        pack: QPack::Tiles64,
        run: amx_qgemm_u8i8_32x32,
        session: Some(crate::arch::x86_64::amx::SESSION),
        // AMX detection requires AVX-512F.
        finish_tile: Some(avx512_finish_tile),
        direct: Some(amx_qconv_direct_u8i8_32x32),
        fixed: None,
        pack_rows: None,
    };

    pub(crate) const AVX2_Q: QKernel = QKernel {
        isa: Isa::Avx2,
        id: "avx2_qgemm_u8i8_6x16",
        mr: 6,
        nr: 16,
        pack: QPack::Pairs16,
        run: avx2_qgemm_u8i8_6x16,
        session: None,
        finish_tile: Some(avx2_finish_tile),
        direct: None,
        fixed: None,
        pack_rows: None,
    };
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64 {
    use core::arch::aarch64::*;
    use core::arch::asm;

    use super::{Isa, QKernel, QMicroArgs, QPack};

    /// `acc.4s += b.16b . a.4b[lane]`: four columns of `b` (4 bytes each) against one row of A
    /// (group `lane` of `a`), `i8 x i8` in `i32`. Inline assembly: the dot-product intrinsics
    /// are not stable Rust.
    macro_rules! sdot_lane {
        ($acc:expr, $b:expr, $a:expr, $lane:literal) => {
            asm!(
                concat!("sdot {0:v}.4s, {1:v}.16b, {2:v}.4b[", $lane, "]"),
                inout(vreg) $acc,
                in(vreg) $b,
                in(vreg) $a,
                options(pure, nomem, nostack, preserves_flags)
            )
        };
    }

    /// # Safety
    /// As [`QKernel::run`] with `mr = 8`, `nr = 12`, [`QPack::SignedBytes4`], on a CPU with the
    /// dot product. Per group: A's 8 rows in two registers (4 bytes each), B's 12 columns in
    /// three, 24 `sdot` by element (16 products each).
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn neondot_qgemm_i8i8_8x12(p: &QMicroArgs) {
        let mut acc = [[vdupq_n_s32(0); 3]; 8];
        let (mut a, mut b) = (p.a.cast::<i8>(), p.b.cast::<i8>());
        for _ in 0..p.groups {
            // SAFETY: one group of A is 8 x 4 bytes, of B 12 x 4, inside the panels by the
            // caller's contract; the dot product is this function's target feature.
            unsafe {
                let (a0, a1) = (vld1q_s8(a), vld1q_s8(a.add(16)));
                let bs = [vld1q_s8(b), vld1q_s8(b.add(16)), vld1q_s8(b.add(32))];
                for (c, &bc) in bs.iter().enumerate() {
                    sdot_lane!(acc[0][c], bc, a0, 0);
                    sdot_lane!(acc[1][c], bc, a0, 1);
                    sdot_lane!(acc[2][c], bc, a0, 2);
                    sdot_lane!(acc[3][c], bc, a0, 3);
                    sdot_lane!(acc[4][c], bc, a1, 0);
                    sdot_lane!(acc[5][c], bc, a1, 1);
                    sdot_lane!(acc[6][c], bc, a1, 2);
                    sdot_lane!(acc[7][c], bc, a1, 3);
                }
                a = a.add(32);
                b = b.add(48);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                // SAFETY: the tile holds 8 x 12 i32.
                unsafe { vst1q_s32(p.c.add(i * 12 + c * 4), v) };
            }
        }
    }

    /// # Safety
    /// As [`QKernel::run`] with `mr = 8`, `nr = 12`, [`QPack::Bytes8`], on a CPU with the int8
    /// matrix multiply. Per group of 8: A's row pairs are four `2 x 8` `u8` matrices, B's column
    /// pairs six `2 x 8` `i8` ones; each `usmmla` adds one `2 x 2` block (32 products), 24 per
    /// group. The blocks are unzipped into rows at the end.
    #[target_feature(enable = "neon,i8mm")]
    unsafe fn neoni8mm_qgemm_u8i8_8x12(p: &QMicroArgs) {
        let mut acc = [[vdupq_n_s32(0); 6]; 4];
        let (mut a, mut b) = (p.a, p.b.cast::<i8>());
        for _ in 0..p.groups {
            // SAFETY: one group of A is 8 x 8 bytes, of B 12 x 8, inside the panels by the
            // caller's contract; i8mm is this function's target feature.
            unsafe {
                let ar = [vld1q_u8(a), vld1q_u8(a.add(16)), vld1q_u8(a.add(32)), vld1q_u8(a.add(48))];
                for c in 0..6 {
                    let bc = vld1q_s8(b.add(16 * c));
                    for (row, &x) in acc.iter_mut().zip(&ar) {
                        asm!(
                            "usmmla {0:v}.4s, {1:v}.16b, {2:v}.16b",
                            inout(vreg) row[c],
                            in(vreg) x,
                            in(vreg) bc,
                            options(pure, nomem, nostack, preserves_flags)
                        );
                    }
                }
                a = a.add(64);
                b = b.add(96);
            }
        }
        // Block (r, c) holds rows 2r, 2r+1 x columns 2c, 2c+1, row-major: the low halves of two
        // neighbouring blocks are four columns of row 2r, the high halves of row 2r + 1.
        for (r, row) in acc.iter().enumerate() {
            for c in (0..6).step_by(2) {
                let (x, y) = (vreinterpretq_s64_s32(row[c]), vreinterpretq_s64_s32(row[c + 1]));
                // SAFETY: the tile holds 8 x 12 i32: rows 2r and 2r + 1, columns 2c .. 2c + 4.
                unsafe {
                    vst1q_s32(p.c.add(2 * r * 12 + 2 * c), vreinterpretq_s32_s64(vzip1q_s64(x, y)));
                    vst1q_s32(p.c.add((2 * r + 1) * 12 + 2 * c), vreinterpretq_s32_s64(vzip2q_s64(x, y)));
                }
            }
        }
    }

    pub(crate) const NEONDOT_Q: QKernel = QKernel {
        isa: Isa::NeonDot,
        id: "neondot_qgemm_i8i8_8x12",
        mr: 8,
        nr: 12,
        pack: QPack::SignedBytes4,
        run: neondot_qgemm_i8i8_8x12,
        session: None,
        finish_tile: None,
        direct: None,
        fixed: None,
        pack_rows: None,
    };

    pub(crate) const NEONI8MM_Q: QKernel = QKernel {
        isa: Isa::NeonI8mm,
        id: "neoni8mm_qgemm_u8i8_8x12",
        mr: 8,
        nr: 12,
        pack: QPack::Bytes8,
        run: neoni8mm_qgemm_u8i8_8x12,
        session: None,
        finish_tile: None,
        direct: None,
        fixed: None,
        pack_rows: None,
    };
}

#[cfg(all(target_arch = "arm", sparkle_arm_dsp))]
pub(crate) mod dsp {
    use core::arch::asm;

    use super::{fixed_strip, Isa, QFixedArgs, QKernel, QMicroArgs, QPack};

    /// # Safety
    /// As [`QKernel::run`] with `mr = nr = 2`, [`QPack::Pairs16`]: per group (2 k), one word of
    /// each row and column (two `i16`), four `smlad` (`acc + lo * lo + hi * hi` on signed 16-bit
    /// halves: 8 products). A 2 x 2 tile keeps the accumulators, operands and pointers inside the
    /// Cortex-M's 13 registers. Inline assembly: `smlad`'s intrinsic is not stable Rust, and the
    /// compiler's schedule of the same loop spilled registers.
    unsafe fn armdsp_qgemm_u8i8_2x2(p: &QMicroArgs) {
        // SAFETY: forwarded contract.
        let [[c00, c01], [c10, c11]] = unsafe { sums_2x2(p) };
        // SAFETY: the tile holds 2 x 2 i32.
        unsafe {
            p.c.write(c00);
            p.c.add(1).write(c01);
            p.c.add(2).write(c10);
            p.c.add(3).write(c11);
        }
    }

    /// # Safety
    /// As [`QKernel::fixed`] with the kernel's tile and packing: the sums requantized in
    /// registers (`fixed_strip`), no tile stored.
    unsafe fn armdsp_qgemm_u8i8_2x2_fixed(p: &QFixedArgs) {
        // SAFETY: forwarded contract.
        unsafe { fixed_strip::<2, 2>(p, |a| sums_2x2(&QMicroArgs { a, ..p.micro })) };
    }

    /// The 2 x 2 tile's sums (see [`armdsp_qgemm_u8i8_2x2`]).
    ///
    /// # Safety
    /// As [`QKernel::run`] with `mr = nr = 2`, [`QPack::Pairs16`] (the tile pointer unused).
    #[inline(always)]
    unsafe fn sums_2x2(p: &QMicroArgs) -> [[i32; 2]; 2] {
        let (mut a, mut b) = (p.a, p.b);
        let (mut c00, mut c01, mut c10, mut c11) = (0i32, 0i32, 0i32, 0i32);
        // One group: a row pair's words and a column pair's words (`ldrd` each, post-indexed),
        // four `smlad`. Two groups per iteration: 14 instructions for 16 products.
        macro_rules! group {
            () => {
                "ldrd {a0}, {a1}, [{a}], #8\n\
                 ldrd {b0}, {b1}, [{b}], #8\n\
                 smlad {c00}, {a0}, {b0}, {c00}\n\
                 smlad {c01}, {a0}, {b1}, {c01}\n\
                 smlad {c10}, {a1}, {b0}, {c10}\n\
                 smlad {c11}, {a1}, {b1}, {c11}\n"
            };
        }
        let pairs = p.groups / 2;
        if pairs > 0 {
            // SAFETY: `2 * pairs <= groups` groups of each panel (two words each; `ldrd` needs
            // 4-byte alignment, which the driver's panels have) by the caller's contract; the
            // loop runs `pairs >= 1` times.
            unsafe {
                asm!(
                    "2:",
                    group!(),
                    group!(),
                    "subs {n}, {n}, #1",
                    "bne 2b",
                    a = inout(reg) a,
                    b = inout(reg) b,
                    n = inout(reg) pairs => _,
                    c00 = inout(reg) c00,
                    c01 = inout(reg) c01,
                    c10 = inout(reg) c10,
                    c11 = inout(reg) c11,
                    a0 = out(reg) _,
                    a1 = out(reg) _,
                    b0 = out(reg) _,
                    b1 = out(reg) _,
                    options(nostack, readonly)
                )
            };
        }
        if p.groups % 2 == 1 {
            // SAFETY: the last group, as above.
            unsafe {
                asm!(
                    group!(),
                    a = inout(reg) a => _,
                    b = inout(reg) b => _,
                    c00 = inout(reg) c00,
                    c01 = inout(reg) c01,
                    c10 = inout(reg) c10,
                    c11 = inout(reg) c11,
                    a0 = out(reg) _,
                    a1 = out(reg) _,
                    b0 = out(reg) _,
                    b1 = out(reg) _,
                    // Not `preserves_flags`: `smlad` sets Q when an accumulation overflows (the
                    // raw sum may; it wraps, and the driver's corrections make it exact).
                    options(nostack, readonly)
                )
            };
        }
        [[c00, c01], [c10, c11]]
    }

    pub(crate) const ARMDSP_Q: QKernel = QKernel {
        isa: Isa::ArmDsp,
        id: "armdsp_qgemm_u8i8_2x2",
        mr: 2,
        nr: 2,
        pack: QPack::Pairs16,
        run: armdsp_qgemm_u8i8_2x2,
        session: None,
        finish_tile: None,
        direct: None,
        fixed: Some(armdsp_qgemm_u8i8_2x2_fixed),
        pack_rows: None,
    };
}

/// The registration list of the int8 kernels, best first (`name => Isa (path of its const)`),
/// handed to `$callback!` like [`crate::for_each_kernel`]: the private table below and the
/// stamped tests of `tests/tests/qgemm_cpu.rs` both come from it, so a kernel registered here
/// cannot go untested.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_qkernel {
    ($callback:ident) => {
        $callback! {
            #[cfg(target_arch = "x86_64")]
            amxint8 => AmxInt8 ($crate::arch::quant::x86::AMXINT8_Q),
            #[cfg(target_arch = "x86_64")]
            avx512vnni => Avx512Vnni ($crate::arch::quant::x86::AVX512VNNI_Q),
            #[cfg(target_arch = "x86_64")]
            avxvnni => AvxVnni ($crate::arch::quant::x86::AVXVNNI_Q),
            #[cfg(target_arch = "x86_64")]
            avx2 => Avx2 ($crate::arch::quant::x86::AVX2_Q),
            #[cfg(all(target_arch = "arm", sparkle_arm_dsp))]
            armdsp => ArmDsp ($crate::arch::quant::dsp::ARMDSP_Q),
            #[cfg(target_arch = "aarch64")]
            neoni8mm => NeonI8mm ($crate::arch::quant::aarch64::NEONI8MM_Q),
            #[cfg(target_arch = "aarch64")]
            neondot => NeonDot ($crate::arch::quant::aarch64::NEONDOT_Q),
            generic => Generic ($crate::arch::quant::GENERIC_Q),
        }
    };
}

/// Stamps the private table from the registration list.
macro_rules! q_registration_table {
    ($($(#[$cfg:meta])* $name:ident => $isa:ident ($kernel:path)),* $(,)?) => {
        /// Every int8 kernel compiled into this build, best first. Private: see [`QKernel`].
        const Q_KERNELS: &[QKernel] = &[$($(#[$cfg])* $kernel),*];
    };
}
crate::for_each_qkernel!(q_registration_table);

#[cfg(test)]
mod tests {
    extern crate std;

    #[test]
    fn every_tile_fits_the_drivers_column_sums() {
        // quant::driver keeps one panel's column sums in a stack array of 32.
        assert!(super::Q_KERNELS.iter().all(|k| k.nr <= 32 && k.mr > 0 && k.nr > 0));
    }

    /// Every kernel's vector packing of a panel's rows (`QKernel::pack_rows`) against the group
    /// copies it replaces, for row lengths below, at and past one and two 16-group blocks: each
    /// group of each row where the layout puts it, nothing written past the panel.
    #[test]
    #[allow(unsafe_code)]
    fn vector_packed_rows_are_the_groups_interleaved() {
        let mut tested = 0;
        for kernel in super::QKernel::available() {
            let Some(pack) = kernel.pack_rows else { continue };
            tested += 1;
            let mr = kernel.mr;
            for kp in [4, 12, 60, 64, 68, 128, 148, 252] {
                let src: std::vec::Vec<u8> = (0..mr * kp).map(|i| (i * 7 + i / 251) as u8).collect();
                // The panel, then a guard of 64 bytes that must stay as it was.
                let mut dst = std::vec![0xA5u8; kp * mr + 64];
                // SAFETY: the kernel is available on this CPU; mr rows of kp bytes at src, the
                // panel's kp * mr bytes at dst, apart.
                unsafe { pack(src.as_ptr(), kp, dst.as_mut_ptr()) };
                for i in 0..mr {
                    for g in 0..kp / 4 {
                        let (want, got) = (&src[i * kp + 4 * g..][..4], &dst[(g * mr + i) * 4..][..4]);
                        assert_eq!(want, got, "{}: kp {kp}, row {i}, group {g}", kernel.id);
                    }
                }
                assert!(dst[kp * mr..].iter().all(|&b| b == 0xA5), "{}: kp {kp}: wrote past the panel", kernel.id);
            }
        }
        if tested == 0 {
            std::eprintln!("SKIP vector-packed rows: no kernel this CPU runs packs rows in vectors (AVX-512 VNNI)");
        }
    }

    /// Every kernel's vector write-out (`QKernel::finish_tile`) against the scalar form, byte for
    /// byte: u8 and i8 outputs (zero points at both ends of the type and between, clamps that
    /// bite on one side, both and to one value), multipliers from 1e-9 to 1e30 (products that
    /// overflow to infinity), accumulators near 0 and across the whole i32 range, with and
    /// without row terms, 1-9 rows (odd counts: the last row packed alone) of 1-32 columns;
    /// nothing written past a row's `n` bytes.
    #[test]
    #[allow(unsafe_code)]
    fn vector_write_outs_match_the_scalar_form() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // (zp, lo, hi) within u8's range, then i8's.
        let stages = [(3, 0, 255), (0, 0, 255), (255, 0, 255), (3, 10, 200), (128, 128, 128), (200, 0, 100)];
        let signed = [(0, -128, 127), (-128, -128, 127), (127, -128, 127), (-3, 0, 127), (5, -5, -5), (-100, -50, 60)];
        let mut tested = 0;
        for kernel in super::QKernel::available() {
            let Some(vector) = kernel.finish_tile else { continue };
            tested += 1;
            for case in 0..600 {
                let (zp, lo, hi) = if case % 2 == 0 { stages[case / 2 % 6] } else { signed[case / 2 % 6] };
                let rows = 1 + case % 9;
                let n = [32, 16, 1, 7, 15, 17, 31, 24][case / 9 % 8];
                let m: std::vec::Vec<f32> = (0..n)
                    .map(|j| {
                        [1e-9, 3.1e-4, 0.02, 0.7, 1.0, 3.5, 1e30][(j + case) % 7]
                            * (1.0 + (next() % 100) as f32 / 100.0)
                    })
                    .collect();
                let wide = case % 3 == 0;
                let raw: std::vec::Vec<i32> = (0..rows * 32)
                    .map(|_| if wide { next() as i32 } else { (next() % 20_001) as i32 - 10_000 })
                    .collect();
                let term: std::vec::Vec<i32> = (0..n).map(|_| (next() % 2001) as i32 - 1000).collect();
                let row_terms = case % 4 < 2;
                let zb: std::vec::Vec<i32> =
                    (0..n).map(|_| if row_terms { (next() % 255) as i32 - 127 } else { 0 }).collect();
                let row_sums: std::vec::Vec<i32> = (0..rows).map(|_| (next() % 40_000) as i32).collect();
                let stride = 40;
                let mut got = std::vec![0xA5u8; rows * stride];
                let mut want = got.clone();
                let tile = |out: &mut [u8]| super::FinishTile {
                    rows,
                    n,
                    raw: raw.as_ptr(),
                    raw_stride: 32,
                    term: term.as_ptr(),
                    zb: zb.as_ptr(),
                    m: m.as_ptr(),
                    row_sums: row_sums.as_ptr(),
                    row_terms,
                    zp,
                    lo,
                    hi,
                    out: out.as_mut_ptr(),
                    out_stride: stride,
                };
                // SAFETY: the kernel is available on this CPU; every array holds what the tile
                // names (rows x 32 sums, n column constants, rows row sums, rows x 40 bytes).
                unsafe {
                    vector(&tile(&mut got));
                    tile(&mut want).scalar();
                }
                assert_eq!(got, want, "{}: case {case}: {rows} x {n}, zp {zp}, clamp [{lo}, {hi}]", kernel.id);
            }
        }
        if tested == 0 {
            std::eprintln!("SKIP vector write-outs: no int8 kernel this CPU runs has one (AVX2)");
        }
    }
}
