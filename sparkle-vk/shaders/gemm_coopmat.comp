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
// compute a BM x BN tile of C; subgroup (wm, wn) of a 2 x 4 grid owns a 64 x 32 block as TM x TN
// 16x16x16 accumulators. BK-deep slices of A and B go through shared memory whose rows are padded
// by one uvec4 (spreading the banks); the next slice is fetched into registers while this one is
// multiplied. The epilogue stores each accumulator to a per-subgroup 16x16 scratch, from which
// the lanes add the bias, apply the activation and write the elements inside m x n.
layout(local_size_x = 256) in;

const uint BM = 128;
const uint BN = 128;
const uint BK = 32;
const uint WM = 64;
const uint WN = 32;
const uint TM = WM / 16;
const uint TN = WN / 16;
const uint AS = BK / 8 + 1;  // shared row strides, in uvec4
const uint BS = BN / 8 + 1;

layout(set = 0, binding = 0) readonly buffer ABuf { uvec4 a[]; };
layout(set = 0, binding = 1) readonly buffer BBuf { uvec4 b[]; };
layout(set = 0, binding = 2) writeonly buffer CBuf { float c[]; };
layout(set = 0, binding = 3) readonly buffer BiasBuf { float bias[]; };

#include "common.glsl"

shared uvec4 As[BM * AS];
shared uvec4 Bs[BK * BS];
shared float Cs[8 * 256];

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint sg = tid / 32u;
    uint lane = tid % 32u;
    uint wm = sg / 4u;
    uint wn = sg % 4u;
    uint row0 = gl_WorkGroupID.y * BM;
    uint col0 = gl_WorkGroupID.x * BN;
    uint slices = p.k / BK;

    // Global -> register mapping: A's slice is BM rows of BK/8 uvec4, B's BK rows of BN/8.
    uvec4 ra[2];
    uvec4 rb[2];
    [[unroll]] for (uint i = 0u; i < 2u; i++) {
        uint e = tid + i * 256u;
        uint r = row0 + e / (BK / 8u);
        ra[i] = r < p.m ? a[r * p.a_rs + e % (BK / 8u)] : uvec4(0u);
        uint q = col0 / 8u + e % (BN / 8u);
        rb[i] = q < p.b_rs ? b[(e / (BN / 8u)) * p.b_rs + q] : uvec4(0u);
    }

    coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator> acc[TM][TN];
    [[unroll]] for (uint i = 0u; i < TM; i++) {
        [[unroll]] for (uint j = 0u; j < TN; j++) {
            acc[i][j] = coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator>(0.0);
        }
    }

    for (uint t = 0u; t < slices; t++) {
        barrier();
        [[unroll]] for (uint i = 0u; i < 2u; i++) {
            uint e = tid + i * 256u;
            As[(e / (BK / 8u)) * AS + e % (BK / 8u)] = ra[i];
            Bs[(e / (BN / 8u)) * BS + e % (BN / 8u)] = rb[i];
        }
        barrier();
        if (t + 1u < slices) {
            uint k8 = (t + 1u) * (BK / 8u);
            [[unroll]] for (uint i = 0u; i < 2u; i++) {
                uint e = tid + i * 256u;
                uint r = row0 + e / (BK / 8u);
                ra[i] = r < p.m ? a[r * p.a_rs + k8 + e % (BK / 8u)] : uvec4(0u);
                uint q = col0 / 8u + e % (BN / 8u);
                rb[i] = q < p.b_rs ? b[((t + 1u) * BK + e / (BN / 8u)) * p.b_rs + q] : uvec4(0u);
            }
        }
        [[unroll]] for (uint kk = 0u; kk < BK / 16u; kk++) {
            coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA> fa[TM];
            [[unroll]] for (uint i = 0u; i < TM; i++) {
                coopMatLoad(fa[i], As, (wm * WM + i * 16u) * AS + kk * 2u, AS, gl_CooperativeMatrixLayoutRowMajor);
            }
            [[unroll]] for (uint j = 0u; j < TN; j++) {
                coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseB> fb;
                coopMatLoad(fb, Bs, kk * 16u * BS + (wn * WN + j * 16u) / 8u, BS, gl_CooperativeMatrixLayoutRowMajor);
                [[unroll]] for (uint i = 0u; i < TM; i++) {
                    acc[i][j] = coopMatMulAdd(fa[i], fb, acc[i][j]);
                }
            }
        }
    }

    [[unroll]] for (uint i = 0u; i < TM; i++) {
        [[unroll]] for (uint j = 0u; j < TN; j++) {
            coopMatStore(acc[i][j], Cs, sg * 256u, 16u, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            [[unroll]] for (uint e = lane; e < 256u; e += 32u) {
                uint r = row0 + wm * WM + i * 16u + e / 16u;
                uint col = col0 + wn * WN + j * 16u + e % 16u;
                if (r < p.m && col < p.n) {
                    float v = Cs[sg * 256u + e];
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
