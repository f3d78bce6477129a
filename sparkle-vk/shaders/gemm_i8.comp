#version 450
#extension GL_EXT_control_flow_attributes : require
// int8 GEMM on the plain shader cores, for devices without int8 cooperative matrices (and
// lavapipe in CI): the i32 sums of signed-byte products, then quant.glsl's write-out (zero
// points, bias, requantization). Same operands as gemm_coopmat.comp with INT8 (quant.rs):
// bytes four to a uint, A (m x k) and B^T (n x k) in rows zero-padded to p.k bytes (a multiple
// of 128); p.a_rs and p.b_rs are their row strides in groups of 16 bytes. A 256-invocation
// workgroup computes a 64 x 64 tile, each invocation a 4 x 4 block in registers; 32-deep slices
// are widened to int in shared memory.
//
// With CONV defined it is the int8 conv2d (qconv.rs `Context::qconv2d`): A is gathered from the
// staged input (staged_conv.glsl's s_conv_at), B^T holds every group's weights, one GEMM per group
// along gl_WorkGroupID.z.
layout(local_size_x = 256) in;

#define BM 64
#define BN 64
#define TM 4
#define TN 4
#define BK 32

layout(set = 0, binding = 0) readonly buffer ABuf { uint a[]; };
layout(set = 0, binding = 1) readonly buffer BBuf { uint b[]; };
layout(set = 0, binding = 2) writeonly buffer CBuf { uint c[]; };

#include "common.glsl"
#include "quant.glsl"

shared int As[BK][BM];
shared int Bs[BK][BN];

// The four signed bytes of w, the lowest first.
ivec4 bytes(uint w) {
    int x = int(w);
    return ivec4(bitfieldExtract(x, 0, 8), bitfieldExtract(x, 8, 8), bitfieldExtract(x, 16, 8), bitfieldExtract(x, 24, 8));
}

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint row0 = gl_WorkGroupID.y * BM;
    uint col0 = gl_WorkGroupID.x * BN;
    uint tr = tid / (BN / TN);
    uint tc = tid % (BN / TN);
    uint lda = p.a_rs * 4u;  // row strides in uints
    uint ldb = p.b_rs * 4u;
    uint b_row0 = 0u;
#ifdef CONV
    uint g = gl_WorkGroupID.z;
    b_row0 = g * p.n;
    q_conv_offsets();
    // This invocation's two rows of A (tid / 8 and 32 more on).
    int y0[2], x0[2];
    uint base[2];
    [[unroll]] for (uint i = 0u; i < 2u; i++) { s_conv_row(row0 + (tid + i * 256u) / (BK / 4u), g, y0[i], x0[i], base[i]); }
#endif
    int acc[TM][TN];
    [[unroll]] for (uint i = 0u; i < TM; i++) {
        [[unroll]] for (uint j = 0u; j < TN; j++) { acc[i][j] = 0; }
    }
    for (uint k0 = 0u; k0 < p.k; k0 += BK) {
        [[unroll]] for (uint i = 0u; i < 2u; i++) {
            uint e = tid + i * 256u;
            uint r = e / (BK / 4u), q = e % (BK / 4u);
#ifdef CONV
            uint word = k0 / 4u + q;
            uint idx = s_conv_at(y0[i], x0[i], base[i], word / 4u);
            ivec4 x = bytes(idx == NO_INPUT ? Q_PAD : a[idx * 4u + word % 4u]);
#else
            ivec4 x = row0 + r < p.m ? bytes(a[(row0 + r) * lda + k0 / 4u + q]) : ivec4(0);
#endif
            [[unroll]] for (uint u = 0u; u < 4u; u++) { As[4u * q + u][r] = x[u]; }
            ivec4 y = col0 + r < p.n ? bytes(b[(b_row0 + col0 + r) * ldb + k0 / 4u + q]) : ivec4(0);
            [[unroll]] for (uint u = 0u; u < 4u; u++) { Bs[4u * q + u][r] = y[u]; }
        }
        barrier();
        [[unroll]] for (uint kk = 0u; kk < BK; kk++) {
            int av[TM];
            int bv[TN];
            [[unroll]] for (uint i = 0u; i < TM; i++) { av[i] = As[kk][tr * TM + i]; }
            [[unroll]] for (uint j = 0u; j < TN; j++) { bv[j] = Bs[kk][tc * TN + j]; }
            [[unroll]] for (uint i = 0u; i < TM; i++) {
                [[unroll]] for (uint j = 0u; j < TN; j++) { acc[i][j] += av[i] * bv[j]; }
            }
        }
        barrier();
    }
    uint col = col0 + tc * TN;
    [[unroll]] for (uint i = 0u; i < TM; i++) {
        uint r = row0 + tr * TM + i;
        if (r < p.m && col < p.n) {
            q_store(ivec4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]), r, col);
        }
    }
}
