#version 450
#extension GL_EXT_control_flow_attributes : require
// Half-precision GEMM on the plain shader cores, for devices without cooperative matrices (and
// lavapipe in CI): C (m x n, f32) = act(A (m x k) * B (k x n) + bias), f16 inputs (bf16 with BF16
// defined), f32 products and sums. Same operands as gemm_coopmat.comp: halves packed two to a
// uint, A's rows zero-padded to p.k halves (a multiple of 32) and B's to 8 * p.b_rs; p.a_rs and
// p.b_rs are the row strides in groups of 8 halves. A 256-invocation workgroup computes a 64 x 64
// tile, each invocation a 4 x 4 block in registers; 16-deep slices are widened to f32 in shared
// memory. With CONV defined it is conv2d as an implicit GEMM: A the weights of group z % groups
// (kout rows of p.a_cs = C/groups * R * S halves, padded like A), B gathered from image
// z / groups of the input (halves, two to a uint, unpadded), C that block of the output.
// With SPLIT (f16, not CONV) A and B each hold two planes, hi then lo, of f32 values the host split
// (precision.rs): each element is widened as hi + lo * 2^-11, exact in f32, so this computes the
// f32 GEMM of the split values: gemm_coopmat.comp's SPLIT variant's sums plus the lo*lo term it
// drops (2^-22 relative), rounded as f32 FMAs round rather than as tensor cores do.
// Split-K (the plain GEMM, p.splits > 1) as in gemm_coopmat.comp: workgroup z sums its part of
// the 32-deep slices and writes a raw partial tile to the workspace (binding 4), which
// gemm_vec4.comp's REDUCE variant adds up and finishes.
layout(local_size_x = 256) in;

#define BM 64
#define BN 64
#define TM 4
#define TN 4
#define BK 16

layout(set = 0, binding = 0) readonly buffer ABuf { uint a[]; };
layout(set = 0, binding = 1) readonly buffer BBuf { uint b[]; };
layout(set = 0, binding = 2) writeonly buffer CBuf { float c[]; };
layout(set = 0, binding = 3) readonly buffer BiasBuf { float bias[]; };

#include "common.glsl"
#if !defined(CONV) && !defined(SPLIT)
#define SPLIT_K
layout(set = 0, binding = 4) writeonly buffer WorkBuf { float work[]; };
#endif

shared float As[BK][BM];
shared float Bs[BK][BN];

// The two halves of w, the lower-addressed first.
vec2 widen(uint w) {
#ifdef BF16
    return vec2(uintBitsToFloat(w << 16), uintBitsToFloat(w & 0xffff0000u));
#else
    return unpackHalf2x16(w);
#endif
}

#ifdef CONV
// Input element idx, widened.
float input_at(uint idx) {
    uint w = b[idx >> 1];
    uint h = (idx & 1u) != 0u ? w >> 16 : w & 0xffffu;
    return widen(h).x;
}

// im2col row q, output pixel j of image img, group g: 0 past the reduction (p.a_cs), past the
// pixels and in the padding.
float b_at(uint q, uint j, uint img, uint g) {
    if (q >= p.a_cs || j >= p.n) return 0.0;
    uint idx = im2col_index(q, j, img, g);
    return idx == NO_INPUT ? 0.0 : input_at(idx);
}
#endif

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint row0 = gl_WorkGroupID.y * BM;
    uint col0 = gl_WorkGroupID.x * BN;
    uint tr = tid / (BN / TN);
    uint tc = tid % (BN / TN);
    uint lda = p.a_rs * 4u;  // row strides in uints
    uint ldb = p.b_rs * 4u;
    uint a_row0 = 0u, c_off = 0u, bias_off = 0u;
#ifdef CONV
    uint img = gl_WorkGroupID.z / p.groups;
    uint g = gl_WorkGroupID.z % p.groups;
    a_row0 = g * p.m;
    c_off = !NHWC ? (img * p.kout + g * p.m) * p.n : img * p.n * p.kout + g * p.m;
    bias_off = g * p.m;
#endif
    float acc[TM][TN];
    [[unroll]] for (uint i = 0u; i < TM; i++) {
        [[unroll]] for (uint j = 0u; j < TN; j++) { acc[i][j] = 0.0; }
    }
    uint k_begin = 0u, k_end = p.k;
#ifdef SPLIT_K
    if (p.splits > 1u) {
        // Parts of whole 32-deep slices (p.k is a multiple of 32), as gemm_coopmat.comp splits.
        uint per = (p.k / 32u + p.splits - 1u) / p.splits * 32u;
        k_begin = gl_WorkGroupID.z * per;
        k_end = min(p.k, k_begin + per);
    }
#endif
    for (uint k0 = k_begin; k0 < k_end; k0 += BK) {
        [[unroll]] for (uint i = 0u; i < 2u; i++) {
            uint e = tid + i * 256u;
            uint r = e / (BK / 2u), q = e % (BK / 2u);
            uint ai = (a_row0 + row0 + r) * lda + k0 / 2u + q;
#ifdef SPLIT
            vec2 x = row0 + r < p.m ? widen(a[ai]) + widen(a[p.m * lda + ai]) * (1.0 / 2048.0) : vec2(0.0);
#else
            vec2 x = row0 + r < p.m ? widen(a[ai]) : vec2(0.0);
#endif
            As[2u * q][r] = x.x;
            As[2u * q + 1u][r] = x.y;
            uint kr = e / (BN / 2u), cq = e % (BN / 2u);
#ifdef CONV
            uint j = col0 + 2u * cq;
            vec2 y = vec2(b_at(k0 + kr, j, img, g), b_at(k0 + kr, j + 1u, img, g));
#else
            uint bi = (k0 + kr) * ldb + col0 / 2u + cq;
#ifdef SPLIT
            vec2 y = col0 / 2u + cq < ldb ? widen(b[bi]) + widen(b[p.k * ldb + bi]) * (1.0 / 2048.0) : vec2(0.0);
#else
            vec2 y = col0 / 2u + cq < ldb ? widen(b[bi]) : vec2(0.0);
#endif
#endif
            Bs[kr][2u * cq] = y.x;
            Bs[kr][2u * cq + 1u] = y.y;
        }
        barrier();
        [[unroll]] for (uint kk = 0u; kk < BK; kk++) {
            float av[TM];
            float bv[TN];
            [[unroll]] for (uint i = 0u; i < TM; i++) { av[i] = As[kk][tr * TM + i]; }
            [[unroll]] for (uint j = 0u; j < TN; j++) { bv[j] = Bs[kk][tc * TN + j]; }
            [[unroll]] for (uint i = 0u; i < TM; i++) {
                [[unroll]] for (uint j = 0u; j < TN; j++) { acc[i][j] = fma(av[i], bv[j], acc[i][j]); }
            }
        }
        barrier();
    }
    [[unroll]] for (uint i = 0u; i < TM; i++) {
        uint r = row0 + tr * TM + i;
        [[unroll]] for (uint j = 0u; j < TN; j++) {
            uint col = col0 + tc * TN + j;
            if (r < p.m && col < p.n) {
                float v = acc[i][j];
#ifdef SPLIT_K
                if (p.splits > 1u) {
                    work[(gl_WorkGroupID.z * p.m + r) * p.n + col] = v;
                    continue;
                }
#endif
                if (BIAS_MODE == 1u) v += bias[bias_off + r];
                if (BIAS_MODE == 2u) v += bias[bias_off + col];
                c[c_off + r * p.c_rs + col * p.c_cs] = activate(v);
            }
        }
    }
}
