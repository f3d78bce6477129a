//! Property tests of the core's index math: conv geometry, views and tiling, each against a
//! brute-force enumeration.

use proptest::prelude::*;
use sparkle_core::view::{aliases, required_len};
use sparkle_core::{Conv2dParams, Error, MatMut, MatRef, Padding};

/// Number of window positions along one axis, by enumerating every start in the padded input.
fn brute_out(input: usize, pad_a: usize, pad_b: usize, ker: usize, dil: usize, stride: usize) -> usize {
    let padded = input + pad_a + pad_b;
    let extent = dil * (ker - 1) + 1;
    (0..padded).step_by(stride).filter(|&start| start + extent <= padded).count()
}

fn small_params() -> impl Strategy<Value = Conv2dParams> {
    (
        (1usize..3, 1usize..4, 1usize..10, 1usize..10, 1usize..4),
        (1usize..5, 1usize..5, 1usize..4, 1usize..4, 1usize..4, 1usize..4),
        (0usize..5, 0usize..5, 0usize..5, 0usize..5),
        (1usize..3,),
    )
        .prop_map(|((n, cm, h, w, km), (r, s, sh, sw, dh, dw), (pt, pl, pb, pr), (groups,))| {
            Conv2dParams::new(n, cm * groups, h, w, km * groups, r, s)
                .stride(sh, sw)
                .dilation(dh, dw)
                .pad(Padding::new(pt, pl, pb, pr))
                .groups(groups)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn output_size_matches_brute_force(p in small_params()) {
        let ho = brute_out(p.h, p.pad.top, p.pad.bottom, p.r, p.dilation[0], p.stride[0]);
        let wo = brute_out(p.w, p.pad.left, p.pad.right, p.s, p.dilation[1], p.stride[1]);
        match p.validate() {
            Ok(g) => prop_assert_eq!((g.ho(), g.wo()), (ho, wo)),
            Err(Error::KernelTooLarge { .. }) => prop_assert!(ho == 0 || wo == 0),
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn every_tap_in_bounds_or_in_padding(p in small_params()) {
        let Ok(g) = p.validate() else { return Ok(()) };
        for oy in 0..g.ho() {
            for r in 0..p.r {
                // Position in the padded input; inside the real input iff pad <= pos < pad + h.
                let pos = oy * p.stride[0] + r * p.dilation[0];
                prop_assert!(pos < p.h + p.pad.top + p.pad.bottom, "tap beyond the padding");
                let inside = pos >= p.pad.top && pos < p.pad.top + p.h;
                prop_assert_eq!(g.input_y(oy, r), inside.then(|| pos - p.pad.top));
            }
        }
        for ox in 0..g.wo() {
            for s in 0..p.s {
                let pos = ox * p.stride[1] + s * p.dilation[1];
                prop_assert!(pos < p.w + p.pad.left + p.pad.right);
                let inside = pos >= p.pad.left && pos < p.pad.left + p.w;
                prop_assert_eq!(g.input_x(ox, s), inside.then(|| pos - p.pad.left));
            }
        }
        // Every offset of every in-range index is inside its tensor.
        let (cg, last) = (g.cg(), |len: usize| len - 1);
        prop_assert!(g.input_index(p.n - 1, p.c - 1, p.h - 1, p.w - 1) <= last(g.input_len()));
        prop_assert!(g.output_index(p.n - 1, p.k - 1, g.ho() - 1, g.wo() - 1) <= last(g.output_len()));
        prop_assert!(g.weight_index(p.k - 1, cg - 1, p.r - 1, p.s - 1) <= last(g.weight_len()));
    }

    #[test]
    fn huge_parameters_error_instead_of_overflowing(
        dims in proptest::collection::vec(prop_oneof![Just(usize::MAX), Just(usize::MAX / 2), Just(1usize << 33), 1usize..4], 12)
    ) {
        let p = Conv2dParams::new(dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6])
            .stride(dims[7], dims[8])
            .dilation(dims[9], dims[10])
            .pad(Padding::uniform(dims[11]));
        if let Ok(g) = p.validate() {
            // Whatever validates must have representable, isize-bounded tensors.
            prop_assert!(g.input_len() <= sparkle_core::error::MAX_ELEMS_F32);
            prop_assert!(g.output_len() <= sparkle_core::error::MAX_ELEMS_F32);
            prop_assert!(g.weight_len() <= sparkle_core::error::MAX_ELEMS_F32);
        }
    }

    #[test]
    fn views_reject_out_of_bounds_and_aliasing(
        rows in 0usize..6, cols in 0usize..6, rs in 0usize..8, cs in 0usize..8, len in 0usize..50
    ) {
        let data = vec![0.0f32; len];
        let mut data_mut = data.clone();
        // Brute force: the largest offset touched, and whether two elements collide.
        let mut max_off = None;
        let mut seen = std::collections::HashSet::new();
        let mut collide = false;
        for i in 0..rows {
            for j in 0..cols {
                let o = i * rs + j * cs;
                max_off = max_off.max(Some(o));
                collide |= !seen.insert(o);
            }
        }
        let fits = max_off.is_none_or(|o| o < len);
        prop_assert_eq!(required_len(rows, cols, rs, cs).unwrap(), max_off.map_or(0, |o| o + 1));
        prop_assert_eq!(aliases(rows, cols, rs, cs), collide);
        prop_assert_eq!(MatRef::new(&data, rows, cols, rs, cs).is_ok(), fits);
        prop_assert_eq!(MatMut::new(&mut data_mut, rows, cols, rs, cs).is_ok(), fits && !collide);
    }
}

#[test]
fn overflowing_views_are_errors() {
    let mut d = [0.0f32; 4];
    assert!(MatRef::new(&d, usize::MAX, 2, usize::MAX, 1).is_err());
    assert!(MatMut::new(&mut d, 2, usize::MAX, 0, usize::MAX).is_err());
    assert!(MatMut::new(&mut d, 2, 2, 1, 1).is_err(), "(0,1) and (1,0) alias");
}
