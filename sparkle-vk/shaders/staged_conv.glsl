// The A operand of the convs whose input the host stages (staging.rs): the int8 conv (qconv.rs,
// through quant.glsl) and the f16 conv on cooperative matrices (half.rs, gemm_coopmat.comp with
// STAGED). Each image is staged as NHWC, a pixel's channels per group rounded up to whole 16-byte
// chunks (zeros past the group's), so that row r of the implicit GEMM (output pixel r % S_HW of
// image r / S_HW: every image's pixels are one GEMM per group), reduction chunk q (tap q / S_CPT,
// the chunk q % S_CPT of its channels) is one aligned 16-byte load. B holds the weights in that
// order, zero in the rounded-up channels, so what A holds there adds nothing.
#define S_CPT p.layouts  // 16-byte chunks per tap (the group's channels, rounded up)
#define S_PIX p.hw       // 16-byte chunks per staged pixel (groups * S_CPT)
#define S_HW p.a_rs      // output pixels per image

// Row r's input origin (its top-left tap, in the padded frame's coordinates, y then x) and the
// chunk index of its image's first staged pixel, group g's channels; NO_INPUT as the base of a
// row past the GEMM's (r >= p.m), which reads nothing. (The host keeps every coordinate below
// 2^30: staging.rs `check_coordinates`.)
void s_conv_row(uint r, uint g, out int y0, out int x0, out uint base) {
    uint img = r / S_HW, j = r % S_HW;
    y0 = int((j / p.wo) * p.sh) - int(p.pt);
    x0 = int((j % p.wo) * p.sw) - int(p.pl);
    base = r < p.m ? img * p.h * p.w * S_PIX + g * S_CPT : NO_INPUT;
}

// The chunk index in the staged input of reduction chunk q of the row with origin (y0, x0) and
// base `base` (s_conv_row); NO_INPUT in the padding, past the reduction (B is zero there) and for
// a row past the GEMM's.
uint s_conv_at(int y0, int x0, uint base, uint q) {
    if (base == NO_INPUT) return NO_INPUT;
    uint tap = q / S_CPT;
    int iy = y0 + int((tap / p.s) * p.dh), ix = x0 + int((tap % p.s) * p.dw);
    if (tap >= p.r * p.s || iy < 0 || ix < 0 || iy >= int(p.h) || ix >= int(p.w)) return NO_INPUT;
    return base + (uint(iy) * p.w + uint(ix)) * S_PIX + q % S_CPT;
}
