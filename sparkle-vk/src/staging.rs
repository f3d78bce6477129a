//! The input of an implicit-GEMM conv staged for the kernels that gather their A rows from it in
//! 16-byte chunks (`shaders/staged_conv.glsl`): the int8 conv (`qconv`) and the f16 conv on
//! cooperative matrices (`half`). Each image as NHWC with each group's channels rounded up to a
//! whole number of chunks (zeros past them), so every chunk of a tap's channels is one aligned
//! 16-byte load whatever the caller's layout. One pass over the input.

use std::ops::Range;

use sparkle_core::{Conv2d, Error, Param, TensorLayout};

use crate::error::{Result, VkError};

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
    let mut staged = crate::quant::filled(words, 0u32)?;
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
