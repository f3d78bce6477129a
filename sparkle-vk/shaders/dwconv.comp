#version 450
// Depthwise conv2d (groups == c == k): one invocation per output element, taps summed directly;
// memory-bound, so no tiling. Same push constants as gemm.comp's conv variant.
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer ABuf { float wt[]; };
layout(set = 0, binding = 1) readonly buffer BBuf { float x[]; };
layout(set = 0, binding = 2) buffer CBuf { float y[]; };
layout(set = 0, binding = 3) readonly buffer BiasBuf { float bias[]; };

layout(push_constant) uniform Params {
    uint m; uint n; uint k;
    uint a_rs; uint a_cs; uint b_rs; uint b_cs; uint c_rs; uint c_cs;
    uint bias_mode; uint act; float slope; float alpha; float beta;
    uint cin; uint h; uint w; uint r; uint s; uint sh; uint sw; uint pt; uint pl; uint dh; uint dw;
    uint wo; uint groups; uint kout; uint nhwc; uint krsc;
} p;

float activate(float v) {
    switch (p.act) {
        case 1u: return v < 0.0 ? 0.0 : v;
        case 2u: return clamp(v, 0.0, 6.0);
        case 3u: return v < 0.0 ? v * p.slope : v;
        case 4u: return 1.0 / (1.0 + exp(-v));
        case 5u: return tanh(v);
        case 6u: {
            float z = v * 0.70710678118654752;
            float t = 1.0 / (1.0 + 0.3275911 * abs(z));
            float e = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-z * z);
            return 0.5 * v * (1.0 + sign(z) * e);
        }
        default: return v;
    }
}

void main() {
    // p.n = ho*wo pixels per image, p.m = images; the output has m * c * n elements.
    uint idx = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    uint total = p.m * p.cin * p.n;
    if (idx >= total) return;
    uint img, ch, pix;
    if (p.nhwc == 0u) { pix = idx % p.n; ch = (idx / p.n) % p.cin; img = idx / (p.n * p.cin); }
    else { ch = idx % p.cin; pix = (idx / p.cin) % p.n; img = idx / (p.cin * p.n); }
    uint oy = pix / p.wo, ox = pix % p.wo;
    float acc = 0.0;
    for (uint rr = 0u; rr < p.r; ++rr) {
        int iy = int(oy * p.sh + rr * p.dh) - int(p.pt);
        if (iy < 0 || iy >= int(p.h)) continue;
        for (uint ss = 0u; ss < p.s; ++ss) {
            int ix = int(ox * p.sw + ss * p.dw) - int(p.pl);
            if (ix < 0 || ix >= int(p.w)) continue;
            uint xi = p.nhwc == 0u
                ? ((img * p.cin + ch) * p.h + uint(iy)) * p.w + uint(ix)
                : ((img * p.h + uint(iy)) * p.w + uint(ix)) * p.cin + ch;
            acc = fma(x[xi], wt[(ch * p.r + rr) * p.s + ss], acc);
        }
    }
    if (p.bias_mode == 1u) acc += bias[ch];
    y[idx] = activate(acc);
}
