//! Which conv2d path a geometry takes: a pure predicate on the geometry, shared by the CPU driver
//! (`fused`), the Vulkan plan, the juggler's records and the reports.

use super::Conv2d;

/// How a conv2d runs on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Conv2dPath {
    /// 1x1, stride 1, no padding: the input already is the GEMM operand; no gather at all.
    Pointwise,
    /// `groups == c == k`: the depthwise kernel, vectorised over channels (NHWC) or columns (NCHW).
    Depthwise,
    /// 3x3, stride 1, undilated, ungrouped, with at least [`super::winograd::MIN_TILES`] output
    /// tiles of 2x2 and buffers within [`super::winograd::MAX_FLOATS`]: Winograd F(2x2, 3x3), 16
    /// GEMMs between transforms ([`super::winograd`]).
    Winograd,
    /// Everything else: per (image, group) an implicit GEMM whose B (NCHW) or A (NHWC) panels
    /// are gathered from the input.
    ImplicitGemm,
}

impl Conv2dPath {
    /// Short name for reports and the juggler's records.
    pub const fn name(self) -> &'static str {
        match self {
            Conv2dPath::Pointwise => "pointwise",
            Conv2dPath::Depthwise => "depthwise",
            Conv2dPath::Winograd => "winograd",
            Conv2dPath::ImplicitGemm => "implicit-gemm",
        }
    }
}

/// The path for a geometry: the one function tests and the juggler call.
pub fn choose_path(g: &Conv2d) -> Conv2dPath {
    let p = g.params();
    if p.groups == p.c && p.groups == p.k && p.groups > 1 {
        Conv2dPath::Depthwise
    } else if p.r == 1 && p.s == 1 && p.stride == [1, 1] && p.pad == super::Padding::uniform(0) {
        Conv2dPath::Pointwise
    } else if super::winograd::chosen(g) {
        Conv2dPath::Winograd
    } else {
        Conv2dPath::ImplicitGemm
    }
}
