#version 450
#extension GL_EXT_control_flow_attributes : require
// int8 depthwise conv2d (groups == c == k; qconv.rs `Context::qconv2d`): each invocation computes
// four consecutive outputs in the output's own layout (one word of four bytes, or four i32), each
// the exact accumulator bias + sum over the taps inside the input of (x - zx) * (w - zw), then
// quant.glsl's output stage. Input and weights arrive as signed bytes four to a word in their
// own layouts (a u8 operand shifted by -128, its zero point with it); memory-bound, so no tiling.
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer ABuf { uint x[]; };   // the input, NCHW or NHWC
layout(set = 0, binding = 1) readonly buffer BBuf { uint wt[]; };  // the weights, [c][r][s]
layout(set = 0, binding = 2) writeonly buffer CBuf { uint c[]; };

#include "common.glsl"
#include "quant.glsl"

#define DW_ZA int(p.a_cs)  // the input's shifted zero point

// Signed byte i of a byte array stored four to a word.
int byte_at(uint i, bool weights) {
    uint w = weights ? wt[i >> 2u] : x[i >> 2u];
    return bitfieldExtract(int(w), int(8u * (i & 3u)), 8);
}

// The accumulator of output element idx (in the output's layout): p.m images of p.n pixels,
// p.cin channels; the bias in aux[ch], the weights' shifted zero point in aux[Q_NP + ch], the
// input's in DW_ZA.
int dw_acc(uint idx) {
    uint img, ch, pix;
    if (!NHWC) { pix = idx % p.n; ch = (idx / p.n) % p.cin; img = idx / (p.n * p.cin); }
    else { ch = idx % p.cin; pix = (idx / p.cin) % p.n; img = idx / (p.cin * p.n); }
    uint oy = pix / p.wo, ox = pix % p.wo;
    int za = DW_ZA, zw = aux[Q_NP + ch];
    int acc = aux[ch];
    for (uint rr = 0u; rr < p.r; ++rr) {
        int iy = int(oy * p.sh + rr * p.dh) - int(p.pt);
        if (iy < 0 || iy >= int(p.h)) continue;
        for (uint ss = 0u; ss < p.s; ++ss) {
            int ix = int(ox * p.sw + ss * p.dw) - int(p.pl);
            if (ix < 0 || ix >= int(p.w)) continue;
            uint xi = !NHWC
                ? ((img * p.cin + ch) * p.h + uint(iy)) * p.w + uint(ix)
                : ((img * p.h + uint(iy)) * p.w + uint(ix)) * p.cin + ch;
            acc += (byte_at(xi, false) - za) * (byte_at((ch * p.r + rr) * p.s + ss, true) - zw);
        }
    }
    return acc;
}

// The channel of output element idx (the stage's column).
uint dw_channel(uint idx) {
    return !NHWC ? (idx / p.n) % p.cin : idx % p.cin;
}

void main() {
    uint word = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    uint total = p.m * p.cin * p.n;
    if (word >= (total + 3u) / 4u) return;  // (word * 4 could wrap)
    ivec4 v = ivec4(0);
    [[unroll]] for (uint u = 0u; u < 4u; u++) {
        uint idx = word * 4u + u;
        if (idx < total) v[u] = q_stage(dw_acc(idx), dw_channel(idx));
    }
    if (Q_BYTES) {
        c[word] = q_pack(v);
    } else {
        [[unroll]] for (uint u = 0u; u < 4u; u++) {
            if (word * 4u + u < total) c[word * 4u + u] = uint(v[u]);
        }
    }
}
