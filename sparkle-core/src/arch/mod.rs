//! ISA-specific code lives only here: the SIMD abstraction, the one GEMM microkernel body, and
//! per-ISA `const` tables of its instantiations (`{isa}_gemm_f32_{mr}x{nr}`).
//!
//! ## Why a [`Kernel`] is proof
//! The kernels are `unsafe` to call: they run instructions the CPU may lack and trust the
//! pointers they get. The safe drivers ([`crate::gemm::driver::gemm_with`],
//! [`crate::conv::fused::conv2d_with`]) validate every pointer they derive, and take the ISA on
//! trust from the [`Kernel`] they are handed. That trust is earned here: `Kernel`'s fields are
//! private, the registration tables are private, and every public way to obtain one
//! ([`Kernel::best`], [`Kernel::for_isa`], [`Kernel::available`], [`Kernel::generic`]) checks
//! [`Isa::is_available`] first. So holding a `&Kernel` proves this CPU runs it:
//!
//! ```compile_fail,E0451
//! use sparkle_core::arch::Kernel;
//! // A kernel with a forged register tile would read past its panels: this does not compile
//! // outside the crate, because the fields are private (error E0451).
//! let forged = Kernel { mr: 1, nr: 1, ..*Kernel::generic() };
//! ```
//!
//! ```
//! use sparkle_core::arch::{Isa, Kernel};
//! // What does compile: asking, and being told no where the CPU lacks the ISA.
//! assert_eq!(Kernel::for_isa(Isa::Avx512).is_some(), Isa::Avx512.is_available());
//! assert_eq!(Kernel::generic().isa(), Isa::Generic);
//! ```
//!
//! Detection needs no `std`: the compile-time target features, and on x86_64 CPUID + XGETBV (the
//! OS must also save the wide registers), cached after the first call. A Cortex-M4F build gets the
//! generic FPU kernel; an x86 server gets AVX-512 where it has it.
#![allow(unsafe_code)]

/// The accessors every kernel table's type shares ([`quant::QKernel`], [`bf16::BKernel`]): the
/// type has private `isa`, `id`, `mr`, `nr` fields; `$table` lists every kernel of the build,
/// best first; `$generic` is the portable one. Holding one proves the CPU runs its ISA, because
/// every constructor here filters by [`Isa::is_available`] (`best` by
/// [`Isa::enabled_statically`] first, which implies it; the portable kernel runs everywhere).
macro_rules! kernel_table_methods {
    ($ty:ident, $table:ident, $generic:ident, $what:literal) => {
        impl $ty {
            #[doc = concat!("`{isa}_", $what, "_{mr}x{nr}` (see the module docs).")]
            pub const fn id(&self) -> &'static str {
                self.id
            }

            /// The ISA it runs (which this CPU has: that is how it was obtained).
            pub const fn isa(&self) -> Isa {
                self.isa
            }

            /// Rows of the register tile.
            pub const fn mr(&self) -> usize {
                self.mr
            }

            /// Columns of the register tile.
            pub const fn nr(&self) -> usize {
                self.nr
            }

            /// The portable kernel, which every CPU runs.
            pub fn generic() -> &'static $ty {
                &$generic
            }

            /// Every kernel of this table compiled into this build that this CPU runs, best first.
            pub fn available() -> impl Iterator<Item = &'static $ty> {
                $table.iter().filter(|k| k.isa.is_available())
            }

            /// The best kernel of this table that this CPU runs.
            pub fn best() -> &'static $ty {
                // Where the build's target features guarantee the table's first kernel, that one
                // without a look at the others, so that a firmware links no fallback.
                const FIRST: $ty = $table[0];
                if FIRST.isa.enabled_statically() {
                    return &FIRST;
                }
                Self::available().next().unwrap_or(Self::generic())
            }

            /// The kernel for `isa`, or `None` when this build has none or this CPU lacks it.
            pub fn for_isa(isa: Isa) -> Option<&'static $ty> {
                $table.iter().find(|k| k.isa == isa).filter(|k| k.isa.is_available())
            }

            /// The ids of every kernel of this table compiled into this build, whether or not
            /// this CPU runs them.
            pub fn compiled_ids() -> impl Iterator<Item = (&'static str, Isa)> {
                $table.iter().map(|k| (k.id, k.isa))
            }
        }
    };
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;
#[cfg(all(target_arch = "arm", sparkle_arm_fpu))]
pub(crate) mod arm;
pub mod bf16;
pub(crate) mod depthwise;
pub(crate) mod generic;
pub mod peak;
pub mod quant;
pub(crate) mod small;
#[cfg(target_arch = "x86_64")]
pub(crate) mod tiles;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

use crate::epilogue::Activation;

/// Instruction sets a kernel can need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust, any target.
    Generic,
    /// x86_64 AVX2 + FMA.
    Avx2,
    /// x86_64 AVX-512F.
    Avx512,
    /// aarch64 NEON.
    Neon,
    /// x86_64 AVX-512F with AVX512_VNNI (`vpdpbusd`) and AVX512BW (every such CPU has it): the
    /// int8 kernels.
    Avx512Vnni,
    /// x86_64 AVX2 and FMA with AVX-VNNI (the VEX `vpdpbusd` on ymm, as on CPUs without AVX-512):
    /// an int8 kernel.
    AvxVnni,
    /// x86_64 AVX-512F with AVX512_BF16 (`vdpbf16ps`): the bf16 kernel.
    Avx512Bf16,
    /// Armv7E-M's DSP extension (`smlad`: two 16-bit products and a sum in one instruction):
    /// the Cortex-M4/M7 int8 kernel. Known at compile time (the target name: `thumbv7em-*`).
    ArmDsp,
    /// aarch64 NEON with the Armv8.2 dot product (`sdot`): an int8 kernel.
    NeonDot,
    /// aarch64 NEON with the Armv8.6 int8 matrix multiply (`usmmla`): an int8 kernel.
    NeonI8mm,
    /// x86_64 AMX-TILE and AMX-INT8 (`tdpbusd`: a 16 x 16 `i32` tile of 64-byte dot products
    /// per instruction) with AVX-512F and AVX512BW, on Linux (which must grant the tile state):
    /// an int8 kernel. Asking [`Isa::is_available`] about it (or about `AmxBf16`) on such a CPU asks
    /// Linux for the tile state, a process-wide grant.
    AmxInt8,
    /// x86_64 AMX-TILE and AMX-BF16 (`tdpbf16ps`: a 16 x 16 f32 tile of 32-step bf16 dot
    /// products per instruction) with AVX-512F, on Linux: the bf16 kernel.
    AmxBf16,
    /// Armv7E-M with the single-precision FPU (FPv4-SP: `vfma.f32`, 32 `s` registers, `vldm`):
    /// the Cortex-M4F/M7 f32 GEMM kernel. Known at compile time (the hard-float target,
    /// `thumbv7em-none-eabihf`).
    ArmFpu,
}

impl Isa {
    /// The lower-case name used by `SPARKLE_ISA` and in kernel ids.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Generic => "generic",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::ArmDsp => "armdsp",
            Isa::NeonDot => "neondot",
            Isa::NeonI8mm => "neoni8mm",
            Isa::AmxInt8 => "amxint8",
            Isa::AmxBf16 => "amxbf16",
            Isa::ArmFpu => "armfpu",
        }
    }

    /// Parses a `SPARKLE_ISA` value.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == s)
    }

    /// Every ISA a kernel can need, in the order of [`Isa::name`]'s documentation.
    pub const ALL: [Isa; 13] = [
        Isa::Generic,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Neon,
        Isa::Avx512Vnni,
        Isa::AvxVnni,
        Isa::Avx512Bf16,
        Isa::ArmDsp,
        Isa::NeonDot,
        Isa::NeonI8mm,
        Isa::AmxInt8,
        Isa::AmxBf16,
        Isa::ArmFpu,
    ];

    /// Whether the compile-time target features guarantee this ISA.
    pub const fn enabled_statically(self) -> bool {
        match self {
            Isa::Generic => true,
            Isa::Avx2 => cfg!(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")),
            Isa::Avx512 => cfg!(all(target_arch = "x86_64", target_feature = "avx512f")),
            Isa::Neon => cfg!(all(target_arch = "aarch64", target_feature = "neon")),
            Isa::Avx512Vnni => {
                cfg!(all(
                    target_arch = "x86_64",
                    target_feature = "avx512f",
                    target_feature = "avx512bw",
                    target_feature = "avx512vnni"
                ))
            }
            Isa::AvxVnni => cfg!(all(
                target_arch = "x86_64",
                target_feature = "avx2",
                target_feature = "fma",
                target_feature = "avxvnni"
            )),
            Isa::Avx512Bf16 => {
                cfg!(all(target_arch = "x86_64", target_feature = "avx512f", target_feature = "avx512bf16"))
            }
            Isa::ArmDsp => cfg!(all(target_arch = "arm", sparkle_arm_dsp)),
            Isa::ArmFpu => cfg!(all(target_arch = "arm", sparkle_arm_fpu)),
            Isa::NeonDot => cfg!(all(target_arch = "aarch64", target_feature = "neon", target_feature = "dotprod")),
            Isa::NeonI8mm => cfg!(all(target_arch = "aarch64", target_feature = "neon", target_feature = "i8mm")),
            // Compiling for AMX does not grant the process the tile state: always asked at run time.
            Isa::AmxInt8 | Isa::AmxBf16 => false,
        }
    }

    /// Records that this CPU runs this ISA, for the ISAs the core cannot detect without an OS:
    /// aarch64 publishes its features through the OS (Linux's auxiliary vector, macOS's sysctl),
    /// which `sparkle-std` asks (`sparkle_std::cpu::isa::detect`) and tells the core through this.
    /// A `no_std` build on bare metal enables them at compile time instead (`-C
    /// target-feature=+dotprod,+i8mm`). The AMX ISAs cannot be declared (declaring them has no
    /// effect): they need the OS's grant of the tile state, which only their detection asks for.
    ///
    /// # Safety
    /// Every CPU this process runs on executes this ISA's instructions: the kernels that
    /// [`Isa::is_available`] then hands out use them.
    pub unsafe fn declare_available(self) {
        use core::sync::atomic::Ordering::Relaxed;
        #[cfg(target_has_atomic = "16")]
        DECLARED.fetch_or(1 << self as u16, Relaxed);
        // Without atomic read-modify-write (Armv6-M), concurrent declarations could lose one;
        // such targets have none of the ISAs this serves.
        #[cfg(not(target_has_atomic = "16"))]
        DECLARED.store(DECLARED.load(Relaxed) | 1 << self as u16, Relaxed);
    }

    /// Whether this CPU runs this ISA: the compile-time target features, on x86_64 a run-time
    /// CPUID/XGETBV check (no `std` needed; cached after the first call), or a declaration
    /// ([`Isa::declare_available`]).
    pub fn is_available(self) -> bool {
        // AMX needs the OS's grant, which only detection asks for: a declaration does not count.
        let declared = !matches!(self, Isa::AmxInt8 | Isa::AmxBf16)
            && DECLARED.load(core::sync::atomic::Ordering::Relaxed) & (1 << self as u16) != 0;
        if self.enabled_statically() || declared {
            return true;
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86_64::detect::avx2_fma(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86_64::detect::avx512f(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86_64::detect::avx512vnni(),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => x86_64::detect::avxvnni(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => x86_64::detect::avx512bf16(),
            #[cfg(target_arch = "x86_64")]
            Isa::AmxInt8 => x86_64::detect::amx_int8(),
            #[cfg(target_arch = "x86_64")]
            Isa::AmxBf16 => x86_64::detect::amx_bf16(),
            _ => false,
        }
    }
}

/// The ISAs declared by [`Isa::declare_available`], one bit per variant.
const _: () = assert!(Isa::ALL.len() <= 16);
static DECLARED: core::sync::atomic::AtomicU16 = core::sync::atomic::AtomicU16::new(0);

/// Register state a kernel keeps across its calls on one thread: AMX's tile configuration.
/// A driver runs `begin` on a worker before that worker's first call of the kernel and `end`
/// after its last, with no other kernel's calls between.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Session {
    /// Before the first call.
    ///
    /// # Safety
    /// The CPU must run the kernel's ISA.
    pub begin: unsafe fn(),
    /// After the last call, on the same thread as `begin`.
    ///
    /// # Safety
    /// As `begin`.
    pub end: unsafe fn(),
}

/// Bias pointer for one microtile, already offset to the tile's first row / column.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TileBias {
    /// No bias.
    None,
    /// `mr` values, one per row of the tile.
    Row(*const f32),
    /// `nr` values, one per column of the tile.
    Col(*const f32),
}

impl TileBias {
    /// `bias` (of a whole C) for the tile whose first element is `(i, j)`: its row values from
    /// `i`, its column values from `j`. Wrapping: a pointer into the bias for `(i, j)` inside C,
    /// read only under the kernels' contract.
    #[inline(always)]
    pub(crate) fn at(bias: &crate::epilogue::Bias<'_>, i: usize, j: usize) -> TileBias {
        match bias {
            crate::epilogue::Bias::None => TileBias::None,
            crate::epilogue::Bias::Row(v) => TileBias::Row(v.as_ptr().wrapping_add(i)),
            crate::epilogue::Bias::Col(v) => TileBias::Col(v.as_ptr().wrapping_add(j)),
        }
    }

    /// Row `i`'s bias for [`write_row`]: `(pointer, step)`, step 0 for one value for the row, 1 for
    /// one per column. A pointer inside the tile's bias values for `i < mr`.
    #[inline(always)]
    pub(crate) fn of_row(self, i: usize) -> Option<(*const f32, usize)> {
        match self {
            TileBias::None => None,
            TileBias::Row(b) => Some((b.wrapping_add(i), 0)),
            TileBias::Col(b) => Some((b, 1)),
        }
    }
}

/// Everything one microkernel call needs: packed panels, where C is, and the write-out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MicroArgs {
    /// Reduction length of this call (`<= kc`).
    pub k: usize,
    /// A micro-panel: element `(i, p)` at `a + i * rs_a + p * cs_a`. Packed panels have
    /// `rs_a = 1, cs_a = mr` (zero-padded rows); row-major A can be read in place
    /// (`rs_a = lda, cs_a = 1`) when all `mr` rows exist.
    pub a: *const f32,
    /// Row stride of the A micro-panel.
    pub rs_a: usize,
    /// Column stride of the A micro-panel.
    pub cs_a: usize,
    /// B micro-panel: element `(p, j)` at `b + p * rs_b + j`. Packed panels have `rs_b = nr`
    /// (`k` groups of `nr` values, zero-padded columns); a row-major B can be read in place
    /// (`rs_b = ldb`) when all `nr` columns exist and the kernel's [`GemmKernel::b_in_place`].
    pub b: *const f32,
    /// Row stride of the B micro-panel.
    pub rs_b: usize,
    /// Null, or B read in place by taps (the direct conv's image, [`crate::conv::direct`]):
    /// B's rows come in groups of `ntaps`, row `c * ntaps + t` at `b + c * rs_b + taps[t]`;
    /// `k` is a multiple of `ntaps`. Only kernels with [`GemmKernel::b_in_place`] see it. The
    /// row tiles ([`RowsKernel`]) read A so instead (see `rows_acc`).
    #[cfg_attr(not(feature = "direct"), allow(dead_code))]
    pub taps: *const usize,
    /// Rows of B per group with `taps` (0 without).
    #[cfg_attr(not(feature = "direct"), allow(dead_code))]
    pub ntaps: usize,
    /// C element `(0, 0)` of this tile.
    pub c: *mut f32,
    /// Row stride of C.
    pub rs_c: usize,
    /// Column stride of C.
    pub cs_c: usize,
    /// Valid rows (`<= mr`).
    pub m: usize,
    /// Valid columns (`<= nr`).
    pub n: usize,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of C; 0 means C is not read.
    pub beta: f32,
    /// Bias of this tile.
    pub bias: TileBias,
    /// Activation applied last.
    pub act: Activation,
}

impl MicroArgs {
    /// The arguments of the tile `mr` rows further down: A `a_step` floats on (the next packed
    /// panel, or `mr` rows of an A read in place), C and a row bias `mr` rows on. Wrapping: past
    /// the last tile the pointers are not used.
    #[inline(always)]
    pub(crate) fn next_row_tile(&mut self, mr: usize, a_step: usize) {
        self.a = self.a.wrapping_add(a_step);
        self.c = self.c.wrapping_add(mr * self.rs_c);
        if let TileBias::Row(b) = self.bias {
            self.bias = TileBias::Row(b.wrapping_add(mr));
        }
    }
}

/// [`GemmKernel::column`] as `tiles` calls of `run`, one tile after another.
///
/// # Safety
/// As [`GemmKernel::column`], with `run` a kernel of `mr` rows on this CPU.
#[inline(always)]
pub(crate) unsafe fn column_by_tiles(
    run: unsafe fn(&MicroArgs),
    mr: usize,
    p: &MicroArgs,
    tiles: usize,
    a_step: usize,
) -> bool {
    let mut args = *p;
    for _ in 0..tiles {
        // SAFETY: tile t's arguments, valid by the caller's contract.
        unsafe { run(&args) };
        args.next_row_tile(mr, a_step);
    }
    true
}

/// The direct conv's row tiles of one kernel set (`conv::direct::rows`): `C^T` tiles of at most
/// `mr` output pixels of one output row by at most `nr` output channels (two vectors), the
/// image's channel planes read in place as A and the weights packed as B.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowsKernel {
    /// A tile (`rows_acc`), written out with what [`GemmKernel::run`] writes (NCHW's pixels
    /// consecutive: transposed in registers, `avx512.rs`'s `write_rows`).
    ///
    /// # Safety
    /// As `rows_acc` and [`GemmKernel::run`] with `m <= mr`, `n <= nr`, on a CPU with the
    /// set's ISA.
    pub(crate) run: unsafe fn(&MicroArgs),
    /// The same tile over an image staged as pixels (NHWC: a pixel's channels consecutive,
    /// pixels `rs_a` apart; `rows_acc` with `PIXELS`), the panel tap by tap.
    ///
    /// # Safety
    /// As `run`, with `m <= pixels_mr`.
    pub(crate) pixels: unsafe fn(&MicroArgs),
    /// The most pixels of a tile over pixels (their `MR` pointers live through a tap).
    pub(crate) pixels_mr: usize,
    /// Packs a weight panel: `n <= nr` runs of `len` floats, run `l` at `src + l * stride`,
    /// into `len` groups of `nr` (`dst[q * nr + l]`), zero past `n`; `(src, stride, n, len,
    /// dst)`.
    ///
    /// # Safety
    /// The runs readable, `len * nr` floats writable at `dst`, a CPU with the set's ISA.
    pub(crate) pack: unsafe fn(*const f32, usize, usize, usize, *mut f32),
    /// The most pixels of a tile.
    pub(crate) mr: usize,
    /// The most output channels of a tile, and the packed panels' width.
    pub(crate) nr: usize,
}

/// The GEMM microkernel of one ISA: an `mr x nr` register tile of C over packed panels, the
/// epilogue fused into the write-out. Reached through its [`Kernel`] set (which is the proof).
#[derive(Clone, Copy, Debug)]
pub struct GemmKernel {
    /// `{isa}_gemm_f32_{mr}x{nr}`.
    pub(crate) id: &'static str,
    pub(crate) mr: usize,
    pub(crate) nr: usize,
    /// Whether the kernel reads a B panel through a row stride other than `nr` (`rs_b`): then
    /// the driver reads a small row-major B in place instead of packing it.
    pub(crate) b_in_place: bool,
    /// The same kernel for edge tiles (fewer than `mr` rows or `nr` columns valid): it picks a
    /// smaller register tile that covers the valid ones, so the write-out stays in whole vectors
    /// more often and no multiply-adds are spent on absent rows and columns. Safety as `run`.
    pub(crate) edge: Option<unsafe fn(&MicroArgs)>,
    /// The streamed GEMM of a few rows (a GEMV, `gemm::small::takes`), where the
    /// kernel set has one: B read in place a few rows at a time along its rows (see
    /// `gemm/small.rs`). Safety as [`small::small_body`], on a CPU with the set's ISA.
    pub(crate) small: Option<unsafe fn(&small::SmallArgs<'_>)>,
    /// Small row-major problems in register tiles read straight from A and B, nothing packed
    /// (`gemm::small::tiles_fit`), where the kernel set has them. Safety as
    /// `tiles::tiles_body` (x86_64's sets) or the Cortex-M4's `arm::armfpu_gemm_f32_4x4_tiles`,
    /// on a CPU with the set's ISA.
    pub(crate) tiles: Option<unsafe fn(&small::SmallArgs<'_>)>,
    /// The direct conv's row tiles, where the kernel set has them ([`RowsKernel`]).
    pub(crate) rows: Option<RowsKernel>,
    /// A column of whole tiles in one call, where the kernel set has it (the Cortex-M4's: there
    /// a tile's call and the driver's loop around it cost a fifth of a 32^3 GEMM). `(p, tiles,
    /// a_step)` does what `tiles` calls of `run` do, tile `t` with `p`'s arguments moved `t`
    /// tiles down ([`MicroArgs::next_row_tile`]), and returns true; or, where it does not take
    /// such tiles, does nothing and returns false (the caller then runs them one by one: no
    /// second kernel frame on top of its own on a Cortex-M's stack). Every tile has `m = mr` and
    /// `n = nr`. Safety as `run`, for every tile.
    pub(crate) column: Option<unsafe fn(&MicroArgs, usize, usize) -> bool>,
    /// # Safety
    /// The CPU must support `isa`; `a` must hold `k*mr` readable floats (through `rs_a`,
    /// `cs_a`) and `b` `k` rows of `nr` (through `rs_b`, which is `nr` unless `b_in_place`); every
    /// `(i, j)` with `i < m`, `j < n` of C (and of the bias) must be valid for reads and writes
    /// and not aliased by anything else during the call.
    pub(crate) run: unsafe fn(&MicroArgs),
}

impl GemmKernel {
    /// `{isa}_gemm_f32_{mr}x{nr}`.
    pub const fn id(&self) -> &'static str {
        self.id
    }

    /// Rows of the register tile.
    pub const fn mr(&self) -> usize {
        self.mr
    }

    /// Columns of the register tile.
    pub const fn nr(&self) -> usize {
        self.nr
    }

    /// Whether it reads B panels in place through a row stride (the direct conv needs it in NCHW).
    pub const fn b_in_place(&self) -> bool {
        self.b_in_place
    }
}

/// The depthwise conv kernel of one ISA (`groups == c == k`), geometry-free (see
/// `depthwise.rs`). Reached through its [`Kernel`] set.
#[derive(Clone, Copy, Debug)]
pub struct DepthwiseKernel {
    /// `{isa}_dwconv_f32`.
    pub(crate) id: &'static str,
    /// # Safety
    /// As `depthwise::depthwise_body`, on a CPU with the set's ISA.
    pub(crate) run: unsafe fn(&depthwise::DepthwiseArgs),
    /// f32 lanes of its vectors (1: scalar), which sizes its scratch.
    pub(crate) lanes: usize,
}

impl DepthwiseKernel {
    /// `{isa}_dwconv_f32`.
    pub const fn id(&self) -> &'static str {
        self.id
    }

    /// [`DepthwiseKernel::lanes`], a constant 1 on 32-bit Arm, where every kernel set has the
    /// portable one-lane kernel: the vector paths' planning (channel blocks, flat rows, reordered
    /// weights) is then not compiled into a Cortex-M's flash.
    #[inline(always)]
    pub(crate) fn lanes(&self) -> usize {
        if cfg!(target_arch = "arm") {
            debug_assert_eq!(self.lanes, 1);
            1
        } else {
            self.lanes
        }
    }
}

/// The registered kernels of one ISA (its [`GemmKernel`] and [`DepthwiseKernel`]), obtainable
/// only on a CPU that runs it (see the module docs: holding one is the proof).
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    pub(crate) isa: Isa,
    pub(crate) gemm: GemmKernel,
    pub(crate) depthwise: DepthwiseKernel,
}

impl Kernel {
    /// The set's id, its GEMM kernel's (`{isa}_gemm_f32_{mr}x{nr}`): the same string in tests,
    /// benches and the juggler's records.
    pub const fn id(&self) -> &'static str {
        self.gemm.id
    }

    /// The instruction set it runs (which this CPU has: that is how it was obtained).
    pub const fn isa(&self) -> Isa {
        self.isa
    }

    /// The GEMM microkernel.
    pub const fn gemm(&self) -> &GemmKernel {
        &self.gemm
    }

    /// The depthwise conv kernel.
    pub const fn depthwise(&self) -> &DepthwiseKernel {
        &self.depthwise
    }

    /// Rows of the GEMM register tile.
    pub const fn mr(&self) -> usize {
        self.gemm.mr
    }

    /// Columns of the GEMM register tile.
    pub const fn nr(&self) -> usize {
        self.gemm.nr
    }

    /// The same set without its unpacked GEMM paths (a few rows streamed, small problems in
    /// register tiles read straight from A and B): every GEMM through the blocked driver, which
    /// packs. For tests and measurements that set the two side by side; the ISA is unchanged, so
    /// holding the result proves what holding `self` did.
    pub const fn packed_only(&self) -> Kernel {
        Kernel { gemm: GemmKernel { small: None, tiles: None, ..self.gemm }, ..*self }
    }

    /// The portable kernel, which every CPU runs.
    pub fn generic() -> &'static Kernel {
        &generic::GENERIC_KERNELS
    }

    /// Every kernel of this build that this CPU runs, best first.
    pub fn available() -> impl Iterator<Item = &'static Kernel> {
        KERNELS.iter().filter(|k| k.isa.is_available())
    }

    /// The best kernel this CPU runs (the first of [`Kernel::available`]).
    pub fn best() -> &'static Kernel {
        // Where the build's target features guarantee the table's first kernel set (the Arm FPU
        // set on a Cortex-M4F), that one without a look at the others, so that a firmware links
        // no fallback (the portable set: 2.1 KiB of flash).
        const FIRST: Kernel = KERNELS[0];
        if FIRST.isa.enabled_statically() {
            return &FIRST;
        }
        Self::available().next().unwrap_or(Self::generic())
    }

    /// The kernel for `isa`, or `None` when this build has none for it or this CPU lacks it.
    pub fn for_isa(isa: Isa) -> Option<&'static Kernel> {
        KERNELS.iter().find(|k| k.isa == isa).filter(|k| k.isa.is_available())
    }

    /// The ids of every kernel compiled into this build, whether or not this CPU runs them.
    pub fn compiled_ids() -> impl Iterator<Item = (&'static str, Isa)> {
        KERNELS.iter().map(|k| (k.gemm.id, k.isa))
    }
}

/// The SIMD operations the kernel body needs. Implementations are zero-sized markers whose
/// methods are `#[inline(always)]`, so they compile to plain instructions inside the
/// `#[target_feature]` wrapper that instantiates the body.
pub(crate) trait Simd: Copy {
    /// One vector of `LANES` f32.
    type V: Copy;
    /// Lanes per vector.
    const LANES: usize;
    /// Steps ahead that [`rank1_updates`] prefetches a B panel of at most `MAX_NR` columns
    /// (packed, or narrow in place) at each step; 0: none, the hardware prefetchers suffice.
    const B_PANEL_AHEAD: usize = 0;
    /// Whether [`rank1_updates_strided`] prefetches the next row tile's A (A read in place).
    const A_NEXT_TILE: bool = false;
    /// All zeros.
    ///
    /// # Safety
    /// The CPU must support the ISA.
    unsafe fn zero() -> Self::V;
    /// `x` in every lane.
    ///
    /// # Safety
    /// The CPU must support the ISA.
    unsafe fn splat(x: f32) -> Self::V;
    /// Unaligned load of `LANES` floats.
    ///
    /// # Safety
    /// `p` must be valid for reading `LANES` floats; the CPU must support the ISA.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Unaligned store of `LANES` floats.
    ///
    /// # Safety
    /// `p` must be valid for writing `LANES` floats; the CPU must support the ISA.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c`.
    ///
    /// # Safety
    /// The CPU must support the ISA.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a * b`.
    ///
    /// # Safety
    /// The CPU must support the ISA.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a + b`.
    ///
    /// # Safety
    /// The CPU must support the ISA.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum; a NaN in `b` propagates.
    ///
    /// # Safety
    /// The CPU must support the ISA.
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise minimum; a NaN in `b` propagates.
    ///
    /// # Safety
    /// The CPU must support the ISA.
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// Loads the first `n` floats at `p` (`n < LANES`), zeros in the other lanes; reads nothing
    /// past them.
    ///
    /// # Safety
    /// `p` must be valid for reading `n` floats; the CPU must support the ISA.
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V {
        let mut lanes = [0.0f32; 16];
        // SAFETY: the caller's `n` readable floats; at most 16 lanes (`LANES <= 16`).
        unsafe {
            core::ptr::copy_nonoverlapping(p, lanes.as_mut_ptr(), n.min(Self::LANES).min(16));
            Self::load(lanes.as_ptr())
        }
    }
    /// Stores the first `n` lanes of `v` at `p` (`n < LANES`); writes nothing past them.
    ///
    /// # Safety
    /// `p` must be valid for writing `n` floats; the CPU must support the ISA.
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, n: usize, v: Self::V) {
        let mut lanes = [0.0f32; 16];
        // SAFETY: as load_partial.
        unsafe {
            Self::store(lanes.as_mut_ptr(), v);
            core::ptr::copy_nonoverlapping(lanes.as_ptr(), p, n.min(Self::LANES).min(16));
        }
    }
    /// Lanes `lo..hi` (`lo <= hi <= LANES`) read from `p + lane`, zeros in the others; reads
    /// nothing outside lanes `lo..hi`, so `p` itself may point before the data (a row's padding).
    ///
    /// # Safety
    /// `p + lo .. p + hi` must be valid for reading (`p` computed with wrapping arithmetic where it
    /// leaves the allocation); the CPU must support the ISA.
    #[inline(always)]
    unsafe fn load_window(p: *const f32, lo: usize, hi: usize) -> Self::V {
        let mut lanes = [0.0f32; 16];
        let hi = hi.min(Self::LANES).min(16);
        // SAFETY: the caller's lanes `lo..hi` readable; at most 16 lanes.
        unsafe {
            for (i, lane) in lanes.iter_mut().enumerate().take(hi).skip(lo) {
                *lane = *p.wrapping_add(i);
            }
            Self::load(lanes.as_ptr())
        }
    }
    /// The even and the odd floats of `a` followed by `b` (`2 * LANES` floats): `(a0, a2, ..,
    /// b0, b2, ..)` and `(a1, a3, .., b1, b3, ..)`.
    ///
    /// # Safety
    /// The CPU must support the ISA.
    #[inline(always)]
    unsafe fn deinterleave(a: Self::V, b: Self::V) -> (Self::V, Self::V) {
        let (mut both, mut even, mut odd) = ([0.0f32; 32], [0.0f32; 16], [0.0f32; 16]);
        let l = Self::LANES;
        // SAFETY: the caller's ISA; `LANES <= 16`, so both vectors fit in 32 floats.
        unsafe {
            Self::store(both.as_mut_ptr(), a);
            Self::store(both.as_mut_ptr().add(l), b);
            for i in 0..l {
                even[i] = both[2 * i];
                odd[i] = both[2 * i + 1];
            }
            (Self::load(even.as_ptr()), Self::load(odd.as_ptr()))
        }
    }
    /// Hints that the cache line holding `p` will be read or written soon. Never faults.
    #[inline(always)]
    fn prefetch(p: *const f32) {
        let _ = p;
    }
}

/// Checks `S`'s partial loads and stores for every count below `LANES` (a load reads the first
/// `n` floats and zeros the other lanes, a store writes the first `n` lanes and nothing past
/// them), its windowed loads for every window and its deinterleave. Panics on a mismatch.
///
/// # Safety
/// The CPU runs `S`.
#[cfg(test)]
#[inline(always)]
pub(crate) unsafe fn check_partial_lanes<S: Simd>() {
    let l = S::LANES;
    let src: [f32; 16] = core::array::from_fn(|i| i as f32 + 1.0);
    for n in 0..l {
        let (mut loaded, mut stored) = ([f32::NAN; 16], [-1.0f32; 16]);
        // SAFETY: the caller's ISA; 16 floats >= LANES in each buffer.
        unsafe {
            S::store(loaded.as_mut_ptr(), S::load_partial(src.as_ptr(), n));
            S::store_partial(stored.as_mut_ptr(), n, S::load(src.as_ptr()));
        }
        for i in 0..l {
            let (want_loaded, want_stored) = if i < n { (src[i], src[i]) } else { (0.0, -1.0) };
            assert_eq!(loaded[i], want_loaded, "load_partial({n}) lane {i}");
            assert_eq!(stored[i], want_stored, "store_partial({n}) lane {i}");
        }
    }
    for lo in 0..=l {
        for hi in lo..=l {
            let mut got = [f32::NAN; 16];
            // SAFETY: the caller's ISA; lanes `lo..hi` of `src` readable (`hi <= 16`).
            unsafe { S::store(got.as_mut_ptr(), S::load_window(src.as_ptr(), lo, hi)) };
            for i in 0..l {
                let want = if (lo..hi).contains(&i) { src[i] } else { 0.0 };
                assert_eq!(got[i], want, "load_window({lo}, {hi}) lane {i}");
            }
        }
    }
    let pairs: [f32; 32] = core::array::from_fn(|i| i as f32);
    let (mut even, mut odd) = ([0.0f32; 16], [0.0f32; 16]);
    // SAFETY: the caller's ISA; 32 floats hold two vectors.
    unsafe {
        let (e, o) = S::deinterleave(S::load(pairs.as_ptr()), S::load(pairs.as_ptr().add(l)));
        S::store(even.as_mut_ptr(), e);
        S::store(odd.as_mut_ptr(), o);
    }
    for i in 0..l {
        assert_eq!((even[i], odd[i]), (pairs[2 * i], pairs[2 * i + 1]), "deinterleave lane {i}");
    }
}

/// Activation on one vector, for the ones that are cheap in SIMD; `None` for the transcendental
/// ones, which the write-out applies with libm afterwards.
#[inline(always)]
pub(crate) unsafe fn act_simd<S: Simd>(act: Activation, x: S::V) -> Option<S::V> {
    // SAFETY: (whole body) the caller runs on a CPU with S's ISA.
    unsafe {
        Some(match act {
            Activation::None => x,
            Activation::Relu => S::max(S::zero(), x),
            Activation::Relu6 => S::min(S::splat(6.0), S::max(S::zero(), x)),
            Activation::LeakyRelu { slope } => S::fmadd(S::min(S::zero(), x), S::splat(slope), S::max(S::zero(), x)),
            _ => return None,
        })
    }
}

/// Whether the write-out must finish the activation in scalar code.
#[inline(always)]
pub(crate) fn act_is_scalar(act: Activation) -> bool {
    !matches!(act, Activation::None | Activation::Relu | Activation::Relu6 | Activation::LeakyRelu { .. })
}

/// Rows of B read in place that [`rank1_updates`] prefetches ahead: 16 (8 and 32, 64 measured at
/// 16-32 x 4096 x 1024-4096 on one Zen 4 core: 16 best, 32 up to 18% slower).
const B_AHEAD: usize = 16;

/// `k` rank-1 updates of the accumulators from an A panel with unit row stride and column stride
/// `cs_a`, and a B panel with row stride `rs_b` (`NV * LANES` when packed); with `AHEAD`, each step
/// prefetches B's row [`B_AHEAD`] steps on, else, where it is not 0, the row
/// [`Simd::B_PANEL_AHEAD`] steps on.
///
/// # Safety
/// `a` readable at `i + p * cs_a` and `b` at `p * rs_b + l` for `i < MR`, `p < k`, `l < NV * LANES`.
#[inline(always)]
unsafe fn rank1_updates<S: Simd, const MR: usize, const NV: usize, const RS: usize, const AHEAD: bool>(
    mut acc: [[S::V; NV]; MR],
    mut a: *const f32,
    cs_a: usize,
    (mut b, rs_b): (*const f32, usize),
    k: usize,
) -> [[S::V; NV]; MR] {
    let lanes = S::LANES;
    // SAFETY: bounds as documented; the ISA is the caller's.
    unsafe {
        for _ in 0..k {
            let mut bv = [S::zero(); NV];
            for (v, slot) in bv.iter_mut().enumerate() {
                *slot = S::load(b.add(v * lanes));
            }
            // Hints: they never fault, wherever they point.
            let ahead = if AHEAD { B_AHEAD } else { S::B_PANEL_AHEAD };
            if ahead > 0 {
                for l in (0..NV * lanes).step_by(16) {
                    S::prefetch(b.wrapping_add(ahead * rs_b + l));
                }
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = S::splat(*a.add(i * RS));
                for v in 0..NV {
                    row[v] = S::fmadd(ai, bv[v], row[v]);
                }
            }
            // Wrapping: after the last step the pointers may point past B's allocation (a row
            // of B read in place is `rs_b` floats on, and the last row has no successor); they
            // are only dereferenced inside it.
            a = a.wrapping_add(cs_a);
            b = b.wrapping_add(rs_b);
        }
    }
    // By value, not `&mut`: through a reference LLVM kept the accumulators in memory.
    acc
}

/// As [`rank1_updates`] with a run-time row stride of A (A read in place), prefetching the next
/// row tile's A where A is row-major and [`Simd::A_NEXT_TILE`].
///
/// # Safety
/// `a` readable at `i * rs_a + p * cs_a`, `b` as in [`rank1_updates`].
#[inline(always)]
unsafe fn rank1_updates_strided<S: Simd, const MR: usize, const NV: usize>(
    mut acc: [[S::V; NV]; MR],
    a: *const f32,
    rs_a: usize,
    cs_a: usize,
    (mut b, rs_b): (*const f32, usize),
    k: usize,
) -> [[S::V; NV]; MR] {
    let lanes = S::LANES;
    // SAFETY: bounds as documented; the ISA is the caller's.
    unsafe {
        let mut off = 0;
        // The next row tile's A (`MR` rows on: the driver's next tile, except after a block's
        // last) is prefetched one line a step, row by row: its `MR` rows are `MR` streams the
        // prefetchers pick up only after some misses. About the first `min(k, 16 k / MR)`
        // floats of each row, 16 floats from the row's start at a time (an unaligned row's last
        // partial line, and for a short k a few rows' last line, are left to the hardware). Only
        // hints: they never fault, and the pointers are only formed.
        let next = a.wrapping_add(MR * rs_a);
        let (mut pf_row, mut pf_col) = (0, 0);
        for _ in 0..k {
            let mut bv = [S::zero(); NV];
            for (v, slot) in bv.iter_mut().enumerate() {
                *slot = S::load(b.add(v * lanes));
            }
            if S::A_NEXT_TILE && cs_a == 1 && pf_col < k {
                S::prefetch(next.wrapping_add(pf_row * rs_a + pf_col));
                pf_row += 1;
                if pf_row == MR {
                    pf_row = 0;
                    pf_col += 16;
                }
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = S::splat(*a.add(i * rs_a + off));
                for v in 0..NV {
                    row[v] = S::fmadd(ai, bv[v], row[v]);
                }
            }
            off += cs_a;
            // Wrapping: past the last row it may leave B's allocation (see `rank1_updates`).
            b = b.wrapping_add(rs_b);
        }
    }
    acc
}

/// As [`rank1_updates_strided`] with B's rows found by taps (see [`MicroArgs::taps`]): for each
/// group `c` of `ntaps` rows, row `t` at `b + c * rs_b + taps[t]`.
///
/// # Safety
/// `a` as in [`rank1_updates_strided`]; `taps` readable for `ntaps` offsets (at least 1), `k` a
/// multiple of `ntaps`, and every row of B readable for `NV * LANES` floats.
#[cfg(feature = "direct")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rank1_updates_taps<S: Simd, const MR: usize, const NV: usize>(
    mut acc: [[S::V; NV]; MR],
    a: *const f32,
    (rs_a, cs_a): (usize, usize),
    (mut b, rs_b): (*const f32, usize),
    taps: *const usize,
    ntaps: usize,
    k: usize,
) -> [[S::V; NV]; MR] {
    let lanes = S::LANES;
    // SAFETY: bounds as documented; the ISA is the caller's.
    unsafe {
        let mut off = 0;
        for _ in 0..k / ntaps {
            for t in 0..ntaps {
                let row = b.add(*taps.add(t));
                let mut bv = [S::zero(); NV];
                for (v, slot) in bv.iter_mut().enumerate() {
                    *slot = S::load(row.add(v * lanes));
                }
                for (i, acc_row) in acc.iter_mut().enumerate() {
                    let ai = S::splat(*a.add(i * rs_a + off));
                    for v in 0..NV {
                        acc_row[v] = S::fmadd(ai, bv[v], acc_row[v]);
                    }
                }
                off += cs_a;
            }
            // Wrapping: past the last channel it may leave the image (see `rank1_updates`).
            b = b.wrapping_add(rs_b);
        }
    }
    acc
}

/// The direct conv's row tiles ([`RowsKernel`]): an `MR x (NV * LANES)` tile of C^T, `MR`
/// output pixels of one row (A, read in place from channel planes) by `NV * LANES` output
/// channels (B, a packed weight panel), accumulated over the whole reduction; the kernel set
/// writes it out.
///
/// `p.a` is the tile's first pixel in channel 0's planes (tap 0 unshifted), `p.cs_a` the floats
/// between two channels' planes, `p.taps`/`p.ntaps` the taps' shifts: reduction row
/// `c * ntaps + t` of pixel `i` is `a + c * cs_a + taps[t] + i`. With `PIXELS` the image is
/// staged as pixels (NHWC) and the reduction runs tap by tap: row `t * (k / ntaps) + c` of
/// pixel `i` is `a + taps[t] + i * rs_a + c` (the shifts in floats; `cs_a` unused). B is `k`
/// groups of at least `NV * LANES` floats, `rs_b` apart (the panel's width, which a tile of one
/// vector also steps).
///
/// # Safety
/// `taps` readable for `ntaps >= 1` offsets, `k` a multiple of `ntaps`, every
/// `a + c * cs_a + taps[t] + i` (`PIXELS`: `a + taps[t] + i * rs_a + c`) (`i < MR`) readable, `k` groups of
/// `NV * LANES` floats `rs_b` apart at `b`; the ISA of `S`.
// Only AVX-512 has row tiles.
#[cfg(all(feature = "direct", target_arch = "x86_64"))]
#[inline(always)]
pub(crate) unsafe fn rows_acc<S: Simd, const MR: usize, const NV: usize, const PIXELS: bool>(
    p: &MicroArgs,
) -> [[S::V; NV]; MR] {
    let lanes = S::LANES;
    // SAFETY: (whole body) bounds as documented; the ISA is the caller's.
    unsafe {
        let mut acc = [[S::zero(); NV]; MR];
        if PIXELS {
            // Tap by tap, and within a tap channel by channel (the panel in that order): the
            // tile's `MR` pixel pointers stay fixed through a tap, as the GEMM kernel's strided
            // A rows do. (Channel by channel with the taps inside, the `MR` offsets of every tap
            // did not fit the registers and LLVM spilled the accumulators.)
            let mut b = p.b;
            for t in 0..p.ntaps {
                let base = p.a.add(*p.taps.add(t));
                for c in 0..p.k / p.ntaps {
                    let mut bv = [S::zero(); NV];
                    for (v, slot) in bv.iter_mut().enumerate() {
                        *slot = S::load(b.add(v * lanes));
                    }
                    for (i, acc_row) in acc.iter_mut().enumerate() {
                        let ai = S::splat(*base.add(i * p.rs_a + c));
                        for v in 0..NV {
                            acc_row[v] = S::fmadd(ai, bv[v], acc_row[v]);
                        }
                    }
                    b = b.add(p.rs_b);
                }
            }
            return acc;
        }
        let mut b = p.b;
        let mut plane = p.a;
        for _ in 0..p.k / p.ntaps {
            for t in 0..p.ntaps {
                let row = plane.add(*p.taps.add(t));
                let mut bv = [S::zero(); NV];
                for (v, slot) in bv.iter_mut().enumerate() {
                    *slot = S::load(b.add(v * lanes));
                }
                for (i, acc_row) in acc.iter_mut().enumerate() {
                    let ai = S::splat(*row.add(i));
                    for v in 0..NV {
                        acc_row[v] = S::fmadd(ai, bv[v], acc_row[v]);
                    }
                }
                b = b.add(p.rs_b);
            }
            // Wrapping: past the last channel it may leave the image.
            plane = plane.wrapping_add(p.cs_a);
        }
        acc
    }
}

/// A kernel set's row tiles for every tile height in `$m` and one or two vectors of output
/// channels: `$name(p)` picks the [`rows_acc`] for `p.m` rows and `p.n` columns and hands the
/// tile to `$write::<M, NV>(p, acc)` (safety as [`write_tile`]).
// Only AVX-512 has row tiles.
#[cfg(all(feature = "direct", target_arch = "x86_64"))]
macro_rules! rows_kernel {
    ($(#[$attr:meta])* $name:ident, $simd:ty, $write:ident, [$($m:literal)*]) => {
        $(#[$attr])*
        unsafe fn $name<const PIXELS: bool>(p: &$crate::arch::MicroArgs) {
            let one = p.n <= <$simd as $crate::arch::Simd>::LANES;
            // SAFETY: forwarded contract; the ISA is enabled for this function.
            unsafe {
                match p.m {
                    $($m => if one {
                        $write::<$m, 1>(p, $crate::arch::rows_acc::<$simd, $m, 1, PIXELS>(p))
                    } else {
                        $write::<$m, 2>(p, $crate::arch::rows_acc::<$simd, $m, 2, PIXELS>(p))
                    },)*
                    // The set's `RowsKernel::mr` is the list's last height.
                    _ => unreachable!("a row tile of {} pixels", p.m),
                }
            }
        }
    };
}
// Only AVX-512 has row tiles.
#[cfg(all(feature = "direct", target_arch = "x86_64"))]
pub(crate) use rows_kernel;

/// `width` floats at `ptr`: a whole vector, or the partial last one of a run, its other lanes
/// zero (the depthwise and streamed GEMM kernels' runs).
///
/// # Safety
/// `ptr` readable for `width` floats (`width <= LANES`); the CPU runs `S`.
#[inline(always)]
pub(crate) unsafe fn load_upto<S: Simd>(ptr: *const f32, width: usize) -> S::V {
    // SAFETY: the caller's.
    unsafe {
        if width == S::LANES {
            S::load(ptr)
        } else {
            S::load_partial(ptr, width)
        }
    }
}

/// Stores the first `width` lanes of `v` at `ptr`: a whole vector, or the partial last one.
///
/// # Safety
/// `ptr` writable for `width` floats (`width <= LANES`); the CPU runs `S`.
#[inline(always)]
pub(crate) unsafe fn store_upto<S: Simd>(ptr: *mut f32, width: usize, v: S::V) {
    // SAFETY: the caller's.
    unsafe {
        if width == S::LANES {
            S::store(ptr, v)
        } else {
            S::store_partial(ptr, width, v)
        }
    }
}

/// Widest register tile of any kernel (`nr`), for the edge write-out's row buffer.
const MAX_NR: usize = 32;

/// The one GEMM microkernel body: an `MR x (NV*LANES)` register tile of C accumulated over `k`
/// rank-1 updates from packed panels, then the epilogue fused into the write-out.
///
/// # Safety
/// As [`GemmKernel::run`], for `mr = MR`, `nr = NV * S::LANES`; `rs_a`/`cs_a` describe `MR x k`
/// readable floats at `a`.
#[inline(always)]
pub(crate) unsafe fn gemm_body<S: Simd, const MR: usize, const NV: usize>(p: &MicroArgs) {
    // SAFETY: (whole body) the caller guarantees the ISA, `k*MR` floats at `a`, `k*NV*LANES`
    // at `b`, and valid, exclusive C (and bias) elements for every (i < m, j < n).
    unsafe {
        // Start pulling this tile of C towards L1 now, so the write-out does not wait on it:
        // measured +10% at 2048^3 on one Zen 4 core, where C misses L2 on every kc block.
        if p.cs_c == 1 {
            for i in 0..p.m {
                let row = p.c.wrapping_add(i * p.rs_c);
                S::prefetch(row);
                S::prefetch(row.wrapping_add(p.n - 1));
            }
        }
        let zero = [[S::zero(); NV]; MR];
        // Two copies of the k loop: packed A (contiguous, the common case) and A read in place
        // through its row stride (skips packing row-major A: +30% on 12544x64x147, one core).
        #[cfg(feature = "direct")]
        if !p.taps.is_null() {
            let acc = rank1_updates_taps::<S, MR, NV>(zero, p.a, (p.rs_a, p.cs_a), (p.b, p.rs_b), p.taps, p.ntaps, p.k);
            write_tile::<S, MR, NV>(p, acc);
            return;
        }
        let acc = if p.rs_a == 1 && p.cs_a == MR {
            // B read in place, rows `rs_b` apart (packed panels are `nr <= MAX_NR` apart; a B
            // that narrow stays in cache): each row a few lines of a page of its own, which the
            // prefetchers do not follow, so each step prefetches the row `B_AHEAD` steps on.
            // Vector kernels only (not the Cortex-M's).
            match S::LANES > 1 && p.rs_b > MAX_NR {
                true => rank1_updates::<S, MR, NV, 1, true>(zero, p.a, MR, (p.b, p.rs_b), p.k),
                false => rank1_updates::<S, MR, NV, 1, false>(zero, p.a, MR, (p.b, p.rs_b), p.k),
            }
        } else {
            rank1_updates_strided::<S, MR, NV>(zero, p.a, p.rs_a, p.cs_a, (p.b, p.rs_b), p.k)
        };
        write_tile::<S, MR, NV>(p, acc);
    }
}

/// The write-out of a GEMM microkernel: `C <- act(alpha * acc + beta * C + bias)` over the tile's
/// `m x n` valid elements, with vector stores for a full unit-stride tile and a scalar row at a
/// time otherwise.
///
/// # Safety
/// As [`GemmKernel::run`]: valid, exclusive C (and bias) elements for every (i < m, j < n), and
/// the ISA of `S`.
#[inline(always)]
pub(crate) unsafe fn write_tile<S: Simd, const MR: usize, const NV: usize>(p: &MicroArgs, acc: [[S::V; NV]; MR]) {
    let lanes = S::LANES;
    // SAFETY: (whole body) the caller's contract.
    unsafe {
        // Whole rows of unit stride (every row of a full tile, the valid rows of a tile cut
        // short at C's bottom edge) are written in vectors.
        let whole_rows = p.n == NV * lanes && p.cs_c == 1;
        if whole_rows {
            let alpha = S::splat(p.alpha);
            let beta = S::splat(p.beta);
            for (i, row) in acc.iter().enumerate().take(p.m) {
                let crow = p.c.add(i * p.rs_c);
                for (v, &x) in row.iter().enumerate() {
                    let cp = crow.add(v * lanes);
                    let mut y = S::mul(x, alpha);
                    if p.beta != 0.0 {
                        y = S::fmadd(S::load(cp), beta, y);
                    }
                    match p.bias {
                        TileBias::None => {}
                        TileBias::Row(bias) => y = S::add(y, S::splat(*bias.add(i))),
                        TileBias::Col(bias) => y = S::add(y, S::load(bias.add(v * lanes))),
                    }
                    S::store(cp, act_simd::<S>(p.act, y).unwrap_or(y));
                }
            }
            if act_is_scalar(p.act) {
                activate(p.c, p.rs_c, 1, p.m, NV * lanes, p.act);
            }
        } else {
            // Narrow or strided tile: spill one row of accumulators at a time (32 floats of stack,
            // not a whole tile: this runs on microcontrollers), then a scalar write-out.
            debug_assert!(NV * lanes <= MAX_NR);
            for (i, row) in acc.iter().enumerate().take(p.m) {
                let mut spill = [0.0f32; MAX_NR];
                for (v, &x) in row.iter().enumerate() {
                    S::store(spill.as_mut_ptr().add(v * lanes), x);
                }
                write_row(&spill[..p.n], p.c.add(i * p.rs_c), p.cs_c, p.alpha, p.beta, p.bias.of_row(i), p.act);
            }
        }
    }
}

/// The transcendental activations over an `m x n` tile of C, out of line: one shared copy instead
/// of a libm expansion per unrolled element in every kernel (Cortex-M4 code size).
///
/// # Safety
/// Every `(i, j)` with `i < m`, `j < n` at `c + i*rs + j*cs` valid for reads and writes.
#[inline(never)]
pub(crate) unsafe fn activate(c: *mut f32, rs: usize, cs: usize, m: usize, n: usize, act: Activation) {
    for i in 0..m {
        for j in 0..n {
            // SAFETY: in the tile, per the contract.
            unsafe {
                let cp = c.add(i * rs + j * cs);
                *cp = activated(act, *cp);
            }
        }
    }
}

/// One spilled row of an edge tile (or of the split reduction's sums, `gemm/split_k.rs`) written
/// out the scalar way: `c[j*cs] = act(alpha*x + beta*c + bias)`, with the bias `(pointer, step)`
/// (step 0: one value for the row; 1: one per column). Out of line for code size, like
/// [`activate`].
///
/// # Safety
/// `c + j*cs` valid for `j < row.len()`; the bias readable at `j*step`.
#[inline(never)]
pub(crate) unsafe fn write_row(
    row: &[f32],
    c: *mut f32,
    cs: usize,
    alpha: f32,
    beta: f32,
    bias: Option<(*const f32, usize)>,
    act: Activation,
) {
    for (j, &x) in row.iter().enumerate() {
        // SAFETY: per the contract.
        unsafe {
            let cp = c.add(j * cs);
            let mut y = alpha * x;
            if beta != 0.0 {
                y += beta * *cp;
            }
            if let Some((b, step)) = bias {
                y += *b.add(j * step);
            }
            *cp = activated(act, y);
        }
    }
}

/// `act` of `y` for the scalar write-outs (edge tiles, the transcendental activations): out of
/// line on 32-bit Arm, where inlined the compiler copies the caller's loop once per activation
/// (Cortex-M flash).
#[cfg_attr(target_arch = "arm", inline(never))]
#[cfg_attr(not(target_arch = "arm"), inline(always))]
fn activated(act: Activation, y: f32) -> f32 {
    act.apply(y)
}

/// The registration list: every kernel set compiled into this build, best first, one line each
/// (`name => Isa (path of its const)`, under the `#[cfg]` that compiles it), handed to
/// `$callback!`. The private table behind [`Kernel::available`] and the test modules of
/// `tests/tests/gemm_cpu.rs` and `conv_cpu.rs` are both stamped from this one list, so a kernel
/// registered here cannot go untested. (The paths are crate-private; callers outside the crate
/// look kernels up by ISA, through the checked [`Kernel::for_isa`].)
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_kernel {
    ($callback:ident) => {
        $callback! {
            #[cfg(target_arch = "x86_64")]
            avx512 => Avx512 ($crate::arch::x86_64::AVX512_KERNELS),
            #[cfg(target_arch = "x86_64")]
            avx2 => Avx2 ($crate::arch::x86_64::AVX2_KERNELS),
            #[cfg(target_arch = "aarch64")]
            neon => Neon ($crate::arch::aarch64::NEON_KERNELS),
            #[cfg(all(target_arch = "arm", sparkle_arm_fpu))]
            armfpu => ArmFpu ($crate::arch::arm::ARMFPU_KERNELS),
            generic => Generic ($crate::arch::generic::GENERIC_KERNELS),
        }
    };
}

/// Stamps the private table from the registration list.
macro_rules! registration_table {
    ($($(#[$cfg:meta])* $name:ident => $isa:ident ($kernel:path)),* $(,)?) => {
        /// Every kernel set compiled into this build, best first. Private: a kernel leaves this
        /// module only through the checks of [`Kernel`]'s constructors.
        const KERNELS: &[Kernel] = &[$($(#[$cfg])* $kernel),*];
    };
}
crate::for_each_kernel!(registration_table);
