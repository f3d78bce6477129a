/* CMSIS-NN's int8 kernels on the Cortex-M4F of QEMU's mps2-an386, timed exactly as Sparkle's
 * firmware (firmware/src/main.rs) times its own: SysTick on the core clock (25 MHz) under QEMU's
 * `-icount shift=0` (one instruction per nanosecond of virtual time), so one tick is 40
 * instructions. The five int8 cases are the firmware's, on the same numbers (the firmware's
 * xorshift fill and seeds, permuted from Sparkle's layouts into CMSIS-NN's NHWC / OHWI / [1,H,W,C_OUT]
 * / [out][in] ones), and each output is checked bit for bit against a naive C reference of the
 * TFLite quantized op. Prints PASS/FAIL per case and exits 0 only if all pass. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "arm_nnfunctions.h"
#include "arm_nnsupportfunctions.h"
#include "device.h"
#include "semihost.h"

/* Largest tensor of the cases (16 channels x 16 x 16), as in the firmware. */
#define MAX_LEN (16 * 16 * 16)
/* Scratch for CMSIS-NN (its *_get_buffer_size answer is checked against this at run time). */
#define SCRATCH_BYTES 16384

static int8_t sp_input[MAX_LEN];  /* the firmware's input, in Sparkle's layout */
static int8_t sp_weight[MAX_LEN]; /* the firmware's weights, in Sparkle's layout */
static int8_t input[MAX_LEN];     /* the same values in CMSIS-NN's layout */
static int8_t weight[MAX_LEN];
static int8_t output[MAX_LEN];
static int8_t truth[MAX_LEN];
static int8_t scratch[SCRATCH_BYTES] __attribute__((aligned(8)));

/* ---- output ---------------------------------------------------------------------------- */

static char line[256];
static unsigned line_len;

static void put_str(const char *s)
{
    while (*s && line_len < sizeof line - 1)
    {
        line[line_len++] = *s++;
    }
}

static void put_u64(uint64_t v)
{
    char digits[21];
    int n = 0;
    do
    {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && line_len < sizeof line - 1)
    {
        line[line_len++] = digits[--n];
    }
}

static void put_i32(int32_t v)
{
    if (v < 0)
    {
        put_str("-");
        put_u64((uint64_t)(-(int64_t)v));
    }
    else
    {
        put_u64((uint64_t)v);
    }
}

/* `instructions / macs` with two decimals, truncated, as the firmware prints it
 * (`fast * 40 / macs`, `fast * 4000 / macs % 100`). */
static void put_per_mac(uint64_t instructions, uint64_t macs)
{
    put_u64(instructions / macs);
    put_str(".");
    uint64_t hundredths = instructions * 100 / macs % 100;
    if (hundredths < 10)
    {
        put_str("0");
    }
    put_u64(hundredths);
}

static void flush_line(void)
{
    put_str("\n");
    line[line_len] = 0;
    semihost_write0(line);
    line_len = 0;
}

/* ---- timing: the firmware's `instructions()` --------------------------------------------- */

/* SysTick reload, clear, enable, read: the firmware's set_reload / clear_current /
 * enable_counter / get_current. */
static inline uint32_t ticks_begin(void)
{
    SysTick->LOAD = 0x00FFFFFFUL;
    SysTick->VAL = 0;
    SysTick->CTRL |= SysTick_CTRL_ENABLE_Msk;
    uint32_t start = SysTick->VAL;
    __asm__ volatile("" ::: "memory");
    return start;
}

/* Read, disable; ticks elapsed (24-bit down-counter). Instructions = ticks * 40. */
static inline uint32_t ticks_end(uint32_t start)
{
    __asm__ volatile("" ::: "memory");
    uint32_t end = SysTick->VAL;
    SysTick->CTRL &= ~SysTick_CTRL_ENABLE_Msk;
    return (start - end) & 0x00FFFFFFUL;
}

#define INSTRUCTIONS_PER_TICK 40U

/* A known count: `n` iterations of `subs; bne` (2 instructions each), to check the
 * 40-instructions-a-tick conversion. */
static uint64_t calibrate(uint32_t n)
{
    const uint32_t start = ticks_begin();
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
    return (uint64_t)ticks_end(start) * INSTRUCTIONS_PER_TICK;
}

/* ---- data and quantization: the firmware's ------------------------------------------------ */

/* The firmware's `qfill`: xorshift32, top byte. */
static void qfill(int8_t *buf, uint32_t len, uint32_t seed)
{
    uint32_t x = (seed * 2654435761U) | 1U;
    for (uint32_t i = 0; i < len; i++)
    {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (int8_t)(uint8_t)(x >> 24);
    }
}

/* TFLite's QuantizeMultiplier (Sparkle's quantize_multiplier): Q31 multiplier and shift
 * (positive = left). */
static void quantize_multiplier(double real, int32_t *multiplier, int32_t *shift)
{
    if (real == 0.0)
    {
        *multiplier = 0;
        *shift = 0;
        return;
    }
    int exponent;
    const double q = frexp(real, &exponent);
    int64_t q_fixed = (int64_t)round(q * (double)(1LL << 31));
    if (q_fixed == (1LL << 31))
    {
        q_fixed /= 2;
        exponent++;
    }
    if (exponent < -31)
    {
        exponent = 0;
        q_fixed = 0;
    }
    if (exponent > 30)
    {
        exponent = 30;
        q_fixed = (1LL << 31) - 1;
    }
    *multiplier = (int32_t)q_fixed;
    *shift = exponent;
}

/* The firmware's `fixed_stage`: input scale 0.02, weight scale 0.004 * (1 + j % 3), output
 * scale 0.1, per output channel. */
static void fixed_stage(int k, int32_t *mult, int32_t *shift)
{
    for (int j = 0; j < k; j++)
    {
        const double w_scale = 0.004 * (double)(1 + j % 3);
        quantize_multiplier(0.02 * w_scale / 0.1, &mult[j], &shift[j]);
    }
}

/* The output stage of every case: offset -5 (zero point), ReLU clamped at the offset. */
#define OUTPUT_OFFSET (-5)
#define ACT_MIN (-5)
#define ACT_MAX 127

/* ---- the reference: TFLite's reference_ops semantics -------------------------------------- */

/* gemmlowp's SaturatingRoundingDoublingHighMul. */
static int32_t ref_srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN)
    {
        return INT32_MAX;
    }
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
    return (int32_t)((ab + nudge) / (1LL << 31));
}

/* gemmlowp's RoundingDivideByPOT: ties away from zero. */
static int32_t ref_rdbpot(int32_t x, int exponent)
{
    const int64_t mask = (1LL << exponent) - 1;
    const int64_t remainder = (int64_t)x & mask;
    const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (int32_t)(((int64_t)x >> exponent) + (remainder > threshold ? 1 : 0));
}

/* TFLite's MultiplyByQuantizedMultiplier (reference_ops, double rounding). */
static int32_t ref_mbqm(int32_t x, int32_t multiplier, int32_t shift)
{
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    return ref_rdbpot(ref_srdhm((int32_t)((uint32_t)x << left), multiplier), right);
}

static int8_t ref_out(int32_t acc, int32_t multiplier, int32_t shift)
{
    int32_t v = ref_mbqm(acc, multiplier, shift) + OUTPUT_OFFSET;
    v = v < ACT_MIN ? ACT_MIN : v;
    v = v > ACT_MAX ? ACT_MAX : v;
    return (int8_t)v;
}

/* ---- conv cases ---------------------------------------------------------------------------- */

typedef struct
{
    const char *name;
    int c, h, w, k, r, s, stride, pad, groups;
    int nhwc; /* Sparkle's input layout in the firmware: NCHW (0) or NHWC (1); weights KCRS */
} ConvCase;

/* The kernels the conv wrappers can pick in a DSP build (no MVE). */
typedef enum
{
    K_CONVOLVE_S8,
    K_CONVOLVE_1X1_S8_FAST,
    K_CONVOLVE_1X1_S8,
    K_CONVOLVE_1_X_N_S8,
    K_DEPTHWISE_CONV_3X3_S8,
    K_DEPTHWISE_CONV_S8_OPT,
    K_DEPTHWISE_CONV_S8,
} Kernel;

static const char *const kernel_names[] = {
    "arm_convolve_s8",
    "arm_convolve_1x1_s8_fast",
    "arm_convolve_1x1_s8",
    "arm_convolve_1_x_n_s8",
    "arm_depthwise_conv_3x3_s8",
    "arm_depthwise_conv_s8_opt",
    "arm_depthwise_conv_s8",
};

/* Which kernel arm_convolve_wrapper_s8 picks, by the wrapper's own tests (the same inline
 * predicates). */
static Kernel conv_kernel(const cmsis_nn_conv_params *cp, const cmsis_nn_dims *in, const cmsis_nn_dims *f)
{
    if (arm_nn_is_convolve_1x1(cp, in, f))
    {
        return arm_nn_is_convolve_1x1_fast(cp) ? K_CONVOLVE_1X1_S8_FAST : K_CONVOLVE_1X1_S8;
    }
    if (arm_nn_is_convolve_1_x_n(cp, in, f))
    {
        return K_CONVOLVE_1_X_N_S8;
    }
    return K_CONVOLVE_S8;
}

/* Which kernel arm_depthwise_conv_wrapper_s8 picks (its tests for a build without MVE). */
static Kernel dw_kernel(const cmsis_nn_dw_conv_params *dp, const cmsis_nn_dims *in, const cmsis_nn_dims *f)
{
    if (dp->ch_mult == 1 && in->n == 1 && dp->dilation.w == 1 && dp->dilation.h == 1)
    {
        if (f->w == 3 && f->h == 3 && dp->padding.h <= 1 && dp->padding.w <= 1)
        {
            return K_DEPTHWISE_CONV_3X3_S8;
        }
        return K_DEPTHWISE_CONV_S8_OPT;
    }
    return K_DEPTHWISE_CONV_S8;
}

/* The kernel the wrapper picked, called directly (to confirm the pick: the same count, give or
 * take the wrapper's few instructions and this switch's). */
static arm_cmsis_nn_status direct_conv(Kernel kernel,
                                       const cmsis_nn_context *ctx,
                                       const cmsis_nn_conv_params *cp,
                                       const cmsis_nn_dw_conv_params *dp,
                                       const cmsis_nn_per_channel_quant_params *qp,
                                       const cmsis_nn_dims *in,
                                       const cmsis_nn_dims *f,
                                       const cmsis_nn_dims *b,
                                       const int32_t *bias,
                                       const cmsis_nn_dims *out)
{
    switch (kernel)
    {
    case K_CONVOLVE_S8:
        return arm_convolve_s8(ctx, cp, qp, in, input, f, weight, b, bias, NULL, out, output);
    case K_CONVOLVE_1X1_S8_FAST:
        return arm_convolve_1x1_s8_fast(ctx, cp, qp, in, input, f, weight, b, bias, out, output);
    case K_CONVOLVE_1X1_S8:
        return arm_convolve_1x1_s8(ctx, cp, qp, in, input, f, weight, b, bias, out, output);
    case K_CONVOLVE_1_X_N_S8:
        return arm_convolve_1_x_n_s8(ctx, cp, qp, in, input, f, weight, b, bias, out, output);
    case K_DEPTHWISE_CONV_3X3_S8:
        return arm_depthwise_conv_3x3_s8(ctx, dp, qp, in, input, f, weight, b, bias, out, output);
    case K_DEPTHWISE_CONV_S8_OPT:
        return arm_depthwise_conv_s8_opt(ctx, dp, qp, in, input, f, weight, b, bias, out, output);
    default:
        return arm_depthwise_conv_s8(ctx, dp, qp, in, input, f, weight, b, bias, out, output);
    }
}

static int conv_case(const ConvCase *p)
{
    const int C = p->c, H = p->h, W = p->w, K = p->k, R = p->r, S = p->s;
    const int cg = C / p->groups, kg = K / p->groups;
    const int Ho = (H + 2 * p->pad - R) / p->stride + 1;
    const int Wo = (W + 2 * p->pad - S) / p->stride + 1;
    const int in_len = C * H * W, w_len = K * cg * R * S, out_len = K * Ho * Wo;
    const int depthwise = p->groups > 1;
    if (in_len > MAX_LEN || w_len > MAX_LEN || out_len > MAX_LEN || K > 16 || (depthwise && (p->groups != C || K != C)))
    {
        put_str(p->name);
        put_str(": unsupported case");
        flush_line();
        return 0;
    }

    /* The firmware's tensors (Sparkle layouts), then CMSIS-NN's layouts. */
    qfill(sp_input, (uint32_t)in_len, 6);
    qfill(sp_weight, (uint32_t)w_len, 7);
    int32_t bias[16], mult[16], shift[16];
    for (int j = 0; j < 16; j++)
    {
        bias[j] = (j - 8) * 97;
    }
    fixed_stage(K, mult, shift);
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                input[(y * W + x) * C + c] = sp_input[p->nhwc ? (y * W + x) * C + c : (c * H + y) * W + x];
    for (int k = 0; k < K; k++)
        for (int c = 0; c < cg; c++)
            for (int r = 0; r < R; r++)
                for (int s = 0; s < S; s++)
                {
                    const int8_t v = sp_weight[((k * cg + c) * R + r) * S + s]; /* KCRS */
                    if (depthwise)
                        weight[(r * S + s) * K + k] = v; /* [1, H, W, C_OUT] */
                    else
                        weight[((k * R + r) * S + s) * C + c] = v; /* [C_OUT, H, W, C_IN] */
                }

    const cmsis_nn_dims in_dims = {.n = 1, .h = H, .w = W, .c = C};
    const cmsis_nn_dims f_dims = depthwise ? (cmsis_nn_dims){.n = 1, .h = R, .w = S, .c = K}
                                           : (cmsis_nn_dims){.n = K, .h = R, .w = S, .c = C};
    const cmsis_nn_dims b_dims = {.n = 1, .h = 1, .w = 1, .c = K};
    const cmsis_nn_dims out_dims = {.n = 1, .h = Ho, .w = Wo, .c = K};
    const cmsis_nn_per_channel_quant_params qp = {.multiplier = mult, .shift = shift};
    const cmsis_nn_conv_params cp = {.input_offset = 3, /* input zero point -3 */
                                     .output_offset = OUTPUT_OFFSET,
                                     .stride = {.w = p->stride, .h = p->stride},
                                     .padding = {.w = p->pad, .h = p->pad},
                                     .dilation = {.w = 1, .h = 1},
                                     .activation = {.min = ACT_MIN, .max = ACT_MAX}};
    const cmsis_nn_dw_conv_params dp = {.input_offset = 3,
                                        .output_offset = OUTPUT_OFFSET,
                                        .ch_mult = 1,
                                        .stride = {.w = p->stride, .h = p->stride},
                                        .padding = {.w = p->pad, .h = p->pad},
                                        .dilation = {.w = 1, .h = 1},
                                        .activation = {.min = ACT_MIN, .max = ACT_MAX}};
    const int32_t need = depthwise ? arm_depthwise_conv_wrapper_s8_get_buffer_size(&dp, &in_dims, &f_dims, &out_dims)
                                   : arm_convolve_wrapper_s8_get_buffer_size(&cp, &in_dims, &f_dims, &out_dims);
    const Kernel kernel = depthwise ? dw_kernel(&dp, &in_dims, &f_dims) : conv_kernel(&cp, &in_dims, &f_dims);
    if (need < 0 || need > SCRATCH_BYTES)
    {
        put_str(p->name);
        put_str(": scratch too small (");
        put_i32(need);
        put_str(" bytes)");
        flush_line();
        return 0;
    }
    memset(scratch, 0, sizeof scratch);
    memset(output, 0x55, (size_t)out_len);
    const cmsis_nn_context ctx = {.buf = need > 0 ? scratch : NULL, .size = need};

    arm_cmsis_nn_status status;
    const uint32_t start = ticks_begin();
    if (depthwise)
        status = arm_depthwise_conv_wrapper_s8(
            &ctx, &dp, &qp, &in_dims, input, &f_dims, weight, &b_dims, bias, &out_dims, output);
    else
        status =
            arm_convolve_wrapper_s8(&ctx, &cp, &qp, &in_dims, input, &f_dims, weight, &b_dims, bias, &out_dims, output);
    const uint64_t instructions = (uint64_t)ticks_end(start) * INSTRUCTIONS_PER_TICK;

    /* The reference, from Sparkle's tensors and indexing, written in CMSIS-NN's NHWC order. */
    for (int oy = 0; oy < Ho; oy++)
        for (int ox = 0; ox < Wo; ox++)
            for (int k = 0; k < K; k++)
            {
                const int g = k / kg;
                int32_t acc = bias[k];
                for (int c = 0; c < cg; c++)
                    for (int r = 0; r < R; r++)
                        for (int s = 0; s < S; s++)
                        {
                            const int iy = oy * p->stride - p->pad + r, ix = ox * p->stride - p->pad + s;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                continue; /* padding holds the zero point: (x + offset) = 0 */
                            const int ic = g * cg + c;
                            const int32_t x =
                                sp_input[p->nhwc ? (iy * W + ix) * C + ic : (ic * H + iy) * W + ix];
                            const int32_t w = sp_weight[((k * cg + c) * R + r) * S + s];
                            acc += (x + 3) * w;
                        }
                truth[(oy * Wo + ox) * K + k] = ref_out(acc, mult[k], shift[k]);
            }
    const int ok = status == ARM_CMSIS_NN_SUCCESS && memcmp(output, truth, (size_t)out_len) == 0;

    /* The picked kernel, called directly (a second run, same result). */
    memset(scratch, 0, sizeof scratch);
    const uint32_t start2 = ticks_begin();
    const arm_cmsis_nn_status status2 = direct_conv(kernel, &ctx, &cp, &dp, &qp, &in_dims, &f_dims, &b_dims, bias, &out_dims);
    const uint64_t direct = (uint64_t)ticks_end(start2) * INSTRUCTIONS_PER_TICK;
    const int ok2 = status2 == ARM_CMSIS_NN_SUCCESS && memcmp(output, truth, (size_t)out_len) == 0;

    const uint64_t macs = (uint64_t)Ho * Wo * K * cg * R * S;
    put_str("  ");
    put_str(p->name);
    put_str(" on ");
    put_str(depthwise ? "arm_depthwise_conv_wrapper_s8 -> " : "arm_convolve_wrapper_s8 -> ");
    put_str(kernel_names[kernel]);
    put_str(": ");
    put_per_mac(instructions, macs);
    put_str(" instructions per MAC");
    flush_line();
    put_str("    ");
    put_u64(instructions);
    put_str(" instructions, ");
    put_u64(macs);
    put_str(" MACs, scratch ");
    put_i32(need);
    put_str(" bytes; ");
    put_str(kernel_names[kernel]);
    put_str(" called directly: ");
    put_u64(direct);
    put_str(" instructions");
    flush_line();
    put_str(ok && ok2 ? "PASS" : "FAIL");
    put_str(" int8 ");
    put_str(p->name);
    flush_line();
    return ok && ok2;
}

/* ---- fully connected (the firmware's int8 gemm m x n x k) ---------------------------------- */

static int fc_case(int m, int n, int k, int per_channel)
{
    const char *kernel = per_channel ? "arm_fully_connected_per_channel_s8" : "arm_fully_connected_s8";
    /* The firmware's tensors: A m x k row-major, B k x n row-major; CMSIS-NN's weights are
     * [out][in] (B transposed). */
    qfill(input, (uint32_t)(m * k), 8);
    qfill(sp_weight, (uint32_t)(k * n), 9);
    for (int i = 0; i < k; i++)
        for (int o = 0; o < n; o++)
            weight[o * k + i] = sp_weight[i * n + o];
    int32_t bias[16], mult[16], shift[16];
    for (int j = 0; j < 16; j++)
    {
        bias[j] = (j - 5) * 211;
    }
    fixed_stage(n, mult, shift);
    if (!per_channel)
    {
        /* Per tensor: channel 0's multiplier for every column (not the firmware's stage). */
        for (int j = 1; j < n; j++)
        {
            mult[j] = mult[0];
            shift[j] = shift[0];
        }
    }

    const cmsis_nn_dims in_dims = {.n = m, .h = 1, .w = 1, .c = k};
    const cmsis_nn_dims f_dims = {.n = k, .h = 1, .w = 1, .c = n};
    const cmsis_nn_dims b_dims = {.n = 1, .h = 1, .w = 1, .c = n};
    const cmsis_nn_dims out_dims = {.n = m, .h = 1, .w = 1, .c = n};
    const cmsis_nn_fc_params fp = {.input_offset = -4, /* a_zero 4 */
                                   .filter_offset = 0,
                                   .output_offset = OUTPUT_OFFSET,
                                   .activation = {.min = ACT_MIN, .max = ACT_MAX}};
    const cmsis_nn_quant_params qp = {.multiplier = mult, .shift = shift, .is_per_channel = per_channel};
    const int32_t need = arm_fully_connected_s8_get_buffer_size(&f_dims);
    if (need < 0 || need > SCRATCH_BYTES)
    {
        return 0;
    }
    memset(scratch, 0, sizeof scratch);
    memset(output, 0x55, (size_t)(m * n));
    const cmsis_nn_context ctx = {.buf = need > 0 ? scratch : NULL, .size = need};

    const uint32_t start = ticks_begin();
    const arm_cmsis_nn_status status =
        arm_fully_connected_wrapper_s8(&ctx, &fp, &qp, &in_dims, input, &f_dims, weight, &b_dims, bias, &out_dims, output);
    const uint64_t instructions = (uint64_t)ticks_end(start) * INSTRUCTIONS_PER_TICK;

    for (int b = 0; b < m; b++)
        for (int o = 0; o < n; o++)
        {
            int32_t acc = bias[o];
            for (int i = 0; i < k; i++)
            {
                acc += ((int32_t)input[b * k + i] - 4) * (int32_t)sp_weight[i * n + o];
            }
            truth[b * n + o] = ref_out(acc, mult[o], shift[o]);
        }
    const int ok = status == ARM_CMSIS_NN_SUCCESS && memcmp(output, truth, (size_t)(m * n)) == 0;

    const uint64_t macs = (uint64_t)m * n * k;
    put_str("  int8 gemm ");
    put_i32(m);
    put_str("x");
    put_i32(n);
    put_str("x");
    put_i32(k);
    put_str(per_channel ? " (per-channel)" : " (per-tensor)");
    put_str(" on arm_fully_connected_wrapper_s8 -> ");
    put_str(kernel);
    put_str(": ");
    put_per_mac(instructions, macs);
    put_str(" instructions per MAC");
    flush_line();
    put_str("    ");
    put_u64(instructions);
    put_str(" instructions, ");
    put_u64(macs);
    put_str(" MACs, scratch ");
    put_i32(need);
    put_str(" bytes");
    flush_line();
    put_str(ok ? "PASS" : "FAIL");
    put_str(" int8 gemm ");
    put_i32(m);
    put_str("x");
    put_i32(n);
    put_str("x");
    put_i32(k);
    put_str(per_channel ? " (per-channel)" : " (per-tensor)");
    flush_line();
    return ok;
}

int main(void)
{
    SysTick->CTRL |= SysTick_CTRL_CLKSOURCE_Msk; /* the core clock, as the firmware */

    put_str("cmsis-nn bench: Cortex-M4F, ");
#if defined(ARM_MATH_DSP)
    put_str("ARM_MATH_DSP (SMLAD paths)");
#else
    put_str("no ARM_MATH_DSP (pure C paths)");
#endif
#if defined(ARM_MATH_MVEI)
    put_str(", MVE");
#endif
    put_str(", ");
    put_str(BENCH_CFLAGS);
    flush_line();

    put_str("  calibration: 2 x 100000 instructions of subs/bne counted as ");
    put_u64(calibrate(100000));
    flush_line();

    int32_t mult[3], shift[3];
    fixed_stage(3, mult, shift);
    put_str("  multipliers/shifts of channels 0..2: ");
    for (int j = 0; j < 3; j++)
    {
        put_i32(mult[j]);
        put_str("/");
        put_i32(shift[j]);
        put_str(j < 2 ? " " : "");
    }
    flush_line();

    static const ConvCase cases[] = {
        {"conv 3x3 8->8 @16x16", 8, 16, 16, 8, 3, 3, 1, 1, 1, 0},
        {"depthwise 3x3, 8 ch @16x16", 8, 16, 16, 8, 3, 3, 1, 1, 8, 0},
        {"1x1 8->16 @16x16", 8, 16, 16, 16, 1, 1, 1, 0, 1, 0},
        {"conv 3x3 s2 NHWC 8->8 @16x16", 8, 16, 16, 8, 3, 3, 2, 1, 1, 1},
    };
    int all = 1;
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++)
    {
        all &= conv_case(&cases[i]);
    }
    all &= fc_case(16, 16, 64, 1);
    all &= fc_case(16, 16, 64, 0);
    put_str(all ? "all PASS" : "some FAIL");
    flush_line();
    return all ? 0 : 1;
}
