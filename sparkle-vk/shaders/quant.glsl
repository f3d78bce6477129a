// The int8 GEMMs' and convs' write-out (gemm_i8.comp; gemm_coopmat.comp with INT8): the exact i32
// accumulator from a kernel's raw sum of signed-byte products, then the output stage of
// sparkle_core::quant (`ChannelStage::apply`), bit for bit. The host (quant.rs) shifts u8
// operands to i8 (the zero points with them) and folds the zero points and the bias into
// per-column terms, so a kernel sums plain products. i32 arithmetic wraps, as the CPU drivers'
// does: exact wherever the true accumulator fits, which the host's bound guarantees.
//
// aux (binding 3), ints, np = Q_NP columns (n rounded up to 4): [0, np) the column term
// (bias - za * colsum(B) + k * za * zb), [np, 2np) B's zero point, [2np, 3np) and [3np, 4np)
// the stage's two scale words (`ChannelStage::scale_words`), then A's m row sums. A conv (CONV)
// has a block of columns per group (q_col0) and the row sums of every (image, group) (q_row0).
layout(set = 0, binding = 3) readonly buffer AuxBuf { int aux[]; };

// The push constants, named for this use (quant.rs `QPlan`), in fields the conv's geometry leaves
// free.
#define Q_MODE (p.epi & 0xffu)          // 0 the accumulator, 1 ONNX (f32 multiplier), 2 fixed point
#define Q_BYTES ((p.epi >> 8u) != 0u)  // one-byte output, four to a word (row stride p.c_rs words)
#define Q_NP p.b_cs
#define Q_ZP int(p.c_cs)
#define Q_LO int(p.kout)
#define Q_HI int(p.splits)

// Where the workgroup's (image, group) of a conv starts: its block of columns in aux, its row sums,
// its C. Zero for a GEMM.
uint q_col0 = 0u;
uint q_row0 = 0u;
uint q_c0 = 0u;

// The accumulator of (r, col) from the raw sum.
int q_acc(int raw, uint r, uint col) {
    return raw + aux[q_col0 + col] - aux[Q_NP + q_col0 + col] * aux[4u * Q_NP + q_row0 + r];
}

// gemmlowp's RoundingDivideByPOT (quant::rounding_divide_by_pot), e in [0, 31].
int rounding_divide_by_pot(int x, int e) {
    int mask = int((1u << uint(e)) - 1u);
    int threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + ((x & mask) > threshold ? 1 : 0);
}

// The output value of accumulator acc in column col: rescaled, plus the zero point, clamped.
// A rescaled value beyond 2^30 is clamped there first: the zero point and the clamp lie within
// one byte's range (or the stage has no rescaling), so it clamps to the same bound either way
// (quant::float_narrow).
int q_stage(int acc, uint col) {
    int v = acc;
    if (Q_MODE == 1u) {
        // The f32 conversion and product round to nearest even here as on the CPU: what Vulkan
        // implementations do by default (NVIDIA's and lavapipe are tested bit for bit), though
        // the spec leaves the default rounding mode to them.
        precise float x = float(acc) * intBitsToFloat(aux[2u * Q_NP + q_col0 + col]);
        v = int(clamp(roundEven(x), -1073741824.0, 1073741824.0)) + Q_ZP;
    } else if (Q_MODE == 2u) {
        // MultiplyByQuantizedMultiplier: (x * m + 2^30) >> 31 on the 64-bit product, then a
        // rounding right shift (multiplier >= 0: no saturation case).
        int m = aux[2u * Q_NP + q_col0 + col], sh = aux[3u * Q_NP + q_col0 + col];
        int x = acc << uint(max(sh, 0));
        int hi, lo;
        imulExtended(x, m, hi, lo);
        uint carry;
        uint low = uaddCarry(uint(lo), 0x40000000u, carry);
        int high = ((hi + int(carry)) << 1) | int(low >> 31u);
        v = clamp(rounding_divide_by_pot(high, max(-sh, 0)), -1073741824, 1073741824) + Q_ZP;
    }
    return min(max(v, Q_LO), Q_HI);
}

// The four bytes of v, the first lowest.
uint q_pack(ivec4 v) {
    return uint(v.x & 0xff) | uint(v.y & 0xff) << 8u | uint(v.z & 0xff) << 16u | uint(v.w & 0xff) << 24u;
}

// Writes row r, columns col .. col + 3 (col a multiple of 4, below p.n) from their raw sums.
void q_store(ivec4 raw, uint r, uint col) {
    ivec4 v;
    [[unroll]] for (uint j = 0u; j < 4u; j++) { v[j] = q_stage(q_acc(raw[j], r, col + j), col + j); }
    if (Q_BYTES) {
        c[q_c0 + r * p.c_rs + col / 4u] = q_pack(v);
    } else {
        [[unroll]] for (uint j = 0u; j < 4u; j++) {
            if (col + j < p.n) c[q_c0 + r * p.c_rs + col + j] = uint(v[j]);
        }
    }
}

#ifdef CONV
#include "staged_conv.glsl"
#define Q_PAD p.a_cs     // four bytes of the shifted input zero point: the padding's value

// The workgroup's group of a conv (gl_WorkGroupID.z): its block of columns in aux, its row sums,
// its C rows (after the previous group's).
void q_conv_offsets() {
    uint g = gl_WorkGroupID.z;
    q_col0 = g * ((p.n + 3u) & ~3u);
    q_row0 = g * p.m;
    q_c0 = g * p.m * p.c_rs;
}
#endif