#version 450
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
// f16 GEMM on cooperative matrices (tensor cores): C (m x n, f32) = act(A (m x k) * B (k x n) + bias),
// f16 inputs, f32 accumulation. Compiled by scripts/spirv.sh (glslang >= 14) into spv/.
//
// A and B arrive packed 8 halves to a uvec4 and zero-padded by the host (half.rs): A's rows to
// p.k halves (a multiple of BK), B's rows to 8 * p.b_rs halves; p.a_rs and p.b_rs are their row
// strides in uvec4. So the k loop needs no bounds checks and every global load is 16 bytes; rows
// of A past m and columns of B past the padding read as zeros.
//
// 256 invocations as 8 subgroups of 32 (the host uses this shader only where the subgroup is 32)
// compute a BM x BN tile of C; subgroup (wm, wn) of a (BM / WM) x (BN / WN) grid owns a WM x WN
// block as TM x TN 16x16x16 accumulators. The tile sizes are macros (scripts/spirv.sh compiles
// each variant the host plans with). BK-deep slices of A and B go through shared memory whose rows are padded
// by one uvec4 (spreading the banks); the next slice is fetched into registers while this one is
// multiplied (with DB defined, into the other of two shared stages: one barrier per slice). The
// epilogue stores each accumulator to a per-subgroup 16x16 scratch in A's shared memory, from
// which the lanes add the bias, apply the activation and write the elements inside m x n.
layout(local_size_x = 256) in;

#ifndef BM
#define BM 128
#define BN 128
#define BK 32
#define WM 64
#define WN 32
#endif
const uint TM = WM / 16;
const uint TN = WN / 16;
const uint AS = BK / 8 + 1;  // shared row strides, in uvec4
const uint BS = BN / 8 + 1;
const uint SGN = BN / WN;  // subgroups along n
const uint AL = BM * BK / 8 / 256;  // uvec4 loads per invocation per slice
const uint BL = BK * BN / 8 / 256;

layout(set = 0, binding = 0) readonly buffer ABuf { uvec4 a[]; };
layout(set = 0, binding = 1) readonly buffer BBuf { uvec4 b[]; };
layout(set = 0, binding = 2) writeonly buffer CBuf { float c[]; };
layout(set = 0, binding = 3) readonly buffer BiasBuf { float bias[]; };

#include "common.glsl"

#ifdef DB
const uint STAGES = 2;  // double-buffered: one barrier per slice
#else
const uint STAGES = 1;
#endif
shared uvec4 As[STAGES * BM * AS];
shared uvec4 Bs[STAGES * BK * BS];

// Slice t of A's rows from row0 and B's columns from col0 into registers: zeros past m and past
// B's padded width.
void fetch(out uvec4 ra[AL], out uvec4 rb[BL], uint row0, uint col0, uint tid, uint t) {
    [[unroll]] for (uint i = 0u; i < AL; i++) {
        uint e = tid + i * 256u;
        uint r = row0 + e / (BK / 8u);
        ra[i] = r < p.m ? a[r * p.a_rs + t * (BK / 8u) + e % (BK / 8u)] : uvec4(0u);
    }
    [[unroll]] for (uint i = 0u; i < BL; i++) {
        uint e = tid + i * 256u;
        uint q = col0 / 8u + e % (BN / 8u);
        rb[i] = q < p.b_rs ? b[(t * BK + e / (BN / 8u)) * p.b_rs + q] : uvec4(0u);
    }
}

// The registers into shared stage `stage`.
void put(uvec4 ra[AL], uvec4 rb[BL], uint tid, uint stage) {
    [[unroll]] for (uint i = 0u; i < AL; i++) {
        uint e = tid + i * 256u;
        As[stage * BM * AS + (e / (BK / 8u)) * AS + e % (BK / 8u)] = ra[i];
    }
    [[unroll]] for (uint i = 0u; i < BL; i++) {
        uint e = tid + i * 256u;
        Bs[stage * BK * BS + (e / (BN / 8u)) * BS + e % (BN / 8u)] = rb[i];
    }
}

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint sg = tid / 32u;
    uint lane = tid % 32u;
    uint wm = sg / SGN;
    uint wn = sg % SGN;
    uint row0 = gl_WorkGroupID.y * BM;
    uint col0 = gl_WorkGroupID.x * BN;
    uint slices = p.k / BK;

    coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator> acc[TM][TN];
    [[unroll]] for (uint i = 0u; i < TM; i++) {
        [[unroll]] for (uint j = 0u; j < TN; j++) {
            acc[i][j] = coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator>(0.0);
        }
    }

    // Global -> register -> shared: A's slice is BM rows of BK/8 uvec4, B's BK rows of BN/8.
    uvec4 ra[AL];
    uvec4 rb[BL];
    fetch(ra, rb, row0, col0, tid, 0u);
    put(ra, rb, tid, 0u);
    barrier();
    for (uint t = 0u; t < slices; t++) {
        uint cur = t % STAGES;
        bool more = t + 1u < slices;
        if (more) {
            fetch(ra, rb, row0, col0, tid, t + 1u);
        }
        [[unroll]] for (uint kk = 0u; kk < BK / 16u; kk++) {
            coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA> fa[TM];
            [[unroll]] for (uint i = 0u; i < TM; i++) {
                coopMatLoad(fa[i], As, cur * BM * AS + (wm * WM + i * 16u) * AS + kk * 2u, AS,
                            gl_CooperativeMatrixLayoutRowMajor);
            }
            [[unroll]] for (uint j = 0u; j < TN; j++) {
                coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseB> fb;
                coopMatLoad(fb, Bs, cur * BK * BS + kk * 16u * BS + (wn * WN + j * 16u) / 8u, BS,
                            gl_CooperativeMatrixLayoutRowMajor);
                [[unroll]] for (uint i = 0u; i < TM; i++) {
                    acc[i][j] = coopMatMulAdd(fa[i], fb, acc[i][j]);
                }
            }
        }
        if (more) {
            if (STAGES == 1u) {
                barrier();  // every subgroup is done reading the one stage
            }
            put(ra, rb, tid, (t + 1u) % STAGES);
        }
        barrier();
    }

    [[unroll]] for (uint i = 0u; i < TM; i++) {
        [[unroll]] for (uint j = 0u; j < TN; j++) {
            // Through A's (now idle) shared memory: 64 uvec4 = 16 x 16 floats per subgroup.
            coopMatStore(acc[i][j], As, sg * 64u, 4u, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            [[unroll]] for (uint e = lane; e < 256u; e += 32u) {
                uint r = row0 + wm * WM + i * 16u + e / 16u;
                uint col = col0 + wn * WN + j * 16u + e % 16u;
                if (r < p.m && col < p.n) {
                    float v = uintBitsToFloat(As[sg * 64u + e / 4u][e % 4u]);
                    if (BIAS_MODE == 1u) v += bias[r];
                    if (BIAS_MODE == 2u) v += bias[col];
                    c[r * p.c_rs + col] = activate(v);
                }
            }
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
    }
}
