//! The input of an implicit-GEMM conv staged for the kernels that gather their A rows from it in
//! 16-byte chunks (`shaders/staged_conv.glsl`): the int8 conv (`qconv`) and the f16 conv on
//! cooperative matrices (`half`). Each image as NHWC with each group's channels rounded up to a
//! whole number of chunks (zeros past them), so every chunk of a tap's channels is one aligned
//! 16-byte load whatever the caller's layout. One pass over the input.

use std::ops::Range;

use sparkle_core::{Conv2d, Error, Param, TensorLayout};

use crate::error::{Result, VkError};
use crate::params::u32_of;
use crate::plan::MAX_GROUPS;

/// Bytes of one chunk of the kernels' gather: a 16-byte load.
pub(crate) const CHUNK_BYTES: usize = 16;

/// What a staged conv's plan takes from the staging, for `images` images of `g` with
/// `per_chunk` elements a chunk (16 bytes, or 8 halves) and the reduction padded to `k_align`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StagedShape {
    /// Chunks per tap (a group's channels rounded up to whole chunks).
    pub(crate) cpt: usize,
    /// The reduction's padded length, in elements (taps x chunks, rounded up to `k_align`).
    pub(crate) kp: usize,
    /// Chunks per staged pixel (every group's).
    pub(crate) pix: usize,
    /// The GEMM's rows: every image's output pixels.
    pub(crate) m: usize,
    /// Words of the staged input.
    pub(crate) a_words: usize,
}

/// [`StagedShape`] of `images` images of `g`, every size checked (the coordinates too: see
/// [`check_coordinates`]).
pub(crate) fn staged_shape(g: &Conv2d, images: usize, per_chunk: usize, k_align: usize) -> Result<StagedShape> {
    check_coordinates(g)?;
    let overflow = |param| VkError::Core(Error::Overflow { param });
    let mul = |a: usize, b: usize, param| a.checked_mul(b).ok_or(overflow(param));
    let p = g.params();
    let cpt = g.cg().div_ceil(per_chunk);
    let kred = mul(p.r * p.s, cpt * per_chunk, Param::K)?;
    let kp = kred.max(1).checked_next_multiple_of(k_align).ok_or(overflow(Param::K))?;
    let pix = mul(p.groups, cpt, Param::C)?;
    let m = mul(images, g.gemm_dims().1, Param::Output)?;
    let pixels = mul(mul(images, p.h, Param::Input)?, p.w, Param::Input)?;
    let a_words = mul(pixels, mul(pix, CHUNK_BYTES / 4, Param::Input)?, Param::Input)?;
    Ok(StagedShape { cpt, kp, pix, m, a_words })
}

/// The workgroups of a staged conv: `kg` columns and `m` rows in tiles of `tile` (rows x
/// columns), one GEMM per group along z; an overflow error past the dispatch limits.
pub(crate) fn staged_grid(kg: usize, m: usize, groups: usize, [tm, tn]: [usize; 2]) -> Result<[u32; 3]> {
    let grid =
        [u32_of(kg.div_ceil(tn), Param::K)?, u32_of(m.div_ceil(tm), Param::Output)?, u32_of(groups, Param::Groups)?];
    for (count, param) in grid.into_iter().zip([Param::K, Param::Output, Param::Groups]) {
        if count > MAX_GROUPS {
            return Err(VkError::Core(Error::Overflow { param }));
        }
    }
    Ok(grid)
}

/// Whether every input coordinate the staged kernels form for `g` (an output pixel's origin, a
/// tap's offset, the padded frame) stays below 2^30, where the shaders' signed 32-bit arithmetic
/// is exact; an overflow error otherwise (the caller runs another kernel or reports it).
pub(crate) fn check_coordinates(g: &Conv2d) -> Result<()> {
    let p = g.params();
    let reach = |out: usize, stride: usize, taps: usize, dilation: usize, size: usize, pad: usize| {
        let origin = (out.max(1) - 1).checked_mul(stride)?;
        let tap = (taps.max(1) - 1).checked_mul(dilation)?;
        origin.checked_add(tap)?.checked_add(size)?.checked_add(pad)
    };
    let limit = 1usize << 30;
    let fits = |v: Option<usize>| v.is_some_and(|v| v < limit);
    let y = reach(g.ho(), p.stride[0], p.r, p.dilation[0], p.h, p.pad.top);
    let x = reach(g.wo(), p.stride[1], p.s, p.dilation[1], p.w, p.pad.left);
    if fits(y) && fits(x) {
        Ok(())
    } else {
        Err(VkError::Core(Error::Overflow { param: if fits(y) { Param::W } else { Param::H } }))
    }
}

/// Images `images` of `input` staged with `cgp` elements per group (a multiple of the elements
/// per word), `PER_WORD` elements of `32 / PER_WORD` bits to a 32-bit word (4 bytes or 2 halves),
/// each element's bits from `bits`; `words` words in all (the first image's pixels first).
pub(crate) fn stage_input<T: Copy, const PER_WORD: usize>(
    g: &Conv2d,
    input: &[T],
    images: Range<usize>,
    cgp: usize,
    words: usize,
    bits: impl Fn(T) -> u32,
) -> Result<Vec<u32>> {
    let p = g.params();
    let mut staged = crate::pool::filled(words, 0u32)?;
    let (cg, hw) = (g.cg(), p.h * p.w);
    let width = 32 / PER_WORD;
    let wpp = p.groups * cgp / PER_WORD;
    let lane = |v: T, u: usize| bits(v) << (width * u);
    let image_in = hw * p.c;
    for (i, n) in images.enumerate() {
        let src = &input[n * image_in..][..image_in];
        let dst = &mut staged[i * hw * wpp..][..hw * wpp];
        match p.layout {
            // Blocks of pixels (their words stay in L1), PER_WORD channel planes at a time into
            // each pixel's word for them.
            TensorLayout::Nchw => {
                const BLOCK: usize = 64;
                for j0 in (0..hw).step_by(BLOCK) {
                    let len = BLOCK.min(hw - j0);
                    let pixels = &mut dst[j0 * wpp..][..len * wpp];
                    for grp in 0..p.groups {
                        for c0 in (0..cg).step_by(PER_WORD) {
                            let planes: [&[T]; PER_WORD] = core::array::from_fn(|u| {
                                let c = grp * cg + (c0 + u).min(cg - 1);
                                &src[c * hw + j0..][..len]
                            });
                            let used = PER_WORD.min(cg - c0);
                            let slots = pixels[(grp * cgp + c0) / PER_WORD..].iter_mut().step_by(wpp);
                            for (j, slot) in slots.take(len).enumerate() {
                                *slot = (0..used).fold(0, |w, u| w | lane(planes[u][j], u));
                            }
                        }
                    }
                }
            }
            // A pixel's channels, group by group, PER_WORD to a word.
            TensorLayout::Nhwc => {
                for (from, to) in src.chunks_exact(p.c).zip(dst.chunks_exact_mut(wpp)) {
                    for (group, slots) in from.chunks_exact(cg).zip(to.chunks_exact_mut(cgp / PER_WORD)) {
                        for (lanes, slot) in group.chunks(PER_WORD).zip(slots) {
                            *slot = lanes.iter().enumerate().fold(0, |w, (u, &v)| w | lane(v, u));
                        }
                    }
                }
            }
        }
    }
    Ok(staged)
}

#[cfg(test)]
mod tests {
    use sparkle_core::{Conv2dParams, TensorLayout};

    use super::*;

    /// Element `(n, c, y, x)`'s value: distinct for every element of the tests' tensors.
    fn value(n: usize, c: usize, y: usize, x: usize) -> u32 {
        (((n * 16 + c) * 8 + y) * 8 + x) as u32
    }

    /// The tensor of `g` in its layout, and what the staged buffer must hold, built naively:
    /// element `(n, c, y, x)` at lane `(((n*h + y)*w + x)*groups + c/cg)*cgp + c%cg`.
    fn case(g: &Conv2d, cgp: usize) -> (Vec<u32>, Vec<u32>) {
        let p = g.params();
        let mut input = vec![0; g.input_len()];
        let mut lanes = vec![0; p.n * p.h * p.w * p.groups * cgp];
        let cg = g.cg();
        for n in 0..p.n {
            for c in 0..p.c {
                for y in 0..p.h {
                    for x in 0..p.w {
                        input[g.input_index(n, c, y, x)] = value(n, c, y, x);
                        lanes[(((n * p.h + y) * p.w + x) * p.groups + c / cg) * cgp + c % cg] = value(n, c, y, x);
                    }
                }
            }
        }
        (input, lanes)
    }

    #[test]
    fn both_layouts_stage_every_element_where_the_gather_reads_it() {
        // 2 groups of 5 channels: rounded up to 8 (halves, two a word) and 16 (bytes, four a word).
        for layout in [TensorLayout::Nchw, TensorLayout::Nhwc] {
            let g = Conv2dParams::new(3, 10, 5, 7, 4, 3, 3).groups(2).layout(layout).validate().unwrap();
            let (input, lanes) = case(&g, 8);
            let halves = stage_input::<u32, 2>(&g, &input, 1..3, 8, 2 * 35 * 8, |v| v & 0xffff).unwrap();
            let want: Vec<u32> = lanes[35 * 16..].chunks(2).map(|l| l[0] | l[1] << 16).collect();
            assert_eq!(halves, want, "{layout:?} halves");
            let (input, lanes) = case(&g, 16);
            let bytes = stage_input::<u32, 4>(&g, &input, 0..3, 16, 3 * 35 * 8, |v| v & 0xff).unwrap();
            let want: Vec<u32> =
                lanes.chunks(4).map(|l| l.iter().enumerate().fold(0, |w, (u, &v)| w | (v & 0xff) << (8 * u))).collect();
            assert_eq!(bytes, want, "{layout:?} bytes");
        }
    }

    #[test]
    fn coordinates_past_2_pow_30_are_errors() {
        let near = Conv2dParams::new(1, 1, (1 << 29) - 9, 1, 1, 1, 1).validate().unwrap();
        assert!(check_coordinates(&near).is_ok());
        // Ten rows of top padding take the last output's reach to 2^30 + 1.
        let far = near.params().pad(sparkle_core::Padding::new(10, 0, 0, 0));
        assert!(check_coordinates(&far.validate().unwrap()).is_err());
    }
}
