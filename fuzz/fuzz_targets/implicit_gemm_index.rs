//! The fused conv packing's index map against the oracle's explicit im2col: for arbitrary small
//! geometries and panel blocks, the packed B panels must equal im2col rearranged into panels.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sparkle_core::conv::operands::pack_im2col_panels;
use sparkle_core::conv::im2col::{im2col, im2col_len};
use sparkle_core::{Conv2dParams, Padding, TensorLayout, WeightLayout};

#[derive(Arbitrary, Debug)]
struct Input {
    dims: [u8; 7],
    stride: [u8; 2],
    dilation: [u8; 2],
    pad: [u8; 4],
    groups: u8,
    nhwc: bool,
    krsc: bool,
    block: [u16; 4],
    nr: u8,
}

fuzz_target!(|x: Input| {
    let d = |v: u8, m: u8| usize::from(v % m) + 1;
    let groups = d(x.groups, 3);
    let p = Conv2dParams::new(
        d(x.dims[0], 2),
        d(x.dims[1], 4) * groups,
        d(x.dims[2], 12),
        d(x.dims[3], 12),
        d(x.dims[4], 3) * groups,
        d(x.dims[5], 5),
        d(x.dims[6], 5),
    )
    .stride(d(x.stride[0], 3), d(x.stride[1], 3))
    .dilation(d(x.dilation[0], 3), d(x.dilation[1], 3))
    .pad(Padding::new(
        usize::from(x.pad[0] % 4),
        usize::from(x.pad[1] % 4),
        usize::from(x.pad[2] % 4),
        usize::from(x.pad[3] % 4),
    ))
    .groups(groups)
    .layout(if x.nhwc { TensorLayout::Nhwc } else { TensorLayout::Nchw })
    .weight_layout(if x.krsc { WeightLayout::Krsc } else { WeightLayout::Kcrs });
    let Ok(g) = p.validate() else { return };
    let input: Vec<f32> = (0..g.input_len()).map(|i| i as f32 + 1.0).collect();
    let (_, pixels, gemm_k) = g.gemm_dims();
    let image = usize::from(x.block[0]) % p.n;
    let group = usize::from(x.block[1]) % groups;
    let r0 = usize::from(x.block[2]) % gemm_k;
    let c0 = usize::from(x.block[3]) % pixels;
    let rows = r0..(r0 + 1 + usize::from(x.block[2] >> 8) % (gemm_k - r0));
    let cols = c0..(c0 + 1 + usize::from(x.block[3] >> 8) % (pixels - c0));
    let nr = d(x.nr, 33);
    let mut packed = vec![f32::NAN; cols.len().div_ceil(nr) * nr * rows.len()];
    pack_im2col_panels(&g, &input, image, group, rows.clone(), cols.clone(), nr, &mut packed).unwrap();
    let mut col = vec![0.0; im2col_len(&g).unwrap()];
    im2col(&g, &input, image, group, &mut col).unwrap();
    for (q, row) in rows.clone().enumerate() {
        for (j, pixel) in cols.clone().enumerate() {
            let got = packed[((j / nr) * rows.len() + q) * nr + j % nr];
            assert_eq!(got, col[row * pixels + pixel], "row {row} pixel {pixel} of {p:?}");
        }
        for j in cols.len()..cols.len().div_ceil(nr) * nr {
            assert_eq!(packed[((j / nr) * rows.len() + q) * nr + j % nr], 0.0, "panel padding");
        }
    }
});
