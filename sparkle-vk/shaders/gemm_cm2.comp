#version 450
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_control_flow_attributes : require
#if defined(BF16) && !defined(REFLECT)
// bf16 operands (VK_KHR_shader_bfloat16; glslang >= 15.4, scripts/spirv.sh's second compiler).
#extension GL_EXT_bfloat16 : require
#define ELEM bfloat16_t
#else
// f16 operands; the REFLECT twin declares f16 for either (its interface is the same: 16-bit
// elements, the same bindings), so vulkano never meets the bf16 type it cannot parse.
#define ELEM float16_t
#endif
#ifndef REFLECT
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_cooperative_matrix : require
#extension GL_NV_cooperative_matrix2 : require
#endif
// f16 (or, with BF16, bf16) GEMM on workgroup-scope cooperative matrices (VK_NV_cooperative_matrix2):
// C (m x n, f32) = act(A (m x k) * B (k x n) + bias), f16 or bf16 inputs, f32 accumulation. The
// operands and push constants of gemm_coopmat.comp's f16 GEMM: half.rs packs A as m rows of p.k
// halves and B as p.k rows of 8 * p.b_rs halves, both zero-padded; C is row-major, p.c_rs floats a row.
//
// The whole workgroup (256 invocations) owns one BM x BN accumulator; each BK-deep slice of A and
// B is one tensor load (the driver stages it through shared memory and picks the fragment layout
// the tensor cores take), UNROLL slices a step, unrolled, so one slice's loads overlap another's
// products. Tiles wholly inside A and B load unclamped; edge tiles and the last, shorter slices
// load through layouts that read zeros past the operands. Workgroups run in bands of SWIZZLE tile
// rows, so those running at once share B's columns in L2. The epilogue (bias, activation) is a
// per-element operation before one tensor store whose layout clips C to m x n.
//
// On an H200 (BENCHMARKS.md, session 33) this shape beat 128x256, 256x128 and 64x256 tiles,
// 32- and 128-deep slices, 4 and 16 slices a step, 128 invocations, and B transposed.
//
// Compiled by scripts/spirv.sh (glslang >= 15; the bf16 module >= 15.4) into spv/. vulkano 0.35 cannot parse this
// extension's instructions, so the host (coopmat2.rs `load_shader`) gives the driver this module
// and vulkano the same source compiled with REFLECT: identical bindings and push constants, an
// empty body, for the pipeline layout only.
layout(local_size_x = 256) in;

// The tile: coopmat2.rs `TILE` must match.
#define BM 128
#define BN 128
#define BK 64
#define UNROLL 8
#define SWIZZLE 8u

layout(set = 0, binding = 0) readonly buffer ABuf { ELEM a[]; };
layout(set = 0, binding = 1) readonly buffer BBuf { ELEM b[]; };
layout(set = 0, binding = 2) writeonly buffer CBuf { float c[]; };
layout(set = 0, binding = 3) readonly buffer BiasBuf { float bias[]; };
#include "common.glsl"

#ifdef REFLECT
void main() {
    // Never true at run time (the host never runs this module); it keeps every binding and the
    // push constants in the interface, as the real module has them.
    if (p.m == 0xffffffffu) c[0] = float(a[0]) + float(b[0]) + bias[0] + p.slope;
}
#else
// The epilogue of element (r, col) of the tile at (row0, col0).
float epilogue(const in uint r, const in uint col, const in float v, const in uint row0, const in uint col0) {
    float x = v;
    if (BIAS_MODE == 1u) x += bias[min(row0 + r, p.m - 1u)];
    if (BIAS_MODE == 2u) x += bias[min(col0 + col, p.n - 1u)];
    return activate(x);
}

void main() {
    // The tile: bands of SWIZZLE tile rows, column by column within a band.
    uint gx = gl_NumWorkGroups.x, gy = gl_NumWorkGroups.y;
    uint id = gl_WorkGroupID.y * gx + gl_WorkGroupID.x;
    uint first = id / (SWIZZLE * gx) * SWIZZLE;
    uint rows = min(gy - first, SWIZZLE);
    uint in_band = id - first * gx;
    uint row0 = (first + in_band % rows) * BM;
    uint col0 = (in_band / rows) * BN;

    // The host pads A's rows to a multiple of 32 halves and B's to 8 (half.rs): saying so lets
    // the compiler use 16-byte loads.
    uint ka = p.k & ~31u;
    uint nb = (8u * p.b_rs) & ~7u;
    tensorLayoutNV<2> la = createTensorLayoutNV(2);
    tensorLayoutNV<2> lb = createTensorLayoutNV(2);
    tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV> lac =
        createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
    tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV> lbc =
        createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
    tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV> lc =
        createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
    la = setTensorLayoutDimensionNV(la, p.m, ka);
    lac = setTensorLayoutDimensionNV(lac, p.m, ka);
    lb = setTensorLayoutDimensionNV(lb, ka, nb);
    lbc = setTensorLayoutDimensionNV(lbc, ka, nb);
    la = setTensorLayoutStrideNV(la, ka, 1);
    lac = setTensorLayoutStrideNV(lac, ka, 1);
    lb = setTensorLayoutStrideNV(lb, nb, 1);
    lbc = setTensorLayoutStrideNV(lbc, nb, 1);
    lc = setTensorLayoutDimensionNV(lc, p.m, p.n);
    lc = setTensorLayoutStrideNV(lc, p.c_rs, 1);

    coopmat<float, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator> acc =
        coopmat<float, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator>(0.0);
    uint k0 = 0u;
    if (row0 + BM <= p.m && col0 + BN <= nb) {
        // Every row and column of the tile is inside A and B: unclamped loads, UNROLL slices a step.
        uint steps = ka / (BK * UNROLL);
        [[dont_unroll]] for (uint t = 0u; t < steps; t++) {
            [[unroll]] for (uint u = 0u; u < UNROLL; u++) {
                coopmat<ELEM, gl_ScopeWorkgroup, BM, BK, gl_MatrixUseA> fa;
                coopmat<ELEM, gl_ScopeWorkgroup, BK, BN, gl_MatrixUseB> fb;
                coopMatLoadTensorNV(fa, a, 0, sliceTensorLayoutNV(la, row0, BM, k0, BK));
                coopMatLoadTensorNV(fb, b, 0, sliceTensorLayoutNV(lb, k0, BK, col0, BN));
                acc = coopMatMulAdd(fa, fb, acc);
                k0 += BK;
            }
        }
    }
    // Edge tiles, and the slices after the last whole step: zeros past A's and B's extents.
    [[dont_unroll]] for (; k0 < ka; k0 += BK) {
        coopmat<ELEM, gl_ScopeWorkgroup, BM, BK, gl_MatrixUseA> fa;
        coopmat<ELEM, gl_ScopeWorkgroup, BK, BN, gl_MatrixUseB> fb;
        coopMatLoadTensorNV(fa, a, 0, sliceTensorLayoutNV(lac, row0, BM, k0, BK));
        coopMatLoadTensorNV(fb, b, 0, sliceTensorLayoutNV(lbc, k0, BK, col0, BN));
        acc = coopMatMulAdd(fa, fb, acc);
    }

    coopMatPerElementNV(acc, acc, epilogue, row0, col0);
    coopMatStoreTensorNV(acc, c, 0, sliceTensorLayoutNV(lc, row0, BM, col0, BN));
}
#endif
