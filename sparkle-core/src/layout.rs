//! Tensor layouts of conv activations and weights.

/// Memory order of a 4-d activation tensor (conv input and output).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TensorLayout {
    /// `[n][c][h][w]`, w fastest (PyTorch's default).
    #[default]
    Nchw,
    /// `[n][h][w][c]`, c fastest (TensorFlow's, and most edge runtimes').
    Nhwc,
}

/// Memory order of a conv weight tensor, `k` output channels by `c / groups` input channels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightLayout {
    /// `[k][c/groups][r][s]` (PyTorch's `OIHW`).
    #[default]
    Kcrs,
    /// `[k][r][s][c/groups]` (channels fastest; pairs with NHWC activations).
    Krsc,
}
