#version 450
#extension GL_EXT_control_flow_attributes : require
// Register-blocked SGEMM for operands with a contiguous dimension, and implicit-GEMM conv2d:
// C (m x n) = act(alpha * A (m x k) * B (k x n) + beta * C + bias).
//
// A 256-invocation workgroup computes a 128x128 tile of C; invocation (tr, tc) of the 16x16 grid
// holds an 8x8 block in registers: rows tr*4..+4 and 64+tr*4..+4, columns likewise (two vec4
// strips each, so the shared-memory reads of a warp are contiguous and conflict-free). BK-deep
// slices of A and B go through shared memory, double-buffered: while the slice in one buffer is
// multiplied, the next is already loaded from global memory into registers (BK/8 vec4 of A and
// of B per invocation) and stored into the other buffer, so one barrier per slice suffices.
//
// Global loads are vec4: A_T / B_T say which dimension is contiguous (specialization constants,
// so one pipeline per layout and no branch in the loop):
//   A_T = false: a_cs == 1, lda = a_rs, k % 4 == 0   A_T = true: a_rs == 1, lda = a_cs, m % 4 == 0
//   B_T = false: b_cs == 1, ldb = b_rs, n % 4 == 0   B_T = true: b_rs == 1, ldb = b_cs, k % 4 == 0
// and lda, ldb multiples of 4 (checked on the host, which otherwise runs gemm.comp). Edges of m,
// n and k are handled per vec4: a vec4 along a dimension that is a multiple of 4 is either wholly
// inside or wholly outside, and outside ones read as zero.
//
// With CONV defined, A is one group's weights (row-major, k % 4 == 0) and B the conv input seen
// as im2col with every image side by side (column j = image j / hw, output pixel j % hw), so
// small images still fill 128-column tiles; each invocation gathers 4 columns whose input
// coordinates it works out once. z indexes (group, k split).
//
// Split-K: with splits > 1, workgroup z % splits sums only its part of the reduction (whole BK
// slices, the last part shorter or empty) and writes its raw partial tile to the workspace; the REDUCE variant of this file then adds the splits
// and applies the epilogue, so few tiles with a long reduction still fill a large GPU.
layout(local_size_x = 256) in;

layout(constant_id = 0) const bool A_T = false;
layout(constant_id = 1) const bool B_T = false;

#define BM 128
#define BN 128
#define BK 8
// vec4 loads of A and of B per invocation per slice.
#define LOADS (BK / 8)

layout(set = 0, binding = 0) readonly buffer ABuf { vec4 a[]; };
#ifdef CONV
layout(set = 0, binding = 1) readonly buffer BBuf { float x[]; };
#else
layout(set = 0, binding = 1) readonly buffer BBuf { vec4 b[]; };
#endif
layout(set = 0, binding = 2) buffer CBuf { float c[]; };
layout(set = 0, binding = 3) readonly buffer BiasBuf { float bias[]; };
layout(set = 0, binding = 4) buffer WorkBuf { float work[]; };
// The same C and workspace seen as vec4, for whole aligned vec4 stores.
layout(set = 0, binding = 2) buffer CBuf4 { vec4 c4[]; };
layout(set = 0, binding = 4) buffer WorkBuf4 { vec4 work4[]; };

#include "common.glsl"

// [buffer][k][column / 4]: A is stored transposed (k-major), so both are read as vec4 rows. One
// vec4 of padding per row keeps the transposing stores free of bank conflicts.
shared vec4 As[2][BK][BM / 4 + 1];
shared vec4 Bs[2][BK][BN / 4 + 1];

uint tid;
uint row0;
uint col0;
uint a_off;   // in vec4: this group's weights (CONV), or this batch's A (GEMM, groups > 1)
uint b_off;   // in vec4: this batch's B (GEMM)
uint k_end;   // end of this split's reduction range
#ifdef CONV
uint grp;
// The 4 columns this invocation gathers, lane + 32 * c (so each of the 4 loads of a warp reads
// 32 neighbouring pixels): first input row and column of each output pixel (before the tap
// offset), and the image's first element; img_base ~0u marks a column past n.
int iy0[4];
int ix0[4];
uint img_base[4];
#endif

// Vector e (0 .. BM*BK/4) of the A slice starting at k0.
vec4 load_a(uint k0, uint e) {
    if (A_T) {
        uint kk = e / (BM / 4u), mo = (e % (BM / 4u)) * 4u;
        uint gk = k0 + kk, gm = row0 + mo;
        return (gk < k_end && gm < p.m) ? a[a_off + (gk * p.a_cs + gm) / 4u] : vec4(0.0);
    } else {
        uint r = e / (BK / 4u), kq = (e % (BK / 4u)) * 4u;
        uint gm = row0 + r, gk = k0 + kq;
        return (gm < p.m && gk < k_end) ? a[a_off + (gm * p.a_rs + gk) / 4u] : vec4(0.0);
    }
}

void store_a(uint buf, uint e, vec4 v) {
    if (A_T) {
        As[buf][e / (BM / 4u)][e % (BM / 4u)] = v;
    } else {
        uint r = e / (BK / 4u), kq = (e % (BK / 4u)) * 4u;
        [[unroll]] for (uint i = 0u; i < 4u; ++i) As[buf][kq + i][r / 4u][r % 4u] = v[i];
    }
}

#ifdef CONV
void conv_setup() {
    [[unroll]] for (uint c = 0u; c < 4u; ++c) {
        uint j = col0 + tid % 32u + 32u * c;
        uint img = j / p.hw, pix = j % p.hw;
        uint oy = pix / p.wo, ox = pix % p.wo;
        iy0[c] = int(oy * p.sh) - int(p.pt);
        ix0[c] = int(ox * p.sw) - int(p.pl);
        img_base[c] = j < p.n ? img * p.cin * p.h * p.w : ~0u;
    }
}

// Row e / 32 of the B slice starting at k0, this invocation's 4 columns.
vec4 load_b(uint k0, uint e) {
    uint q = k0 + e / (BN / 4u);
    vec4 v = vec4(0.0);
    if (q >= k_end) return v;
    uint cg = p.cin / p.groups;
    uint ci, rr, ss;
    if (!KRSC) { ci = q / (p.r * p.s); uint t = q % (p.r * p.s); rr = t / p.s; ss = t % p.s; }
    else { ci = q % cg; uint t = q / cg; ss = t % p.s; rr = t / p.s; }
    uint ch = grp * cg + ci;
    int dy = int(rr * p.dh), dx = int(ss * p.dw);
    [[unroll]] for (uint c = 0u; c < 4u; ++c) {
        int iy = iy0[c] + dy, ix = ix0[c] + dx;
        if (img_base[c] != ~0u && iy >= 0 && ix >= 0 && iy < int(p.h) && ix < int(p.w)) {
            uint pix = uint(iy) * p.w + uint(ix);
            v[c] = x[img_base[c] + (!NHWC ? ch * p.h * p.w + pix : pix * p.cin + ch)];
        }
    }
    return v;
}
#else
vec4 load_b(uint k0, uint e) {
    if (B_T) {
        uint j = e / (BK / 4u), kq = (e % (BK / 4u)) * 4u;
        uint gn = col0 + j, gk = k0 + kq;
        return (gn < p.n && gk < k_end) ? b[b_off + (gn * p.b_cs + gk) / 4u] : vec4(0.0);
    } else {
        uint kk = e / (BN / 4u), no = (e % (BN / 4u)) * 4u;
        uint gk = k0 + kk, gn = col0 + no;
        return (gk < k_end && gn < p.n) ? b[b_off + (gk * p.b_rs + gn) / 4u] : vec4(0.0);
    }
}
#endif

void store_b(uint buf, uint e, vec4 v) {
#ifdef CONV
    uint kk = e / 32u;
    [[unroll]] for (uint c = 0u; c < 4u; ++c) {
        uint j = e % 32u + 32u * c;
        Bs[buf][kk][j / 4u][j % 4u] = v[c];
    }
    return;
#endif
    if (B_T) {
        uint j = e / (BK / 4u), kq = (e % (BK / 4u)) * 4u;
        [[unroll]] for (uint i = 0u; i < 4u; ++i) Bs[buf][kq + i][j / 4u][j % 4u] = v[i];
    } else {
        Bs[buf][e / (BN / 4u)][e % (BN / 4u)] = v;
    }
}

// Where element (gi, gj) of group g's C lives.
uint c_index(uint g, uint gi, uint gj) {
#ifdef CONV
    uint img = gj / p.hw, pix = gj % p.hw, ch = g * p.m + gi;
    return !NHWC ? (img * p.kout + ch) * p.hw + pix : (img * p.hw + pix) * p.kout + ch;
#else
    // Batch g's C follows the g before it (batched GEMM; g = 0 otherwise).
    return g * p.m * p.n + gi * p.c_rs + gj * p.c_cs;
#endif
}

// The epilogue of one finished element.
void finish(uint g, uint gi, uint gj, float acc) {
    uint ci = c_index(g, gi, gj);
    float v = p.alpha * acc;
    if (p.beta != 0.0) v += p.beta * c[ci];
    if (BIAS_MODE == 1u) v += bias[g * p.m + gi];
    else if (BIAS_MODE == 2u) v += bias[gj];
    c[ci] = activate(v);
}

// Row gi, columns gj0 .. gj0+4 of group g, split `split`: finished, or raw into the workspace.
void store4(uint g, uint split, uint gi, uint gj0, vec4 v) {
    if (gi >= p.m) return;
    // A whole vec4 inside n with n a multiple of 4: the workspace, or C when it is rows of
    // contiguous floats and there is no epilogue beyond alpha, take one aligned vec4 store.
    if (gj0 + 4u <= p.n && (p.n & 3u) == 0u) {
        if (p.splits > 1u) {
            work4[(((split * p.groups + g) * p.m + gi) * p.n + gj0) / 4u] = v;
            return;
        }
#ifndef CONV
        if (p.c_cs == 1u && (p.c_rs & 3u) == 0u && p.beta == 0.0 && p.epi == 0u) {
            c4[c_index(g, gi, gj0) / 4u] = p.alpha * v;
            return;
        }
#endif
    }
    [[dont_unroll]] for (uint j = 0u; j < 4u; ++j) {
        uint gj = gj0 + j;
        if (gj >= p.n) return;
        if (p.splits > 1u) work[((split * p.groups + g) * p.m + gi) * p.n + gj] = v[j];
        else finish(g, gi, gj, v[j]);
    }
}

#ifdef REDUCE
// One invocation per element of C (all groups): the sum of its splits, finished.
void main() {
    uint e = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
    uint per_group = p.m * p.n;
    if (e >= per_group * p.groups) return;
    uint g = e / per_group, gi = (e % per_group) / p.n, gj = e % p.n;
    float sum = 0.0;
    for (uint s = 0u; s < p.splits; ++s) sum += work[(s * p.groups + g) * per_group + gi * p.n + gj];
    finish(g, gi, gj, sum);
}
#else
void main() {
    tid = gl_LocalInvocationID.x;
    uint g = gl_WorkGroupID.z / p.splits, split = gl_WorkGroupID.z % p.splits;
    // Each part covers k_chunk (ops.rs computes the same), the last one what is left.
    uint k_chunk = ((p.k + p.splits - 1u) / p.splits + BK - 1u) / BK * BK;
    uint k_begin = min(p.k, split * k_chunk);
    k_end = min(p.k, k_begin + k_chunk);
#ifdef CONV
    grp = g;
    a_off = g * p.m * p.a_rs / 4u;
#else
    // Batched GEMM (groups > 1): dense m x k, k x n and m x n matrices one after another.
    a_off = g * p.m * p.k / 4u;
    b_off = g * p.k * p.n / 4u;
#endif
    // Workgroups in launch order walk down bands of 8 tile rows, so the ones resident together
    // share A rows and B columns in L2.
    uint gx = gl_NumWorkGroups.x, gy = gl_NumWorkGroups.y;
    uint id = gl_WorkGroupID.y * gx + gl_WorkGroupID.x;
    uint band = 8u * gx, first = (id / band) * 8u, rows = min(gy - first, 8u);
    row0 = (first + (id % band) % rows) * BM;
    col0 = ((id % band) / rows) * BN;
    // Warp w covers 4 x 8 invocations (rows tr, columns tc): per k it reads 4 distinct vec4 of
    // A and 8 of B from shared memory.
    uint lane = tid % 32u, w = tid / 32u;
    uint tr = (w / 2u) * 4u + lane / 8u, tc = (w % 2u) * 8u + lane % 8u;

    // acc[i][h]: row (i < 4 ? tr*4+i : 64+tr*4+i-4), columns h*64 + tc*4 .. +4.
    vec4 acc[8][2];
    [[unroll]] for (uint i = 0u; i < 8u; ++i) { acc[i][0] = vec4(0.0); acc[i][1] = vec4(0.0); }

#ifdef CONV
    conv_setup();
#endif
    uint tiles = (k_end - k_begin + BK - 1u) / BK;
    [[unroll]] for (uint l = 0u; l < LOADS; ++l) {
        store_a(0u, tid + l * 256u, load_a(k_begin, tid + l * 256u));
        store_b(0u, tid + l * 256u, load_b(k_begin, tid + l * 256u));
    }
    barrier();
    for (uint t = 0u; t < tiles; ++t) {
        uint cur = t & 1u;
        bool more = t + 1u < tiles;
        vec4 na[LOADS], nb[LOADS];
        if (more) {
            [[unroll]] for (uint l = 0u; l < LOADS; ++l) {
                na[l] = load_a(k_begin + (t + 1u) * BK, tid + l * 256u);
                nb[l] = load_b(k_begin + (t + 1u) * BK, tid + l * 256u);
            }
        }
        [[unroll]] for (uint kk = 0u; kk < BK; ++kk) {
            vec4 a0 = As[cur][kk][tr];
            vec4 a1 = As[cur][kk][16u + tr];
            vec4 b0 = Bs[cur][kk][tc];
            vec4 b1 = Bs[cur][kk][16u + tc];
            [[unroll]] for (uint i = 0u; i < 4u; ++i) {
                acc[i][0] = fma(vec4(a0[i]), b0, acc[i][0]);
                acc[i][1] = fma(vec4(a0[i]), b1, acc[i][1]);
                acc[4u + i][0] = fma(vec4(a1[i]), b0, acc[4u + i][0]);
                acc[4u + i][1] = fma(vec4(a1[i]), b1, acc[4u + i][1]);
            }
        }
        if (more) {
            [[unroll]] for (uint l = 0u; l < LOADS; ++l) {
                store_a(cur ^ 1u, tid + l * 256u, na[l]);
                store_b(cur ^ 1u, tid + l * 256u, nb[l]);
            }
        }
        barrier();
    }

    // The epilogue per vec4 of accumulators, indexed by constants only: a loop whose body holds
    // the activation is too large for the driver to unroll 64 times, and one dynamic index
    // would move all 64 accumulators to (slow, off-chip) local memory.
    [[unroll]] for (uint i = 0u; i < 8u; ++i) {
        uint gi = row0 + (i < 4u ? tr * 4u + i : 64u + tr * 4u + i - 4u);
        [[unroll]] for (uint h = 0u; h < 2u; ++h) store4(g, split, gi, col0 + h * 64u + tc * 4u, acc[i][h]);
    }
}
#endif
