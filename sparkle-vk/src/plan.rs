//! How an op runs on the device, decided before anything is recorded: which shader (the 64x64
//! kernel, the 128x128 vec4 kernel, split-K with its reduction, depthwise, Winograd's stages),
//! how many workgroups, and what workspace. Pure: unit-tested without a GPU.

use sparkle_core::epilogue::{Bias, Epilogue};
use sparkle_core::{Conv2d, Error, Param, TensorLayout};

use crate::error::{Result, VkError};
use crate::params::{act_code, conv_geometry, u32_of, Params};

/// Kernel choices for one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Fewest 128x128 output tiles (per image and group) for which GEMM and conv2d use the
    /// vec4 kernel; below it the 64x64 kernel runs, whose four times as many workgroups keep
    /// more of a large GPU busy. `0` always prefers the vec4 kernel, `u32::MAX` never uses it.
    pub min_vec4_tiles: u32,
    /// Fewest 2x2 output tiles (over the whole batch) for which a conv2d that Winograd
    /// F(2x2, 3x3) can run (3x3, stride 1, dilation 1, one group, channels a multiple of 4) runs
    /// it: its four dispatches and transform passes cost more than they save on small outputs.
    /// `u32::MAX` never uses it.
    pub min_winograd_tiles: u32,
}

impl Tuning {
    /// Before (or without) measuring: 128x128 tiles from 2048^3-sized problems up, where they
    /// won on every GPU measured so far; Winograd from 512 output tiles (on an H100 it was
    /// faster than the direct path on ResNet-50's 3x3 layers at batch 32 and on 3x3@56 at
    /// batch 1 = 784 tiles, slower on 3x3@28 at batch 1 = 196 tiles).
    pub const DEFAULT: Tuning = Tuning { min_vec4_tiles: 256, min_winograd_tiles: 512 };
}

/// An element type with tensor-core GEMM kernels, each tuned apart ([`TileRules`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileDtype {
    /// f16 inputs, f32 sums (also the f32 GEMM at `high` and `medium` precision).
    F16,
    /// bf16 inputs, f32 sums.
    Bf16,
    /// int8 inputs, i32 sums.
    Int8,
}

impl TileDtype {
    /// Every one, in the order [`TileDtype::name`]s are listed.
    pub const ALL: [TileDtype; 3] = [TileDtype::F16, TileDtype::Bf16, TileDtype::Int8];

    /// "f16", "bf16" or "int8".
    pub fn name(self) -> &'static str {
        match self {
            TileDtype::F16 => "f16",
            TileDtype::Bf16 => "bf16",
            TileDtype::Int8 => "int8",
        }
    }
}

/// Where one element type's GEMM kernels change tiles and split the reduction on one device:
/// measured per device and dtype by [`crate::Context::retune_tiles`] (on first use of the dtype,
/// then remembered), else [`TileRules::rule`]. Counts are of output tiles (workgroups) of C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileRules {
    /// Fewest 128x128 tiles of C from which the large kernel runs: for f16 the workgroup-scope
    /// one (`VK_NV_cooperative_matrix2`) where the device has it, else the 128x128 cooperative
    /// matrix tile; for int8 the 128x128 tile; for bf16 the workgroup-scope kernel rather than
    /// the shader cores. Below it the 64x64 tiles (four times the workgroups) run. `0` always
    /// the large kernel, `u32::MAX` never.
    pub min_full_tiles: u32,
    /// Fewest 128x256 tiles of C from which the f16 cooperative-matrix kernel takes its
    /// 128x256 tile (where no workgroup-scope kernel takes the GEMM). `u32::MAX` never.
    pub min_large_tiles: u32,
    /// Workgroups a half GEMM of fewer tiles is split along k to reach (split-K, on the
    /// cooperative-matrix f16 kernel and the shader cores). `0` never splits.
    pub split_k_groups: u32,
}

impl TileRules {
    /// Before (or without) measuring, the rules measured on an H100 and an H200 (132 SMs): the
    /// 64x64 tile below 256 tiles of 128x128 (at 1024^2, 64 tiles, it ran f16 1.62x as fast;
    /// at 2048^2, 256 tiles, 0.86x), 128x256 from 512 of its tiles (4096^2: 1.05x; 2048^2:
    /// 0.94x), split-K to 256 workgroups (16 x 4096 x 4096: 2.1x); bf16 on the workgroup-scope
    /// kernel at every size (1.1-5x the shader cores from 512^3 on an H100).
    pub const fn rule(dtype: TileDtype) -> TileRules {
        match dtype {
            TileDtype::Bf16 => TileRules { min_full_tiles: 0, min_large_tiles: u32::MAX, split_k_groups: 256 },
            _ => TileRules { min_full_tiles: 256, min_large_tiles: 512, split_k_groups: 256 },
        }
    }

    /// Whether `SPARKLE_VK_TILES=rule` asks for [`TileRules::rule`] without measuring.
    pub fn forced() -> bool {
        std::env::var_os("SPARKLE_VK_TILES").is_some_and(|v| v == "rule")
    }
}

/// One of Winograd F(2x2, 3x3)'s three transforms (`shaders/winograd.comp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Stage {
    /// Filters to U (16 x K x C).
    Weights,
    /// Input patches to V (16 x tiles x C).
    Input,
    /// M (16 x K x tiles) back to the output, with bias and activation.
    Output,
}

/// Which shader a pipeline runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// 64x64 tiles of C, any strides.
    Gemm,
    /// 128x128 tiles, vec4 loads, double-buffered: operands with a contiguous dimension.
    /// `a_t`: A is stored with m contiguous; `b_t`: B with k contiguous.
    GemmVec4 { a_t: bool, b_t: bool },
    /// 64x64 tiles, B gathered from the conv input.
    Conv,
    /// `gemm_vec4.comp` with B gathered from the conv input, images side by side.
    ConvVec4,
    /// Adds split-K partial tiles and finishes C (GEMM or conv addressing).
    Reduce { conv: bool },
    /// A stage of Winograd F(2x2, 3x3) (`shaders/winograd.comp`).
    Winograd(Stage),
    /// One invocation per output element, depthwise conv.
    Depthwise,
    /// Half GEMM on the shader cores (`shaders/gemm_half.comp`), f16 or bf16 inputs.
    HalfGemm { bf16: bool },
    /// f16 GEMM on cooperative matrices (`shaders/gemm_coopmat.comp`, precompiled).
    CoopmatF16 { tile: u8 },
    /// f16 (or bf16) GEMM on workgroup-scope cooperative matrices (`shaders/gemm_cm2.comp`,
    /// `VK_NV_cooperative_matrix2`, precompiled): `coopmat2::TILE` tiles.
    Coopmat2 { bf16: bool },
    /// Half conv2d (implicit GEMM) on the shader cores (`shaders/gemm_half.comp` with CONV).
    HalfConv { bf16: bool },
    /// f16 conv2d (implicit GEMM) on cooperative matrices (`shaders/gemm_coopmat.comp` with CONV):
    /// 128 x 128 tiles, or 64 x 256 (`narrow`) for at most 64 output channels per group.
    CoopmatConvF16 { narrow: bool },
    /// f16 (`bf16`: bf16) conv2d on cooperative matrices with its input staged by the host
    /// (`shaders/gemm_coopmat.comp` with CONV and STAGED, and BF16; precompiled): 128 x 128
    /// tiles, or 64 x 64 (`small`).
    CoopmatConvStaged { small: bool, bf16: bool },
    /// f32 GEMM from hi and lo f16 planes (`precision.rs`): three products per f32 product on
    /// cooperative matrices (`gemm_coopmat.comp` with SPLIT, precompiled), or hi + lo widened on
    /// the shader cores (`gemm_half.comp` with SPLIT); `small`: 64x64 tiles on cooperative
    /// matrices, else 128x128.
    SplitF16 { coopmat: bool, small: bool },
    /// int8 GEMM on the shader cores (`shaders/gemm_i8.comp`).
    GemmI8,
    /// int8 GEMM on cooperative matrices (`shaders/gemm_coopmat.comp` with INT8, precompiled),
    /// the tile an index of `half::COOP_TILES`: 0 (128x128) or 2 (64x64).
    CoopmatI8 { tile: u8 },
    /// int8 conv2d, A gathered from the staged input, on the shader cores (`shaders/gemm_i8.comp`
    /// with CONV).
    ConvI8,
    /// int8 conv2d on cooperative matrices (`shaders/gemm_coopmat.comp` with INT8 and CONV,
    /// precompiled), the tile as for [`Kind::CoopmatI8`].
    CoopmatConvI8 { tile: u8 },
    /// int8 depthwise conv2d, one invocation per four outputs (`shaders/dwconv_i8.comp`).
    DepthwiseI8,
}

/// Rows (and columns) of C per workgroup of the general GEMM and the conv shader.
pub(crate) const TILE: u32 = 64;
/// Rows (and columns) of C per workgroup of `gemm_vec4.comp`.
pub(crate) const TILE_VEC4: u32 = 128;
/// Shortest reduction a split-K part gets: shorter ones spend more on the partial sums'
/// round trip than they gain.
pub(crate) const MIN_SPLIT_K: u32 = 64;

/// Reduction length of each split-K part (`gemm_vec4.comp` computes the same): whole slices of
/// 8, the last part what is left.
pub(crate) fn k_chunk(k: u32, splits: u32) -> u32 {
    k.div_ceil(splits.max(1)).next_multiple_of(8)
}

/// The dispatches of one op: the main one and, with split-K, the reduction that finishes C.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) kind: Kind,
    pub(crate) params: Params,
    pub(crate) groups: [u32; 3],
    /// The reduction's shader and workgroups, and the workspace it reads (floats).
    pub(crate) reduce: Option<(Kind, [u32; 3], usize)>,
}

/// Most workgroups along one dispatch dimension every Vulkan device accepts.
pub(crate) const MAX_GROUPS: u32 = 65535;

/// Workgroups for one invocation per element of `total`, in rows of at most [`MAX_GROUPS`] (the
/// shaders index `x + y * 65535 * 256`).
pub(crate) fn elementwise_groups(total: u32) -> [u32; 3] {
    let n = total.div_ceil(256).max(1);
    [n.min(MAX_GROUPS), n.div_ceil(MAX_GROUPS), 1]
}

/// The vec4 kernel's plan for `p` (with `p.groups` independent problems) when its 128x128
/// tiles number at least `min_tiles`, or fewer but the reduction is long enough to split into
/// parts (so tiles x parts reaches `min_tiles`); `None` when the 64x64 kernel should run.
pub(crate) fn vec4_plan(kind: Kind, mut p: Params, min_tiles: u32, reduce: Kind) -> Result<Option<Plan>> {
    if min_tiles == u32::MAX {
        // The tuning that never uses the vec4 kernel (not even split).
        return Ok(None);
    }
    let grid = [p.n.div_ceil(TILE_VEC4), p.m.div_ceil(TILE_VEC4)];
    let tiles = grid[0].saturating_mul(grid[1]).saturating_mul(p.groups);
    p.splits = 1;
    if tiles >= min_tiles {
        return Ok(Some(Plan { kind, params: p, groups: [grid[0], grid[1], p.groups], reduce: None }));
    }
    let mut parts = min_tiles.div_ceil(tiles.max(1)).min(p.k / MIN_SPLIT_K).min(64);
    // Rounding parts up to whole slices can leave the last ones empty: use fewer parts.
    while parts > 1 && p.k.div_ceil(k_chunk(p.k, parts)) < parts {
        parts = p.k.div_ceil(k_chunk(p.k, parts));
    }
    if parts < 2 {
        return Ok(None);
    }
    p.splits = parts;
    let overflow = || VkError::Core(Error::Overflow { param: Param::Scratch });
    let elements = p.m.checked_mul(p.n).and_then(|e| e.checked_mul(p.groups)).ok_or_else(overflow)?;
    let work = elements.checked_mul(p.splits).ok_or_else(overflow)?;
    Ok(Some(Plan {
        kind,
        params: p,
        groups: [grid[0], grid[1], p.groups * p.splits],
        reduce: Some((reduce, elementwise_groups(elements), work as usize)),
    }))
}

/// `plan` with its bias mode replaced (the activation kept).
pub(crate) fn with_bias_mode(mut plan: Plan, bias_mode: u32) -> Plan {
    plan.params.epi = (plan.params.epi & 0xff) | bias_mode << 8;
    plan
}

/// The layout flags of `gemm_vec4.comp` for these strides, if it can run them: A and B each
/// need a unit stride along one dimension, the other stride a multiple of 4, and the
/// contiguous extent a multiple of 4 (so a vec4 never straddles an edge).
fn vec4_layout(p: &Params) -> Option<(bool, bool)> {
    let a_t = if p.a_cs == 1 && p.a_rs.is_multiple_of(4) && p.k.is_multiple_of(4) {
        false
    } else if p.a_rs == 1 && p.a_cs.is_multiple_of(4) && p.m.is_multiple_of(4) {
        true
    } else {
        return None;
    };
    let b_t = if p.b_cs == 1 && p.b_rs.is_multiple_of(4) && p.n.is_multiple_of(4) {
        false
    } else if p.b_rs == 1 && p.b_cs.is_multiple_of(4) && p.k.is_multiple_of(4) {
        true
    } else {
        return None;
    };
    Some((a_t, b_t))
}

/// A GEMM's plan: the vec4 kernel when the layout allows it and there are at least
/// `min_tiles` of its 128x128 tiles, or split-K parts make up for fewer; else the general
/// 64x64 kernel, whose four times as many workgroups keep more of a large GPU busy.
pub(crate) fn gemm_plan(p: &Params, min_tiles: u32) -> Result<Plan> {
    let p = Params { groups: 1, splits: 1, ..*p };
    if let Some((a_t, b_t)) = vec4_layout(&p) {
        if let Some(plan) = vec4_plan(Kind::GemmVec4 { a_t, b_t }, p, min_tiles, Kind::Reduce { conv: false })? {
            return Ok(plan);
        }
    }
    Ok(Plan { kind: Kind::Gemm, params: p, groups: [p.n.div_ceil(TILE), p.m.div_ceil(TILE), 1], reduce: None })
}

/// The plan of a conv2d: depthwise shader; the vec4 kernel over every image at once when
/// the weights' rows are vec4-aligned (C/groups * R * S a multiple of 4) and there are
/// enough tiles or split-K parts; else the 64x64 kernel, one image and group per z.
pub(crate) fn conv_plan(g: &Conv2d, epi: &Epilogue<'_>, min_tiles: u32) -> Result<Plan> {
    let p = g.params();
    let (kg, hw, gemm_k) = g.gemm_dims();
    let (act, slope) = act_code(epi.activation)?;
    let (c_rs, c_cs) = match p.layout {
        TensorLayout::Nchw => (hw, 1),
        TensorLayout::Nhwc => (1, p.k),
    };
    for len in [g.input_len(), g.weight_len(), g.output_len()] {
        u32_of(len, Param::Scratch)?;
    }
    let u = |v: usize| u32_of(v, Param::Input);
    let params = Params {
        m: u(kg)?,
        n: u(hw)?,
        k: u(gemm_k)?,
        a_rs: u(gemm_k)?,
        a_cs: 1,
        c_rs: u(c_rs)?,
        c_cs: u(c_cs)?,
        epi: act | if matches!(epi.bias, Bias::Row(_)) { 1 << 8 } else { 0 },
        slope,
        alpha: 1.0,
        beta: 0.0,
        ..conv_geometry(g)?
    };
    if sparkle_core::conv::choose_path(g) == sparkle_core::conv::Conv2dPath::Depthwise {
        // m = images; one invocation per output element.
        let params = Params { m: u(p.n)?, ..params };
        return Ok(Plan {
            kind: Kind::Depthwise,
            params,
            groups: elementwise_groups(u(g.output_len())?),
            reduce: None,
        });
    }
    if params.k.is_multiple_of(4) {
        let columns = u(p.n.checked_mul(hw).ok_or(Error::Overflow { param: Param::N })?)?;
        let wide = Params { n: columns, ..params };
        if let Some(plan) = vec4_plan(Kind::ConvVec4, wide, min_tiles, Kind::Reduce { conv: true })? {
            return Ok(plan);
        }
    }
    let z = u(p.n.checked_mul(p.groups).ok_or(Error::Overflow { param: Param::N })?)?;
    Ok(Plan { kind: Kind::Conv, params, groups: [params.n.div_ceil(TILE), params.m.div_ceil(TILE), z], reduce: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(m: u32, n: u32, k: u32, a: (u32, u32), b: (u32, u32)) -> Params {
        Params { m, n, k, a_rs: a.0, a_cs: a.1, b_rs: b.0, b_cs: b.1, ..Params::default() }
    }

    #[test]
    fn the_vec4_kernel_runs_only_layouts_it_can_load() {
        // Row-major A and B; column-major ones; mixed.
        assert_eq!(vec4_layout(&params(5, 8, 12, (12, 1), (8, 1))), Some((false, false)));
        assert_eq!(vec4_layout(&params(8, 5, 12, (1, 8), (1, 12))), Some((true, true)));
        assert_eq!(vec4_layout(&params(8, 8, 4, (1, 8), (8, 1))), Some((true, false)));
        // k not a multiple of 4 with k contiguous; a row stride not a multiple of 4; no unit stride.
        assert_eq!(vec4_layout(&params(8, 8, 6, (6, 1), (8, 1))), None);
        assert_eq!(vec4_layout(&params(8, 8, 4, (6, 1), (8, 1))), None);
        assert_eq!(vec4_layout(&params(8, 8, 4, (8, 2), (8, 1))), None);
        assert_eq!(vec4_layout(&params(8, 6, 4, (4, 1), (6, 1))), None);
    }

    #[test]
    fn tile_count_and_reduction_length_pick_the_kernel() {
        let p = params(256, 256, 64, (64, 1), (256, 1));
        let plan = gemm_plan(&p, 4).unwrap();
        assert_eq!((plan.kind, plan.groups), (Kind::GemmVec4 { a_t: false, b_t: false }, [2, 2, 1]));
        assert!(plan.reduce.is_none());
        let plan = gemm_plan(&p, 5).unwrap();
        assert_eq!((plan.kind, plan.groups), (Kind::Gemm, [4, 4, 1]), "k = 64 is too short to split");
        let odd = params(256, 256, 63, (63, 1), (256, 1));
        assert_eq!(gemm_plan(&odd, 0).unwrap().kind, Kind::Gemm);
        let long = params(256, 256, 4096, (4096, 1), (256, 1));
        assert_eq!(gemm_plan(&long, u32::MAX).unwrap().kind, Kind::Gemm, "never the vec4 kernel, not even split");
    }

    #[test]
    fn split_k_covers_the_reduction_in_parts_of_whole_slices() {
        // 4 tiles of a GEMM with k = 1000 on a device that wants 64: 16 parts of 64 or more.
        let p = params(256, 256, 1000, (1000, 1), (256, 1));
        let plan = gemm_plan(&p, 64).unwrap();
        let q = plan.params;
        assert_eq!(plan.kind, Kind::GemmVec4 { a_t: false, b_t: false });
        let chunk = k_chunk(q.k, q.splits);
        assert_eq!(chunk % 8, 0);
        assert!(q.splits * chunk >= 1000 && (q.splits - 1) * chunk < 1000, "{} x {chunk}", q.splits);
        assert!(q.splits >= 2 && q.splits <= 1000 / MIN_SPLIT_K);
        assert_eq!(plan.groups, [2, 2, q.splits]);
        let (kind, groups, work) = plan.reduce.unwrap();
        assert_eq!(kind, Kind::Reduce { conv: false });
        assert_eq!(work, (256 * 256 * q.splits) as usize);
        assert!(groups[0] * groups[1] * 256 >= 256 * 256);
    }
}
