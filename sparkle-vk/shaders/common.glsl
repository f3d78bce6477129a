// Shared by every Sparkle compute shader: the push constants (ops.rs `Params`, field for field;
// 120 bytes, under the 128 every Vulkan device must offer) and the epilogue's activations.
layout(push_constant) uniform Params {
    uint m; uint n; uint k;
    uint a_rs; uint a_cs; uint b_rs; uint b_cs; uint c_rs; uint c_cs;
    uint epi;         // activation | bias mode << 8
    float slope; float alpha; float beta;
    // Conv geometry (conv shaders only).
    uint cin; uint h; uint w; uint r; uint s; uint sh; uint sw; uint pt; uint pl; uint dh; uint dw;
    uint wo; uint groups; uint kout;
    uint layouts;     // NHWC tensors | KRSC weights << 1 (the staged convs: chunks per tap, S_CPT)
    uint hw;          // output pixels per image, gemm_vec4.comp's conv (staged convs: S_PIX)
    uint splits;      // split-K parts, 1 for none, gemm_vec4.comp (int8: the clamp's top, Q_HI)
} p;

// Activation: 0 none, 1 relu, 2 relu6, 3 leaky, 4 sigmoid, 5 tanh, 6 gelu.
#define ACT (p.epi & 0xffu)
// Bias: 0 none, 1 per row of C (output channel), 2 per column.
#define BIAS_MODE (p.epi >> 8u)
#define NHWC ((p.layouts & 1u) != 0u)
#define KRSC ((p.layouts & 2u) != 0u)

float activate(float x) {
    switch (ACT) {
        case 1u: return x < 0.0 ? 0.0 : x;
        case 2u: return clamp(x, 0.0, 6.0);
        case 3u: return x < 0.0 ? x * p.slope : x;
        case 4u: return 1.0 / (1.0 + exp(-x));
        case 5u: return tanh(x);
        case 6u: {
            // The limit at -inf is 0 (x * (1 + erf) would be -inf * 0 = NaN).
            if (isinf(x)) return x > 0.0 ? x : 0.0;
            // erf by Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7), GLSL has none.
            float z = x * 0.70710678118654752;
            float t = 1.0 / (1.0 + 0.3275911 * abs(z));
            float y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-z * z);
            return 0.5 * x * (1.0 + sign(z) * y);
        }
        default: return x;
    }
}

// The conv input element that im2col row q (a reduction index: channel, filter row and column
// in the weights' order) and output pixel j of image img, group g read: its index in the NCHW or
// NHWC input, or NO_INPUT in the padding.
const uint NO_INPUT = 0xffffffffu;
uint im2col_index(uint q, uint j, uint img, uint g) {
    uint cg = p.cin / p.groups;
    uint ci, rr, ss;
    if (!KRSC) { ci = q / (p.r * p.s); rr = (q / p.s) % p.r; ss = q % p.s; }
    else { ci = q % cg; ss = (q / cg) % p.s; rr = q / (cg * p.s); }
    uint oy = j / p.wo, ox = j % p.wo;
    int iy = int(oy * p.sh + rr * p.dh) - int(p.pt);
    int ix = int(ox * p.sw + ss * p.dw) - int(p.pl);
    if (iy < 0 || ix < 0 || iy >= int(p.h) || ix >= int(p.w)) return NO_INPUT;
    uint ch = g * cg + ci;
    return !NHWC
        ? ((img * p.cin + ch) * p.h + uint(iy)) * p.w + uint(ix)
        : ((img * p.h + uint(iy)) * p.w + uint(ix)) * p.cin + ch;
}
