//! ISA-specific code lives only here: the SIMD abstraction, the one GEMM microkernel body, and
//! per-ISA `const` tables of its instantiations (`{isa}_gemm_f32_{mr}x{nr}`).
//!
//! In `no_std`, [`best_static`] picks the widest kernel the *compile-time* target features allow
//! (`cfg!(target_feature = ...)`), so a Cortex-M4F build gets the generic FPU kernel and an
//! `-C target-cpu=native` x86 build gets AVX-512. sparkle-std detects features at run time instead.
#![allow(unsafe_code)]

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
pub mod depthwise;
pub mod generic;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

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
}

impl Isa {
    /// The lower-case name used by `SPARKLE_ISA` and in kernel ids.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Generic => "generic",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Parses a `SPARKLE_ISA` value.
    pub fn from_name(s: &str) -> Option<Self> {
        [Isa::Generic, Isa::Avx2, Isa::Avx512, Isa::Neon].into_iter().find(|i| i.name() == s)
    }

    /// Whether the compile-time target features guarantee this ISA.
    pub const fn enabled_statically(self) -> bool {
        match self {
            Isa::Generic => true,
            Isa::Avx2 => cfg!(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")),
            Isa::Avx512 => cfg!(all(target_arch = "x86_64", target_feature = "avx512f")),
            Isa::Neon => cfg!(all(target_arch = "aarch64", target_feature = "neon")),
        }
    }
}

/// Bias pointer for one microtile, already offset to the tile's first row / column.
#[derive(Clone, Copy, Debug)]
pub enum TileBias {
    /// No bias.
    None,
    /// `mr` values, one per row of the tile.
    Row(*const f32),
    /// `nr` values, one per column of the tile.
    Col(*const f32),
}

/// Everything one microkernel call needs: packed panels, where C is, and the write-out.
#[derive(Clone, Copy, Debug)]
pub struct MicroArgs {
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
    /// Packed B micro-panel: `k` groups of `nr` values (zero-padded columns).
    pub b: *const f32,
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

/// A registered microkernel.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// `{isa}_gemm_f32_{mr}x{nr}`: the same string in tests, benches and the juggler's records.
    pub id: &'static str,
    /// What it needs to run.
    pub isa: Isa,
    /// Rows of its register tile.
    pub mr: usize,
    /// Columns of its register tile.
    pub nr: usize,
    /// The kernel.
    ///
    /// # Safety
    /// The CPU must support `isa`; `a` must hold `k*mr` and `b` `k*nr` readable floats; every
    /// `(i, j)` with `i < m`, `j < n` of C (and of the bias) must be valid for reads and writes
    /// and not aliased by anything else during the call.
    pub run: unsafe fn(&MicroArgs),
    /// The depthwise conv kernel of the same ISA (`{isa}_dwconv_f32`).
    ///
    /// # Safety
    /// As [`depthwise::depthwise_body`].
    pub depthwise: unsafe fn(&depthwise::DepthwiseArgs<'_>),
}

/// The SIMD operations the kernel body needs. Implementations are zero-sized markers whose
/// methods are `#[inline(always)]`, so they compile to plain instructions inside the
/// `#[target_feature]` wrapper that instantiates the body.
pub trait Simd: Copy {
    /// One vector of `LANES` f32.
    type V: Copy;
    /// Lanes per vector.
    const LANES: usize;
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
    /// Hints that the cache line holding `p` will be read or written soon. Never faults.
    #[inline(always)]
    fn prefetch(p: *const f32) {
        let _ = p;
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

/// `k` rank-1 updates of the accumulators from an A panel with unit row stride and column stride
/// `cs_a`, and a packed B panel.
///
/// # Safety
/// `a` readable at `i + p * cs_a` and `b` at `p * NV * LANES + l` for `i < MR`, `p < k`, `l < NV * LANES`.
#[inline(always)]
unsafe fn rank1_updates<S: Simd, const MR: usize, const NV: usize, const RS: usize>(
    mut acc: [[S::V; NV]; MR],
    mut a: *const f32,
    cs_a: usize,
    mut b: *const f32,
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
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = S::splat(*a.add(i * RS));
                for v in 0..NV {
                    row[v] = S::fmadd(ai, bv[v], row[v]);
                }
            }
            a = a.add(cs_a);
            b = b.add(NV * lanes);
        }
    }
    // By value, not `&mut`: through a reference LLVM kept the accumulators in memory.
    acc
}

/// As [`rank1_updates`] with a run-time row stride of A.
///
/// # Safety
/// `a` readable at `i * rs_a + p * cs_a`, `b` as in [`rank1_updates`].
#[inline(always)]
unsafe fn rank1_updates_strided<S: Simd, const MR: usize, const NV: usize>(
    mut acc: [[S::V; NV]; MR],
    a: *const f32,
    rs_a: usize,
    cs_a: usize,
    mut b: *const f32,
    k: usize,
) -> [[S::V; NV]; MR] {
    let lanes = S::LANES;
    // SAFETY: bounds as documented; the ISA is the caller's.
    unsafe {
        let mut off = 0;
        for _ in 0..k {
            let mut bv = [S::zero(); NV];
            for (v, slot) in bv.iter_mut().enumerate() {
                *slot = S::load(b.add(v * lanes));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = S::splat(*a.add(i * rs_a + off));
                for v in 0..NV {
                    row[v] = S::fmadd(ai, bv[v], row[v]);
                }
            }
            off += cs_a;
            b = b.add(NV * lanes);
        }
    }
    acc
}

/// Widest register tile of any kernel (`nr`), for the edge write-out's row buffer.
const MAX_NR: usize = 32;

/// The one GEMM microkernel body: an `MR x (NV*LANES)` register tile of C accumulated over `k`
/// rank-1 updates from packed panels, then the epilogue fused into the write-out.
///
/// # Safety
/// As [`Kernel::run`], for `mr = MR`, `nr = NV * S::LANES`; `rs_a`/`cs_a` describe `MR x k`
/// readable floats at `a`.
#[inline(always)]
pub unsafe fn gemm_body<S: Simd, const MR: usize, const NV: usize>(p: &MicroArgs) {
    let lanes = S::LANES;
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
        let acc = if p.rs_a == 1 && p.cs_a == MR {
            rank1_updates::<S, MR, NV, 1>(zero, p.a, MR, p.b, p.k)
        } else {
            rank1_updates_strided::<S, MR, NV>(zero, p.a, p.rs_a, p.cs_a, p.b, p.k)
        };

        let full = p.m == MR && p.n == NV * lanes && p.cs_c == 1;
        if full {
            let alpha = S::splat(p.alpha);
            let beta = S::splat(p.beta);
            for (i, row) in acc.iter().enumerate() {
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
                activate(p.c, p.rs_c, 1, MR, NV * lanes, p.act);
            }
        } else {
            // Edge or strided tile: spill one row of accumulators at a time (32 floats of stack,
            // not a whole tile: this runs on microcontrollers), then a scalar write-out.
            debug_assert!(NV * lanes <= MAX_NR);
            for (i, row) in acc.iter().enumerate().take(p.m) {
                let mut spill = [0.0f32; MAX_NR];
                for (v, &x) in row.iter().enumerate() {
                    S::store(spill.as_mut_ptr().add(v * lanes), x);
                }
                let bias = match p.bias {
                    TileBias::None => None,
                    TileBias::Row(b) => Some((b.add(i), 0)),
                    TileBias::Col(b) => Some((b, 1)),
                };
                write_row(&spill[..p.n], p.c.add(i * p.rs_c), p.cs_c, p.alpha, p.beta, bias, p.act);
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
unsafe fn activate(c: *mut f32, rs: usize, cs: usize, m: usize, n: usize, act: Activation) {
    for i in 0..m {
        for j in 0..n {
            // SAFETY: in the tile, per the contract.
            unsafe {
                let cp = c.add(i * rs + j * cs);
                *cp = act.apply(*cp);
            }
        }
    }
}

/// One spilled row of an edge tile written out the scalar way: `c[j*cs] = act(alpha*x + beta*c +
/// bias)`, with the bias `(pointer, step)` (step 0: one value for the row; 1: one per column).
/// Out of line for code size, like [`activate`].
///
/// # Safety
/// `c + j*cs` valid for `j < row.len()`; the bias readable at `j*step`.
#[inline(never)]
unsafe fn write_row(
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
            *cp = act.apply(y);
        }
    }
}

/// Every kernel compiled into this build, best first within each architecture.
pub const KERNELS: &[Kernel] = {
    #[cfg(target_arch = "x86_64")]
    {
        &[x86_64::AVX512_GEMM_F32_12X32, x86_64::AVX2_GEMM_F32_6X16, generic::GENERIC_GEMM_F32_4X4]
    }
    #[cfg(target_arch = "aarch64")]
    {
        &[aarch64::NEON_GEMM_F32_8X12, generic::GENERIC_GEMM_F32_4X4]
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        &[generic::GENERIC_GEMM_F32_4X4]
    }
};

/// The best kernel the compile-time target features allow (the `no_std` choice).
pub fn best_static() -> &'static Kernel {
    KERNELS.iter().find(|k| k.isa.enabled_statically()).unwrap_or(&generic::GENERIC_GEMM_F32_4X4)
}

/// The kernel for `isa`, if this build has one.
pub fn kernel_for(isa: Isa) -> Option<&'static Kernel> {
    KERNELS.iter().find(|k| k.isa == isa)
}
