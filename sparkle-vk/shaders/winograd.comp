#version 450
// Winograd F(2x2, 3x3) for 3x3 conv2d with stride 1, dilation 1, one group: 2.25x fewer
// multiplies than direct convolution. Three stages around 16 batched GEMMs (gemm_vec4.comp,
// one per position xi of the 4x4 transformed tile):
//   WEIGHTS: U[xi][k][c] = (G g G^T)[xi] for the 3x3 filter g of (k, c)     one invocation per (k, c)
//   INPUT:   V[xi] = (B^T d B)[xi] for the 4x4 input patch d of tile t         one per (t, c)
//            stored C x T (tiles contiguous: NCHW reads and V writes both coalesced) when the
//            tile count is a multiple of 4 and the input NCHW (layouts bit 2), else T x C
//            (channels contiguous: the GEMM's vec4 loads then need only C % 4 == 0)
//   (GEMM):  M[xi] = U[xi] (K x C) * V[xi] (C x T)
//   OUTPUT:  y = act(A^T M[.][k][t] A + bias[k]), the tile's 2x2 outputs        one per (k, t)
// Tile t = (image, ty, tx) covers output rows 2ty..2ty+1 and columns 2tx..2tx+1; its input patch
// starts at (2ty - pad_top, 2tx - pad_left), zero outside the image.
// p.m = K, p.k = C, p.n = T (tiles of every image), p.hw = Ho * Wo, p.wo = Wo.
layout(local_size_x = 256) in;

layout(set = 0, binding = 0) readonly buffer SrcBuf { float src[]; };
layout(set = 0, binding = 1) buffer DstBuf { float dst[]; };
layout(set = 0, binding = 2) readonly buffer BiasBuf { float bias[]; };

#include "common.glsl"

uint index() {
    return gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
}

uint tiles_w() { return (p.wo + 1u) / 2u; }
uint tiles_h() { return (p.hw / p.wo + 1u) / 2u; }

#ifdef WEIGHTS
void main() {
    uint e = index();
    if (e >= p.m * p.k) return;
    uint k = e / p.k, c = e % p.k;
    float g[3][3];
    for (uint r = 0u; r < 3u; ++r) {
        for (uint s = 0u; s < 3u; ++s) {
            g[r][s] = src[!KRSC ? ((k * p.k + c) * 3u + r) * 3u + s : ((k * 3u + r) * 3u + s) * p.k + c];
        }
    }
    // t = G g (4x3), then U = t G^T (4x4); G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1].
    float t[4][3];
    for (uint s = 0u; s < 3u; ++s) {
        t[0][s] = g[0][s];
        t[1][s] = 0.5 * (g[0][s] + g[1][s] + g[2][s]);
        t[2][s] = 0.5 * (g[0][s] - g[1][s] + g[2][s]);
        t[3][s] = g[2][s];
    }
    uint plane = p.m * p.k;
    for (uint i = 0u; i < 4u; ++i) {
        float u[4] = float[4](t[i][0], 0.5 * (t[i][0] + t[i][1] + t[i][2]), 0.5 * (t[i][0] - t[i][1] + t[i][2]), t[i][2]);
        for (uint j = 0u; j < 4u; ++j) dst[(i * 4u + j) * plane + e] = u[j];
    }
}
#endif

#ifdef INPUT
void main() {
    uint e = index();
    if (e >= p.k * p.n) return;
    bool ct = (p.layouts & 4u) != 0u;
    uint t = ct ? e % p.n : e / p.k, c = ct ? e / p.n : e % p.k;
    uint tw = tiles_w(), per_image = tw * tiles_h();
    uint img = t / per_image, ty = (t % per_image) / tw, tx = t % tw;
    int y0 = int(2u * ty) - int(p.pt), x0 = int(2u * tx) - int(p.pl);
    float d[4][4];
    for (uint i = 0u; i < 4u; ++i) {
        for (uint j = 0u; j < 4u; ++j) {
            int y = y0 + int(i), x = x0 + int(j);
            bool inside = y >= 0 && x >= 0 && y < int(p.h) && x < int(p.w);
            uint pix = inside ? uint(y) * p.w + uint(x) : 0u;
            uint at = !NHWC ? (img * p.cin + c) * p.h * p.w + pix : (img * p.h * p.w + pix) * p.cin + c;
            d[i][j] = inside ? src[at] : 0.0;
        }
    }
    // B^T d B with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]: rows first, then columns.
    float r[4][4];
    for (uint j = 0u; j < 4u; ++j) {
        r[0][j] = d[0][j] - d[2][j];
        r[1][j] = d[1][j] + d[2][j];
        r[2][j] = d[2][j] - d[1][j];
        r[3][j] = d[1][j] - d[3][j];
    }
    uint plane = p.k * p.n;
    for (uint i = 0u; i < 4u; ++i) {
        float v[4] = float[4](r[i][0] - r[i][2], r[i][1] + r[i][2], r[i][2] - r[i][1], r[i][1] - r[i][3]);
        for (uint j = 0u; j < 4u; ++j) dst[(i * 4u + j) * plane + e] = v[j];
    }
}
#endif

#ifdef OUTPUT
void main() {
    uint e = index();
    if (e >= p.m * p.n) return;
    uint k = e / p.n, t = e % p.n;
    uint plane = p.m * p.n;
    float m[4][4];
    for (uint i = 0u; i < 4u; ++i) {
        for (uint j = 0u; j < 4u; ++j) m[i][j] = src[(i * 4u + j) * plane + e];
    }
    // A^T m A with A^T = [1 1 1 0; 0 1 -1 -1].
    float q[2][4];
    for (uint j = 0u; j < 4u; ++j) {
        q[0][j] = m[0][j] + m[1][j] + m[2][j];
        q[1][j] = m[1][j] - m[2][j] - m[3][j];
    }
    uint tw = tiles_w(), per_image = tw * tiles_h(), ho = p.hw / p.wo;
    uint img = t / per_image, ty = (t % per_image) / tw, tx = t % tw;
    float b = BIAS_MODE == 1u ? bias[k] : 0.0;
    for (uint i = 0u; i < 2u; ++i) {
        float out2[2] = float[2](q[i][0] + q[i][1] + q[i][2], q[i][1] - q[i][2] - q[i][3]);
        for (uint j = 0u; j < 2u; ++j) {
            uint oy = 2u * ty + i, ox = 2u * tx + j;
            if (oy >= ho || ox >= p.wo) continue;
            uint pix = oy * p.wo + ox;
            uint at = !NHWC ? (img * p.kout + k) * p.hw + pix : (img * p.hw + pix) * p.kout + k;
            dst[at] = activate(out2[j] + b);
        }
    }
}
#endif
