//! Which conv2d path a geometry takes: a pure predicate on the geometry, shared by the CPU driver
//! (`fused`), the Vulkan plan, the juggler's records and the reports.

use super::Conv2d;

/// How a conv2d runs on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Conv2dPath {
    /// 1x1, stride 1, no padding: the input already is the GEMM operand; no gather at all.
    Pointwise,
    /// `groups == c == k`: the depthwise kernel, vectorised over channels (NHWC) or along a plane's
    /// padded rows laid end to end (NCHW).
    Depthwise,
    /// 3x3, stride 1, undilated, ungrouped, with at least [`super::winograd::MIN_CHANNELS`]
    /// input channels and [`super::winograd::MIN_TILES`] output tiles of 2x2 and buffers within
    /// [`super::winograd::MAX_FLOATS`]: Winograd F(2x2, 3x3), 16 GEMMs between transforms
    /// ([`super::winograd`]). Where the direct conv also applies, only on one or two workers and
    /// from the CPU's measured channel count
    /// ([`Blocking::winograd_min_channels`](crate::gemm::blocking::Blocking::winograd_min_channels)).
    Winograd,
    /// A stride no longer than the kernel's dilated extent, any layout pair but NCHW with KRSC
    /// weights from 16 channels a group (on more than two workers only where
    /// [`super::direct::scales`]): the input padded once (strided: as phase planes), then read in
    /// place by the GEMM kernels for every tap ([`super::direct`]).
    Direct,
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
            Conv2dPath::Direct => "direct",
            Conv2dPath::ImplicitGemm => "implicit-gemm",
        }
    }
}

/// The rule for the most workers at which a geometry that both Winograd and the direct conv take
/// runs as Winograd (except NHWC from 16 channels a group); above, and for that NHWC at any count,
/// it runs direct where the direct conv [`scales`](super::direct::scales) (from 16 channels, and
/// NHWC of fewer). Measured at 64->64 3x3 @56 (GFLOPS, Winograd / direct): the 2-core Zen 4, NCHW, 120 / 99 on one thread and 206 / 203 on
/// two; the 16-core Xeon 97-102 / 91-131 on one, 191-202 / 263-342 on four, 420-451 / 693-718
/// on sixteen (Winograd's 16 small GEMMs and transforms scale worse); NHWC 57-82 / 89-125 on one.
/// On at most this many, a CPU may also send convs of few channels direct
/// ([`Blocking::winograd_min_channels`](crate::gemm::blocking::Blocking::winograd_min_channels),
/// measured by sparkle-std).
pub const WINOGRAD_MAX_WORKERS: usize = 2;

/// The path for a geometry on one worker by the rule (what runs is [`choose_path_with`]'s for the
/// CPU's blocking; [`super::fused::running_path`] says it).
pub fn choose_path(g: &Conv2d) -> Conv2dPath {
    choose_path_for(g, 1)
}

/// The path for a geometry run by `workers` workers by the rule (see [`WINOGRAD_MAX_WORKERS`]
/// and [`super::direct::scales`]).
pub fn choose_path_for(g: &Conv2d, workers: usize) -> Conv2dPath {
    choose_path_with(g, workers, [0; 2])
}

/// [`choose_path_for`] on a CPU where a geometry that both Winograd and the direct conv take runs
/// as Winograd on one worker and on two only from `winograd_min_channels[0]` and `[1]` channels
/// (the smaller of its input and output channels; see
/// [`Blocking::winograd_min_channels`](crate::gemm::blocking::Blocking::winograd_min_channels)).
pub fn choose_path_with(g: &Conv2d, workers: usize, winograd_min_channels: [usize; 2]) -> Conv2dPath {
    let p = g.params();
    let direct = super::direct::chosen(g) && (workers <= WINOGRAD_MAX_WORKERS || super::direct::scales(g));
    // NHWC read as pixels (from 16 channels a group) beats Winograd on any count.
    let pixels = !super::direct::planes(g);
    let few = p.c.min(p.k) < winograd_min_channels[usize::from(workers > 1)];
    let direct_first = direct && (workers > WINOGRAD_MAX_WORKERS || pixels || few);
    if p.groups == p.c && p.groups == p.k && p.groups > 1 {
        Conv2dPath::Depthwise
    } else if p.r == 1 && p.s == 1 && p.stride == [1, 1] && p.pad == super::Padding::uniform(0) {
        Conv2dPath::Pointwise
    } else if super::winograd::chosen(g) && !direct_first {
        Conv2dPath::Winograd
    } else if direct {
        Conv2dPath::Direct
    } else {
        Conv2dPath::ImplicitGemm
    }
}
