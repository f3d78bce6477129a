#version 450
#extension GL_EXT_control_flow_attributes : require
// Tiled SGEMM / implicit-GEMM conv2d: C (m x n) = act(alpha * A (m x k) * B (k x n) + beta * C + bias).
// A 256-invocation workgroup computes a BM x BN tile of C, each invocation a TM x TN block held
// in registers (loops marked [[unroll]]: the accumulators must stay in registers); BK-deep slices of A and B are staged through shared memory. Every operand has
// arbitrary strides (element (i, j) at off + i*rs + j*cs), so transposes are free, and every
// load is bounds-checked, so any m, n, k works. With CONV defined, B is the conv input seen as
// im2col (gathered on the fly: padding, stride, dilation, both layouts) and z indexes
// (image, group).
layout(local_size_x = 256) in;

#define BM 64
#define BN 64
#define TM 4
#define TN 4
#define BK 16

layout(set = 0, binding = 0) readonly buffer ABuf { float a[]; };
layout(set = 0, binding = 1) readonly buffer BBuf { float b[]; };
layout(set = 0, binding = 2) buffer CBuf { float c[]; };
layout(set = 0, binding = 3) readonly buffer BiasBuf { float bias[]; };

#include "common.glsl"

shared float As[BK][BM];
shared float Bs[BK][BN];

#ifdef CONV
// im2col element (reduction row q, output pixel j) of image `img`, group `g`.
float b_at(uint q, uint j, uint img, uint g) {
    uint idx = im2col_index(q, j, img, g);
    return idx == NO_INPUT ? 0.0 : b[idx];
}
#endif

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint row0 = gl_WorkGroupID.y * BM;
    uint col0 = gl_WorkGroupID.x * BN;
    uint tr = tid / (BN / TN);
    uint tc = tid % (BN / TN);
    uint a_off = 0u, c_off = 0u, bias_off = 0u;
#ifdef CONV
    uint img = gl_WorkGroupID.z / p.groups;
    uint g = gl_WorkGroupID.z % p.groups;
    // A: this group's weights (kg x k row-major); C: this (image, group) output block.
    uint kg = p.kout / p.groups;
    a_off = g * kg * p.k;
    uint hw = p.n;
    c_off = !NHWC ? (img * p.kout + g * kg) * hw : img * hw * p.kout + g * kg;
    bias_off = g * kg;
#endif
    float acc[TM][TN];
    [[unroll]] for (uint i = 0u; i < TM; ++i) [[unroll]] for (uint j = 0u; j < TN; ++j) acc[i][j] = 0.0;

    for (uint k0 = 0u; k0 < p.k; k0 += BK) {
        for (uint e = tid; e < BM * BK; e += 256u) {
            uint ii = e / BK, kk = e % BK;
            uint gi = row0 + ii, gk = k0 + kk;
            As[kk][ii] = (gi < p.m && gk < p.k) ? a[a_off + gi * p.a_rs + gk * p.a_cs] : 0.0;
        }
        for (uint e = tid; e < BK * BN; e += 256u) {
            uint kk = e / BN, jj = e % BN;
            uint gk = k0 + kk, gj = col0 + jj;
#ifdef CONV
            Bs[kk][jj] = (gk < p.k && gj < p.n) ? b_at(gk, gj, img, g) : 0.0;
#else
            Bs[kk][jj] = (gk < p.k && gj < p.n) ? b[gk * p.b_rs + gj * p.b_cs] : 0.0;
#endif
        }
        barrier();
        [[unroll]] for (uint kk = 0u; kk < BK; ++kk) {
            float ar[TM];
            float br[TN];
            [[unroll]] for (uint i = 0u; i < TM; ++i) ar[i] = As[kk][tr * TM + i];
            [[unroll]] for (uint j = 0u; j < TN; ++j) br[j] = Bs[kk][tc * TN + j];
            [[unroll]] for (uint i = 0u; i < TM; ++i) [[unroll]] for (uint j = 0u; j < TN; ++j) acc[i][j] = fma(ar[i], br[j], acc[i][j]);
        }
        barrier();
    }

    [[unroll]] for (uint i = 0u; i < TM; ++i) {
        uint gi = row0 + tr * TM + i;
        if (gi >= p.m) continue;
        [[unroll]] for (uint j = 0u; j < TN; ++j) {
            uint gj = col0 + tc * TN + j;
            if (gj >= p.n) continue;
            uint ci = c_off + gi * p.c_rs + gj * p.c_cs;
            float v = p.alpha * acc[i][j];
            if (p.beta != 0.0) v += p.beta * c[ci];
            if (BIAS_MODE == 1u) v += bias[bias_off + gi];
            else if (BIAS_MODE == 2u) v += bias[bias_off + gj];
            c[ci] = activate(v);
        }
    }
}
