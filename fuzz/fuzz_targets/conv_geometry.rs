//! Arbitrary conv parameters (huge, zero, overflowing): either a clear error, or a geometry whose
//! every tap is in bounds or in padding and whose output size agrees with brute force.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sparkle_core::{Conv2dParams, Padding, TensorLayout, WeightLayout};

#[derive(Arbitrary, Debug)]
struct Input {
    dims: [usize; 7],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 4],
    groups: usize,
    nhwc: bool,
    krsc: bool,
}

fn brute(input: usize, pa: usize, pb: usize, ker: usize, dil: usize, stride: usize) -> usize {
    let padded = input + pa + pb;
    let extent = dil * (ker - 1) + 1;
    (0..padded).step_by(stride).filter(|&s| s + extent <= padded).count()
}

fuzz_target!(|x: Input| {
    let [n, c, h, w, k, r, s] = x.dims;
    let p = Conv2dParams::new(n, c, h, w, k, r, s)
        .stride(x.stride[0], x.stride[1])
        .dilation(x.dilation[0], x.dilation[1])
        .pad(Padding::new(x.pad[0], x.pad[1], x.pad[2], x.pad[3]))
        .groups(x.groups)
        .layout(if x.nhwc { TensorLayout::Nhwc } else { TensorLayout::Nchw })
        .weight_layout(if x.krsc { WeightLayout::Krsc } else { WeightLayout::Kcrs });
    let Ok(g) = p.validate() else { return };
    // Small cases: exhaustive checks against brute force.
    if g.ho() * g.wo() <= 4096
        && p.r <= 16
        && p.s <= 16
        && h + x.pad[0] + x.pad[2] <= 1 << 16
        && w + x.pad[1] + x.pad[3] <= 1 << 16
    {
        assert_eq!(g.ho(), brute(h, x.pad[0], x.pad[2], r, x.dilation[0], x.stride[0]));
        assert_eq!(g.wo(), brute(w, x.pad[1], x.pad[3], s, x.dilation[1], x.stride[1]));
        for oy in 0..g.ho() {
            for rr in 0..r {
                if let Some(iy) = g.input_y(oy, rr) {
                    assert!(iy < h);
                }
            }
        }
        for ox in 0..g.wo() {
            for ss in 0..s {
                if let Some(ix) = g.input_x(ox, ss) {
                    assert!(ix < w);
                }
            }
        }
    }
    assert!(g.input_index(n - 1, c - 1, h - 1, w - 1) < g.input_len());
    assert!(g.output_index(n - 1, k - 1, g.ho() - 1, g.wo() - 1) < g.output_len());
    assert!(g.weight_index(k - 1, g.cg() - 1, r - 1, s - 1) < g.weight_len());
});
