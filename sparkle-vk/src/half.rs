//! Half-precision GEMM and conv2d ([`Context::gemm_half`], [`Context::conv2d_half`]): f16 or bf16
//! inputs, f32 sums and output, the shared epilogue. Three kernels over one operand layout:
//!
//! - `gemm_cm2.comp` (f16 and bf16 GEMM): workgroup-scope cooperative matrices
//!   (`VK_NV_cooperative_matrix2`, through `coopmat2`), 128x128 tiles, for GEMMs of at least
//!   [`TileRules::min_full_tiles`] of them (bf16: every GEMM, by the rule) where the device has the extension
//!   ([`crate::DeviceInfo::cooperative_matrix2_f16`]; for bf16 also `VK_KHR_shader_bfloat16`,
//!   [`crate::DeviceInfo::cooperative_matrix2_bf16`]);
//! - `gemm_coopmat.comp` (f16, and the bf16 staged conv): cooperative matrices
//!   (`VK_KHR_cooperative_matrix`: NVIDIA's tensor cores), 64x64, 128x128 or 128x256 tiles (conv:
//!   128x128 or 64x256, staged 128x128 or 64x64) of 16x16x16 products, where the device offers
//!   that shape with f32 accumulation and subgroups of exactly 32
//!   ([`crate::DeviceInfo::cooperative_matrix_f16`]; bf16 conv2d where it also has bf16 ones,
//!   [`crate::DeviceInfo::cooperative_matrix_bf16`]);
//! - `gemm_half.comp` (f16 and bf16): plain shader cores widening to f32, everywhere else (and
//!   lavapipe in CI): bf16 GEMMs where the device lacks the workgroup-scope kernel (the KHR
//!   kernel has no bf16 GEMM module) and bf16 conv2d where it lacks bf16 cooperative matrices.
//!
//! Where the KHR or shader-core kernel would run few tiles over a long reduction (a C of few
//! rows: a batch of tokens against a weight matrix), the GEMM is split along k ([`split_k_parts`]):
//! each part writes its partial tiles to a workspace, and `gemm_vec4.comp`'s reduction adds them
//! and applies the epilogue.
//!
//! The host packs both operands into 32-bit words of two halves, zero-padding A's rows to a
//! multiple of 32 halves (at least 32, so even k = 0 has a slice to load) and B's to a multiple
//! of 8 (so the k loop has no bounds checks and the cooperative-matrix kernel's loads are 16
//! bytes), and copies C back into the caller's view. conv2d packs the weights as A and gathers B
//! from the input.

use sparkle_core::check::DType;
use sparkle_core::conv::{choose_path, Conv2dPath};
use sparkle_core::epilogue::{Bias, Epilogue};
use sparkle_core::f16::{check_half, Half};
use sparkle_core::gemm::GemmDims;
use sparkle_core::{Conv2d, Error, MatMut, MatRef, Param, TensorLayout};
use vulkano::buffer::BufferUsage;
use vulkano::memory::allocator::MemoryTypeFilter;

use crate::context::Context;
use crate::error::{api, Result, VkError};
use crate::params::{bias_operand, conv_geometry, u32_of, with_epilogue, Params};
use crate::plan::{elementwise_groups, Kind, Plan, TileDtype, TileRules, MAX_GROUPS};
use crate::staging::{staged_grid, staged_shape, StagedShape};

/// The [`TileDtype`] whose rules plan `H`'s kernels.
pub(crate) fn half_dtype<H: Half>() -> TileDtype {
    match H::DTYPE {
        DType::Bf16 => TileDtype::Bf16,
        _ => TileDtype::F16,
    }
}

/// Halves of k per padded row of A (and rows of B): the deepest slice either shader takes.
const K_ALIGN: usize = 32;
/// Halves per padded row of B: one 16-byte load.
const N_ALIGN: usize = 8;

/// Rows x columns of C per workgroup of each cooperative-matrix kernel (`Kind::CoopmatF16 { tile }`
/// indexes it; `shaders.rs` loads the matching SPIR-V, `scripts/spirv.sh` builds it).
/// On an H200 the two large shapes here were the best of seven measured (BENCHMARKS.md): 256 x 128,
/// 128 x 128 with 64-deep slices and double-buffered shared memory did no better or worse.
pub(crate) const COOP_TILES: [[usize; 2]; 3] = [[128, 128], [128, 256], [64, 64]];

/// Which cooperative-matrix kernel runs `m x n` under `rules` (the large tile from
/// [`TileRules::min_large_tiles`] of it, the 64x64 one below [`TileRules::min_full_tiles`], else
/// 128x128): `SPARKLE_VK_COOPMAT_TILE` (an index of [`COOP_TILES`]) forces one, for measuring
/// them.
pub(crate) fn coop_tile(m: usize, n: usize, rules: &TileRules) -> Result<u8> {
    if let Some(v) = std::env::var_os("SPARKLE_VK_COOPMAT_TILE") {
        let v = v.to_string_lossy();
        return v.parse::<u8>().ok().filter(|&t| usize::from(t) < COOP_TILES.len()).ok_or_else(|| {
            VkError::Config(format!("SPARKLE_VK_COOPMAT_TILE={v}: not a kernel index below {}", COOP_TILES.len()))
        });
    }
    let large = m.div_ceil(128).saturating_mul(n.div_ceil(256));
    let full = m.div_ceil(128).saturating_mul(n.div_ceil(128));
    Ok(if large >= rules.min_large_tiles as usize {
        1
    } else if full < rules.min_full_tiles as usize {
        2
    } else {
        0
    })
}

/// Whether the workgroup-scope kernel (`Kind::Coopmat2`) runs `m x n` on a device that has it
/// for the dtype: from [`TileRules::min_full_tiles`] tiles of 128 x 128 (below that the KHR
/// kernel's 64 x 64 tiles give a small f16 C more workgroups; for bf16, which has no KHR GEMM
/// kernel, the shader cores run). On an H100 (session 37), f16 TFLOPS KHR -> workgroup kernel
/// below 256 tiles: 256^3 2.1 -> 1.1, 1024^3 82 -> 61, 1536^3 109 -> 94, 64 x 4096 x 4096 28.5
/// -> 16.3; at 2048^2 it ran 1.22x the KHR 128x128 kernel (session 33). bf16, shader cores ->
/// workgroup kernel (`sparkle bench gemm --device vulkan --dtypes bf16`): 256^3 1.34 -> 1.25,
/// 512^3 7.3 -> 11.5, 1024^3 21.4 -> 63.9, 64 x 4096 x 4096 8.3 -> 16.3, 16 x 1024 x 1024 0.54
/// -> 0.84. `SPARKLE_VK_COOPMAT2=all` runs it at every size (the tests use it to cover its edge
/// tiles); `SPARKLE_VK_COOPMAT_TILE` (forcing a KHR tile) keeps f16 off it.
pub(crate) fn takes_coop2(m: usize, n: usize, bf16: bool, rules: &TileRules) -> bool {
    if std::env::var_os("SPARKLE_VK_COOPMAT2").is_some_and(|v| v == "all") {
        return true;
    }
    if !bf16 && std::env::var_os("SPARKLE_VK_COOPMAT_TILE").is_some() {
        return false;
    }
    m.div_ceil(128).saturating_mul(n.div_ceil(128)) >= rules.min_full_tiles as usize
}

/// Fewest 32-deep slices a split-K part sums: shorter parts spend more on the partial tiles'
/// round trip through the workspace than they gain.
const SPLIT_K_MIN_SLICES: usize = 8;
/// Most split-K parts.
const SPLIT_K_MAX_PARTS: usize = 16;

/// Split-K parts for a half GEMM of `tiles` workgroups over `slices` 32-deep slices, to reach
/// `groups` workgroups ([`TileRules::split_k_groups`]: a C of few rows, a batch of tokens
/// against a weight matrix, otherwise leaves most of a large GPU idle): 1 (none) where the tiles
/// reach it or the reduction is short; else enough parts to reach it, each of at least
/// [`SPLIT_K_MIN_SLICES`] slices, every part at least one slice (the kernels load a part's first
/// slice before their loop). `SPARKLE_VK_HALF_SPLIT_K=0` turns it off (to measure the kernels
/// without it).
pub(crate) fn split_k_parts(tiles: usize, slices: usize, groups: u32) -> usize {
    let groups = groups as usize;
    if tiles >= groups || std::env::var_os("SPARKLE_VK_HALF_SPLIT_K").is_some_and(|v| v == "0") {
        return 1;
    }
    let mut parts = groups.div_ceil(tiles.max(1)).min(slices / SPLIT_K_MIN_SLICES).min(SPLIT_K_MAX_PARTS);
    // Parts of ceil(slices / parts) slices: fewer parts where the last ones would be empty.
    while parts > 1 && slices.div_ceil(slices.div_ceil(parts)) < parts {
        parts = slices.div_ceil(slices.div_ceil(parts));
    }
    parts.max(1)
}

/// Fewest 64x256 conv tiles (over the batch and groups) for which the narrow conv tile runs.
const MIN_NARROW_TILES: usize = 128;

/// Which kernel, and the shapes it runs with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HalfPlan {
    pub(crate) kind: Kind,
    pub(crate) params: Params,
    pub(crate) groups: [u32; 3],
    /// Words (two halves each) of the packed A and B.
    pub(crate) a_words: usize,
    pub(crate) b_words: usize,
    /// With split-K (`params.splits` parts): the reduction that adds the partial tiles and
    /// finishes C, its workgroups and the workspace it reads (floats).
    pub(crate) reduce: Option<(Kind, [u32; 3], usize)>,
}

impl HalfPlan {
    /// The dispatches of this plan with `params` (its own, with an epilogue), for `record_plan`.
    pub(crate) fn with(&self, params: Params) -> Plan {
        Plan { kind: self.kind, params, groups: self.groups, reduce: self.reduce }
    }
}

/// The plan for `m x n x k` on the cooperative-matrix kernels (`coopmat`: the KHR one; `coopmat2`:
/// the workgroup-scope one for this dtype, where [`takes_coop2`] picks it) or the shader-core one
/// (`bf16` selects the bf16 modules): every size checked to fit the shaders' 32-bit indices and
/// the dispatch limits.
pub(crate) fn half_plan(
    m: usize,
    n: usize,
    k: usize,
    (coopmat, coopmat2, bf16): (bool, bool, bool),
    rules: &TileRules,
) -> Result<HalfPlan> {
    let overflow = |param| VkError::Core(Error::Overflow { param });
    // At least one slice: the kernels load the first before their loop.
    let kp = k.max(1).checked_next_multiple_of(K_ALIGN).ok_or(overflow(Param::K))?;
    let np = n.checked_next_multiple_of(N_ALIGN).ok_or(overflow(Param::N))?;
    let a_words = m.checked_mul(kp / 2).ok_or(overflow(Param::A))?;
    let b_words = kp.checked_mul(np / 2).ok_or(overflow(Param::B))?;
    let c_len = m.checked_mul(n).ok_or(overflow(Param::COut))?;
    // Every index the shaders form stays below the word and element counts.
    u32_of(a_words, Param::A)?;
    u32_of(b_words, Param::B)?;
    u32_of(c_len, Param::COut)?;
    // The workgroup kernel is only enabled beside the KHR one (f16) or for bf16 (`Context::new`).
    debug_assert!(!coopmat2 || coopmat || bf16);
    let (kind, [tm, tn]) = if coopmat2 && takes_coop2(m, n, bf16, rules) {
        let [tm, tn, _] = crate::coopmat2::TILE;
        (Kind::Coopmat2 { bf16 }, [tm as usize, tn as usize])
    } else if coopmat {
        let tile = coop_tile(m, n, rules)?;
        (Kind::CoopmatF16 { tile }, COOP_TILES[usize::from(tile)])
    } else {
        (Kind::HalfGemm { bf16 }, [64, 64])
    };
    let mut groups = [u32_of(n.div_ceil(tn), Param::N)?, u32_of(m.div_ceil(tm), Param::M)?, 1];
    if groups[0] > MAX_GROUPS || groups[1] > MAX_GROUPS {
        return Err(VkError::Core(Error::Overflow { param: if groups[0] > MAX_GROUPS { Param::N } else { Param::M } }));
    }
    // Split-K on the kernels that write partial tiles (not the workgroup-scope one).
    let parts = match kind {
        Kind::CoopmatF16 { .. } | Kind::HalfGemm { .. } => {
            split_k_parts(n.div_ceil(tn).saturating_mul(m.div_ceil(tm)), kp / K_ALIGN, rules.split_k_groups)
        }
        _ => 1,
    };
    let mut reduce = None;
    if parts > 1 {
        // The workspace's index, (part * m + r) * n + col, stays below its length.
        let work = u32_of(c_len.checked_mul(parts).ok_or(overflow(Param::Scratch))?, Param::Scratch)?;
        groups[2] = parts as u32;
        reduce = Some((Kind::Reduce { conv: false }, elementwise_groups(c_len as u32), work as usize));
    }
    let params = Params {
        m: u32_of(m, Param::M)?,
        n: u32_of(n, Param::N)?,
        k: u32_of(kp, Param::K)?,
        a_rs: u32_of(kp / 8, Param::K)?,
        b_rs: u32_of(np / 8, Param::N)?,
        c_rs: u32_of(n, Param::N)?,
        c_cs: 1,
        alpha: 1.0,
        groups: 1,
        splits: parts as u32,
        ..Params::default()
    };
    Ok(HalfPlan { kind, params, groups, a_words, b_words, reduce })
}

/// The plan of conv2d `g` as an implicit GEMM on the cooperative-matrix kernel (`coopmat`) or the
/// shader-core one (`bf16` its bf16 variant): per (image, group) an `K/groups x pixels` C from
/// the weights (padded like A) and the input gathered on the fly; every size checked to fit the
/// shaders' 32-bit indices and the dispatch limits.
pub(crate) fn conv_half_plan(g: &Conv2d, coopmat: bool, bf16: bool) -> Result<HalfPlan> {
    let p = g.params();
    let (kg, hw, gemm_k) = g.gemm_dims();
    let overflow = |param| VkError::Core(Error::Overflow { param });
    let kp = gemm_k.max(1).checked_next_multiple_of(K_ALIGN).ok_or(overflow(Param::K))?;
    let a_words = p.k.checked_mul(kp / 2).ok_or(overflow(Param::Weight))?;
    let b_words = g.input_len().div_ceil(2);
    for len in [a_words, g.input_len(), g.output_len()] {
        u32_of(len, Param::Scratch)?;
    }
    // At most 64 output channels per group fill a 64 x 256 tile (ResNet's 64-channel layers) where
    // there are enough of them; with few (batch 1), 128 x 128 tiles give more workgroups. On an
    // H200: conv1 and 3x3@56 at batch 32 1.39x and 1.11x narrow, at batch 1 0.74x and 0.62x.
    let narrow = kg <= 64 && hw.div_ceil(256).saturating_mul(p.n * p.groups) >= MIN_NARROW_TILES;
    let (kind, [tm, tn]) = match (coopmat, narrow) {
        (true, false) => (Kind::CoopmatConvF16 { narrow }, COOP_TILES[0]),
        (true, true) => (Kind::CoopmatConvF16 { narrow }, [64, 256]),
        (false, _) => (Kind::HalfConv { bf16 }, [64, 64]),
    };
    let z = p.n.checked_mul(p.groups).ok_or(overflow(Param::N))?;
    let groups = [u32_of(hw.div_ceil(tn), Param::Output)?, u32_of(kg.div_ceil(tm), Param::K)?, u32_of(z, Param::N)?];
    if groups.iter().any(|&v| v > MAX_GROUPS) {
        return Err(overflow(Param::Output));
    }
    let (c_rs, c_cs) = match p.layout {
        TensorLayout::Nchw => (hw, 1),
        TensorLayout::Nhwc => (1, p.k),
    };
    let params = Params {
        m: u32_of(kg, Param::K)?,
        n: u32_of(hw, Param::Output)?,
        k: u32_of(kp, Param::K)?,
        a_rs: u32_of(kp / 8, Param::K)?,
        // The reduction's true length (the shaders' bound on the gathered rows).
        a_cs: u32_of(gemm_k, Param::K)?,
        c_rs: u32_of(c_rs, Param::Output)?,
        c_cs: u32_of(c_cs, Param::Output)?,
        alpha: 1.0,
        ..conv_geometry(g)?
    };
    Ok(HalfPlan { kind, params, groups, a_words, b_words, reduce: None })
}

/// Halves per 16-byte chunk of the staged conv's gather.
const CHUNK_HALVES: usize = crate::staging::CHUNK_BYTES / 2;

/// The plan of f16 conv2d `g` on cooperative matrices with its input staged (`staging.rs`;
/// `gemm_coopmat.comp` with CONV and STAGED): one GEMM per group over every image's output pixels
/// (m), the group's output channels (n) and the reduction in (tap, channel) order with each
/// group's channels rounded up to whole chunks (k); B a block of `k x kg` (rounded up to whole
/// chunks) per group. `None`-free: an error where a size passes the shaders' indices or the
/// dispatch limits (the caller then runs the gathering kernel).
pub(crate) fn staged_half_plan(g: &Conv2d, bf16: bool, rules: &TileRules) -> Result<HalfPlan> {
    let p = g.params();
    let (kg, hw, _) = g.gemm_dims();
    let overflow = |param| VkError::Core(Error::Overflow { param });
    let mul = |a: usize, b: usize, param| a.checked_mul(b).ok_or(overflow(param));
    let StagedShape { cpt, kp, pix, m, a_words } = staged_shape(g, p.n, CHUNK_HALVES, K_ALIGN)?;
    let kgp = kg.checked_next_multiple_of(N_ALIGN).ok_or(overflow(Param::K))?;
    let b_words = mul(mul(p.groups, kp, Param::Weight)?, kgp / 2, Param::Weight)?;
    for (len, param) in [(a_words, Param::Input), (b_words, Param::Weight), (g.output_len(), Param::Output)] {
        u32_of(len.checked_mul(2).ok_or(overflow(param))?, param)?;
    }
    // 64x64 tiles where a group's channels fill at most half of a 128-wide tile, or tiles are few.
    let small = kg <= 64 || coop_tile(m.saturating_mul(p.groups), kg, rules)? == 2;
    let (tm, tn) = if small { (64, 64) } else { (128, 128) };
    let groups = staged_grid(kg, m, p.groups, [tm, tn])?;
    let params = Params {
        m: u32_of(m, Param::Output)?,
        n: u32_of(kg, Param::K)?,
        k: u32_of(kp, Param::K)?,
        a_rs: u32_of(hw, Param::Output)?,
        b_rs: u32_of(kgp / 8, Param::K)?,
        c_cs: u32::from(p.layout == TensorLayout::Nhwc),
        alpha: 1.0,
        layouts: u32_of(cpt, Param::C)?,
        hw: u32_of(pix, Param::C)?,
        ..conv_geometry(g)?
    };
    Ok(HalfPlan { kind: Kind::CoopmatConvStaged { small, bf16 }, params, groups, a_words, b_words, reduce: None })
}

/// Group `grp`'s block of B for [`staged_half_plan`]: row `(r * s + t) * cgp + c` (tap, channel),
/// column `o` (the group's output channel), `kgp` halves a row, as words of two halves.
fn staged_weights<H: Half>(g: &Conv2d, weight: &[H], plan: &HalfPlan) -> Result<Vec<u32>> {
    let p = g.params();
    let (kg, cg) = (g.kg(), g.cg());
    let cgp = plan.params.layouts as usize * CHUNK_HALVES;
    let (kp, kgp) = (plan.params.k as usize, plan.params.b_rs as usize * 8);
    let mut out = zeroed_words(plan.b_words)?;
    for o in 0..p.k {
        let (grp, col) = (o / kg, o % kg);
        for c in 0..cg {
            for r in 0..p.r {
                for t in 0..p.s {
                    let at = (grp * kp + (r * p.s + t) * cgp + c) * kgp + col;
                    out[at / 2] |= u32::from(weight[g.weight_index(o, c, r, t)].to_bits()) << (16 * (at % 2));
                }
            }
        }
    }
    Ok(out)
}

/// `rows x cols` of `x` as words of two halves, each row zero-padded to `padded_cols` halves
/// and the rows to `padded_rows`; an allocation failure is an error, not an abort.
fn pack<H: Half>(x: &MatRef<'_, H>, padded_rows: usize, padded_cols: usize) -> Result<Vec<u32>> {
    let words = padded_cols / 2;
    let mut out = zeroed_words(padded_rows * words)?;
    let (d, rs, cs) = (x.as_slice(), x.rs(), x.cs());
    for i in 0..x.rows() {
        let row = &mut out[i * words..(i + 1) * words];
        for j in 0..x.cols() {
            row[j / 2] |= u32::from(d[i * rs + j * cs].to_bits()) << (16 * (j % 2));
        }
    }
    Ok(out)
}

/// `len` zero words, or an out-of-memory error.
pub(crate) fn zeroed_words(len: usize) -> Result<Vec<u32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|e| VkError::OutOfMemory(format!("packing {len} words on the host: {e}").into()))?;
    v.resize(len, 0);
    Ok(v)
}

impl Context {
    /// Whether f16 GEMMs run on cooperative matrices (tensor cores) on this device.
    pub fn has_cooperative_matrix_f16(&self) -> bool {
        self.coopmat_f16
    }

    /// `plan` if its buffers (and C of `c_len` floats) fit this device's largest storage buffer:
    /// checked before the host packs anything, so a shape too large for the device is an error,
    /// not a host allocation of its padded operands.
    pub(crate) fn fits(&self, plan: HalfPlan, c_len: usize) -> Result<HalfPlan> {
        let most = self.pool.most_floats();
        let work = plan.reduce.map_or(0, |(_, _, len)| len);
        for (what, len) in [("A", plan.a_words), ("B", plan.b_words), ("C", c_len), ("the split-K workspace", work)] {
            if len as u64 > most {
                return Err(VkError::OutOfMemory(
                    format!("{what}: {len} words exceed the device's largest storage buffer ({most})").into(),
                ));
            }
        }
        Ok(plan)
    }

    /// Whether large f16 GEMMs run on workgroup-scope cooperative matrices
    /// (`VK_NV_cooperative_matrix2`) on this device.
    pub fn has_cooperative_matrix2_f16(&self) -> bool {
        self.coopmat2_f16
    }

    /// Whether large bf16 GEMMs do too (with `VK_KHR_shader_bfloat16`).
    pub fn has_cooperative_matrix2_bf16(&self) -> bool {
        self.coopmat2_bf16
    }

    /// Whether bf16 conv2d runs on cooperative matrices (tensor cores) on this device
    /// ([`crate::DeviceInfo::cooperative_matrix_bf16`], enabled).
    pub fn has_cooperative_matrix_bf16(&self) -> bool {
        self.coopmat_bf16
    }

    /// Where `H` GEMMs and conv2d run on this device: "cooperative matrices", "shader cores", or
    /// for bf16 with [`Context::has_cooperative_matrix2_bf16`] "workgroup cooperative matrices
    /// for GEMMs, cooperative matrices for conv2d" (or "..., shader cores for conv2d" without
    /// [`Context::has_cooperative_matrix_bf16`]; [`Context::gemm_half_path`] names a shape's).
    pub fn half_path<H: Half>(&self) -> &'static str {
        match H::DTYPE {
            DType::F16 if self.coopmat_f16 => "cooperative matrices",
            DType::Bf16 if self.coopmat_bf16 => {
                "workgroup cooperative matrices for GEMMs, cooperative matrices for conv2d"
            }
            DType::Bf16 if self.coopmat2_bf16 => "workgroup cooperative matrices for GEMMs, shader cores for conv2d",
            _ => "shader cores",
        }
    }

    /// Where an `m x n x k` GEMM of `H` runs on this device: "workgroup cooperative matrices"
    /// (`VK_NV_cooperative_matrix2`), "cooperative matrices" or "shader cores"; an error where the
    /// shape cannot run here.
    pub fn gemm_half_path<H: Half>(&self, m: usize, n: usize, k: usize) -> Result<&'static str> {
        Ok(match self.half_plan::<H>(m, n, k)?.kind {
            Kind::Coopmat2 { .. } => "workgroup cooperative matrices",
            Kind::CoopmatF16 { .. } => "cooperative matrices",
            _ => "shader cores",
        })
    }

    /// Where conv2d `g` on `H` inputs runs on this device: "cooperative matrices" (the staged
    /// implicit GEMM on tensor cores), "shader cores" (the gathering one), or "depthwise kernel"
    /// (widened to f32); an error where it cannot run here.
    pub fn conv2d_half_path<H: Half>(&self, g: &Conv2d) -> Result<&'static str> {
        if choose_path(g) == Conv2dPath::Depthwise {
            return Ok("depthwise kernel");
        }
        Ok(match self.any_conv_half_plan::<H>(g)?.kind {
            Kind::CoopmatConvStaged { .. } | Kind::CoopmatConvF16 { .. } => "cooperative matrices",
            _ => "shader cores",
        })
    }

    /// The plan of an `m x n x k` half GEMM of type `H` on this device.
    pub(crate) fn half_plan<H: Half>(&self, m: usize, n: usize, k: usize) -> Result<HalfPlan> {
        let rules = self.tile_rules(half_dtype::<H>());
        self.half_plan_with(m, n, k, H::DTYPE == DType::Bf16, &rules)
    }

    /// [`half_plan`] on this device's kernels for f16 (bf16 with `bf16`) under `rules`, checked to
    /// fit its buffers.
    pub(crate) fn half_plan_with(
        &self,
        m: usize,
        n: usize,
        k: usize,
        bf16: bool,
        rules: &TileRules,
    ) -> Result<HalfPlan> {
        let coopmat2 = if bf16 { self.coopmat2_bf16 } else { self.coopmat2_f16 };
        let plan = half_plan(m, n, k, (self.coopmat_f16 && !bf16, coopmat2, bf16), rules)?;
        self.fits(plan, m.saturating_mul(n))
    }

    /// `C <- act(A * B + bias)` with f16 or bf16 A and B (any strides), f32 sums and f32 C
    /// (any strides; only its `m x n` elements are written). Products of halves are exact, so
    /// the result is within the tolerance of [`sparkle_core::f16::gemm_half_reference_f64`] on
    /// the same inputs, whichever kernel ran ([`Context::has_cooperative_matrix_f16`]).
    pub fn gemm_half<H: Half>(
        &self,
        a: &MatRef<'_, H>,
        b: &MatRef<'_, H>,
        mut c: MatMut<'_, f32>,
        epi: &Epilogue<'_>,
    ) -> Result<GemmDims> {
        let d = check_half(a, b, &c)?;
        epi.validate(d.m, d.n)?;
        if d.m == 0 || d.n == 0 {
            return Ok(d);
        }
        let plan = self.half_plan::<H>(d.m, d.n, d.k)?;
        let (bias_mode, bias_data) = bias_operand(&epi.bias);
        let params = with_epilogue(plan.params, bias_mode, epi.activation)?;
        let kp = plan.params.k as usize;
        let a_words = pack(a, d.m, kp)?;
        let b_words = pack(b, kp, 8 * plan.params.b_rs as usize)?;
        let out = self.run_packed(&plan, &params, &a_words, &b_words, bias_data)?;
        for i in 0..d.m {
            for j in 0..d.n {
                c.set(i, j, out[i * d.n + j]);
            }
        }
        Ok(d)
    }

    /// Runs `plan`'s kernel with `params` (its own, with an epilogue) on the packed operands
    /// (bound as A, B, C, the bias) and returns C, row-major `m x n`.
    pub(crate) fn run_packed(
        &self,
        plan: &HalfPlan,
        params: &Params,
        a_words: &[u32],
        b_words: &[u32],
        bias_data: &[f32],
    ) -> Result<Vec<f32>> {
        let c_len = params.m as usize * params.n as usize;
        let mut cb = self.submitter.begin()?;
        let ab = self.pool.upload_words(&mut cb, a_words)?;
        let bb = self.pool.upload_words(&mut cb, b_words)?;
        let cbuf = self.pool.buffer(
            c_len,
            BufferUsage::STORAGE_BUFFER | BufferUsage::TRANSFER_SRC,
            MemoryTypeFilter::PREFER_DEVICE,
        )?;
        let bias = self.pool.upload(&mut cb, bias_data)?;
        // The GEMM shaders read A below m * a_rs uvec4 (times the planes of a split kernel: the
        // packed lengths uploaded) and B below k * b_rs uvec4 (likewise), a split-K part only
        // its own slices (each part has at least one: `split_k_parts`); they write C only at
        // r * n + col with r < m, col < n (c_len floats), a part's partial tile at
        // (part * m + r) * n + col in the workspace (`record_plan` sizes it from the plan), and
        // read the bias at r < m or col < n only in the mode whose length the caller's epilogue
        // validated. gemm_cm2.comp reads A and B through tensor layouts of exactly those
        // extents (unclamped only for tiles wholly inside them, clamping elsewhere), clamps its
        // bias index below m or n, and stores C through a layout clipped to m x n.
        self.record_plan(&mut cb, &plan.with(*params), [&ab, &bb, &cbuf, &bias])?;
        let out = self.pool.readback(&mut cb, &cbuf, c_len)?;
        self.submit_and_wait(cb)?;
        let out = out.read().map_err(api("reading C back"))?;
        Ok(out.to_vec())
    }

    /// `output = act(conv2d(input, weight) + bias)` with f16 or bf16 input and weights (every
    /// geometry, layout and grouping [`Conv2d`] describes), f32 sums and an f32 output: an
    /// implicit GEMM on cooperative matrices where the device has them for `H` (its input staged
    /// by the host), else on the shader cores ([`Context::conv2d_half_path`] says which); a depthwise conv widened to f32 on the direct
    /// depthwise kernel. Products of halves are exact, so the result is within the tolerance of the
    /// f64 oracle (`sparkle_core::conv::reference`) on the same rounded values with reduction
    /// length `C/groups * R * S`. Validated first: on an error the output is untouched.
    pub fn conv2d_half<H: Half>(
        &self,
        g: &Conv2d,
        input: &[H],
        weight: &[H],
        epi: &Epilogue<'_>,
        output: &mut [f32],
    ) -> Result<()> {
        g.check_buffers(input.len(), weight.len(), None, output.len())?;
        sparkle_core::conv::check_epilogue(g, epi)?;
        if output.is_empty() {
            return Ok(());
        }
        if choose_path(g) == Conv2dPath::Depthwise {
            // A depthwise conv has one output channel per group: as an implicit GEMM it fills one
            // column of a tile. Widened to f32 (exact) it runs on the direct depthwise kernel,
            // whose f32 products of halves are exact as well.
            let widen = |x: &[H]| -> Result<Vec<f32>> {
                let mut out = crate::pool::filled(x.len(), 0.0f32)?;
                out.iter_mut().zip(x).for_each(|(o, h)| *o = h.to_f64() as f32);
                Ok(out)
            };
            return self.conv2d(g, &widen(input)?, &widen(weight)?, epi, output);
        }
        let bias_data: &[f32] = match epi.bias {
            Bias::Row(v) => v,
            _ => &[],
        };
        if let Some(plan) = self.staged_half_plan::<H>(g)? {
            // Bias per output channel: a column of each group's GEMM.
            let params = with_epilogue(plan.params, if bias_data.is_empty() { 0 } else { 2 }, epi.activation)?;
            let cgp = plan.params.layouts as usize * CHUNK_HALVES;
            let bits = |h: H| u32::from(h.to_bits());
            let x_words = crate::staging::stage_input::<H, 2>(g, input, 0..g.params().n, cgp, plan.a_words, bits)?;
            let w_words = staged_weights(g, weight, &plan)?;
            return self.run_conv_half(&plan, &params, [&x_words, &w_words], bias_data, output);
        }
        let plan = self.conv_half_plan::<H>(g)?;
        let params = with_epilogue(plan.params, u32::from(!bias_data.is_empty()), epi.activation)?;
        let (_, _, gemm_k) = g.gemm_dims();
        let k = g.params().k;
        let w_words = pack(&MatRef::new(weight, k, gemm_k, gemm_k, 1)?, k, plan.params.k as usize)?;
        let mut x_words = zeroed_words(plan.b_words)?;
        for (w, p) in x_words.iter_mut().zip(input.chunks(2)) {
            *w = u32::from(p[0].to_bits()) | p.get(1).map_or(0, |h| u32::from(h.to_bits()) << 16);
        }
        self.run_conv_half(&plan, &params, [&w_words, &x_words], bias_data, output)
    }

    /// Runs a half conv `plan` with `params` on its A and B words and the bias, into `output`.
    fn run_conv_half(
        &self,
        plan: &HalfPlan,
        params: &Params,
        [a, b]: [&[u32]; 2],
        bias_data: &[f32],
        output: &mut [f32],
    ) -> Result<()> {
        let mut cb = self.submitter.begin()?;
        let ab = self.pool.upload_words(&mut cb, a)?;
        let bb = self.pool.upload_words(&mut cb, b)?;
        let yb = self.pool.buffer(
            output.len(),
            BufferUsage::STORAGE_BUFFER | BufferUsage::TRANSFER_SRC,
            MemoryTypeFilter::PREFER_DEVICE,
        )?;
        let bias = self.pool.upload(&mut cb, bias_data)?;
        // SAFETY: the gathering kernel reads A (the weights) below K * a_rs uvec4 (a_words words:
        // row g * m + r with r < m), the input only at im2col_index of in-range pixels (<
        // input_len, inside b_words words), and writes the output at c_off + r * c_rs + col *
        // c_cs < output_len (validated shapes), the bias at g * m + r < K when present. The
        // staged one reads A (the staged input) at s_conv_at's chunks (< a_words / 4: every
        // in-range tap of an image below m / hw), B below groups * k * b_rs uvec4 (b_words), and
        // writes each output element once at its index in the output's layout (< output_len),
        // the bias at g * n + col < K.
        unsafe { self.pipelines.dispatch(&mut cb, plan.kind, params, plan.groups, &[&ab, &bb, &yb, &bias]) }?;
        let out = self.pool.readback(&mut cb, &yb, output.len())?;
        self.submit_and_wait(cb)?;
        output.copy_from_slice(&out.read().map_err(api("reading the output back"))?);
        Ok(())
    }

    /// The staged plan of conv2d `g` on `H` inputs ([`staged_half_plan`]) where this device runs
    /// `H` on cooperative matrices and the plan fits; `None` runs the gathering kernel. A bad
    /// `SPARKLE_VK_COOPMAT_TILE` is an error, as for every cooperative-matrix kernel.
    pub(crate) fn staged_half_plan<H: Half>(&self, g: &Conv2d) -> Result<Option<HalfPlan>> {
        let bf16 = H::DTYPE == DType::Bf16;
        if !(if bf16 { self.coopmat_bf16 } else { self.coopmat_f16 }) {
            return Ok(None);
        }
        let rules = self.tile_rules(half_dtype::<H>());
        match staged_half_plan(g, bf16, &rules).and_then(|plan| self.fits(plan, g.output_len())) {
            Ok(plan) => Ok(Some(plan)),
            Err(e @ VkError::Config(_)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// The plan of conv2d `g` on `H` inputs on this device.
    pub(crate) fn conv_half_plan<H: Half>(&self, g: &Conv2d) -> Result<HalfPlan> {
        let bf16 = H::DTYPE == DType::Bf16;
        self.fits(conv_half_plan(g, self.coopmat_f16 && !bf16, bf16)?, g.output_len())
    }

    /// The plan `conv2d_half` runs conv2d `g` (not depthwise) on `H` inputs with: the staged
    /// one where it applies, else the gathering one.
    fn any_conv_half_plan<H: Half>(&self, g: &Conv2d) -> Result<HalfPlan> {
        match self.staged_half_plan::<H>(g)? {
            Some(plan) => Ok(plan),
            None => self.conv_half_plan::<H>(g),
        }
    }

    /// Seconds per conv2d `g` (+ ReLU) on `H` inputs with the tensors already on the device,
    /// warmed up as [`Context::time_gemm_half_resident`].
    pub fn time_conv2d_half_resident<H: Half>(&self, g: &Conv2d, reps: u32, warm_up: f64) -> Result<f64> {
        if choose_path(g) == Conv2dPath::Depthwise {
            // The direct depthwise kernel on the widened operands, as `conv2d_half` runs it.
            return self.time_conv2d_warm(g, reps, warm_up);
        }
        let plan = self.any_conv_half_plan::<H>(g)?;
        let params = with_epilogue(plan.params, 0, sparkle_core::Activation::Relu)?;
        self.time_plan(&HalfPlan { params, ..plan }, g.output_len(), reps, warm_up)
    }

    /// Seconds per row-major `m x n x k` half GEMM of type `H` with the operands already on the
    /// device: at least `warm_up` seconds of the same dispatches first (a GPU idling at a low
    /// clock needs about 0.1 s of sustained work to reach its full one), then `reps` dispatches
    /// in one command buffer, timed from submission to completion.
    pub fn time_gemm_half_resident<H: Half>(
        &self,
        m: usize,
        n: usize,
        k: usize,
        reps: u32,
        warm_up: f64,
    ) -> Result<f64> {
        let plan = self.half_plan::<H>(m, n, k)?;
        self.time_plan(&plan, m * n, reps, warm_up)
    }

    /// Seconds per dispatch of `plan` (C of `c_len` floats) over device buffers of its lengths
    /// (packed words occupy one 4-byte element each), after `warm_up` seconds of the same.
    pub(crate) fn time_plan(&self, plan: &HalfPlan, c_len: usize, reps: u32, warm_up: f64) -> Result<f64> {
        // The buffers have the plan's lengths (see `run_packed`); their contents are whatever
        // the pool held (only the time is used).
        self.time_recorded([plan.a_words, plan.b_words, c_len, 1], reps, warm_up, &|cb, bufs| {
            self.record_plan(cb, &plan.with(plan.params), bufs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkle_core::f16::f16;

    /// [`half_plan`] under the rule of its dtype.
    fn plan(m: usize, n: usize, k: usize, coopmat: bool, coopmat2: bool, bf16: bool) -> Result<HalfPlan> {
        let dtype = if bf16 { TileDtype::Bf16 } else { TileDtype::F16 };
        half_plan(m, n, k, (coopmat, coopmat2, bf16), &TileRules::rule(dtype))
    }

    #[test]
    fn operands_are_padded_to_whole_slices() {
        let p = plan(100, 70, 33, true, false, false).unwrap();
        // Fewer than the rule's 256 tiles of 128x128: the 64x64 kernel.
        assert_eq!((p.kind, p.groups), (Kind::CoopmatF16 { tile: 2 }, [2, 2, 1]));
        let full = plan(2048, 2048, 33, true, false, false).unwrap();
        assert_eq!((full.kind, full.groups), (Kind::CoopmatF16 { tile: 0 }, [16, 16, 1]));
        assert_eq!((p.params.k, p.params.a_rs, p.params.b_rs, p.params.c_rs), (64, 8, 9, 70));
        // k = 0 still has one (zero) slice: the kernels load it before their loop.
        assert_eq!(plan(5, 5, 0, true, false, false).unwrap().params.k, 32);
        assert_eq!((p.a_words, p.b_words), (100 * 32, 64 * 36));
        let p = plan(129, 65, 1, false, false, true).unwrap();
        assert_eq!((p.kind, p.groups, p.params.k), (Kind::HalfGemm { bf16: true }, [2, 3, 1], 32));
    }

    #[test]
    fn few_tiles_over_a_long_reduction_split_it() {
        // Enough parts for 256 workgroups, each of at least 8 slices, every part non-empty.
        assert_eq!(split_k_parts(256, 1000, 256), 1);
        assert_eq!(split_k_parts(4, 32, 256), 4);
        assert_eq!(split_k_parts(1, 37, 256), 4);
        assert_eq!(split_k_parts(2, 22, 256), 2);
        assert_eq!(split_k_parts(1, 7, 256), 1);
        assert_eq!(split_k_parts(1, 10_000, 256), 16);
        // 17 slices in at most 2 parts of 9 (not 3 parts of 6: a 3rd part would be short).
        assert_eq!(split_k_parts(64, 17, 256), 2);
        for tiles in 1..300 {
            for slices in 1..200 {
                let parts = split_k_parts(tiles, slices, 256);
                let per = slices.div_ceil(parts);
                assert!(parts >= 1 && (parts - 1) * per < slices, "{tiles} tiles, {slices} slices: {parts}");
            }
        }
        // 16 x 200 x 1000 on the 64 x 64 tiles: 4 tiles, 32 slices, 4 parts of 8.
        let p = plan(16, 200, 1000, true, false, false).unwrap();
        assert_eq!((p.kind, p.groups, p.params.splits), (Kind::CoopmatF16 { tile: 2 }, [4, 1, 4], 4));
        assert_eq!(p.reduce, Some((Kind::Reduce { conv: false }, [13, 1, 1], 16 * 200 * 4)));
        // The shader cores split the same way; the workgroup-scope kernel does not split.
        assert_eq!(plan(16, 200, 1000, false, false, true).unwrap().params.splits, 4);
        let p = plan(16, 200, 1000, false, true, true).unwrap();
        assert_eq!((p.kind, p.params.splits, p.reduce), (Kind::Coopmat2 { bf16: true }, 1, None));
    }

    #[test]
    fn large_half_gemms_take_the_workgroup_kernel_where_the_device_has_it() {
        // From 256 tiles of 128 x 128.
        let p = plan(4096, 4096, 100, true, true, false).unwrap();
        assert_eq!((p.kind, p.groups), (Kind::Coopmat2 { bf16: false }, [32, 32, 1]));
        let p = plan(2048, 2050, 100, true, true, false).unwrap();
        assert_eq!((p.kind, p.groups), (Kind::Coopmat2 { bf16: false }, [17, 16, 1]));
        // Fewer tiles: the KHR kernel's 64 x 64 tiles; no extension: the KHR kernel throughout.
        assert_eq!(plan(1024, 1024, 100, true, true, false).unwrap().kind, Kind::CoopmatF16 { tile: 2 });
        assert_eq!(plan(4096, 4096, 100, true, false, false).unwrap().kind, Kind::CoopmatF16 { tile: 1 });
        // bf16 runs on the workgroup kernel's bf16 module at every size where the device has it
        // (there is no KHR bf16 kernel: without it, on the shader cores).
        assert_eq!(plan(4096, 4096, 100, false, true, true).unwrap().kind, Kind::Coopmat2 { bf16: true });
        assert_eq!(plan(1024, 1024, 100, false, true, true).unwrap().kind, Kind::Coopmat2 { bf16: true });
        let p = plan(1, 1, 1, false, true, true).unwrap();
        assert_eq!((p.kind, p.groups), (Kind::Coopmat2 { bf16: true }, [1, 1, 1]));
        assert_eq!(plan(4096, 4096, 100, false, false, true).unwrap().kind, Kind::HalfGemm { bf16: true });
    }

    #[test]
    fn staged_convs_round_channels_to_chunks() {
        use sparkle_core::{Conv2dParams, Padding};
        // 2 groups of 10 channels (two chunks of 8 a tap) and 6 output channels, 3 images of 6x7.
        let g = Conv2dParams::new(3, 20, 6, 7, 12, 3, 3).groups(2).pad(Padding::uniform(1)).validate().unwrap();
        let p = staged_half_plan(&g, false, &TileRules::rule(TileDtype::F16)).unwrap();
        let q = p.params;
        // m = every image's pixels, k = 9 taps x 16 rounded up to 32, B rows of 8 halves.
        assert_eq!((q.m, q.n, q.k, q.a_rs, q.b_rs, q.layouts, q.hw, q.c_cs), (126, 6, 160, 42, 1, 2, 4, 0));
        assert_eq!((p.kind, p.groups), (Kind::CoopmatConvStaged { small: true, bf16: false }, [1, 2, 2]));
        assert_eq!((p.a_words, p.b_words), (3 * 42 * 4 * 4, 2 * 160 * 4));
        // Many rows of 130 channels: the 128 x 128 tile.
        let big = Conv2dParams::new(8, 16, 32, 64, 130, 1, 1).validate().unwrap();
        assert_eq!(
            staged_half_plan(&big, true, &TileRules::rule(TileDtype::Bf16)).unwrap().kind,
            Kind::CoopmatConvStaged { small: false, bf16: true }
        );
    }

    #[test]
    fn sizes_past_32_bit_indices_are_errors() {
        assert!(plan(1 << 16, 1, 1 << 17, false, false, false).is_err());
        assert!(plan(1 << 20, 1 << 12, 1, false, false, false).is_err());
        assert!(plan(usize::MAX, 1, usize::MAX, true, false, false).is_err());
        assert!(plan(65535 * 64 + 1, 1, 1, false, false, false).is_err());
        assert!(plan(4096, 4096, 4096, true, false, false).is_ok());
        let p = plan(8192, 8192, 64, true, false, false).unwrap();
        assert_eq!((p.kind, p.groups), (Kind::CoopmatF16 { tile: 1 }, [32, 64, 1]));
    }

    #[test]
    fn packing_pairs_halves_low_first_and_pads_with_zeros() {
        let x: Vec<f16> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().map(|&v| f16::from_f32(v)).collect();
        // 3 x 2, column-major: rows (1, 4), (2, 5), (3, 6).
        let view = MatRef::new(&x, 3, 2, 1, 3).unwrap();
        let w = pack(&view, 4, 4).unwrap();
        let bits = |v: f32| u32::from(f16::from_f32(v).to_bits());
        assert_eq!(
            w,
            vec![bits(1.0) | bits(4.0) << 16, 0, bits(2.0) | bits(5.0) << 16, 0, bits(3.0) | bits(6.0) << 16, 0, 0, 0]
        );
    }
}
