#version 450
#extension GL_EXT_control_flow_attributes : require
// Register-blocked SGEMM for operands with a contiguous dimension:
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
layout(local_size_x = 256) in;

layout(constant_id = 0) const bool A_T = false;
layout(constant_id = 1) const bool B_T = false;

#define BM 128
#define BN 128
#define BK 8
// vec4 loads of A and of B per invocation per slice.
#define LOADS (BK / 8)

layout(set = 0, binding = 0) readonly buffer ABuf { vec4 a[]; };
layout(set = 0, binding = 1) readonly buffer BBuf { vec4 b[]; };
layout(set = 0, binding = 2) buffer CBuf { float c[]; };
layout(set = 0, binding = 3) readonly buffer BiasBuf { float bias[]; };

// Same push constants as gemm.comp (the conv fields are unused here).
layout(push_constant) uniform Params {
    uint m; uint n; uint k;
    uint a_rs; uint a_cs; uint b_rs; uint b_cs; uint c_rs; uint c_cs;
    uint bias_mode; uint act; float slope; float alpha; float beta;
    uint conv[16];
} p;

// [buffer][k][column / 4]: A is stored transposed (k-major), so both are read as vec4 rows. One
// vec4 of padding per row keeps the transposing stores free of bank conflicts.
shared vec4 As[2][BK][BM / 4 + 1];
shared vec4 Bs[2][BK][BN / 4 + 1];

float activate(float x) {
    switch (p.act) {
        case 1u: return x < 0.0 ? 0.0 : x;
        case 2u: return clamp(x, 0.0, 6.0);
        case 3u: return x < 0.0 ? x * p.slope : x;
        case 4u: return 1.0 / (1.0 + exp(-x));
        case 5u: return tanh(x);
        case 6u: {
            // erf by Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7), GLSL has none.
            float z = x * 0.70710678118654752;
            float t = 1.0 / (1.0 + 0.3275911 * abs(z));
            float y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-z * z);
            return 0.5 * x * (1.0 + sign(z) * y);
        }
        default: return x;
    }
}

uint tid;
uint row0;
uint col0;

// Vector e (0 .. BM*BK/4) of the A slice starting at k0.
vec4 load_a(uint k0, uint e) {
    if (A_T) {
        uint kk = e / (BM / 4u), mo = (e % (BM / 4u)) * 4u;
        uint gk = k0 + kk, gm = row0 + mo;
        return (gk < p.k && gm < p.m) ? a[(gk * p.a_cs + gm) / 4u] : vec4(0.0);
    } else {
        uint r = e / (BK / 4u), kq = (e % (BK / 4u)) * 4u;
        uint gm = row0 + r, gk = k0 + kq;
        return (gm < p.m && gk < p.k) ? a[(gm * p.a_rs + gk) / 4u] : vec4(0.0);
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

vec4 load_b(uint k0, uint e) {
    if (B_T) {
        uint j = e / (BK / 4u), kq = (e % (BK / 4u)) * 4u;
        uint gn = col0 + j, gk = k0 + kq;
        return (gn < p.n && gk < p.k) ? b[(gn * p.b_cs + gk) / 4u] : vec4(0.0);
    } else {
        uint kk = e / (BN / 4u), no = (e % (BN / 4u)) * 4u;
        uint gk = k0 + kk, gn = col0 + no;
        return (gk < p.k && gn < p.n) ? b[(gk * p.b_rs + gn) / 4u] : vec4(0.0);
    }
}

void store_b(uint buf, uint e, vec4 v) {
    if (B_T) {
        uint j = e / (BK / 4u), kq = (e % (BK / 4u)) * 4u;
        [[unroll]] for (uint i = 0u; i < 4u; ++i) Bs[buf][kq + i][j / 4u][j % 4u] = v[i];
    } else {
        Bs[buf][e / (BN / 4u)][e % (BN / 4u)] = v;
    }
}

// C[gi][gj0 .. gj0+4] <- epilogue(v), within bounds.
void store4(uint gi, uint gj0, vec4 v) {
    if (gi >= p.m) return;
    [[dont_unroll]] for (uint j = 0u; j < 4u; ++j) {
        uint gj = gj0 + j;
        if (gj >= p.n) return;
        uint ci = gi * p.c_rs + gj * p.c_cs;
        float x = p.alpha * v[j];
        if (p.beta != 0.0) x += p.beta * c[ci];
        if (p.bias_mode == 1u) x += bias[gi];
        else if (p.bias_mode == 2u) x += bias[gj];
        c[ci] = activate(x);
    }
}

void main() {
    tid = gl_LocalInvocationID.x;
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

    uint tiles = (p.k + BK - 1u) / BK;
    [[unroll]] for (uint l = 0u; l < LOADS; ++l) {
        store_a(0u, tid + l * 256u, load_a(0u, tid + l * 256u));
        store_b(0u, tid + l * 256u, load_b(0u, tid + l * 256u));
    }
    barrier();
    for (uint t = 0u; t < tiles; ++t) {
        uint cur = t & 1u;
        bool more = t + 1u < tiles;
        vec4 na[LOADS], nb[LOADS];
        if (more) {
            [[unroll]] for (uint l = 0u; l < LOADS; ++l) {
                na[l] = load_a((t + 1u) * BK, tid + l * 256u);
                nb[l] = load_b((t + 1u) * BK, tid + l * 256u);
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
        [[unroll]] for (uint h = 0u; h < 2u; ++h) store4(gi, col0 + h * 64u + tc * 4u, acc[i][h]);
    }
}
