/* ce_kernels.c - int8 kernel library of the generated C inference engine (see ce_kernels.h). */
#include "ce_kernels.h"

#include <string.h>

#if defined(__ARM_FEATURE_DSP) && !defined(CE_NO_DSP)
#include <arm_acle.h>
#define CE_DSP 1
static inline int32_t ce_sxtb16(int32_t x) { return __sxtb16(x); }
static inline int32_t ce_sxtb16_ror8(int32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline int32_t ce_sxtab16(int32_t a, int32_t x) { return __sxtab16(a, x); }
static inline int32_t ce_sxtab16_ror8(int32_t a, int32_t x)
{
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
static inline int32_t ce_smlad(int32_t a, int32_t b, int32_t acc) { return __smlad(a, b, acc); }
#elif defined(CE_EMULATE_DSP)
/* C emulation of the Armv7E-M SIMD instructions used below (host testing of the DSP algorithm). */
#define CE_DSP 1
static inline int32_t ce_pack16(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)(uint16_t)(int16_t)hi << 16) | (uint32_t)(uint16_t)(int16_t)lo);
}
static inline int32_t ce_lo16(int32_t x) { return (int16_t)(uint16_t)((uint32_t)x & 0xFFFFu); }
static inline int32_t ce_hi16(int32_t x) { return (int16_t)(uint16_t)((uint32_t)x >> 16); }
static inline int32_t ce_sxtb16(int32_t x)
{
    return ce_pack16((int8_t)(uint8_t)((uint32_t)x & 0xFFu), (int8_t)(uint8_t)(((uint32_t)x >> 16) & 0xFFu));
}
static inline int32_t ce_sxtb16_ror8(int32_t x)
{
    return ce_sxtb16((int32_t)(((uint32_t)x >> 8) | ((uint32_t)x << 24)));
}
static inline int32_t ce_sxtab16(int32_t a, int32_t x)
{
    int32_t e = ce_sxtb16(x);
    return ce_pack16(ce_lo16(a) + ce_lo16(e), ce_hi16(a) + ce_hi16(e));
}
static inline int32_t ce_sxtab16_ror8(int32_t a, int32_t x)
{
    int32_t e = ce_sxtb16_ror8(x);
    return ce_pack16(ce_lo16(a) + ce_lo16(e), ce_hi16(a) + ce_hi16(e));
}
static inline int32_t ce_smlad(int32_t a, int32_t b, int32_t acc)
{
    return acc + ce_lo16(a) * ce_lo16(b) + ce_hi16(a) * ce_hi16(b);
}
#endif

static inline int32_t ce_rd32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline void ce_wr32(void *p, int32_t v) { memcpy(p, &v, 4); }

/* ---- TFLite fixed-point arithmetic ------------------------------------------------------------ */

static inline int32_t ce_srdhm(int32_t a, int32_t b)
{
    /* SaturatingRoundingDoublingHighMul: round(a*b / 2^31), ties towards +inf (== gemmlowp's nudge). */
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    return (int32_t)(((int64_t)a * (int64_t)b + ((int64_t)1 << 30)) >> 31);
}

static inline int32_t ce_rdbpot(int32_t x, int32_t exponent)
{
    /* RoundingDivideByPOT: round half away from zero. */
    const int32_t mask = (int32_t)((((int64_t)1) << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static inline int32_t ce_mbqm(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return ce_rdbpot(ce_srdhm((int32_t)((uint32_t)x << left), multiplier), right);
}

int32_t ce_mul_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift)
{
    return ce_mbqm(x, multiplier, shift);
}

static inline int8_t ce_requant(int32_t acc, int32_t mult, int32_t shift, int32_t off, int32_t lo, int32_t hi)
{
    int32_t v = ce_mbqm(acc, mult, shift) + off;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int8_t)v;
}

/* round half away from zero (std::round) for |x| < 2^23, without libm */
static inline int32_t ce_round_f32(float x)
{
    int32_t t = (int32_t)x;
    const float frac = x - (float)t;
    if (frac >= 0.5f) {
        t += 1;
    } else if (frac <= -0.5f) {
        t -= 1;
    }
    return t;
}

/* ---- CONV_2D --------------------------------------------------------------------------------- */

#if defined(CE_DSP)
/* im2col of one output pixel into int16 with the input offset added; padding -> 0.
 * Within every complete group of 4 elements the order is (x0, x2, x1, x3), matching SXTB16 on the weights. */
static void ce_im2col(const ce_conv_params *p, const int8_t *in, int32_t oy, int32_t ox, int16_t *col)
{
    const int32_t ic = p->in_c;
    const int32_t iy0 = oy * p->stride_h - p->pad_t;
    const int32_t ix0 = ox * p->stride_w - p->pad_l;
    int32_t ky, kx;
    if ((ic & 3) == 0) {
        const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)(int16_t)p->in_offset << 16) |
                                       (uint32_t)(uint16_t)(int16_t)p->in_offset);
        int16_t *dst = col;
        for (ky = 0; ky < p->k_h; ++ky) {
            const int32_t iy = iy0 + ky * p->dil_h;
            for (kx = 0; kx < p->k_w; ++kx) {
                const int32_t ix = ix0 + kx * p->dil_w;
                if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) {
                    memset(dst, 0, (size_t)ic * sizeof(int16_t));
                } else {
                    const int8_t *src = in + (iy * p->in_w + ix) * ic;
                    int32_t c;
                    for (c = 0; c < ic; c += 4) {
                        const int32_t v = ce_rd32(src + c);
                        ce_wr32(dst + c, ce_sxtab16(off2, v));
                        ce_wr32(dst + c + 2, ce_sxtab16_ror8(off2, v));
                    }
                }
                dst += ic;
            }
        }
    } else {
        const int32_t k4 = (p->k_h * p->k_w * ic) & ~3;
        int32_t j = 0;
        for (ky = 0; ky < p->k_h; ++ky) {
            const int32_t iy = iy0 + ky * p->dil_h;
            for (kx = 0; kx < p->k_w; ++kx) {
                const int32_t ix = ix0 + kx * p->dil_w;
                const int inside = !(iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w);
                const int8_t *src = in + (iy * p->in_w + ix) * ic;
                int32_t c;
                for (c = 0; c < ic; ++c, ++j) {
                    const int32_t pos = j < k4 ? ((j & ~3) | ((j & 1) << 1) | ((j >> 1) & 1)) : j;
                    col[pos] = (int16_t)(inside ? src[c] + p->in_offset : 0);
                }
            }
        }
    }
}

/* dot products of two weight rows with two im2col columns (2x2 block of outputs) */
static inline void ce_dot_2x2(const int8_t *w0, const int8_t *w1, const int16_t *c0, const int16_t *c1, int32_t k,
                              int32_t *a00, int32_t *a01, int32_t *a10, int32_t *a11)
{
    int32_t s00 = *a00, s01 = *a01, s10 = *a10, s11 = *a11;
    int32_t n = k >> 2;
    int32_t r;
    while (n-- > 0) {
        const int32_t wa = ce_rd32(w0);
        const int32_t wb = ce_rd32(w1);
        const int32_t wa1 = ce_sxtb16(wa), wa2 = ce_sxtb16_ror8(wa);
        const int32_t wb1 = ce_sxtb16(wb), wb2 = ce_sxtb16_ror8(wb);
        int32_t x1 = ce_rd32(c0), x2 = ce_rd32(c0 + 2);
        s00 = ce_smlad(wa1, x1, s00);
        s10 = ce_smlad(wb1, x1, s10);
        s00 = ce_smlad(wa2, x2, s00);
        s10 = ce_smlad(wb2, x2, s10);
        x1 = ce_rd32(c1);
        x2 = ce_rd32(c1 + 2);
        s01 = ce_smlad(wa1, x1, s01);
        s11 = ce_smlad(wb1, x1, s11);
        s01 = ce_smlad(wa2, x2, s01);
        s11 = ce_smlad(wb2, x2, s11);
        w0 += 4;
        w1 += 4;
        c0 += 4;
        c1 += 4;
    }
    for (r = 0; r < (k & 3); ++r) {
        s00 += c0[r] * w0[r];
        s01 += c1[r] * w0[r];
        s10 += c0[r] * w1[r];
        s11 += c1[r] * w1[r];
    }
    *a00 = s00;
    *a01 = s01;
    *a10 = s10;
    *a11 = s11;
}

static inline int32_t ce_dot_1x1(const int8_t *w, const int16_t *c, int32_t k, int32_t acc)
{
    int32_t n = k >> 2;
    int32_t r;
    while (n-- > 0) {
        const int32_t wa = ce_rd32(w);
        acc = ce_smlad(ce_sxtb16(wa), ce_rd32(c), acc);
        acc = ce_smlad(ce_sxtb16_ror8(wa), ce_rd32(c + 2), acc);
        w += 4;
        c += 4;
    }
    for (r = 0; r < (k & 3); ++r) {
        acc += c[r] * w[r];
    }
    return acc;
}

/* requantise and store a column's outputs for channels [oc, oc+n) */
static inline void ce_store(const ce_conv_params *p, int8_t *dst, int32_t oc, int32_t acc)
{
    dst[oc] = ce_requant(acc, p->mult[oc], p->shift[oc], p->out_offset, p->act_min, p->act_max);
}

void ce_conv2d_s8(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch)
{
    const int32_t k = p->k_h * p->k_w * p->in_c;
    const int32_t npix = p->out_h * p->out_w;
    const int32_t oc_n = p->out_c;
    int16_t *col0 = scratch;
    int16_t *col1 = scratch + ((k + 1) & ~1);
    int32_t pix;
    for (pix = 0; pix < npix; pix += 2) {
        const int two = (pix + 1) < npix;
        int8_t *out0 = out + pix * oc_n;
        int8_t *out1 = out0 + oc_n;
        int32_t oc;
        ce_im2col(p, in, pix / p->out_w, pix % p->out_w, col0);
        if (two) {
            ce_im2col(p, in, (pix + 1) / p->out_w, (pix + 1) % p->out_w, col1);
            for (oc = 0; oc + 1 < oc_n; oc += 2) {
                const int8_t *w0 = p->weights + oc * k;
                int32_t a00 = p->bias[oc], a01 = p->bias[oc];
                int32_t a10 = p->bias[oc + 1], a11 = p->bias[oc + 1];
                ce_dot_2x2(w0, w0 + k, col0, col1, k, &a00, &a01, &a10, &a11);
                ce_store(p, out0, oc, a00);
                ce_store(p, out1, oc, a01);
                ce_store(p, out0, oc + 1, a10);
                ce_store(p, out1, oc + 1, a11);
            }
            if (oc < oc_n) {
                const int8_t *w0 = p->weights + oc * k;
                ce_store(p, out0, oc, ce_dot_1x1(w0, col0, k, p->bias[oc]));
                ce_store(p, out1, oc, ce_dot_1x1(w0, col1, k, p->bias[oc]));
            }
        } else {
            for (oc = 0; oc < oc_n; ++oc) {
                ce_store(p, out0, oc, ce_dot_1x1(p->weights + oc * k, col0, k, p->bias[oc]));
            }
        }
    }
}

#else /* portable reference path */

void ce_conv2d_s8(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch)
{
    int32_t oy, ox, oc, ky, kx, c;
    (void)scratch;
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t iy0 = oy * p->stride_h - p->pad_t;
            const int32_t ix0 = ox * p->stride_w - p->pad_l;
            for (oc = 0; oc < p->out_c; ++oc) {
                const int8_t *w = p->weights + oc * p->k_h * p->k_w * p->in_c;
                int32_t acc = p->bias[oc];
                for (ky = 0; ky < p->k_h; ++ky) {
                    const int32_t iy = iy0 + ky * p->dil_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;
                    }
                    for (kx = 0; kx < p->k_w; ++kx) {
                        const int32_t ix = ix0 + kx * p->dil_w;
                        const int8_t *src;
                        const int8_t *wk;
                        if (ix < 0 || ix >= p->in_w) {
                            continue;
                        }
                        src = in + (iy * p->in_w + ix) * p->in_c;
                        wk = w + (ky * p->k_w + kx) * p->in_c;
                        for (c = 0; c < p->in_c; ++c) {
                            acc += (src[c] + p->in_offset) * wk[c];
                        }
                    }
                }
                out[(oy * p->out_w + ox) * p->out_c + oc] =
                    ce_requant(acc, p->mult[oc], p->shift[oc], p->out_offset, p->act_min, p->act_max);
            }
        }
    }
}
#endif

/* ---- DEPTHWISE_CONV_2D ------------------------------------------------------------------------ */

void ce_depthwise_s8(const ce_conv_params *p, const int8_t *in, int8_t *out)
{
    const int32_t oc_n = p->out_c;
    const int32_t dm = p->depth_multiplier;
    int32_t oy, ox, ky, kx, oc;
    int32_t acc[64];
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t iy0 = oy * p->stride_h - p->pad_t;
            const int32_t ix0 = ox * p->stride_w - p->pad_l;
            int8_t *dst = out + (oy * p->out_w + ox) * oc_n;
            int32_t base;
            for (base = 0; base < oc_n; base += 64) {
                const int32_t n = (oc_n - base) < 64 ? (oc_n - base) : 64;
                for (oc = 0; oc < n; ++oc) {
                    acc[oc] = p->bias[base + oc];
                }
                for (ky = 0; ky < p->k_h; ++ky) {
                    const int32_t iy = iy0 + ky * p->dil_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;
                    }
                    for (kx = 0; kx < p->k_w; ++kx) {
                        const int32_t ix = ix0 + kx * p->dil_w;
                        const int8_t *src;
                        const int8_t *w;
                        if (ix < 0 || ix >= p->in_w) {
                            continue;
                        }
                        src = in + (iy * p->in_w + ix) * p->in_c;
                        w = p->weights + (ky * p->k_w + kx) * oc_n + base;
                        if (dm == 1) {
                            const int8_t *s = src + base;
                            oc = 0;
#if defined(CE_DSP)
                            {
                                const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)(int16_t)p->in_offset << 16) |
                                                               (uint32_t)(uint16_t)(int16_t)p->in_offset);
                                for (; oc + 3 < n; oc += 4) {
                                    const int32_t xv = ce_rd32(s + oc);
                                    const int32_t wv = ce_rd32(w + oc);
                                    const int32_t x02 = ce_sxtab16(off2, xv), x13 = ce_sxtab16_ror8(off2, xv);
                                    const int32_t w02 = ce_sxtb16(wv), w13 = ce_sxtb16_ror8(wv);
                                    acc[oc] += (int16_t)x02 * (int16_t)w02;
                                    acc[oc + 2] += (x02 >> 16) * (w02 >> 16);
                                    acc[oc + 1] += (int16_t)x13 * (int16_t)w13;
                                    acc[oc + 3] += (x13 >> 16) * (w13 >> 16);
                                }
                            }
#endif
                            for (; oc < n; ++oc) {
                                acc[oc] += (s[oc] + p->in_offset) * w[oc];
                            }
                        } else {
                            for (oc = 0; oc < n; ++oc) {
                                acc[oc] += (src[(base + oc) / dm] + p->in_offset) * w[oc];
                            }
                        }
                    }
                }
                for (oc = 0; oc < n; ++oc) {
                    dst[base + oc] = ce_requant(acc[oc], p->mult[base + oc], p->shift[base + oc], p->out_offset,
                                                p->act_min, p->act_max);
                }
            }
        }
    }
}

/* ---- FULLY_CONNECTED -------------------------------------------------------------------------- */

void ce_fully_connected_s8(const ce_fc_params *p, const int8_t *in, int8_t *out, int16_t *scratch)
{
    const int32_t k = p->in_depth;
    int32_t b, o;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = in + b * k;
        int8_t *y = out + b * p->out_depth;
#if defined(CE_DSP)
        {
            int32_t j;
            const int32_t k4 = k & ~3;
            for (j = 0; j < k; ++j) {
                const int32_t pos = j < k4 ? ((j & ~3) | ((j & 1) << 1) | ((j >> 1) & 1)) : j;
                scratch[pos] = (int16_t)(x[j] + p->in_offset);
            }
            for (o = 0; o < p->out_depth; ++o) {
                const int32_t acc = ce_dot_1x1(p->weights + o * k, scratch, k, p->bias[o]);
                y[o] = ce_requant(acc, p->mult[o], p->shift[o], p->out_offset, p->act_min, p->act_max);
            }
        }
#else
        (void)scratch;
        for (o = 0; o < p->out_depth; ++o) {
            const int8_t *w = p->weights + o * k;
            int32_t acc = p->bias[o];
            int32_t j;
            for (j = 0; j < k; ++j) {
                acc += (x[j] + p->in_offset) * w[j];
            }
            y[o] = ce_requant(acc, p->mult[o], p->shift[o], p->out_offset, p->act_min, p->act_max);
        }
#endif
    }
}

/* ---- pooling ---------------------------------------------------------------------------------- */

void ce_avgpool_s8(const ce_pool_params *p, const int8_t *in, int8_t *out)
{
    int32_t oy, ox, c, fy, fx;
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t iy0 = oy * p->stride_h - p->pad_t;
            const int32_t ix0 = ox * p->stride_w - p->pad_l;
            const int32_t fy0 = iy0 < 0 ? -iy0 : 0;
            const int32_t fx0 = ix0 < 0 ? -ix0 : 0;
            const int32_t fy1 = (p->in_h - iy0) < p->f_h ? (p->in_h - iy0) : p->f_h;
            const int32_t fx1 = (p->in_w - ix0) < p->f_w ? (p->in_w - ix0) : p->f_w;
            const int32_t count = (fy1 - fy0) * (fx1 - fx0);
            for (c = 0; c < p->ch; ++c) {
                int32_t acc = 0;
                for (fy = fy0; fy < fy1; ++fy) {
                    const int8_t *src = in + ((iy0 + fy) * p->in_w + ix0) * p->ch + c;
                    for (fx = fx0; fx < fx1; ++fx) {
                        acc += src[fx * p->ch];
                    }
                }
                if (count > 0) {
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                }
                acc = acc < p->act_min ? p->act_min : acc;
                acc = acc > p->act_max ? p->act_max : acc;
                out[(oy * p->out_w + ox) * p->ch + c] = (int8_t)acc;
            }
        }
    }
}

void ce_maxpool_s8(const ce_pool_params *p, const int8_t *in, int8_t *out)
{
    int32_t oy, ox, c, fy, fx;
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t iy0 = oy * p->stride_h - p->pad_t;
            const int32_t ix0 = ox * p->stride_w - p->pad_l;
            const int32_t fy0 = iy0 < 0 ? -iy0 : 0;
            const int32_t fx0 = ix0 < 0 ? -ix0 : 0;
            const int32_t fy1 = (p->in_h - iy0) < p->f_h ? (p->in_h - iy0) : p->f_h;
            const int32_t fx1 = (p->in_w - ix0) < p->f_w ? (p->in_w - ix0) : p->f_w;
            for (c = 0; c < p->ch; ++c) {
                int32_t m = -128;
                for (fy = fy0; fy < fy1; ++fy) {
                    const int8_t *src = in + ((iy0 + fy) * p->in_w + ix0) * p->ch + c;
                    for (fx = fx0; fx < fx1; ++fx) {
                        const int32_t v = src[fx * p->ch];
                        m = v > m ? v : m;
                    }
                }
                m = m < p->act_min ? p->act_min : m;
                m = m > p->act_max ? p->act_max : m;
                out[(oy * p->out_w + ox) * p->ch + c] = (int8_t)m;
            }
        }
    }
}

/* ---- ADD -------------------------------------------------------------------------------------- */

void ce_add_s8(const ce_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t a = (int32_t)((uint32_t)(in1[i] + p->in1_offset) << p->left_shift);
        const int32_t b = (int32_t)((uint32_t)(in2[i] + p->in2_offset) << p->left_shift);
        const int32_t sa = ce_mbqm(a, p->in1_mult, p->in1_shift);
        const int32_t sb = ce_mbqm(b, p->in2_mult, p->in2_shift);
        int32_t v = ce_mbqm(sa + sb, p->out_mult, p->out_shift) + p->out_offset;
        v = v < p->act_min ? p->act_min : v;
        v = v > p->act_max ? p->act_max : v;
        out[i] = (int8_t)v;
    }
}

/* ---- MEAN ------------------------------------------------------------------------------------- */

void ce_mean_s8(const ce_mean_params *p, const int8_t *in, int8_t *out)
{
    int32_t o, i, r;
    for (o = 0; o < p->outer; ++o) {
        for (i = 0; i < p->inner; ++i) {
            const int8_t *src = in + o * p->reduce * p->inner + i;
            int32_t acc = 0;
            int32_t v;
            for (r = 0; r < p->reduce; ++r) {
                acc += src[r * p->inner] - p->in_zero_point;
            }
            v = ce_mbqm(acc, p->mult, p->shift);
            v = v > 0 ? (v + p->reduce / 2) / p->reduce : (v - p->reduce / 2) / p->reduce;
            v += p->out_zero_point;
            v = v < -128 ? -128 : v;
            v = v > 127 ? 127 : v;
            out[o * p->inner + i] = (int8_t)v;
        }
    }
}

/* ---- SOFTMAX (LiteRT builtin int8 kernel: float exp table) ------------------------------------ */

void ce_softmax_s8(const ce_softmax_params *p, const int8_t *in, int8_t *out)
{
    int32_t o, j;
    for (o = 0; o < p->outer; ++o) {
        const int8_t *x = in + o * p->depth;
        int8_t *y = out + o * p->depth;
        int32_t max_val = -128;
        float sum_exp = 0.0f;
        float inv_sum_exp;
        for (j = 0; j < p->depth; ++j) {
            max_val = x[j] > max_val ? x[j] : max_val;
        }
        for (j = 0; j < p->depth; ++j) {
            sum_exp += p->exp_table[max_val - x[j]];
        }
        inv_sum_exp = 1.0f / (sum_exp * p->out_scale);
        for (j = 0; j < p->depth; ++j) {
            const float prob = p->exp_table[max_val - x[j]] * inv_sum_exp;
            int32_t q = ce_round_f32(prob) + p->out_zero_point;
            q = q < -128 ? -128 : q;
            q = q > 127 ? 127 : q;
            y[j] = (int8_t)q;
        }
    }
}

/* ---- PAD / copies / boundary quantisation ---------------------------------------------------- */

void ce_pad_s8(const ce_pad_params *p, const int8_t *in, int8_t *out)
{
    const int32_t *od = p->out_dims;
    const int32_t *id = p->in_dims;
    const int32_t *pb = p->pad_before;
    int32_t a, b, c;
    memset(out, p->pad_value, (size_t)(od[0] * od[1] * od[2] * od[3]));
    for (a = 0; a < id[0]; ++a) {
        for (b = 0; b < id[1]; ++b) {
            for (c = 0; c < id[2]; ++c) {
                const int8_t *src = in + ((a * id[1] + b) * id[2] + c) * id[3];
                int8_t *dst = out + (((a + pb[0]) * od[1] + (b + pb[1])) * od[2] + (c + pb[2])) * od[3] + pb[3];
                memcpy(dst, src, (size_t)id[3]);
            }
        }
    }
}

void ce_copy_s8(const int8_t *in, int8_t *out, int32_t n)
{
    if (in != out) {
        memmove(out, in, (size_t)n);
    }
}

void ce_quantize_f32_s8(const float *in, int8_t *out, int32_t n, float scale, int32_t zero_point)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        const float q = in[i] / scale;
        int32_t v;
        if (q > 1.0e6f) {
            v = 127;
        } else if (q < -1.0e6f) {
            v = -128;
        } else {
            v = ce_round_f32(q) + zero_point;
        }
        v = v < -128 ? -128 : v;
        v = v > 127 ? 127 : v;
        out[i] = (int8_t)v;
    }
}

void ce_dequantize_s8_f32(const int8_t *in, float *out, int32_t n, double scale, int32_t zero_point)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = (float)(scale * (double)(in[i] - zero_point));
    }
}
