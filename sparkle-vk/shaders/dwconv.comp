#version 450
// Depthwise conv2d (groups == c == k): one invocation per output element, taps summed directly;
// memory-bound, so no tiling. Push constants as in common.glsl.
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer ABuf { float wt[]; };
layout(set = 0, binding = 1) readonly buffer BBuf { float x[]; };
layout(set = 0, binding = 2) buffer CBuf { float y[]; };
layout(set = 0, binding = 3) readonly buffer BiasBuf { float bias[]; };

#include "common.glsl"

void main() {
    // p.n = ho*wo pixels per image, p.m = images; the output has m * c * n elements.
    uint idx = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    uint total = p.m * p.cin * p.n;
    if (idx >= total) return;
    uint img, ch, pix;
    if (!NHWC) { pix = idx % p.n; ch = (idx / p.n) % p.cin; img = idx / (p.n * p.cin); }
    else { ch = idx % p.cin; pix = (idx / p.cin) % p.n; img = idx / (p.cin * p.n); }
    uint oy = pix / p.wo, ox = pix % p.wo;
    float acc = 0.0;
    for (uint rr = 0u; rr < p.r; ++rr) {
        int iy = int(oy * p.sh + rr * p.dh) - int(p.pt);
        if (iy < 0 || iy >= int(p.h)) continue;
        for (uint ss = 0u; ss < p.s; ++ss) {
            int ix = int(ox * p.sw + ss * p.dw) - int(p.pl);
            if (ix < 0 || ix >= int(p.w)) continue;
            uint xi = !NHWC
                ? ((img * p.cin + ch) * p.h + uint(iy)) * p.w + uint(ix)
                : ((img * p.h + uint(iy)) * p.w + uint(ix)) * p.cin + ch;
            acc = fma(x[xi], wt[(ch * p.r + rr) * p.s + ss], acc);
        }
    }
    if (BIAS_MODE == 1u) acc += bias[ch];
    y[idx] = activate(acc);
}
