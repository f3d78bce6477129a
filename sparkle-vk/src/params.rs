//! The push constants every shader reads (`shaders/common.glsl`, field for field) and how an op's
//! shapes, strides, geometry and epilogue become them, every value checked to fit the shaders'
//! 32-bit indices. Pure: nothing here touches a device.

use sparkle_core::epilogue::{Activation, Bias};
use sparkle_core::view::required_len;
use sparkle_core::{Conv2d, Error, Param, TensorLayout, WeightLayout};
use vulkano::buffer::BufferContents;

use crate::error::{Result, VkError};

/// Push constants of every shader (`shaders/common.glsl`, field for field). 120 bytes: every
/// Vulkan device offers at least 128.
#[derive(BufferContents, Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct Params {
    pub(crate) m: u32,
    pub(crate) n: u32,
    pub(crate) k: u32,
    pub(crate) a_rs: u32,
    pub(crate) a_cs: u32,
    pub(crate) b_rs: u32,
    pub(crate) b_cs: u32,
    pub(crate) c_rs: u32,
    pub(crate) c_cs: u32,
    /// Activation code | bias mode << 8 (0 none, 1 per row, 2 per column).
    pub(crate) epi: u32,
    pub(crate) slope: f32,
    pub(crate) alpha: f32,
    pub(crate) beta: f32,
    // Conv geometry (conv shaders only).
    pub(crate) cin: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) r: u32,
    pub(crate) s: u32,
    pub(crate) sh: u32,
    pub(crate) sw: u32,
    pub(crate) pt: u32,
    pub(crate) pl: u32,
    pub(crate) dh: u32,
    pub(crate) dw: u32,
    pub(crate) wo: u32,
    pub(crate) groups: u32,
    pub(crate) kout: u32,
    /// NHWC tensors | KRSC weights << 1.
    pub(crate) layouts: u32,
    /// Output pixels per image (`gemm_vec4.comp`'s conv).
    pub(crate) hw: u32,
    /// Split-K parts (1: none).
    pub(crate) splits: u32,
}

pub(crate) fn u32_of(v: usize, param: Param) -> Result<u32> {
    u32::try_from(v).map_err(|_| VkError::Core(Error::Overflow { param }))
}

pub(crate) fn act_code(a: Activation) -> Result<(u32, f32)> {
    Ok(match a {
        Activation::None => (0, 0.0),
        Activation::Relu => (1, 0.0),
        Activation::Relu6 => (2, 0.0),
        Activation::LeakyRelu { slope } => (3, slope),
        Activation::Sigmoid => (4, 0.0),
        Activation::Tanh => (5, 0.0),
        Activation::Gelu => (6, 0.0),
        // An activation the core gained and the shaders do not know: an error, never identity.
        _ => return Err(Error::Invalid { param: Param::Activation }.into()),
    })
}

/// GEMM push constants for A (`[rows, cols, rs, cs]`), B strides, C (`[cols, rs, cs]`), every
/// size and the extent of each operand checked to fit the shaders' 32-bit indices.
pub(crate) fn gemm_params(alpha: f32, a: [usize; 4], b: [usize; 2], beta: f32, c: [usize; 3]) -> Result<Params> {
    let [m, k, a_rs, a_cs] = a;
    let [n, c_rs, c_cs] = c;
    for len in [required_len(m, k, a_rs, a_cs)?, required_len(k, n, b[0], b[1])?, required_len(m, n, c_rs, c_cs)?] {
        u32_of(len, Param::Scratch)?;
    }
    Ok(Params {
        m: u32_of(m, Param::M)?,
        n: u32_of(n, Param::GemmN)?,
        k: u32_of(k, Param::GemmK)?,
        a_rs: u32_of(a_rs, Param::A)?,
        a_cs: u32_of(a_cs, Param::A)?,
        b_rs: u32_of(b[0], Param::B)?,
        b_cs: u32_of(b[1], Param::B)?,
        c_rs: u32_of(c_rs, Param::COut)?,
        c_cs: u32_of(c_cs, Param::COut)?,
        alpha,
        beta,
        ..Params::default()
    })
}

/// The conv geometry fields of the push constants for `g` (the rest default, one split).
pub(crate) fn conv_geometry(g: &Conv2d) -> Result<Params> {
    let p = g.params();
    let u = |v: usize| u32_of(v, Param::Input);
    Ok(Params {
        cin: u(p.c)?,
        h: u(p.h)?,
        w: u(p.w)?,
        r: u(p.r)?,
        s: u(p.s)?,
        sh: u(p.stride[0])?,
        sw: u(p.stride[1])?,
        pt: u(p.pad.top)?,
        pl: u(p.pad.left)?,
        dh: u(p.dilation[0])?,
        dw: u(p.dilation[1])?,
        wo: u(g.wo())?,
        groups: u(p.groups)?,
        kout: u(p.k)?,
        layouts: u32::from(p.layout == TensorLayout::Nhwc) | u32::from(p.weight_layout == WeightLayout::Krsc) << 1,
        hw: u(g.gemm_dims().1)?,
        splits: 1,
        ..Params::default()
    })
}

/// The shaders' bias mode (0 none, 1 per row, 2 per column) and the bias to upload (empty for
/// none).
pub(crate) fn bias_operand<'a>(bias: &Bias<'a>) -> (u32, &'a [f32]) {
    match *bias {
        Bias::None => (0, &[]),
        Bias::Row(v) => (1, v),
        Bias::Col(v) => (2, v),
    }
}

/// `p` with this bias mode (0 none, 1 per row, 2 per column) and activation.
pub(crate) fn with_epilogue(p: Params, bias_mode: u32, activation: Activation) -> Result<Params> {
    let (act, slope) = act_code(activation)?;
    Ok(Params { epi: act | bias_mode << 8, slope, ..p })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_constants_fit_every_device() {
        // 30 four-byte fields, as declared in shaders/common.glsl; Vulkan guarantees 128 bytes.
        assert_eq!(std::mem::size_of::<Params>(), 120);
        assert_eq!(std::mem::align_of::<Params>(), 4);
    }

    #[test]
    fn an_unknown_activation_is_an_error_and_known_ones_keep_their_codes() {
        assert_eq!(act_code(Activation::Relu).unwrap(), (1, 0.0));
        assert_eq!(act_code(Activation::LeakyRelu { slope: 0.25 }).unwrap(), (3, 0.25));
        let p = with_epilogue(Params::default(), 2, Activation::Gelu).unwrap();
        assert_eq!((p.epi, p.slope), (6 | 2 << 8, 0.0));
    }

    #[test]
    fn sizes_past_32_bits_are_errors() {
        assert!(gemm_params(1.0, [1 << 20, 1 << 13, 1 << 13, 1], [1, 1], 0.0, [1, 1, 1]).is_err());
        assert!(gemm_params(1.0, [4, 4, 4, 1], [4, 1], 0.0, [4, 4, 1]).is_ok());
    }
}
