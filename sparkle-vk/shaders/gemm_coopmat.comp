#version 450
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#ifdef INT8
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int32 : require
#endif
#ifdef BF16
// bf16 operands (VK_KHR_shader_bfloat16; glslang >= 15.4, scripts/spirv.sh's second compiler).
#extension GL_EXT_bfloat16 : require
#endif
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
// multiplied. The epilogue stores each accumulator to a per-subgroup 16x16 scratch in idle shared
// memory, from which the lanes add the bias, apply the activation and write the elements inside m x n.
//
// With SPLIT defined it is an f32 GEMM from three f16 products (precision.rs, "high"): A and B each
// hold two planes, hi then lo (x = hi + lo * 2^-11 to 22 bits; the host scales rows of A and
// columns of B by powers of two into f16's range), and each 16-deep step forms
// (lo*hi + hi*lo) * 2^-11 + hi*hi on the tensor cores and adds it to the accumulator with a
// rounded f32 add: the tensor cores' own f32 sums truncate (Ootomo & Yokota, "Recovering single
// precision accuracy from Tensor Cores while surpassing the FP32 theoretical peak performance",
// IJHPCA 2022), so only 16-deep partial sums are formed there.
//
// With INT8 defined it is the int8 GEMM (quant.rs): A and B hold signed bytes, 16 to a uvec4
// (EPV elements per uvec4 below), the fragments are 16x16x32 i8 x i8 -> i32 (wrapping: the host
// picks a non-saturating shape) and the write-out is quant.glsl's (zero points, bias,
// requantization), each lane finishing four adjacent columns. B arrives k-contiguous (B^T: rows
// of p.k bytes, p.b_rs uvec4 apart, zero-padded like A's) and is staged like A and loaded column
// major: the layout int8 tensor cores take (8-bit B row major has no transposing shared-memory
// load on NVIDIA; on an H200 it ran at a fraction of this).
//
// With INT8 and CONV it is the int8 conv2d (qconv.rs `Context::qconv2d`): A's rows are output
// pixels (of every image) gathered 16 bytes at a time from the staged input (staged_conv.glsl's
// s_conv_at), B^T holds every group's weights, and gl_WorkGroupID.z runs one GEMM per group.
// With CONV and STAGED (f16) it is the f16 conv2d the same way (half.rs `Context::conv2d_half`):
// A gathered from the staged input 8 halves at a time, B each group's weights (row-major, a block
// per group), and the write-out straight into the output's layout. BF16 makes it the bf16 conv2d:
// the same bits in the same places (16 bits an element, zero is zero), read as bf16 fragments.
//
// Split-K (the f16 GEMM, p.splits > 1): workgroup z sums only its part of the slices (the host
// gives every part at least one) and writes its raw partial tile to the workspace (binding 4,
// split z's m x n block); gemm_vec4.comp's REDUCE variant adds the parts and applies the epilogue.
layout(local_size_x = 256) in;
#if defined(SPLIT) && defined(CONV)
#error "SPLIT is a GEMM of two host-split planes; conv2d gathers one"
#endif
#if defined(INT8) && defined(SPLIT)
#error "INT8 is a GEMM of one plane"
#endif
// The f16 conv gathers B (the input) as halves, one by one; the staged convs (int8, and f16 with
// STAGED) gather A 16 bytes at a time from an input the host staged (staged_conv.glsl).
#if defined(CONV) && !defined(INT8) && !defined(STAGED)
#define HALF_CONV
#endif
#if defined(CONV) && (defined(INT8) || defined(STAGED))
#define STAGED_A
#endif
#if defined(STAGED) && (defined(INT8) || !defined(CONV))
#error "STAGED is the f16 conv's staged form"
#endif
#if defined(BF16) && !defined(STAGED)
#error "BF16 is the staged conv's bf16 form (bf16 GEMMs run on gemm_cm2.comp)"
#endif
#ifdef INT8
#define EPV 16  // elements per uvec4
#define KF 32   // depth of one fragment
#define ELEM int8_t
#define ACC int32_t
#else
#define EPV 8
#define KF 16
#ifdef BF16
#define ELEM bfloat16_t
#else
#define ELEM float16_t
#endif
#define ACC float
#endif

#ifndef BM
#define BM 128
#define BN 128
#define BK 32
#define WM 64
#define WN 32
#endif
const uint TM = WM / 16;
const uint TN = WN / 16;
const uint AS = BK / EPV + 1;  // shared row strides, in uvec4
#ifdef INT8
const uint BS = AS;  // B^T's rows: BN of BK bytes
#else
const uint BS = BN / EPV + 1;
#endif
const uint SGN = BN / WN;  // subgroups along n
const uint AL = BM * BK / EPV / 256;  // uvec4 loads per invocation per slice
const uint BL = BK * BN / EPV / 256;

layout(set = 0, binding = 0) readonly buffer ABuf { uvec4 a[]; };  // with SPLIT: hi rows, then lo rows
#ifdef HALF_CONV
layout(set = 0, binding = 1) readonly buffer BBuf { uint b[]; };  // the input's halves, two a uint
#else
layout(set = 0, binding = 1) readonly buffer BBuf { uvec4 b[]; };
#endif
#ifdef INT8
layout(set = 0, binding = 2) writeonly buffer CBuf { uint c[]; };
#include "common.glsl"
#include "quant.glsl"
#else
layout(set = 0, binding = 2) writeonly buffer CBuf { float c[]; };
layout(set = 0, binding = 3) readonly buffer BiasBuf { float bias[]; };
#include "common.glsl"
#ifdef STAGED
#include "staged_conv.glsl"
#define S_NHWC (p.c_cs != 0u)  // the output's layout (p.layouts holds S_CPT)
#endif
#endif
#if !defined(CONV) && !defined(INT8) && !defined(SPLIT)
#define SPLIT_K
layout(set = 0, binding = 4) writeonly buffer WorkBuf { float work[]; };
#endif

// One shared stage: a double-buffered variant (one barrier per slice, 38 KiB) measured 15% slower
// on an H200 (BENCHMARKS.md).
shared uvec4 As[BM * AS];
#ifdef INT8
shared uvec4 Bs[BN * BS];
#else
shared uvec4 Bs[BK * BS];
#endif
#ifdef SPLIT
shared uvec4 AsLo[BM * AS];
shared uvec4 BsLo[BK * BS];
const uint PLANES = 2u;
#else
const uint PLANES = 1u;
#endif
// The epilogue's scratch, 8 x 64 uvec4: whichever operand array is large enough, else its own.
#if BM * (BK / EPV + 1) >= 512
#define SCRATCH As
#elif !defined(INT8) && BK * (BN / EPV + 1) >= 512
#define SCRATCH Bs
#elif defined(INT8) && BN * (BK / EPV + 1) >= 512
#define SCRATCH Bs
#else
shared uvec4 Scratch[512];
#define SCRATCH Scratch
#endif

#ifdef HALF_CONV
// The input coordinates (before the filter offset) of the 8 output pixels this invocation's B
// loads cover: the same pixels in every slice (its column group is tid % (BN / 8)), so the
// divisions are done once. A pixel past p.n gets a row no filter offset brings into range.
int piy[8];
int pix[8];

void conv_pixels(uint col0, uint tid) {
    uint j = col0 + 8u * (tid % (BN / 8u));
    uint oy = j / p.wo, ox = j % p.wo;
    [[unroll]] for (uint u = 0u; u < 8u; u++) {
        bool in_range = j + u < p.n;
        piy[u] = in_range ? int(oy * p.sh) - int(p.pt) : -0x40000000;
        pix[u] = int(ox * p.sw) - int(p.pl);
        ox++;
        if (ox == p.wo) { ox = 0u; oy++; }
    }
}

// Reduction row q of im2col for those 8 pixels of image img, group g, packed as halves: zeros
// past the reduction (p.a_cs), past the pixels and in the padding.
uvec4 gather(uint q, uint img, uint g) {
    if (q >= p.a_cs) return uvec4(0u);
    uint cg = p.cin / p.groups;
    uint ci, rr, ss;
    if (!KRSC) { ci = q / (p.r * p.s); rr = (q / p.s) % p.r; ss = q % p.s; }
    else { ci = q % cg; ss = (q / cg) % p.s; rr = q / (cg * p.s); }
    int dy = int(rr * p.dh), dx = int(ss * p.dw);
    uint ch = g * cg + ci;
    uint h[8];
    [[unroll]] for (uint u = 0u; u < 8u; u++) {
        int iy = piy[u] + dy, ix = pix[u] + dx;
        h[u] = 0u;
        if (iy >= 0 && ix >= 0 && iy < int(p.h) && ix < int(p.w)) {
            uint idx = !NHWC ? ((img * p.cin + ch) * p.h + uint(iy)) * p.w + uint(ix)
                             : ((img * p.h + uint(iy)) * p.w + uint(ix)) * p.cin + ch;
            uint w = b[idx >> 1];
            h[u] = (idx & 1u) != 0u ? w >> 16 : w & 0xffffu;
        }
    }
    return uvec4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
}
#endif

#ifdef STAGED_A
// The origins and bases (staged_conv.glsl's s_conv_row) of this invocation's AL rows of A: the same rows
// in every slice, so the divisions are done once.
int qy[AL];
int qx[AL];
uint qbase[AL];
#endif

// Slice t of A's rows from row0 (of group g's weights for the f16 gathering conv; gathered from
// the staged input for the staged convs) and B's columns from col0 into registers: zeros past m
// and past B's padded width (or the gathered input's edges).
// With SPLIT, entries [AL, 2 AL) and [BL, 2 BL) hold the lo planes'.
void fetch(out uvec4 ra[AL * PLANES], out uvec4 rb[BL * PLANES], uint row0, uint col0, uint tid, uint t) {
    uint a_row0 = 0u, b_row0 = 0u;
    uint b_base = 0u;
#ifdef HALF_CONV
    uint img = gl_WorkGroupID.z / p.groups;
    uint g = gl_WorkGroupID.z % p.groups;
    a_row0 = g * p.m;
#elif defined(INT8) && defined(CONV)
    b_row0 = gl_WorkGroupID.z * p.n;
#elif defined(STAGED)
    b_base = gl_WorkGroupID.z * p.k * p.b_rs;
#endif
    [[unroll]] for (uint i = 0u; i < AL * PLANES; i++) {
        uint e = tid + (i % AL) * 256u;
        uint r = row0 + e / (BK / EPV);
#ifdef STAGED_A
        uint idx = s_conv_at(qy[i], qx[i], qbase[i], t * (BK / EPV) + e % (BK / EPV));
#ifdef INT8
        ra[i] = idx == NO_INPUT ? uvec4(Q_PAD) : a[idx];
#else
        ra[i] = idx == NO_INPUT ? uvec4(0u) : a[idx];
#endif
#else
        uint plane = (i / AL) * p.m * p.a_rs;
        ra[i] = r < p.m ? a[plane + (a_row0 + r) * p.a_rs + t * (BK / EPV) + e % (BK / EPV)] : uvec4(0u);
#endif
    }
    [[unroll]] for (uint i = 0u; i < BL * PLANES; i++) {
        uint e = tid + (i % BL) * 256u;
#if defined(HALF_CONV)
        rb[i] = gather(t * BK + e / (BN / 8u), img, g);
#elif defined(INT8)
        uint r = col0 + e / (BK / EPV);
        rb[i] = r < p.n ? b[(b_row0 + r) * p.b_rs + t * (BK / EPV) + e % (BK / EPV)] : uvec4(0u);
#else
        uint q = col0 / EPV + e % (BN / EPV);
        uint plane = (i / BL) * p.k * p.b_rs;
        rb[i] = q < p.b_rs ? b[b_base + plane + (t * BK + e / (BN / EPV)) * p.b_rs + q] : uvec4(0u);
#endif
    }
}

// The registers into shared memory.
void put(uvec4 ra[AL * PLANES], uvec4 rb[BL * PLANES], uint tid) {
    [[unroll]] for (uint i = 0u; i < AL; i++) {
        uint e = tid + i * 256u;
        As[(e / (BK / EPV)) * AS + e % (BK / EPV)] = ra[i];
#ifdef SPLIT
        AsLo[(e / (BK / EPV)) * AS + e % (BK / EPV)] = ra[AL + i];
#endif
    }
    [[unroll]] for (uint i = 0u; i < BL; i++) {
        uint e = tid + i * 256u;
#ifdef INT8
        Bs[(e / (BK / EPV)) * BS + e % (BK / EPV)] = rb[i];
#else
        Bs[(e / (BN / EPV)) * BS + e % (BN / EPV)] = rb[i];
#endif
#ifdef SPLIT
        BsLo[(e / (BN / EPV)) * BS + e % (BN / EPV)] = rb[BL + i];
#endif
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
    uint t0 = 0u;
#ifdef SPLIT_K
    if (p.splits > 1u) {
        uint per = (slices + p.splits - 1u) / p.splits;
        t0 = gl_WorkGroupID.z * per;
        slices = min(slices, t0 + per);
    }
#endif
#ifdef HALF_CONV
    conv_pixels(col0, tid);
#elif defined(STAGED_A)
#ifdef INT8
    q_conv_offsets();
#endif
    [[unroll]] for (uint i = 0u; i < AL; i++) {
        s_conv_row(row0 + (tid + i * 256u) / (BK / EPV), gl_WorkGroupID.z, qy[i], qx[i], qbase[i]);
    }
#endif

    coopmat<ACC, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator> acc[TM][TN];
    [[unroll]] for (uint i = 0u; i < TM; i++) {
        [[unroll]] for (uint j = 0u; j < TN; j++) {
            acc[i][j] = coopmat<ACC, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator>(ACC(0));
        }
    }

    // Global -> register -> shared: A's slice is BM rows of BK/EPV uvec4, B's BK rows of BN/EPV.
    uvec4 ra[AL * PLANES];
    uvec4 rb[BL * PLANES];
    fetch(ra, rb, row0, col0, tid, t0);
    put(ra, rb, tid);
    barrier();
    for (uint t = t0; t < slices; t++) {
        bool more = t + 1u < slices;
        if (more) {
            fetch(ra, rb, row0, col0, tid, t + 1u);
        }
        [[unroll]] for (uint kk = 0u; kk < BK / KF; kk++) {
            coopmat<ELEM, gl_ScopeSubgroup, 16, KF, gl_MatrixUseA> fa[TM];
            [[unroll]] for (uint i = 0u; i < TM; i++) {
                coopMatLoad(fa[i], As, (wm * WM + i * 16u) * AS + kk * (KF / EPV), AS,
                            gl_CooperativeMatrixLayoutRowMajor);
            }
#ifdef SPLIT
            coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA> fal[TM];
            [[unroll]] for (uint i = 0u; i < TM; i++) {
                coopMatLoad(fal[i], AsLo, (wm * WM + i * 16u) * AS + kk * 2u, AS,
                            gl_CooperativeMatrixLayoutRowMajor);
            }
#endif
            [[unroll]] for (uint j = 0u; j < TN; j++) {
                coopmat<ELEM, gl_ScopeSubgroup, KF, 16, gl_MatrixUseB> fb;
#ifdef INT8
                coopMatLoad(fb, Bs, (wn * WN + j * 16u) * BS + kk * (KF / EPV), BS,
                            gl_CooperativeMatrixLayoutColumnMajor);
#else
                coopMatLoad(fb, Bs, kk * KF * BS + (wn * WN + j * 16u) / EPV, BS,
                            gl_CooperativeMatrixLayoutRowMajor);
#endif
#ifdef SPLIT
                coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseB> fbl;
                coopMatLoad(fbl, BsLo, kk * 16u * BS + (wn * WN + j * 16u) / 8u, BS,
                            gl_CooperativeMatrixLayoutRowMajor);
                [[unroll]] for (uint i = 0u; i < TM; i++) {
                    coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator> s =
                        coopMatMulAdd(fal[i], fb, coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator>(0.0));
                    s = coopMatMulAdd(fa[i], fbl, s);
                    s = coopMatMulAdd(fa[i], fb, s * float(1.0 / 2048.0));
                    acc[i][j] = acc[i][j] + s;
                }
#else
                [[unroll]] for (uint i = 0u; i < TM; i++) {
                    acc[i][j] = coopMatMulAdd(fa[i], fb, acc[i][j]);
                }
#endif
            }
        }
        if (more) {
            barrier();  // every subgroup is done reading the stage
            put(ra, rb, tid);
        }
        barrier();
    }

    uint c_off = 0u, bias_off = 0u;
#ifdef HALF_CONV
    uint img = gl_WorkGroupID.z / p.groups;
    uint g = gl_WorkGroupID.z % p.groups;
    c_off = !NHWC ? (img * p.kout + g * p.m) * p.n : img * p.n * p.kout + g * p.m;
    bias_off = g * p.m;
#elif defined(STAGED)
    bias_off = gl_WorkGroupID.z * p.n;
#endif
    [[unroll]] for (uint i = 0u; i < TM; i++) {
#ifdef STAGED
        // Where the output is NCHW a lane finishes one row (output pixel) of these accumulators
        // (below: er = e % 16 = lane % 16): where that pixel's channel 0 lies, found with one
        // division here rather than one an element (a 1x1 conv's reduction is short enough for
        // those to cost more than its products). NHWC needs none: row r starts at r * K.
        uint lr = row0 + wm * WM + i * 16u + lane % 16u;
        uint nchw_at = lr + (lr / S_HW) * (p.kout - 1u) * S_HW;
#endif
        [[unroll]] for (uint j = 0u; j < TN; j++) {
            // Through idle shared memory: 64 uvec4 = 16 x 16 floats (ints) per subgroup.
            coopMatStore(acc[i][j], SCRATCH, sg * 64u, 4u, gl_CooperativeMatrixLayoutRowMajor);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
#ifdef INT8
            // Lane l finishes row l / 4 (and 8 more on), columns 4 (l % 4) .. + 3: one uvec4.
            [[unroll]] for (uint e = lane; e < 64u; e += 32u) {
                uint r = row0 + wm * WM + i * 16u + e / 4u;
                uint col = col0 + wn * WN + j * 16u + 4u * (e % 4u);
                if (r < p.m && col < p.n) q_store(ivec4(SCRATCH[sg * 64u + e]), r, col);
            }
#else
            [[unroll]] for (uint e = lane; e < 256u; e += 32u) {
#ifdef STAGED
                // Lanes along the pixels where the output is NCHW (there they are adjacent).
                uint er = S_NHWC ? e / 16u : e % 16u, ec = S_NHWC ? e % 16u : e / 16u;
#else
                uint er = e / 16u, ec = e % 16u;
#endif
                uint r = row0 + wm * WM + i * 16u + er;
                uint col = col0 + wn * WN + j * 16u + ec;
                if (r < p.m && col < p.n) {
                    float v = uintBitsToFloat(SCRATCH[sg * 64u + er * 4u + ec / 4u][ec % 4u]);
#ifdef SPLIT_K
                    if (p.splits > 1u) {
                        work[(gl_WorkGroupID.z * p.m + r) * p.n + col] = v;
                        continue;
                    }
#endif
                    if (BIAS_MODE == 1u) v += bias[bias_off + r];
                    if (BIAS_MODE == 2u) v += bias[bias_off + col];
#ifdef STAGED
                    // Row r is output pixel r % S_HW of image r / S_HW; col the group's channel.
                    uint o = bias_off + col;
                    c[!S_NHWC ? nchw_at + o * S_HW : r * p.kout + o] = activate(v);
#else
                    c[c_off + r * p.c_rs + col * p.c_cs] = activate(v);
#endif
                }
            }
#endif
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
    }
}
