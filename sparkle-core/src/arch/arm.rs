//! Cortex-M4F/M7 (Armv7E-M with the FPv4-SP single-precision FPU): the f32 GEMM microkernel.
//!
//! A 4 x 4 register tile: the sixteen accumulators live in `s0`-`s15`, two k-steps of A and B in
//! `s16`-`s31`, so one iteration is two `vldm` of eight floats (packed A and B are contiguous)
//! and thirty-two `vfma.f32`: 36 instructions for 32 multiply-adds (39 with row-major A read in
//! place: four rows, four `vldm`), where the compiler's schedule of the portable body took about
//! 2.4 per multiply-add. Inline assembly, because LLVM uses neither `vldm` nor all 32 registers
//! for the portable body, and it keeps the kernel small for an MCU's flash: one loop per A
//! layout. The first k-step multiplies (`vmul.f32`) instead of zeroing the tile first.
//!
//! Whole tiles that only write C run a column at a time (`GemmKernel::column`: one call for a
//! column of tiles, where a call per tile and the driver's loop around it cost a fifth of a 32^3
//! GEMM), and B's panels are copied with `vldm`/`vstm` ([`copy_groups_of_4`]).
//!
//! `vfma.f32` is the fused multiply-add (one rounding), as the x86 and NEON kernels use.

use core::arch::asm;
use core::mem::MaybeUninit;

use super::generic::{Scalar, GENERIC_KERNELS};
use super::small::SmallArgs;
use super::{act_is_scalar, activated, write_row, GemmKernel, Isa, Kernel, MicroArgs, Simd, TileBias};
use crate::epilogue::Activation;

/// `$op` (`vfma.f32` or `vmul.f32`) of one A value (`$a`) into one row of accumulators
/// (`$c0`-`$c3`) with the four B values `$b0`-`$b3`.
macro_rules! row {
    ($op:literal, $c0:literal $c1:literal $c2:literal $c3:literal, $a:literal, $b0:literal $b1:literal $b2:literal $b3:literal) => {
        concat!(
            $op, " ", $c0, ", ", $a, ", ", $b0, "\n", $op, " ", $c1, ", ", $a, ", ", $b1, "\n", $op, " ", $c2, ", ",
            $a, ", ", $b2, "\n", $op, " ", $c3, ", ", $a, ", ", $b3, "\n",
        )
    };
}

/// One rank-1 update (`vfma.f32`, or `vmul.f32` for the first k-step) of the 4 x 4 tile in
/// `s0`-`s15` (row-major): A's column in the four registers `$a0`-`$a3`, B's row in `$b0`-`$b3`.
macro_rules! rank1 {
    ($op:literal; $a0:literal $a1:literal $a2:literal $a3:literal; $($b:literal)*) => {
        concat!(
            row!($op, "s0" "s1" "s2" "s3", $a0, $($b)*),
            row!($op, "s4" "s5" "s6" "s7", $a1, $($b)*),
            row!($op, "s8" "s9" "s10" "s11", $a2, $($b)*),
            row!($op, "s12" "s13" "s14" "s15", $a3, $($b)*),
        )
    };
}

/// The tile's k loop for one A layout: `$load1` loads one k-step of A into `s16`, `s18`, `s20`,
/// `s22` (`$a_regs`) and of B into `s24`-`s27`; `$load2` two k-steps, the second in `s17`,
/// `s19`, `s21`, `s23` (`$a_regs2`) and `s28`-`s31`. The first k-step multiplies (with an even
/// `k`, the first two: a step multiplies, the next multiply-adds), then `(k - 1) / 2` iterations
/// of two; the loop counts in `{n}`. The tile's
/// rows are stored at `{t}`, `{rs}` bytes apart. Every `s` register is saved and restored by the
/// block itself (`vpush`/`vpop`), because rustc does not let inline assembly name `s` registers
/// on these targets (their FPU is not a stable target feature), neither as operands nor as
/// clobbers.
macro_rules! tile_loop {
    ($load1:expr, $load2:expr, $a1:literal $a2:literal $a3:literal $a4:literal, $b1:literal $b2:literal $b3:literal $b4:literal) => {
        concat!(
            "vpush {{d0-d15}}\n",
            "tst {k}, #1\n",
            "beq 1f\n",
            $load1,
            rank1!("vmul.f32"; $a1 $a2 $a3 $a4; "s24" "s25" "s26" "s27"),
            "b 3f\n",
            "1:\n",
            $load2,
            rank1!("vmul.f32"; $a1 $a2 $a3 $a4; "s24" "s25" "s26" "s27"),
            rank1!("vfma.f32"; $b1 $b2 $b3 $b4; "s28" "s29" "s30" "s31"),
            "3:\n",
            "subs {k}, {k}, #1\n",
            "lsrs {n}, {k}, #1\n",
            "beq 4f\n",
            "2:\n",
            $load2,
            rank1!("vfma.f32"; $a1 $a2 $a3 $a4; "s24" "s25" "s26" "s27"),
            rank1!("vfma.f32"; $b1 $b2 $b3 $b4; "s28" "s29" "s30" "s31"),
            "subs {n}, {n}, #1\n",
            "bne 2b\n",
            "4:\n",
            "vstmia {t}, {{s0-s3}}\n",
            "add {t}, {t}, {rs}\n",
            "vstmia {t}, {{s4-s7}}\n",
            "add {t}, {t}, {rs}\n",
            "vstmia {t}, {{s8-s11}}\n",
            "add {t}, {t}, {rs}\n",
            "vstmia {t}, {{s12-s15}}\n",
            "vpop {{d0-d15}}\n",
        )
    };
}

/// The 4 x 4 product of packed A (`rs_a = 1, cs_a = 4`: `k` groups of four floats at `a`) and
/// packed B (the same at `b`), stored at `t`, rows `rs` floats apart.
///
/// # Safety
/// `k >= 1`; `4 * k` readable floats at `a` and at `b`; four rows of four writable floats at `t`;
/// an FPv4-SP FPU.
// Out of line, as `rows`: one copy in flash for the tile and the column kernels (a call costs
// the column about 4 instructions a tile).
#[inline(never)]
unsafe fn packed(a: *const f32, b: *const f32, k: usize, t: *mut f32, rs: usize) {
    // SAFETY: the loads stay inside the `4 * k` floats of each panel (one group per `vldm` of
    // four, two per `vldm` of eight, `k` groups in all); f32 pointers are word-aligned, as `vldm`
    // needs; the stores are the caller's four rows.
    unsafe {
        asm!(
            tile_loop!(
                "vldmia {a}!, {{s16-s19}}\nvldmia {b}!, {{s24-s27}}\n",
                "vldmia {a}!, {{s16-s23}}\nvldmia {b}!, {{s24-s31}}\n",
                "s16" "s17" "s18" "s19", "s20" "s21" "s22" "s23"
            ),
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            k = inout(reg) k => _,
            n = out(reg) _,
            t = inout(reg) t => _,
            rs = in(reg) rs * 4,
            // Not `preserves_flags`: the loop counts with `subs` and tests `k` with `tst`.
        );
    }
}

/// As [`packed`] with row-major A read in place (`cs_a = 1`): row `i` at `a + i * rs_a`.
///
/// # Safety
/// As [`packed`], with `k` readable floats at each of the four rows of A.
#[inline(never)]
unsafe fn rows(a: *const f32, rs_a: usize, b: *const f32, k: usize, t: *mut f32, rs: usize) {
    let a1 = a.wrapping_add(rs_a);
    let a2 = a1.wrapping_add(rs_a);
    let a3 = a2.wrapping_add(rs_a);
    // SAFETY: as `packed`, one float of each row per k-step.
    unsafe {
        asm!(
            tile_loop!(
                "vldmia {a0}!, {{s16}}\nvldmia {a1}!, {{s18}}\nvldmia {a2}!, {{s20}}\nvldmia {a3}!, {{s22}}\n\
                 vldmia {b}!, {{s24-s27}}\n",
                "vldmia {a0}!, {{s16-s17}}\nvldmia {a1}!, {{s18-s19}}\nvldmia {a2}!, {{s20-s21}}\n\
                 vldmia {a3}!, {{s22-s23}}\nvldmia {b}!, {{s24-s31}}\n",
                "s16" "s18" "s20" "s22", "s17" "s19" "s21" "s23"
            ),
            a0 = inout(reg) a => _,
            a1 = inout(reg) a1 => _,
            a2 = inout(reg) a2 => _,
            a3 = inout(reg) a3 => _,
            b = inout(reg) b => _,
            k = inout(reg) k => _,
            n = out(reg) _,
            t = inout(reg) t => _,
            rs = in(reg) rs * 4,
        );
    }
}

/// As [`rows`] with B's rows read in place too, `rs_b` floats apart (a register-tile GEMM's
/// [`armfpu_gemm_f32_4x4_tiles`]): one `vldm` of four and one `add` a k-step for B.
///
/// # Safety
/// As [`rows`], with four readable floats at each of B's `k` rows.
#[inline(never)]
unsafe fn rows_b(a: *const f32, rs_a: usize, b: *const f32, rs_b: usize, k: usize, t: *mut f32, rs: usize) {
    let a1 = a.wrapping_add(rs_a);
    let a2 = a1.wrapping_add(rs_a);
    let a3 = a2.wrapping_add(rs_a);
    // SAFETY: as `rows`, four floats of one row of B per k-step.
    unsafe {
        asm!(
            tile_loop!(
                "vldmia {a0}!, {{s16}}\nvldmia {a1}!, {{s18}}\nvldmia {a2}!, {{s20}}\nvldmia {a3}!, {{s22}}\n\
                 vldmia {b}, {{s24-s27}}\nadd {b}, {b}, {rs_b}\n",
                "vldmia {a0}!, {{s16-s17}}\nvldmia {a1}!, {{s18-s19}}\nvldmia {a2}!, {{s20-s21}}\n\
                 vldmia {a3}!, {{s22-s23}}\nvldmia {b}, {{s24-s27}}\nadd {b}, {b}, {rs_b}\n\
                 vldmia {b}, {{s28-s31}}\nadd {b}, {b}, {rs_b}\n",
                "s16" "s18" "s20" "s22", "s17" "s19" "s21" "s23"
            ),
            a0 = inout(reg) a => _,
            a1 = inout(reg) a1 => _,
            a2 = inout(reg) a2 => _,
            a3 = inout(reg) a3 => _,
            b = inout(reg) b => _,
            rs_b = in(reg) rs_b * 4,
            k = inout(reg) k => _,
            n = out(reg) _,
            t = inout(reg) t => _,
            rs = in(reg) rs * 4,
        );
    }
}

/// The 4 x 4 product of `p`'s A and B (`p.m`, `p.n` and the epilogue not read), stored at `t`,
/// rows `rs` floats apart: the assembly loop for A's layout, packed or in place, and B's,
/// packed (`rs_b == 4`) or, with A in place, in place (the register tiles').
///
/// # Safety
/// As [`crate::arch::GemmKernel::run`] for A and B, all four rows of A and columns of B
/// readable (through `rs_b`, not necessarily 4); `t` four writable rows `rs` floats apart.
#[inline(always)]
unsafe fn product(p: &MicroArgs, t: *mut f32, rs: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        if p.k > 0 && p.rs_a == 1 && p.cs_a == 4 {
            packed(p.a, p.b, p.k, t, rs);
        } else if p.k > 0 && p.cs_a == 1 && p.rs_b == 4 {
            rows(p.a, p.rs_a, p.b, p.k, t, rs);
        } else if p.k > 0 && p.cs_a == 1 {
            rows_b(p.a, p.rs_a, p.b, p.rs_b, p.k, t, rs);
        } else {
            // Any other A layout (the drivers pass none) and `k = 0`.
            strided(p, t, rs);
        }
    }
}

/// The tile from an A of any strides: one dot product a value, in the same order as the
/// portable kernel (which a firmware then does not link), out of line so that the kernel's own
/// entry saves no more registers.
///
/// # Safety
/// As [`crate::arch::GemmKernel::run`] for A and B; `t` four writable rows `rs` floats apart.
#[inline(never)]
unsafe fn strided(p: &MicroArgs, t: *mut f32, rs: usize) {
    // SAFETY: A's rows i < 4 and B's k x 4 panel are readable by the caller's contract, rows
    // i < 4 of `t` writable; the FPU is the target's.
    unsafe {
        // One loop over the sixteen values, not two that the compiler unrolls: a cold path (its
        // 716 bytes were 3% of a Cortex-M4's f32 kernel set).
        for e in 0..16 {
            let (i, j) = (e / 4, e % 4);
            let mut s = 0.0;
            for q in 0..p.k {
                s = Scalar::fmadd(*p.a.add(i * p.rs_a + q * p.cs_a), *p.b.add(q * p.rs_b + j), s);
            }
            *t.add(i * rs + j) = s;
        }
    }
}

/// # Safety
/// As [`crate::arch::GemmKernel::run`] with `mr = nr = 4`, on an FPv4-SP FPU.
unsafe fn armfpu_gemm_f32_4x4(p: &MicroArgs) {
    // SAFETY: (whole body) the layouts and extents are the caller's contract; the FPU is the
    // target's. `t` is four writable rows `rs` floats apart: C's own rows when the tile goes
    // there directly, else the local tile.
    unsafe {
        // A whole unit-stride tile that does not read C is stored straight into C, then finished
        // there; others go through a local tile and the write-out.
        let full = p.m == 4 && p.n == 4 && p.cs_c == 1 && !act_is_scalar(p.act);
        let direct = full && p.beta == 0.0;
        let mut tile = MaybeUninit::<[[f32; 4]; 4]>::uninit();
        let (t, rs) = if direct { (p.c, p.rs_c) } else { (tile.as_mut_ptr().cast::<f32>(), 4) };
        product(p, t, rs);
        if direct && p.alpha == 1.0 && matches!(p.bias, TileBias::None) && p.act == Activation::None {
            // Finished in C.
        } else if full {
            // One copy of the write-out (flash): the tile from C where it went there directly.
            let acc = if direct {
                let mut acc = [[0.0; 4]; 4];
                for (i, row) in acc.iter_mut().enumerate() {
                    *row = p.c.add(i * p.rs_c).cast::<[f32; 4]>().read_unaligned();
                }
                acc
            } else {
                tile.assume_init()
            };
            write_full(p, acc);
        } else {
            // Edge tiles, strided C, the transcendental activations: the shared scalar row
            // write-out, out of line.
            let tile = tile.assume_init();
            for (i, row) in tile.iter().enumerate().take(p.m) {
                write_row(&row[..p.n], p.c.add(i * p.rs_c), p.cs_c, p.alpha, p.beta, p.bias.of_row(i), p.act);
            }
        }
    }
}

/// `groups` groups of four floats, group `g` at `src + g * rs`, copied into `dst` one after
/// another (B's panels for the 4 x 4 tile, `gemm::pack`): one `vldm` and one `vstm` a group, 1.25
/// instructions a float where the compiler's loads and stores took about 2.5 (32^3 GEMM: 1.50 ->
/// 1.45 instructions per multiply-accumulate).
///
/// # Safety
/// `groups >= 1`; four readable floats at each `src + g * rs` (`g < groups`), `4 * groups`
/// writable at `dst`, not overlapping them; an FPv4-SP FPU.
pub(crate) unsafe fn copy_groups_of_4(src: *const f32, rs: usize, dst: *mut f32, groups: usize) {
    // SAFETY: the loads and stores are the caller's groups; f32 pointers are word-aligned, as
    // `vldm` and `vstm` need. `s0`-`s3` are saved and restored by the block (see `tile_loop`).
    unsafe {
        asm!(
            "vpush {{d0-d1}}",
            "2:",
            "vldmia {src}, {{s0-s3}}",
            "add {src}, {src}, {rs}",
            "vstmia {dst}!, {{s0-s3}}",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vpop {{d0-d1}}",
            src = inout(reg) src => _,
            dst = inout(reg) dst => _,
            n = inout(reg) groups => _,
            rs = in(reg) rs * 4,
        );
    }
}

/// A column of whole tiles ([`crate::arch::GemmKernel::column`]) where C is only written (no
/// alpha, beta, bias or activation): the assembly's tiles back to back, each stored straight
/// into C, the tests and the frame of [`armfpu_gemm_f32_4x4`] once per column, not per tile
/// (32^3: 1.74 -> 1.51 instructions per multiply-accumulate, with `Blocking::mc_in_place`).
/// Other tiles are left to the caller, tile by tile.
///
/// # Safety
/// As [`crate::arch::GemmKernel::column`] with `mr = nr = 4`, on an FPv4-SP FPU.
unsafe fn armfpu_gemm_f32_4x4_column(p: &MicroArgs, tiles: usize, a_step: usize) -> bool {
    let packed_a = p.rs_a == 1 && p.cs_a == 4 && p.rs_b == 4;
    let plain = p.k > 0
        && (packed_a || p.cs_a == 1)
        && p.cs_c == 1
        && p.alpha == 1.0
        && p.beta == 0.0
        && matches!(p.bias, TileBias::None)
        && p.act == Activation::None;
    if !plain {
        return false;
    }
    let (mut a, mut c) = (p.a, p.c);
    for _ in 0..tiles {
        // SAFETY: tile t's A (packed: `4 * k` floats; in place: four rows of `k`), B and four
        // rows of four floats of C, `rs_c` apart, are valid by the caller's contract.
        unsafe {
            if packed_a {
                packed(a, p.b, p.k, c, p.rs_c);
            } else if p.rs_b == 4 {
                rows(a, p.rs_a, p.b, p.k, c, p.rs_c);
            } else {
                rows_b(a, p.rs_a, p.b, p.rs_b, p.k, c, p.rs_c);
            }
        }
        a = a.wrapping_add(a_step);
        c = c.wrapping_add(4 * p.rs_c);
    }
    true
}

/// Small row-major GEMMs ([`crate::arch::GemmKernel::tiles`], `gemm::small::tiles_fit`) in 4 x 4
/// tiles read straight from A's rows and B's ([`rows_b`]), nothing packed: the blocked driver's
/// loop nest, B's packing and the planning around them were a third of a 16^3 GEMM's
/// instructions here. C's columns in strips of four, each strip's rows a column of tiles
/// ([`armfpu_gemm_f32_4x4_column`] where C is only written, else tile by tile). The last strip
/// and row tile, where fewer than four columns or rows remain, move left and up over ones
/// already done and write only their new elements ([`edge_tile`]): B's loads never pass its last
/// column.
///
/// # Safety
/// As [`crate::arch::small::small_body`] with `cs_a == 1`, `cs_b == 1`, `m >= 4` and at least
/// four columns in B (`p.cols.1 >= 4`), on an FPv4-SP FPU.
unsafe fn armfpu_gemm_f32_4x4_tiles(p: &SmallArgs<'_>) {
    let (first, end) = p.cols;
    // Checked in release too: a tile moved up or left past row or column 0 would read before A
    // and B and write before C.
    assert!(p.m >= 4 && end >= 4, "4 x 4 tiles over fewer than 4 rows or columns");
    debug_assert!(p.cs_a == 1 && p.cs_b == 1);
    let mut j = first;
    while j < end {
        let jj = j.min(end - 4);
        let mut args = MicroArgs {
            k: p.k,
            a: p.a,
            rs_a: p.rs_a,
            cs_a: 1,
            // Wrapping: column jj of B and of C, inside them; with `k == 0` B may be empty, and
            // nothing reads it.
            b: p.b.wrapping_add(jj),
            rs_b: p.rs_b,
            taps: core::ptr::null(),
            ntaps: 0,
            c: p.c.wrapping_add(jj),
            rs_c: p.rs_c,
            cs_c: 1,
            m: 4,
            n: 4,
            alpha: p.alpha,
            beta: p.beta,
            bias: TileBias::at(&p.epi.bias, 0, jj),
            act: p.epi.activation,
        };
        let (base_a, base_c, row_bias) = (args.a, args.c, args.bias);
        // Columns of this strip already done (by the strip before, where it moved left).
        let j0 = j - jj;
        let mut i = 0;
        // SAFETY: (every call below) the tile's four rows of A (`k` floats each), `k` rows of
        // four floats of B and its rows of C lie inside the operands (`m >= 4`, `end >= 4`);
        // columns `first..end` of C are this call's own, and a moved tile writes only rows and
        // columns past those already done, which are inside them.
        unsafe {
            if j0 == 0 && armfpu_gemm_f32_4x4_column(&args, p.m / 4, 4 * p.rs_a) {
                i = p.m / 4 * 4;
            }
            while i < p.m {
                let ii = i.min(p.m - 4);
                args.a = base_a.wrapping_add(ii * p.rs_a);
                args.c = base_c.wrapping_add(ii * p.rs_c);
                if let TileBias::Row(b) = row_bias {
                    args.bias = TileBias::Row(b.wrapping_add(ii));
                }
                if ii == i && j0 == 0 {
                    armfpu_gemm_f32_4x4(&args);
                } else {
                    edge_tile(&args, i - ii, j0);
                }
                i = ii + 4;
            }
        }
        j = jj + 4;
    }
}

/// Twelve columns of one row of C, `acc[j] = sum_q x[q * cs_x] * w[q * rs_w + j]` over `k >= 1`
/// steps: the accumulators in `s0`-`s11`, a row of twelve of B in `s16`-`s27` (one `vldm`) and
/// one A value in `s28` a step: 16 instructions for 12 multiply-adds. The first step multiplies.
///
/// # Safety
/// `k >= 1`; `x + q * cs_x` readable and twelve floats at `w + q * rs_w` for `q < k`; twelve
/// writable at `acc`; an FPv4-SP FPU.
#[inline(never)]
unsafe fn row_strip_12(x: *const f32, cs_x: usize, w: *const f32, rs_w: usize, k: usize, acc: *mut f32) {
    // SAFETY: the loads are the caller's `k` steps, the store its twelve floats; `s0`-`s28` are
    // saved and restored by the block (see `tile_loop`).
    unsafe {
        // One step: the A value and B's row loaded, `$op` into the twelve accumulators.
        macro_rules! step {
            ($op:literal) => {
                concat!(
                    "vldmia {x}, {{s28}}\nadd {x}, {x}, {cs}\nvldmia {w}, {{s16-s27}}\nadd {w}, {w}, {rs}\n",
                    row!($op, "s0" "s1" "s2" "s3", "s28", "s16" "s17" "s18" "s19"),
                    row!($op, "s4" "s5" "s6" "s7", "s28", "s20" "s21" "s22" "s23"),
                    row!($op, "s8" "s9" "s10" "s11", "s28", "s24" "s25" "s26" "s27"),
                    "subs {k}, {k}, #1\n",
                )
            };
        }
        asm!(
            "vpush {{d0-d15}}",
            step!("vmul.f32"),
            "beq 3f",
            "2:",
            step!("vfma.f32"),
            "bne 2b",
            "3:",
            "vstmia {acc}, {{s0-s11}}",
            "vpop {{d0-d15}}",
            x = inout(reg) x => _,
            cs = in(reg) cs_x * 4,
            w = inout(reg) w => _,
            rs = in(reg) rs_w * 4,
            k = inout(reg) k => _,
            acc = in(reg) acc,
        );
    }
}

/// GEMMs of at most [`super::small::ROWS_MAX_M`] rows over a row-major B
/// ([`crate::arch::GemmKernel::small`], `gemm::small::takes`; a GEMV, a linear layer at batch 1):
/// each row of C in strips of twelve columns ([`row_strip_12`]) streamed along B's rows, then the
/// epilogue a row at a time. The last strip moves left over columns already done where fewer than
/// twelve remain (a B narrower than twelve columns stays on the other paths,
/// `gemm::small::takes`). On the blocked driver a GEMV filled one row of each 4 x 4 tile: 9.2
/// instructions per multiply-add at 1 x 64 x 64 (now 2.18), 14.8 at 1 x 256 x 16 (3.12).
///
/// # Safety
/// As [`crate::arch::small::small_body`] with the row-major form (`cs_b == 1`, not `dots`) and
/// at least twelve columns in B (`p.cols.1 >= 12`), on an FPv4-SP FPU.
unsafe fn armfpu_gemm_f32_rows(p: &SmallArgs<'_>) {
    debug_assert!(!p.dots && p.cs_b == 1);
    let (first, end) = p.cols;
    // Checked in release too: a strip moved left past column 0 would read before B.
    assert!(end >= 12, "a strip of twelve over fewer columns");
    let mut acc = [0.0f32; 12];
    for i in 0..p.m {
        // Wrapping: row i of A and of C (i < m); with `k == 0` A may be empty and is not read.
        let (x, c) = (p.a.wrapping_add(i * p.rs_a), p.c.wrapping_add(i * p.rs_c));
        let mut j = first;
        while j < end {
            let jj = j.min(end - 12);
            // SAFETY: row i of A (`k` values, `cs_a` apart) and `k` rows of B's columns
            // jj..jj + 12 are inside the operands (`end >= 12`); `acc` holds twelve.
            unsafe {
                if p.k == 0 {
                    acc = [0.0; 12];
                } else {
                    row_strip_12(x, p.cs_a, p.b.add(jj), p.rs_b, p.k, acc.as_mut_ptr());
                }
                // Only the strip's new columns: those before j were written by the last strip.
                let bias = TileBias::at(&p.epi.bias, i, j).of_row(0);
                write_row(&acc[j - jj..], c.add(j), 1, p.alpha, p.beta, bias, p.epi.activation);
            }
            j = jj + 12;
        }
    }
}

/// A 4 x 4 tile moved up over `i0` rows and left over `j0` columns already done
/// ([`armfpu_gemm_f32_4x4_tiles`]): the product of all sixteen, the write-out of the rest. Out
/// of line: edges only.
///
/// # Safety
/// As [`armfpu_gemm_f32_4x4`] with `m = n = 4` for reading A and B; only rows `i0..4` and
/// columns `j0..4` of C (and of a column bias) need be valid.
#[inline(never)]
unsafe fn edge_tile(p: &MicroArgs, i0: usize, j0: usize) {
    // `k = 0`: the product is zero.
    let mut tile = [[0.0f32; 4]; 4];
    // SAFETY: forwarded contract (A and B read in place, `cs_a == 1`); the write-out touches
    // only the tile's new rows and columns.
    unsafe {
        if p.k > 0 {
            rows_b(p.a, p.rs_a, p.b, p.rs_b, p.k, tile.as_mut_ptr().cast(), 4);
        }
        let bias = match p.bias {
            TileBias::Col(b) => TileBias::Col(b.wrapping_add(j0)),
            bias => bias,
        };
        for (i, row) in tile.iter().enumerate().skip(i0) {
            write_row(&row[j0..], p.c.add(i * p.rs_c + j0), 1, p.alpha, p.beta, bias.of_row(i), p.act);
        }
    }
}

/// The write-out of a whole unit-stride tile, one stage of the epilogue at a time over all
/// sixteen values (each stage's test once per tile, not per value as in the shared
/// [`super::write_tile`], whose tests were two thirds of this kernel's instructions at 32^3).
/// The same arithmetic, in the same order, as [`super::write_tile`]; ReLU6 and LeakyReLU as
/// [`Activation::apply`] computes them (the same values: NaN, -0.0 and all).
///
/// # Safety
/// As [`crate::arch::GemmKernel::run`], with `m = n = 4`, `cs_c = 1` and a vector activation.
#[inline(always)]
unsafe fn write_full(p: &MicroArgs, mut t: [[f32; 4]; 4]) {
    // SAFETY: (whole body) rows `i < 4` of C at `c + i * rs_c`, four floats each, and the bias
    // (four values) are valid by the caller's contract.
    unsafe {
        if p.alpha != 1.0 {
            t.iter_mut().flatten().for_each(|x| *x *= p.alpha);
        }
        if p.beta != 0.0 {
            for (i, row) in t.iter_mut().enumerate() {
                let c = p.c.add(i * p.rs_c);
                for (j, x) in row.iter_mut().enumerate() {
                    *x = Scalar::fmadd(*c.add(j), p.beta, *x);
                }
            }
        }
        match p.bias {
            TileBias::None => {}
            TileBias::Row(b) => {
                t.iter_mut().enumerate().for_each(|(i, row)| row.iter_mut().for_each(|x| *x += *b.add(i)))
            }
            TileBias::Col(b) => {
                t.iter_mut().for_each(|row| row.iter_mut().enumerate().for_each(|(j, x)| *x += *b.add(j)))
            }
        }
        // ReLU unrolled over the tile; the other activations one call a value (`activated`):
        // unrolled too, with a compare and branch per `min` or `max` on this FPU, they were 40%
        // of this kernel's flash.
        match p.act {
            Activation::None => {}
            Activation::Relu => t.iter_mut().flatten().for_each(|x| *x = Scalar::max(0.0, *x)),
            act => t.iter_mut().flatten().for_each(|x| *x = activated(act, *x)),
        }
        for (i, row) in t.iter().enumerate() {
            p.c.add(i * p.rs_c).cast::<[f32; 4]>().write_unaligned(*row);
        }
    }
}

/// The Cortex-M4F/M7 kernels: this GEMM kernel and the portable depthwise kernel.
pub const ARMFPU_KERNELS: Kernel = Kernel {
    isa: Isa::ArmFpu,
    gemm: GemmKernel {
        id: "armfpu_gemm_f32_4x4",
        mr: 4,
        nr: 4,
        b_in_place: false,
        edge: None,
        small: Some(armfpu_gemm_f32_rows),
        tiles: Some(armfpu_gemm_f32_4x4_tiles),
        rows: None,
        column: Some(armfpu_gemm_f32_4x4_column),
        run: armfpu_gemm_f32_4x4,
    },
    depthwise: GENERIC_KERNELS.depthwise,
};
