/* ce_kernels.c - int8 kernel library of the generated C inference engine (see ce_kernels.h). */
#include "ce_kernels.h"

#include <string.h>

#if defined(__ARM_FEATURE_DSP) && !defined(CE_NO_DSP)
/* Armv7E-M DSP instructions (Cortex-M4/M7/M33...) */
#include <arm_acle.h>
#define CE_ARM_DSP 1
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
static inline int32_t ce_smlabb(int32_t a, int32_t b, int32_t acc) { return __smlabb(a, b, acc); }
static inline int32_t ce_smlatt(int32_t a, int32_t b, int32_t acc) { return __smlatt(a, b, acc); }
static inline int32_t ce_smlatb(int32_t a, int32_t b, int32_t acc) { return __smlatb(a, b, acc); }
static inline int32_t ce_smlabt(int32_t a, int32_t b, int32_t acc) { return __smlabt(a, b, acc); }
static inline int32_t ce_smladx(int32_t a, int32_t b, int32_t acc) { return __smladx(a, b, acc); }
static inline int32_t ce_dbl16(int32_t a) { return __sadd16(a, a); }
/* (bottom of a, bottom of b) and (top of a, top of b) */
static inline int32_t ce_pack_lo(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
static inline int32_t ce_pack_hi(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhtb %0, %2, %1, asr #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
/* high word of (hi << 32) + x * m + 2^31: one SMMLAR */
static inline int32_t ce_smmlar(int32_t x, int32_t m, int32_t hi)
{
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(x), "r"(m), "r"(hi));
    return r;
}
/* the top half of a, the bottom half of b */
static inline int32_t ce_pkhtb(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhtb %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
/* GCC's __ssat expansion converts through unsigned int internally (-Wsign-conversion inside the macro) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-conversion"
#endif
static inline int32_t ce_ssat8(int32_t x) { return (int32_t)__ssat(x, 8); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
/* high word of x * m + ((int64_t)hi << 32 | lo): one SMLAL */
static inline int32_t ce_smlal_hi(int32_t x, int32_t m, uint32_t lo, int32_t hi)
{
    __asm__("smlal %0, %1, %2, %3" : "+r"(lo), "+r"(hi) : "r"(x), "r"(m));
    return hi;
}
#else
/* Portable C99 equivalents of the same instructions: identical results on any target. */
static inline int32_t ce_lo16(int32_t x) { return (int16_t)(uint16_t)((uint32_t)x & 0xFFFFu); }
static inline int32_t ce_hi16(int32_t x) { return (int16_t)(uint16_t)((uint32_t)x >> 16); }
static inline int32_t ce_mk16(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)(uint16_t)(int16_t)hi << 16) | (uint32_t)(uint16_t)(int16_t)lo);
}
static inline int32_t ce_sxtb16(int32_t x)
{
    return ce_mk16((int8_t)(uint8_t)((uint32_t)x & 0xFFu), (int8_t)(uint8_t)(((uint32_t)x >> 16) & 0xFFu));
}
static inline int32_t ce_sxtb16_ror8(int32_t x) { return ce_sxtb16((int32_t)((uint32_t)x >> 8)); }
static inline int32_t ce_sxtab16(int32_t a, int32_t x)
{
    const int32_t e = ce_sxtb16(x);
    return ce_mk16(ce_lo16(a) + ce_lo16(e), ce_hi16(a) + ce_hi16(e));
}
static inline int32_t ce_sxtab16_ror8(int32_t a, int32_t x)
{
    const int32_t e = ce_sxtb16_ror8(x);
    return ce_mk16(ce_lo16(a) + ce_lo16(e), ce_hi16(a) + ce_hi16(e));
}
static inline int32_t ce_smlad(int32_t a, int32_t b, int32_t acc)
{
    /* the sum wraps modulo 2^32 like the instruction (no signed-overflow UB; each 16x16 product fits in int32) */
    return (int32_t)((uint32_t)acc + (uint32_t)(ce_lo16(a) * ce_lo16(b)) + (uint32_t)(ce_hi16(a) * ce_hi16(b)));
}
static inline int32_t ce_smlabb(int32_t a, int32_t b, int32_t acc) { return acc + ce_lo16(a) * ce_lo16(b); }
static inline int32_t ce_smlatt(int32_t a, int32_t b, int32_t acc) { return acc + ce_hi16(a) * ce_hi16(b); }
static inline int32_t ce_smlatb(int32_t a, int32_t b, int32_t acc) { return acc + ce_hi16(a) * ce_lo16(b); }
static inline int32_t ce_smlabt(int32_t a, int32_t b, int32_t acc) { return acc + ce_lo16(a) * ce_hi16(b); }
static inline int32_t ce_smladx(int32_t a, int32_t b, int32_t acc) { return ce_smlatb(a, b, ce_smlabt(a, b, acc)); }
static inline int32_t ce_dbl16(int32_t a) { return ce_mk16(2 * ce_lo16(a), 2 * ce_hi16(a)); }
static inline int32_t ce_pack_lo(int32_t a, int32_t b) { return ce_mk16(ce_lo16(a), ce_lo16(b)); }
static inline int32_t ce_pack_hi(int32_t a, int32_t b) { return ce_mk16(ce_hi16(a), ce_hi16(b)); }
static inline int32_t ce_smmlar(int32_t x, int32_t m, int32_t hi)
{
    return (int32_t)(((int64_t)hi * 4294967296LL + (int64_t)x * m + 2147483648LL) >> 32);
}
static inline int32_t ce_pkhtb(int32_t a, int32_t b)
{
    return (int32_t)(((uint32_t)a & 0xFFFF0000u) | ((uint32_t)b & 0xFFFFu));
}
static inline int32_t ce_ssat8(int32_t x) { return x < -128 ? -128 : (x > 127 ? 127 : x); }
static inline int32_t ce_smlal_hi(int32_t x, int32_t m, uint32_t lo, int32_t hi)
{
    return (int32_t)(((int64_t)x * m + (int64_t)(((uint64_t)(uint32_t)hi << 32) | lo)) >> 32);
}
#endif

#if defined(__GNUC__)
#define CE_NOINLINE __attribute__((noinline))
#define CE_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CE_ALWAYS_INLINE inline
#define CE_NOINLINE
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

static inline int32_t ce_clamp(int32_t v, int32_t lo, int32_t hi)
{
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

int32_t ce_mul_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift)
{
    return ce_mbqm(x, multiplier, shift);
}

/* ce_mbqm in one 64-bit multiply-accumulate (one SMLAL on Cortex-M): the hot output stage of CONV_2D,
 * DEPTHWISE_CONV_2D and FULLY_CONNECTED. Multipliers are never negative (generator). For a right shift
 * r = -shift >= 2 the two roundings (high multiply: floor((x*m + 2^30) / 2^31) = hm; RoundingDivideByPOT:
 * floor((hm + 2^(r-1) - [hm < 0]) / 2^r), half away from zero) nest into one floor division:
 *   floor((x*m + 2^30 + 2^(30+r) - [x < 0] * 2^31) / 2^(31+r)) = hi32(x*m + K) >> (r - 1)
 * [hm < 0] may be replaced by [x < 0]: when x < 0 but hm = 0 both give 0 for r >= 1. K's low word is
 * 2^30 XOR [x < 0] * 2^31, its high word 2^(r-2) - [x < 0]. Exact for every int32 x. */
static inline int32_t ce_mbqm_fold(int32_t x, int32_t mult, int32_t shift)
{
    if (shift < -1) {
        const int32_t r = -shift;
        const int32_t sgn = x >> 31;
        const uint32_t lo = 0x40000000u ^ ((uint32_t)sgn << 31);
        const int32_t hi = (int32_t)(((uint32_t)1 << r) >> 2) + sgn;
        return ce_smlal_hi(x, mult, lo, hi) >> (r - 1);
    }
    return ce_mbqm(x, mult, shift);
}

static inline int8_t ce_requant(int32_t acc, int32_t mult, int32_t shift, int32_t off, int32_t lo, int32_t hi)
{
    return (int8_t)ce_clamp(ce_mbqm_fold(acc, mult, shift) + off, lo, hi);
}

/* requantise two accumulators of the same output channel (same multiplier); SSAT when the activation range
 * is all of int8 (no fused activation, or RELU with output zero point -128). */
static inline void ce_requant_pair(int32_t acc0, int32_t acc1, int32_t mult, int32_t shift, int32_t off,
                                   int32_t lo, int32_t hi, int8_t *dst0, int8_t *dst1)
{
    int32_t v0 = ce_mbqm_fold(acc0, mult, shift) + off;
    int32_t v1 = ce_mbqm_fold(acc1, mult, shift) + off;
    if (lo == -128 && hi == 127) {
        v0 = ce_ssat8(v0);
        v1 = ce_ssat8(v1);
    } else {
        v0 = ce_clamp(v0, lo, hi);
        v1 = ce_clamp(v1, lo, hi);
    }
    *dst0 = (int8_t)v0;
    *dst1 = (int8_t)v1;
}

/* ce_mbqm_fold without its branch: hi32(x*m + K) >> (r - 1), r = -shift, K's words 2^30 XOR [x<0]*2^31 and
 * khi - [x<0]. khi = 2^(r-2) gives ce_mbqm(x, m, shift); khi = 2^(r-2) + z * 2^(r-1) gives it plus z, exactly (a
 * multiple of 2^(r-1) added before the arithmetic shift), with no overflow for r <= 23, |z| <= 128. */
static inline int32_t ce_fold_rs(int32_t x, int32_t mult, int32_t khi, int32_t rs)
{
    const int32_t sgn = x >> 31;
    const uint32_t lo = 0x40000000u ^ ((uint32_t)sgn << 31);
    return ce_smlal_hi(x, mult, lo, khi + sgn) >> rs;
}

/* ce_fold_rs on y = 2x (the weights and bias doubled; |x| < 2^30): hi32(y*m + 2^31 + (2 khi - [y<0]) * 2^32) is
 * hi32(2 (x*m + K)), so that one SMMLAR replaces the sign-dependent low word; then >> (rs + 1). khi2 = 2 khi,
 * rs2 = rs + 1. */
static inline int32_t ce_fold2(int32_t y, int32_t mult, int32_t khi2, int32_t rs2)
{
    return ce_smmlar(y, mult, khi2 + (y >> 31)) >> rs2;
}

static inline int32_t ce_fold_fast(int32_t x, int32_t mult, int32_t khi, int32_t shift)
{
    return ce_fold_rs(x, mult, khi, -shift - 1);
}

/* The output stage of layers whose every shift is in [-23, -2] (the generator then sets rq[3c + 1] =
 * 2^(-shift-2) + output zero point * 2^(-shift-1): the offset is in the constant); two accumulators of one channel */
static inline void ce_requant_pair_fold(int32_t acc0, int32_t acc1, int32_t mult, int32_t khi, int32_t shift,
                                        int32_t lo, int32_t hi, const int full, int8_t *dst0, int8_t *dst1)
{
    int32_t v0 = ce_fold_fast(acc0, mult, khi, shift);
    int32_t v1 = ce_fold_fast(acc1, mult, khi, shift);
    if (full) {
        v0 = ce_ssat8(v0);
        v1 = ce_ssat8(v1);
    } else {
        v0 = ce_clamp(v0, lo, hi);
        v1 = ce_clamp(v1, lo, hi);
    }
    *dst0 = (int8_t)v0;
    *dst1 = (int8_t)v1;
}

static inline int8_t ce_requant_fold(int32_t acc, int32_t mult, int32_t khi, int32_t shift, int32_t lo, int32_t hi)
{
    return (int8_t)ce_clamp(ce_fold_fast(acc, mult, khi, shift), lo, hi);
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
/* Weights: every row (output channel) is zero-padded to kp elements, kp = k_h*k_w*in_c when in_c % 4 == 0, else
 * k_h * round_up(k_w*in_c, 4) (each kernel row padded, so that a patch row is read as whole words); rows are
 * stored in pairs interleaved by groups of 4 bytes (row 2p group g at 8g, row 2p+1 group g at 8g+4); an odd
 * last row is stored plainly. The im2col column holds, per group of 4 elements, two int32 words with the
 * int16 values (x0,x2) and (x1,x3) (input offset added, padding = 0): exactly what SXTB16 gives on the weights.
 * Columns of two output pixels are interleaved by groups (pixel A words at 4g, 4g+1, pixel B at 4g+2, 4g+3). */

static inline int32_t ce_pack16(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)(uint16_t)(int16_t)hi << 16) | (uint32_t)(uint16_t)(int16_t)lo);
}

/* Channel counts that are not a multiple of 4 (dilation 1 across): input rows are staged, zero-point padded to
 * the left and right, in a ring of (k_h - 1) * dil_h + 1 + stride_h rows (the rows of two consecutive output rows),
 * so that every patch row is one contiguous run of bytes, read as words whatever the padding. Rows are staged
 * lazily, in order; rows above or below the input are all zero point (zero after the input offset). */
typedef struct {
    int8_t *ring;
    int32_t wp;    /* bytes per staged row (ce_rows_width) */
    int32_t slots; /* rows in the ring */
    int32_t next;  /* next padded row index to stage */
} ce_rows;

static int32_t ce_rows_width(const ce_conv_params *p)
{
    const int32_t ic = p->in_c;
    const int32_t rowp = (p->k_w * ic + 3) & ~3;
    const int32_t a = (p->pad_l + p->in_w) * ic;
    const int32_t b = (p->out_w - 1) * p->stride_w * ic + rowp;
    return ((a > b ? a : b) + 3) & ~3;
}

static void ce_rows_init(const ce_conv_params *p, ce_rows *r, int8_t *ring)
{
    r->ring = ring;
    r->wp = ce_rows_width(p);
    r->slots = (p->k_h - 1) * p->dil_h + 1 + p->stride_h;
    r->next = 0;
}

static void ce_rows_upto(const ce_conv_params *p, const int8_t *in, ce_rows *r, int32_t last)
{
    const int8_t zp = (int8_t)(-p->in_offset);
    const int32_t ic = p->in_c;
    while (r->next <= last) {
        int8_t *dst = r->ring + (r->next % r->slots) * r->wp;
        const int32_t iy = r->next - p->pad_t;
        int32_t i = 0;
        if (iy >= 0 && iy < p->in_h) {
            const int32_t lead = p->pad_l * ic, run = p->in_w * ic;
            for (; i < lead; ++i) {
                dst[i] = zp;
            }
            ce_copy_s8(in + iy * run, dst + lead, run);
            i = lead + run;
        }
        for (; i < r->wp; ++i) {
            dst[i] = zp;
        }
        r->next += 1;
    }
}

/* the im2col state of one convolution: two interleaved columns, the int16 row of the dilated generic path, the
 * staged-row ring of channel counts that are not a multiple of 4, and in_slots: 0, or the input is itself a ring
 * of that many rows (input row iy at in + (iy % in_slots) * in_w * in_c; channels a multiple of 4) */
typedef struct {
    int32_t *col;
    int16_t *nat;
    ce_rows rows;
    ce_rows *rp;
    int32_t in_slots;
} ce_conv_state;

static inline const int8_t *ce_in_row(const ce_conv_params *p, const int8_t *in, const ce_conv_state *st,
                                      int32_t iy)
{
    return in + (st->in_slots ? iy % st->in_slots : iy) * p->in_w * p->in_c;
}

/* n groups of 4 int8 values at src to im2col words (input offset added): group g at dst + g * gstride; gstride 4
 * (two interleaved columns) runs two groups per step with constant offsets. Returns the end of the run. */
static inline int32_t *ce_widen_run(const int8_t *src, int32_t n, int32_t off2, int32_t *dst, int32_t gstride)
{
#if defined(CE_ARM_DSP) && defined(__thumb2__) && !defined(CE_NO_ASM)
    if (gstride == 4 && n >= 2) {
        /* two groups per step: LDR (unaligned is fine), SXTAB16, STRD (the column is word-aligned) */
        int32_t m = n >> 1, t0, t1, t2, t3;
        __asm__ volatile("1:\n\t"
                         "ldr %[t0], [%[s]], #4\n\t"
                         "ldr %[t2], [%[s]], #4\n\t"
                         "sxtab16 %[t1], %[o], %[t0], ror #8\n\t"
                         "sxtab16 %[t0], %[o], %[t0]\n\t"
                         "sxtab16 %[t3], %[o], %[t2], ror #8\n\t"
                         "sxtab16 %[t2], %[o], %[t2]\n\t"
                         "strd %[t0], %[t1], [%[d]], #16\n\t"
                         "strd %[t2], %[t3], [%[d]], #16\n\t"
                         "subs %[m], %[m], #1\n\t"
                         "bne 1b\n\t"
                         : [s] "+r"(src), [d] "+r"(dst), [m] "+r"(m), [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2),
                           [t3] "=&r"(t3)
                         : [o] "r"(off2)
                         : "cc", "memory");
        n &= 1;
    }
#endif
    for (; n > 0; --n) {
        const int32_t v = ce_rd32(src);
        src += 4;
        dst[0] = ce_sxtab16(off2, v);
        dst[1] = ce_sxtab16_ror8(off2, v);
        dst += gstride;
    }
    return dst;
}

static void ce_im2col(const ce_conv_params *p, const int8_t *in, int32_t pix, int32_t *col, int32_t gstride,
                      const ce_conv_state *st)
{
    int16_t *nat = st->nat;
    ce_rows *rows = st->rp;
    const int32_t ic = p->in_c;
    const int32_t oy = pix / p->out_w;
    const int32_t ox = pix - oy * p->out_w;
    const int32_t iy0 = oy * p->stride_h - p->pad_t;
    const int32_t ix0 = ox * p->stride_w - p->pad_l;
    int32_t ky, kx;
    if ((ic & 3) == 0 && p->k_h == 1 && p->k_w == 1 && p->pad_t == 0 && p->pad_l == 0) {
        /* 1 x 1 without padding: the column is the input pixel */
        ce_widen_run(ce_in_row(p, in, st, iy0) + ix0 * ic, ic >> 2, ce_pack16(p->in_offset, p->in_offset), col,
                     gstride);
        return;
    }
    if ((ic & 3) == 0) {
        const int32_t off2 = ce_pack16(p->in_offset, p->in_offset);
        int32_t *dst = col;
        const int x_inside = p->dil_w == 1 && ix0 >= 0 && ix0 + p->k_w <= p->in_w;
        for (ky = 0; ky < p->k_h; ++ky) {
            const int32_t iy = iy0 + ky * p->dil_h;
            if (x_inside && iy >= 0 && iy < p->in_h) {
                /* the patch row is one contiguous run of k_w * in_c bytes */
                dst = ce_widen_run(ce_in_row(p, in, st, iy) + ix0 * ic, (p->k_w * ic) >> 2, off2, dst, gstride);
                continue;
            }
            for (kx = 0; kx < p->k_w; ++kx) {
                const int32_t ix = ix0 + kx * p->dil_w;
                int32_t c;
                if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) {
                    for (c = 0; c < ic; c += 4) {
                        dst[0] = 0;
                        dst[1] = 0;
                        dst += gstride;
                    }
                } else {
                    dst = ce_widen_run(ce_in_row(p, in, st, iy) + ix * ic, ic >> 2, off2, dst, gstride);
                }
            }
        }
    } else {
        /* generic channel count: every kernel row (k_w * in_c values) is padded to a multiple of 4 (zero weights) */
        const int32_t run = p->k_w * ic;
        const int32_t rowp = (run + 3) & ~3;
        const int32_t off2 = ce_pack16(p->in_offset, p->in_offset);
        const int x_inside = p->dil_w == 1 && ix0 >= 0 && ix0 + p->k_w <= p->in_w;
        int32_t *dst = col;
        int32_t j, g;
        if (rows != NULL) {
            const int32_t prow = oy * p->stride_h;
            const int32_t xoff = ox * p->stride_w * ic;
            const int32_t slots = rows->slots, wp = rows->wp, dil = p->dil_h, kh = p->k_h;
            const int8_t *ring = rows->ring + xoff;
            int32_t slot = prow % slots;
            ce_rows_upto(p, in, rows, prow + (kh - 1) * dil);
            for (ky = 0; ky < kh; ++ky) {
                /* the patch row: rowp / 4 words of the staged row, widened in place; the ring slot stepped */
                const int8_t *src = ring + slot * wp;
                if (rowp == 4) {
                    const int32_t v = ce_rd32(src);
                    dst[0] = ce_sxtab16(off2, v);
                    dst[1] = ce_sxtab16_ror8(off2, v);
                    dst += gstride;
                } else {
                    const int8_t *end = src + rowp;
                    do {
                        const int32_t v = ce_rd32(src);
                        dst[0] = ce_sxtab16(off2, v);
                        dst[1] = ce_sxtab16_ror8(off2, v);
                        dst += gstride;
                        src += 4;
                    } while (src != end);
                }
                slot += dil;
                if (slot >= slots) {
                    slot -= slots;
                }
            }
            return;
        }
        for (ky = 0; ky < p->k_h; ++ky) {
            const int32_t iy = iy0 + ky * p->dil_h;
            if (x_inside && iy >= 0 && iy < p->in_h) {
                /* contiguous run; the up to 3 bytes read past it meet zero weights (arena has 4 bytes of slack) */
                dst = ce_widen_run(in + (iy * p->in_w + ix0) * ic, rowp >> 2, off2, dst, gstride);
                continue;
            }
            for (j = 0; j < rowp; ++j) {
                nat[j] = 0;
            }
            if (iy >= 0 && iy < p->in_h) {
                const int8_t *srow = in + iy * p->in_w * ic;
                for (kx = 0; kx < p->k_w; ++kx) {
                    const int32_t ix = ix0 + kx * p->dil_w;
                    int32_t c;
                    if (ix >= 0 && ix < p->in_w) {
                        for (c = 0; c < ic; ++c) {
                            nat[kx * ic + c] = (int16_t)(srow[ix * ic + c] + p->in_offset);
                        }
                    }
                }
            }
            for (g = 0; g < rowp; g += 4) {
                dst[0] = ce_pack16(nat[g], nat[g + 2]);
                dst[1] = ce_pack16(nat[g + 1], nat[g + 3]);
                dst += gstride;
            }
        }
    }
}

/* n groups of two pixels' inputs (a, a + step) widened into interleaved column words: per group A (x0,x2), A (x1,x3),
 * B (x0,x2), B (x1,x3); returns the next column word */
static inline int32_t *ce_widen2(const int8_t *a, int32_t step, int32_t n, int32_t off2, int32_t *dst)
{
#if defined(CE_ARM_DSP) && defined(__thumb2__) && !defined(CE_NO_ASM)
    int32_t t0, t1, t2, t3;
    __asm__ volatile("1:\n\t"
                     "ldr %[t2], [%[s], %[k]]\n\t"
                     "ldr %[t0], [%[s]], #4\n\t"
                     "sxtab16 %[t1], %[o], %[t0], ror #8\n\t"
                     "sxtab16 %[t0], %[o], %[t0]\n\t"
                     "sxtab16 %[t3], %[o], %[t2], ror #8\n\t"
                     "sxtab16 %[t2], %[o], %[t2]\n\t"
                     "strd %[t0], %[t1], [%[d]], #8\n\t"
                     "strd %[t2], %[t3], [%[d]], #8\n\t"
                     "subs %[m], %[m], #1\n\t"
                     "bne 1b\n\t"
                     : [s] "+r"(a), [d] "+r"(dst), [m] "+r"(n), [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2),
                       [t3] "=&r"(t3)
                     : [o] "r"(off2), [k] "r"(step)
                     : "cc", "memory");
    return dst;
#else
    while (n-- > 0) {
        const int32_t va = ce_rd32(a), vb = ce_rd32(a + step);
        dst[0] = ce_sxtab16(off2, va);
        dst[1] = ce_sxtab16_ror8(off2, va);
        dst[2] = ce_sxtab16(off2, vb);
        dst[3] = ce_sxtab16_ror8(off2, vb);
        dst += 4;
        a += 4;
    }
    return dst;
#endif
}

/* The interleaved columns of two pixels of one output row (pix, pix + 1) in one pass, for the two common layouts:
 * 1 x 1 without padding (channels a multiple of 4) and staged rows (other channel counts). Returns 0 (nothing
 * written) for any other layer or when pix + 1 starts the next row. */
static int ce_im2col2(const ce_conv_params *p, const int8_t *in, int32_t pix, int32_t *col, const ce_conv_state *st)
{
    const int32_t ic = p->in_c, ow = p->out_w;
    const int32_t oy = pix / ow, ox = pix - oy * ow;
    const int32_t off2 = ce_pack16(p->in_offset, p->in_offset);
    const int32_t step = p->stride_w * ic; /* pixel B's input is this many bytes after pixel A's */
    int32_t *dst = col;
    if (ox + 1 >= ow) {
        return 0;
    }
    if ((ic & 3) == 0 && p->k_h == 1 && p->k_w == 1 && p->pad_t == 0 && p->pad_l == 0) {
        ce_widen2(ce_in_row(p, in, st, oy * p->stride_h) + ox * step, step, ic >> 2, off2, dst);
        return 1;
    }
    if (st->rp != NULL) {
        ce_rows *rows = st->rp;
        const int32_t rowp = (p->k_w * ic + 3) & ~3;
        const int32_t prow = oy * p->stride_h;
        const int32_t slots = rows->slots, wp = rows->wp, dil = p->dil_h, kh = p->k_h;
        const int8_t *ring = rows->ring + ox * step;
        int32_t slot = prow % slots, ky;
        ce_rows_upto(p, in, rows, prow + (kh - 1) * dil);
        for (ky = 0; ky < kh; ++ky) {
            dst = ce_widen2(ring + slot * wp, step, rowp >> 2, off2, dst);
            slot += dil;
            if (slot >= slots) {
                slot -= slots;
            }
        }
        return 1;
    }
    return 0;
}

/* Pairs of weight rows (pair-interleaved) x two columns (interleaved): for each of `pairs` consecutive row pairs,
 * acc[4j..4j+3] = {row a col A, row a col B, row b col A, row b col B} + the pair's biases (bias[2j], bias[2j+1]);
 * groups >= 1. ce_dot_pairs: int8 weights (8 bytes per group and pair); ce_dot16_pairs: int16 weights (p->wide, 16
 * bytes per group and pair). One call covers many channel pairs, so the loop setup is paid once per column. */
#if defined(CE_ARM_DSP) && defined(__thumb2__) && !defined(CE_NO_ASM)
/* Out-of-line Thumb-2 assembly (1 MAC per instruction on int16 weights): r0 weights, r1 column, r2..r5 the four
 * accumulators, r6..r9 a group of the two columns, r10..r12, lr a group of the two weight rows; the 16-group body
 * is entered through a TBH table at group (-groups) & 15 so that any group count runs whole bodies afterwards. Stack
 * locals: [sp] column, [sp+4] column end, [sp+8] next bias, [sp+12] entry index, [sp+16] pairs left, [sp+20] next
 * acc; the stack arguments (pairs, acc) are at [sp+64] and [sp+68] after the 36-byte push and the 28-byte frame. */
void ce_dot_pairs(const int8_t *w, const int32_t *col, int32_t groups, const int32_t *bias, int32_t pairs,
                  int32_t *acc);
void ce_dot16_pairs(const int8_t *w, const int32_t *col, int32_t groups, const int32_t *bias, int32_t pairs,
                    int32_t *acc);

/* an out-of-line Thumb-2 function in its own section (garbage-collected when unused) */
#define CE_ASM_BEGIN(name)                                                                                      \
    ".pushsection .text." #name ",\"ax\",%progbits\n\t"                                                         \
    ".syntax unified\n\t"                                                                                       \
    ".thumb\n\t"                                                                                                \
    ".align 2\n\t"                                                                                              \
    ".global " #name "\n\t"                                                                                     \
    ".type " #name ", %function\n\t"                                                                            \
    ".thumb_func\n" #name ":\n\t"
#define CE_ASM_END(name)                                                                                        \
    ".size " #name ", . - " #name "\n\t"                                                                        \
    ".popsection\n"

#define CE_ASM_SMLAD8                                                                                           \
    "smlad r2, r10, r6, r2\n\t"                                                                                 \
    "smlad r3, r10, r8, r3\n\t"                                                                                 \
    "smlad r4, r12, r6, r4\n\t"                                                                                 \
    "smlad r5, r12, r8, r5\n\t"                                                                                 \
    "smlad r2, r11, r7, r2\n\t"                                                                                 \
    "smlad r3, r11, r9, r3\n\t"                                                                                 \
    "smlad r4, lr, r7, r4\n\t"                                                                                  \
    "smlad r5, lr, r9, r5\n\t"
#define CE_ASM_GROUP16 "ldmia.w r1!, {r6-r9}\n\tldmia.w r0!, {r10, r11, r12, lr}\n\t" CE_ASM_SMLAD8
#define CE_ASM_GROUP8                                                                                           \
    "ldmia.w r1!, {r6-r9}\n\t"                                                                                  \
    "ldrd r11, lr, [r0], #8\n\t"                                                                                \
    "sxtb16 r10, r11\n\t"                                                                                       \
    "sxtb16 r11, r11, ror #8\n\t"                                                                               \
    "sxtb16 r12, lr\n\t"                                                                                        \
    "sxtb16 lr, lr, ror #8\n\t" CE_ASM_SMLAD8

#define CE_ASM_PAIRS(name, GROUP)                                                                               \
    __asm__(CE_ASM_BEGIN(name)                                                                                  \
            "push {r4-r11, lr}\n\t"                                                                             \
            "sub sp, sp, #28\n\t"                                                                               \
            "str r1, [sp]\n\t"                                                                                  \
            "add r12, r1, r2, lsl #4\n\t"                                                                       \
            "str r12, [sp, #4]\n\t"                                                                             \
            "str r3, [sp, #8]\n\t"                                                                              \
            "rsb r12, r2, #0\n\t"                                                                               \
            "and r12, r12, #15\n\t"                                                                             \
            "str r12, [sp, #12]\n\t"                                                                            \
            "ldr r12, [sp, #64]\n\t"                                                                            \
            "str r12, [sp, #16]\n\t"                                                                            \
            "ldr r12, [sp, #68]\n\t"                                                                            \
            "str r12, [sp, #20]\n"                                                                              \
            "1:\n\t"                                                                                            \
            "ldr r1, [sp]\n\t"                                                                                  \
            "ldr r12, [sp, #8]\n\t"                                                                             \
            "ldrd r2, r4, [r12], #8\n\t"                                                                        \
            "str r12, [sp, #8]\n\t"                                                                             \
            "mov r3, r2\n\t"                                                                                    \
            "mov r5, r4\n\t"                                                                                    \
            "ldr lr, [sp, #12]\n\t"                                                                             \
            "tbh [pc, lr, lsl #1]\n"                                                                            \
            "2:\n\t"                                                                                            \
            ".hword (10f - 2b) / 2, (11f - 2b) / 2, (12f - 2b) / 2, (13f - 2b) / 2\n\t"                         \
            ".hword (14f - 2b) / 2, (15f - 2b) / 2, (16f - 2b) / 2, (17f - 2b) / 2\n\t"                         \
            ".hword (18f - 2b) / 2, (19f - 2b) / 2, (20f - 2b) / 2, (21f - 2b) / 2\n\t"                         \
            ".hword (22f - 2b) / 2, (23f - 2b) / 2, (24f - 2b) / 2, (25f - 2b) / 2\n"                           \
            "10:\n\t" GROUP "11:\n\t" GROUP "12:\n\t" GROUP "13:\n\t" GROUP                                     \
            "14:\n\t" GROUP "15:\n\t" GROUP "16:\n\t" GROUP "17:\n\t" GROUP                                     \
            "18:\n\t" GROUP "19:\n\t" GROUP "20:\n\t" GROUP "21:\n\t" GROUP                                     \
            "22:\n\t" GROUP "23:\n\t" GROUP "24:\n\t" GROUP "25:\n\t" GROUP                                     \
            "ldr lr, [sp, #4]\n\t"                                                                              \
            "cmp r1, lr\n\t"                                                                                    \
            "bne 10b\n\t"                                                                                       \
            "ldr r12, [sp, #20]\n\t"                                                                            \
            "stmia r12!, {r2-r5}\n\t"                                                                           \
            "str r12, [sp, #20]\n\t"                                                                            \
            "ldr r12, [sp, #16]\n\t"                                                                            \
            "subs r12, r12, #1\n\t"                                                                             \
            "str r12, [sp, #16]\n\t"                                                                            \
            "bne 1b\n\t"                                                                                        \
            "add sp, sp, #28\n\t"                                                                               \
            "pop {r4-r11, pc}\n\t" CE_ASM_END(name));

CE_ASM_PAIRS(ce_dot_pairs, CE_ASM_GROUP8)
CE_ASM_PAIRS(ce_dot16_pairs, CE_ASM_GROUP16)
#else
static void ce_dot_pairs_c(const int8_t *w, const int32_t *col, int32_t groups, const int32_t *bias, int32_t pairs,
                           int32_t *acc, const int wide)
{
    int32_t j, g;
    for (j = 0; j < pairs; ++j) {
        int32_t s0a = bias[2 * j], s0b = bias[2 * j], s1a = bias[2 * j + 1], s1b = bias[2 * j + 1];
        const int32_t *c = col;
        for (g = 0; g < groups; ++g) {
            int32_t wa0, wa1, wb0, wb1;
            if (wide) {
                wa0 = ce_rd32(w);
                wa1 = ce_rd32(w + 4);
                wb0 = ce_rd32(w + 8);
                wb1 = ce_rd32(w + 12);
                w += 16;
            } else {
                const int32_t wa = ce_rd32(w), wb = ce_rd32(w + 4);
                wa0 = ce_sxtb16(wa);
                wa1 = ce_sxtb16_ror8(wa);
                wb0 = ce_sxtb16(wb);
                wb1 = ce_sxtb16_ror8(wb);
                w += 8;
            }
            s0a = ce_smlad(wa0, c[0], s0a);
            s0b = ce_smlad(wa0, c[2], s0b);
            s1a = ce_smlad(wb0, c[0], s1a);
            s1b = ce_smlad(wb0, c[2], s1b);
            s0a = ce_smlad(wa1, c[1], s0a);
            s0b = ce_smlad(wa1, c[3], s0b);
            s1a = ce_smlad(wb1, c[1], s1a);
            s1b = ce_smlad(wb1, c[3], s1b);
            c += 4;
        }
        acc[4 * j] = s0a;
        acc[4 * j + 1] = s0b;
        acc[4 * j + 2] = s1a;
        acc[4 * j + 3] = s1b;
    }
}

static void ce_dot_pairs(const int8_t *w, const int32_t *col, int32_t groups, const int32_t *bias, int32_t pairs,
                         int32_t *acc)
{
    ce_dot_pairs_c(w, col, groups, bias, pairs, acc, 0);
}

static void ce_dot16_pairs(const int8_t *w, const int32_t *col, int32_t groups, const int32_t *bias, int32_t pairs,
                           int32_t *acc)
{
    ce_dot_pairs_c(w, col, groups, bias, pairs, acc, 1);
}
#endif

/* one int16 weight row (2 words per group, wstride bytes per group) x one column (cstride words per group) */
static inline int32_t ce_dot16_1x1(const int8_t *w, int32_t wstride, const int32_t *c, int32_t cstride,
                                   int32_t groups, int32_t acc)
{
    while (groups-- > 0) {
        acc = ce_smlad(ce_rd32(w), c[0], acc);
        acc = ce_smlad(ce_rd32(w + 4), c[1], acc);
        w += wstride;
        c += cstride;
    }
    return acc;
}

/* one weight row with stride wstride bytes per group x one column with stride cstride words per group */
static inline int32_t ce_dot_1x1(const int8_t *w, int32_t wstride, const int32_t *c, int32_t cstride,
                                 int32_t groups, int32_t acc)
{
    while (groups-- > 0) {
        const int32_t wa = ce_rd32(w);
        acc = ce_smlad(ce_sxtb16(wa), c[0], acc);
        acc = ce_smlad(ce_sxtb16_ror8(wa), c[1], acc);
        w += wstride;
        c += cstride;
    }
    return acc;
}

/* outputs [oc0, out_c) of one pixel whose column words are at col (cstride words per group); rarely used */
static CE_NOINLINE void ce_conv_single(const ce_conv_params *p, const int32_t *col, int32_t cstride, int32_t oc0,
                                       int8_t *dst)
{
    const int32_t groups = p->k_padded >> 2;
    int32_t oc;
    for (oc = oc0; oc < p->out_c; ++oc) {
        const int paired = (oc | 1) < p->out_c;
        int32_t acc;
        if (p->wide) {
            const int8_t *w = p->weights + 2 * (oc & ~1) * p->k_padded + (paired ? (oc & 1) * 8 : 0);
            acc = ce_dot16_1x1(w, paired ? 16 : 8, col, cstride, groups, p->bias[oc]);
            if (p->dbl) {
                acc /= 2; /* exact: weights and bias doubled */
            }
        } else {
            const int8_t *w = p->weights + (oc & ~1) * p->k_padded + (paired ? (oc & 1) * 4 : 0);
            acc = ce_dot_1x1(w, paired ? 8 : 4, col, cstride, groups, p->bias[oc]);
        }
        dst[oc] = ce_requant(acc, p->mult[oc], p->shift[oc], p->out_offset, p->act_min, p->act_max);
    }
}

/* The output stage of channel pairs of two pixels (acc: per pair the accumulators channel 2j pixel A, pixel B,
 * channel 2j+1 pixel A, pixel B; rq: the per-channel triplets {mult, khi, rs}), the activation range all of int8:
 * per output AND, EOR, ADD, SMLAL, ASR, SSAT, STRB; one LDM per pair of accumulators' channel. */
#if defined(CE_ARM_DSP) && defined(__thumb2__) && !defined(CE_NO_ASM)
void ce_requant_pairs_ssat(const int32_t *acc, const int32_t *rq, int8_t *o0, int8_t *o1, int32_t npairs);

#define CE_ASM_RQ1(A, O)                                                                                        \
    "and r11, " A ", #0x80000000\n\t"                                                                           \
    "eor r11, r11, #0x40000000\n\t"                                                                             \
    "add r12, r9, " A ", asr #31\n\t"                                                                           \
    "smlal r11, r12, " A ", r8\n\t"                                                                             \
    "asr r12, r12, r10\n\t"                                                                                     \
    "ssat r12, #8, r12\n\t"                                                                                     \
    "strb r12, [" O "], #1\n\t"

/* the same on doubled accumulators (p->dbl; rq {mult, 2 khi, rs + 1}): per output ADD, SMMLAR, ASR, SSAT, STRB */
void ce_requant_pairs_dbl(const int32_t *acc, const int32_t *rq, int8_t *o0, int8_t *o1, int32_t npairs);

#define CE_ASM_RQ2(A, O)                                                                                        \
    "add r12, r9, " A ", asr #31\n\t"                                                                           \
    "smmlar r12, " A ", r8, r12\n\t"                                                                            \
    "asr r12, r12, r10\n\t"                                                                                     \
    "ssat r12, #8, r12\n\t"                                                                                     \
    "strb r12, [" O "], #1\n\t"

#define CE_ASM_REQUANT_PAIRS(name, RQ)                                                                          \
    __asm__(CE_ASM_BEGIN(name) "push {r4-r11, lr}\n\t"                                                          \
            "ldr lr, [sp, #36]\n"                                                                               \
            "1:\n\t"                                                                                            \
            "ldmia r0!, {r4-r7}\n\t"                                                                            \
            "ldmia r1!, {r8-r10}\n\t" RQ("r4", "r2") RQ("r5", "r3")                                             \
            "ldmia r1!, {r8-r10}\n\t" RQ("r6", "r2") RQ("r7", "r3")                                             \
            "subs lr, lr, #1\n\t"                                                                               \
            "bne 1b\n\t"                                                                                        \
            "pop {r4-r11, pc}\n\t" CE_ASM_END(name));

CE_ASM_REQUANT_PAIRS(ce_requant_pairs_ssat, CE_ASM_RQ1)
CE_ASM_REQUANT_PAIRS(ce_requant_pairs_dbl, CE_ASM_RQ2)
#else
static void ce_requant_pairs_ssat(const int32_t *acc, const int32_t *rq, int8_t *o0, int8_t *o1, int32_t npairs)
{
    while (npairs-- > 0) {
        *o0++ = (int8_t)ce_ssat8(ce_fold_rs(acc[0], rq[0], rq[1], rq[2]));
        *o1++ = (int8_t)ce_ssat8(ce_fold_rs(acc[1], rq[0], rq[1], rq[2]));
        *o0++ = (int8_t)ce_ssat8(ce_fold_rs(acc[2], rq[3], rq[4], rq[5]));
        *o1++ = (int8_t)ce_ssat8(ce_fold_rs(acc[3], rq[3], rq[4], rq[5]));
        acc += 4;
        rq += 6;
    }
}

static void ce_requant_pairs_dbl(const int32_t *acc, const int32_t *rq, int8_t *o0, int8_t *o1, int32_t npairs)
{
    while (npairs-- > 0) {
        *o0++ = (int8_t)ce_ssat8(ce_fold2(acc[0], rq[0], rq[1], rq[2]));
        *o1++ = (int8_t)ce_ssat8(ce_fold2(acc[1], rq[0], rq[1], rq[2]));
        *o0++ = (int8_t)ce_ssat8(ce_fold2(acc[2], rq[3], rq[4], rq[5]));
        *o1++ = (int8_t)ce_ssat8(ce_fold2(acc[3], rq[3], rq[4], rq[5]));
        acc += 4;
        rq += 6;
    }
}
#endif

/* all pairs of output channels of two pixels (interleaved im2col columns at col); returns the first channel not
 * done (out_c rounded down to even). fold / full are constants at each call: the branch-free output stage when every
 * shift is below -1 (p->rq set by the generator), SSAT when the activation range is all of int8. The dot
 * products of up to CE_PAIR_CHUNK channel pairs are computed in one call, then requantised. */
#define CE_PAIR_CHUNK 32
static CE_ALWAYS_INLINE int32_t ce_conv_pairs(const ce_conv_params *p, const int32_t *col, int8_t *out0,
                                              int8_t *out1, const int fold, const int full)
{
    const int32_t groups = p->k_padded >> 2;
    const int32_t npairs = p->out_c >> 1;
    const int32_t pair_bytes = (p->wide ? 4 : 2) * p->k_padded;
    const int32_t out_off = p->out_offset, act_min = p->act_min, act_max = p->act_max;
    const int32_t *mult = p->mult;
    const int8_t *shift = p->shift;
    int32_t acc[4 * CE_PAIR_CHUNK];
    int32_t j0;
    for (j0 = 0; j0 < npairs; j0 += CE_PAIR_CHUNK) {
        const int32_t n = npairs - j0 < CE_PAIR_CHUNK ? npairs - j0 : CE_PAIR_CHUNK;
        const int8_t *w = p->weights + j0 * pair_bytes;
        if (p->wide) {
            ce_dot16_pairs(w, col, groups, p->bias + 2 * j0, n, acc);
        } else {
            ce_dot_pairs(w, col, groups, p->bias + 2 * j0, n, acc);
        }
        if (fold && full && p->dbl) {
            ce_requant_pairs_dbl(acc, p->rq + 6 * j0, out0 + 2 * j0, out1 + 2 * j0, n);
        } else if (fold && full) {
            ce_requant_pairs_ssat(acc, p->rq + 6 * j0, out0 + 2 * j0, out1 + 2 * j0, n);
        } else {
            /* pointers stepped per channel pair (no index arithmetic, no spills in the output stage) */
            const int32_t *a = acc, *a_end = acc + 4 * n;
            const int32_t *m = mult + 2 * j0, *r = fold ? p->rq + 6 * j0 : NULL;
            const int8_t *sh = shift + 2 * j0;
            int8_t *o0 = out0 + 2 * j0, *o1 = out1 + 2 * j0;
            do {
                if (fold) {
                    o0[0] = (int8_t)ce_clamp(ce_fold_rs(a[0], r[0], r[1], r[2]), act_min, act_max);
                    o1[0] = (int8_t)ce_clamp(ce_fold_rs(a[1], r[0], r[1], r[2]), act_min, act_max);
                    o0[1] = (int8_t)ce_clamp(ce_fold_rs(a[2], r[3], r[4], r[5]), act_min, act_max);
                    o1[1] = (int8_t)ce_clamp(ce_fold_rs(a[3], r[3], r[4], r[5]), act_min, act_max);
                    r += 6;
                } else {
                    ce_requant_pair(a[0], a[1], m[0], sh[0], out_off, act_min, act_max, o0, o1);
                    ce_requant_pair(a[2], a[3], m[1], sh[1], out_off, act_min, act_max, o0 + 1, o1 + 1);
                    m += 2;
                    sh += 2;
                }
                a += 4;
                o0 += 2;
                o1 += 2;
            } while (a != a_end);
        }
    }
    return 2 * npairs;
}

static void ce_conv_state_init(const ce_conv_params *p, int16_t *scratch, ce_conv_state *st)
{
    st->col = (int32_t *)(void *)scratch;
    st->nat = (int16_t *)(void *)(st->col + p->k_padded);
    st->rp = NULL;
    st->in_slots = 0;
    if ((p->in_c & 3) != 0 && p->dil_w == 1) {
        ce_rows_init(p, &st->rows, (int8_t *)(void *)(st->col + p->k_padded)); /* staged rows instead of nat */
        st->rp = &st->rows;
    }
}

/* output pixels [pix0, pix1) to out (pixel pix at out + (pix - pix0) * out_c); pixels in increasing order */
static void ce_conv2d_range(const ce_conv_params *p, const int8_t *in, int8_t *out, int32_t pix0, int32_t pix1,
                            ce_conv_state *st)
{
    const int32_t oc_n = p->out_c;
    const int32_t act_min = p->act_min, act_max = p->act_max;
    int32_t *col = st->col;
    int32_t pix;
    for (pix = pix0; pix < pix1; pix += 2) {
        int8_t *out0 = out + (pix - pix0) * oc_n;
        int32_t oc;
        if (pix + 1 < pix1 || oc_n >= 8) {
            /* a last odd pixel goes through the pair path as both pixels (out1 = out0: the same values twice) */
            const int32_t pix_b = pix + 1 < pix1 ? pix + 1 : pix;
            int8_t *out1 = out0 + (pix_b - pix) * oc_n;
            if (pix_b == pix || !ce_im2col2(p, in, pix, col, st)) {
                ce_im2col(p, in, pix, col, 4, st);
                ce_im2col(p, in, pix_b, col + 2, 4, st);
            }
            if (p->rq == NULL) {
                oc = ce_conv_pairs(p, col, out0, out1, 0, 0);
            } else if (act_min == -128 && act_max == 127) {
                oc = ce_conv_pairs(p, col, out0, out1, 1, 1);
            } else {
                oc = ce_conv_pairs(p, col, out0, out1, 1, 0);
            }
            if (oc < oc_n) {
                ce_conv_single(p, col, 4, oc, out0);
                ce_conv_single(p, col + 2, 4, oc, out1);
            }
        } else {
            ce_im2col(p, in, pix, col, 2, st);
            ce_conv_single(p, col, 2, 0, out0);
        }
    }
}

void ce_conv2d_s8(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch)
{
    ce_conv_state st;
    ce_conv_state_init(p, scratch, &st);
    ce_conv2d_range(p, in, out, 0, p->out_h * p->out_w, &st);
}

/* ---- CONV_2D fused with the FULLY_CONNECTED that reads its whole output ---------------------------- */
/* The convolution's output is never stored whole: it is computed one output row at a time into a row buffer,
 * whose values the fully-connected layer accumulates at once (its inputs k0 .. k0 + row bytes; the generator
 * checks that out_w * out_c is a multiple of 4, so every row starts a weight group). Bit-exact with the two
 * layers run one after the other: the row holds the convolution's int8 outputs. scratch: [int32 accumulators,
 * fc out_depth][row buffer, out_w * out_c][the convolution's scratch]. */

static void ce_fc_accumulate(const ce_fc_params *p, const int8_t *x, int32_t k0, int32_t n, int32_t *acc)
{
    const int32_t kp = (p->in_depth + 3) & ~3;
    const int32_t g0 = k0 >> 2, ng = (n + 3) >> 2; /* a last partial group meets zero weights */
    const int32_t off2 = ce_pack16(p->in_offset, p->in_offset);
    int32_t o, g;
    for (o = 0; o < p->out_depth; o += 2) {
        const int paired = o + 1 < p->out_depth;
        const int32_t wstep = paired ? 8 : 4;
        const int8_t *w = p->weights + o * kp + g0 * wstep;
        int32_t a0 = acc[o];
        int32_t a1 = paired ? acc[o + 1] : 0;
        for (g = 0; g < ng; ++g) {
            const int32_t xv = ce_rd32(x + 4 * g);
            const int32_t x02 = ce_sxtab16(off2, xv), x13 = ce_sxtab16_ror8(off2, xv);
            const int32_t wa = ce_rd32(w + g * wstep);
            a0 = ce_smlad(ce_sxtb16(wa), x02, a0);
            a0 = ce_smlad(ce_sxtb16_ror8(wa), x13, a0);
            if (paired) {
                const int32_t wb = ce_rd32(w + g * wstep + 4);
                a1 = ce_smlad(ce_sxtb16(wb), x02, a1);
                a1 = ce_smlad(ce_sxtb16_ror8(wb), x13, a1);
            }
        }
        acc[o] = a0;
        if (paired) {
            acc[o + 1] = a1;
        }
    }
}

void ce_conv2d_fc_s8(const ce_conv_params *cp, const ce_fc_params *fp, const int8_t *in, int8_t *out,
                     int32_t *scratch)
{
    const int32_t row = cp->out_w * cp->out_c;
    const int32_t nacc = (fp->out_depth + 1) & ~1;
    int32_t *acc = scratch;
    int8_t *buf = (int8_t *)(void *)(scratch + nacc);
    int16_t *conv_scratch = (int16_t *)(void *)(scratch + nacc + (((row + 3) & ~3) + 4) / 4);
    ce_conv_state st;
    int32_t o, oy;
    ce_conv_state_init(cp, conv_scratch, &st);
    for (o = 0; o < fp->out_depth; ++o) {
        acc[o] = fp->bias[o];
    }
    for (oy = 0; oy < cp->out_h; ++oy) {
        ce_conv2d_range(cp, in, buf, oy * cp->out_w, (oy + 1) * cp->out_w, &st);
        ce_fc_accumulate(fp, buf, oy * row, row, acc);
    }
    for (o = 0; o < fp->out_depth; ++o) {
        out[o] = ce_requant(acc[o], fp->mult[o], fp->shift[o], fp->out_offset, fp->act_min, fp->act_max);
    }
}

/* ---- DEPTHWISE_CONV_2D ------------------------------------------------------------------------ */
/* Row by row. In place (p->inplace: out == in, stride 1, same size): each output row is computed into a
 * temporary row, the input row is saved into a ring of pad_t rows (still needed by the next output rows),
 * then the output row overwrites it. scratch = [temp row][ring]. */

static inline const int8_t *ce_dw_row(const ce_conv_params *p, const int8_t *in, const int8_t *ring, int32_t iy,
                                      int32_t oy, int32_t row_bytes)
{
    if (p->inplace && iy < oy) {
        return ring + (iy % p->pad_t) * row_bytes;
    }
    return in + iy * row_bytes;
}

/* one depthwise tap for 4 channels: a0..a3 += (x + offset) * w */
#define CE_DW_TAP(src, w, xo, wo)                                                                               \
    do {                                                                                                        \
        const int32_t xv_ = ce_rd32((src) + (xo));                                                              \
        const int32_t wv_ = ce_rd32((w) + (wo));                                                                \
        const int32_t x02_ = ce_sxtab16(off2, xv_), x13_ = ce_sxtab16_ror8(off2, xv_);                          \
        const int32_t w02_ = ce_sxtb16(wv_), w13_ = ce_sxtb16_ror8(wv_);                                        \
        a0 = ce_smlabb(x02_, w02_, a0);                                                                         \
        a2 = ce_smlatt(x02_, w02_, a2);                                                                         \
        a1 = ce_smlabb(x13_, w13_, a1);                                                                         \
        a3 = ce_smlatt(x13_, w13_, a3);                                                                         \
    } while (0)

void ce_depthwise_s8(const ce_conv_params *p, const int8_t *in, int8_t *out, int8_t *scratch)
{
    const int32_t oc_n = p->out_c;
    const int32_t dm = p->depth_multiplier;
    const int32_t row_bytes = p->in_w * p->in_c;
    const int32_t out_row_bytes = p->out_w * oc_n;
    int8_t *tmp = scratch;
    int8_t *ring = scratch + out_row_bytes;
    const int32_t out_off = p->out_offset, act_min = p->act_min, act_max = p->act_max;
    const int32_t wrow = p->k_w * oc_n;
    const int32_t off2 = ce_pack16(p->in_offset, p->in_offset);
    int32_t oy, ox, ky, kx, oc;
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_t;
        const int32_t ky0 = iy0 < 0 ? (-iy0 + p->dil_h - 1) / p->dil_h : 0;
        int32_t ky1 = p->k_h;
        int8_t *dst_row = p->inplace ? tmp : out + oy * out_row_bytes;
        const int8_t *rows[16];
        while (ky1 > ky0 && iy0 + (ky1 - 1) * p->dil_h >= p->in_h) {
            --ky1;
        }
        for (ky = ky0; ky < ky1; ++ky) {
            rows[ky] = ce_dw_row(p, in, ring, iy0 + ky * p->dil_h, oy, row_bytes);
        }
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_l;
            const int32_t kx0 = ix0 < 0 ? (-ix0 + p->dil_w - 1) / p->dil_w : 0;
            int32_t kx1 = p->k_w;
            int8_t *dst = dst_row + ox * oc_n;
            while (kx1 > kx0 && ix0 + (kx1 - 1) * p->dil_w >= p->in_w) {
                --kx1;
            }
            oc = 0;
            if (dm == 1) {
                const int32_t xstep = p->dil_w * p->in_c;
                const int32_t ntaps_x = kx1 - kx0;
                const int32_t xoff = (ix0 + kx0 * p->dil_w) * p->in_c;
                const int8_t *wbase = p->weights + kx0 * oc_n;
                for (; oc + 3 < oc_n; oc += 4) {
                    int32_t a0 = p->bias[oc], a1 = p->bias[oc + 1], a2 = p->bias[oc + 2], a3 = p->bias[oc + 3];
                    for (ky = ky0; ky < ky1; ++ky) {
                        const int8_t *src = rows[ky] + xoff + oc;
                        const int8_t *w = wbase + ky * wrow + oc;
                        int32_t n = ntaps_x;
                        if (n == 3) {
                            /* 3-tap rows (3x3 kernels) unrolled */
                            CE_DW_TAP(src, w, 0, 0);
                            CE_DW_TAP(src, w, xstep, oc_n);
                            CE_DW_TAP(src, w, 2 * xstep, 2 * oc_n);
                            continue;
                        }
                        while (n-- > 0) {
                            const int32_t xv = ce_rd32(src);
                            const int32_t wv = ce_rd32(w);
                            const int32_t x02 = ce_sxtab16(off2, xv), x13 = ce_sxtab16_ror8(off2, xv);
                            const int32_t w02 = ce_sxtb16(wv), w13 = ce_sxtb16_ror8(wv);
                            a0 = ce_smlabb(x02, w02, a0);
                            a2 = ce_smlatt(x02, w02, a2);
                            a1 = ce_smlabb(x13, w13, a1);
                            a3 = ce_smlatt(x13, w13, a3);
                            src += xstep;
                            w += oc_n;
                        }
                    }
                    dst[oc] = ce_requant(a0, p->mult[oc], p->shift[oc], out_off, act_min, act_max);
                    dst[oc + 1] = ce_requant(a1, p->mult[oc + 1], p->shift[oc + 1], out_off, act_min, act_max);
                    dst[oc + 2] = ce_requant(a2, p->mult[oc + 2], p->shift[oc + 2], out_off, act_min, act_max);
                    dst[oc + 3] = ce_requant(a3, p->mult[oc + 3], p->shift[oc + 3], out_off, act_min, act_max);
                }
            }
            for (; oc < oc_n; ++oc) {
                int32_t acc = p->bias[oc];
                const int32_t ic = oc / dm;
                for (ky = ky0; ky < ky1; ++ky) {
                    for (kx = kx0; kx < kx1; ++kx) {
                        const int32_t ix = ix0 + kx * p->dil_w;
                        acc += (rows[ky][ix * p->in_c + ic] + p->in_offset) * p->weights[(ky * p->k_w + kx) * oc_n + oc];
                    }
                }
                dst[oc] = ce_requant(acc, p->mult[oc], p->shift[oc], p->out_offset, p->act_min, p->act_max);
            }
        }
        if (p->inplace) {
            if (p->pad_t > 0) {
                ce_copy_s8(in + oy * row_bytes, ring + (oy % p->pad_t) * row_bytes, row_bytes);
            }
            ce_copy_s8(tmp, out + oy * out_row_bytes, out_row_bytes);
        }
    }
}

/* ---- DEPTHWISE_CONV_2D 3x3, stride 1 or 2, depth multiplier 1, channels a multiple of 4 ------------ */
/* Input rows are staged channel-major as int16 with the input offset added (padding = 0), in a ring of three
 * rows: slot[c][pw], pw = ce_dw3_pw (out_w + 3 at stride 1), input column ix at pw index ix + pad_l. A word
 * read at pw index i then holds the pair (x[i], x[i+1]) of one channel, so one SMLAD applies two taps of a kernel
 * row. Weights w[ky][kx] (int8,
 * 9 bytes per channel): 8 bytes per channel, w00 w10 w01 w11 w20 w02 w21 w12, so that SXTB16 gives the int16 pairs
 * (w00, w01), (w10, w11), (w20, w21) and (w02, w12), then w22 of every channel. Two output pixels per step share
 * their loads:
 * pixel i = SMLAD((x[i], x[i+1]), (w0, w1)) + x[i+2] * w2, pixel i+1 = SMLAD((x[i+1], x[i+2]), (w0, w1)) +
 * x[i+3] * w2. In place (out == in) is safe: every input row is staged before the output row that overwrites it. */

/* staged row length (int16 values per channel): the pair reads of the last output reach index (out_w-1)*stride + 3 */
static inline int32_t ce_dw3_pw(const ce_conv_params *p) { return (p->out_w - 1) * p->stride_w + 4; }

static void ce_dw3_stage(const ce_conv_params *p, const int8_t *in, int16_t *slot, int32_t pw, int32_t iy)
{
    const int32_t ch = p->in_c;
    int32_t x, c;
    if (iy < 0 || iy >= p->in_h) {
        memset(slot, 0, (size_t)(2 * ch * pw));
        return;
    }
    {
        const int32_t off2 = ce_pack16(p->in_offset, p->in_offset);
        const int8_t *src = in + iy * p->in_w * ch;
        for (x = 0; x + 1 < p->in_w; x += 2) {
            /* two pixels: one word (x, x + 1) per channel row */
            int16_t *dst = slot + x + p->pad_l;
            for (c = 0; c < ch; c += 4) {
                const int32_t va = ce_rd32(src), vb = ce_rd32(src + ch);
                const int32_t a02 = ce_sxtab16(off2, va), a13 = ce_sxtab16_ror8(off2, va);
                const int32_t b02 = ce_sxtab16(off2, vb), b13 = ce_sxtab16_ror8(off2, vb);
                src += 4;
                ce_wr32(dst, ce_pack_lo(a02, b02));
                ce_wr32(dst + pw, ce_pack_lo(a13, b13));
                ce_wr32(dst + 2 * pw, ce_pack_hi(a02, b02));
                ce_wr32(dst + 3 * pw, ce_pack_hi(a13, b13));
                dst += 4 * pw;
            }
            src += ch;
        }
        for (; x < p->in_w; ++x) {
            int16_t *dst = slot + x + p->pad_l;
            for (c = 0; c < ch; c += 4) {
                const int32_t v = ce_rd32(src);
                const int32_t x02 = ce_sxtab16(off2, v), x13 = ce_sxtab16_ror8(off2, v);
                src += 4;
                dst[0] = (int16_t)x02;
                dst[pw] = (int16_t)x13;
                dst[2 * pw] = (int16_t)(x02 >> 16);
                dst[3 * pw] = (int16_t)(x13 >> 16);
                dst += 4 * pw;
            }
        }
    }
}

static inline int32_t ce_w4_lo(int32_t v);
static inline int32_t ce_w4_hi(int32_t v);
static inline int32_t ce_w4_exact(int32_t t);

/* The output stage and weights of the stride-1 3x3 depthwise kernels' assembly on doubled accumulators (weights
 * and bias doubled; ce_fold2): used when the activation range is all of int8, every shift in [-23, -2] and
 * |bias| <= 2^29 (then |2 acc| < 2^31: 9 taps of |w (x + offset)| <= 128 * 255). */
typedef struct {
    int32_t k[5];            /* 2 x {k01_0, k01_1, k01_2, k2_01, k2_2} (as in ce_dw3p_channel, doubled) */
    int32_t mult, khi, rs;   /* output stage on the doubled accumulators: mult, 2 khi, rs + 1 (ce_fold2) */
    int32_t bias;            /* 2 x bias */
    int32_t pwb, ch, orow;   /* bytes per plane row, output bytes per pixel and per output row */
    int32_t tile_bytes, nrp; /* 4 * ntiles: plane bytes per row of tiles; rows of tiles */
    int32_t q_step, o_step;  /* 2 * pwb - tile_bytes; 2 * orow - (2 * ntiles + odd) * ch */
    int32_t odd;             /* out_w odd: the last column of each row of tiles (column A of a tile) too */
} ce_dw3p_tile_args;
/* the generator reserves this many bytes per channel for the row kernel's table (cgen.ops.conv.DW3_ROW_ARGS_BYTES) */
typedef char ce_dw3p_tile_args_is_68_bytes[sizeof(ce_dw3p_tile_args) == 68 ? 1 : -1];

#define CE_DW3_BIAS_MAX (1 << 29)

static void ce_dw3_args(ce_dw3p_tile_args *a, const int32_t k[5], int32_t bias, int32_t mult, int32_t khi,
                        int32_t shift)
{
    int32_t i;
    for (i = 0; i < 5; ++i) {
        a->k[i] = ce_dbl16(k[i]);
    }
    a->mult = mult;
    a->khi = 2 * khi;
    a->rs = -shift;
    a->bias = 2 * bias;
}

/* stride 1: one output row of one channel, columns 0 .. 2 * npairs - 1 (a->tile_bytes = 4 * npairs), from the
 * channel's three staged rows: two columns per step, (x0, x1) by SMLAD, (x1, x2) by PKHTB + SMLADX. */
#if defined(CE_ARM_DSP) && defined(__thumb2__) && !defined(CE_NO_ASM)
#define CE_ASM_RQ(A)                                                                                            \
    "add r12, r7, " A ", asr #31\n\t"                                                                           \
    "smmlar r12, " A ", r6, r12\n\t"                                                                            \
    "asr r12, r12, r8\n\t"                                                                                      \
    "ssat r12, #8, r12\n\t"

/* r0..r2 the three rows (post-incremented), r3, r4 the accumulators, r5 bias, r6..r10 weights, then mult, khi,
 * rs, output, ch; frame [sp] weights, [sp+20] mult, khi, rs, [sp+32] output, [sp+36] ch, [sp+40] end of row 0 */
void ce_dw3_row2(const int16_t *x0, const int16_t *x1, const int16_t *x2, int8_t *dst, const ce_dw3p_tile_args *a);

/* entry: frame from the args (weights, mult, khi, rs, then output, ch, end of row 0), r5 = bias; exit: the output
 * stage of the two accumulators r3, r4, the output pointer stepped by two pixels, the loop */
#define CE_ASM_DW3_ROW_ENTRY                                                                                    \
    "push {r4-r11, lr}\n\t"                                                                                     \
    "sub sp, sp, #44\n\t"                                                                                       \
    "ldr r12, [sp, #80]\n\t"                                                                                    \
    "ldm r12, {r4-r11}\n\t"                                                                                     \
    "stm sp, {r4-r11}\n\t"                                                                                      \
    "str r3, [sp, #32]\n\t"                                                                                     \
    "ldr r4, [r12, #40]\n\t"                                                                                    \
    "str r4, [sp, #36]\n\t"                                                                                     \
    "ldr r5, [r12, #32]\n\t"                                                                                    \
    "ldr r4, [r12, #48]\n\t"                                                                                    \
    "add r4, r0, r4\n\t"                                                                                        \
    "str r4, [sp, #40]\n"                                                                                       \
    "1:\n\t"                                                                                                    \
    "ldmia sp, {r6-r10}\n\t"
#define CE_ASM_DW3_ROW_EXIT                                                                                     \
    "add r11, sp, #20\n\t"                                                                                      \
    "ldm r11, {r6-r10}\n\t" CE_ASM_RQ("r3") "strb r12, [r9]\n\t" CE_ASM_RQ("r4") "strb r12, [r9, r10]\n\t"     \
    "add r9, r9, r10, lsl #1\n\t"                                                                               \
    "str r9, [sp, #32]\n\t"                                                                                     \
    "ldr r11, [sp, #40]\n\t"                                                                                    \
    "cmp r0, r11\n\t"                                                                                           \
    "bne 1b\n\t"                                                                                                \
    "add sp, sp, #44\n\t"                                                                                       \
    "pop {r4-r11, pc}\n\t"

__asm__(CE_ASM_BEGIN(ce_dw3_row2) CE_ASM_DW3_ROW_ENTRY
        "ldr r12, [r0, #4]\n\t"
        "ldr r11, [r0], #4\n\t"
        "smlad r3, r11, r6, r5\n\t"
        "smlabb r3, r12, r9, r3\n\t"
        "pkhtb r11, r11, r12\n\t"
        "smladx r4, r11, r6, r5\n\t"
        "smlatb r4, r12, r9, r4\n\t"
        "ldr r12, [r1, #4]\n\t"
        "ldr r11, [r1], #4\n\t"
        "smlad r3, r11, r7, r3\n\t"
        "smlabt r3, r12, r9, r3\n\t"
        "pkhtb r11, r11, r12\n\t"
        "smladx r4, r11, r7, r4\n\t"
        "smlatt r4, r12, r9, r4\n\t"
        "ldr r12, [r2, #4]\n\t"
        "ldr r11, [r2], #4\n\t"
        "smlad r3, r11, r8, r3\n\t"
        "smlabb r3, r12, r10, r3\n\t"
        "pkhtb r11, r11, r12\n\t"
        "smladx r4, r11, r8, r4\n\t"
        "smlatb r4, r12, r10, r4\n\t" CE_ASM_DW3_ROW_EXIT CE_ASM_END(ce_dw3_row2));

/* stride 2: output columns 2i, 2i + 1 read x[4i .. 4i + 4], the words (x0, x1), (x2, x3), (x4, x5); a->tile_bytes =
 * 8 * npairs */
void ce_dw3s2_row2(const int16_t *x0, const int16_t *x1, const int16_t *x2, int8_t *dst, const ce_dw3p_tile_args *a);

__asm__(CE_ASM_BEGIN(ce_dw3s2_row2) CE_ASM_DW3_ROW_ENTRY
        "ldr r12, [r0, #4]\n\t"
        "ldr lr, [r0, #8]\n\t"
        "ldr r11, [r0], #8\n\t"
        "smlad r3, r11, r6, r5\n\t"
        "smlabb r3, r12, r9, r3\n\t"
        "smlad r4, r12, r6, r5\n\t"
        "smlabb r4, lr, r9, r4\n\t"
        "ldr r12, [r1, #4]\n\t"
        "ldr lr, [r1, #8]\n\t"
        "ldr r11, [r1], #8\n\t"
        "smlad r3, r11, r7, r3\n\t"
        "smlabt r3, r12, r9, r3\n\t"
        "smlad r4, r12, r7, r4\n\t"
        "smlabt r4, lr, r9, r4\n\t"
        "ldr r12, [r2, #4]\n\t"
        "ldr lr, [r2, #8]\n\t"
        "ldr r11, [r2], #8\n\t"
        "smlad r3, r11, r8, r3\n\t"
        "smlabb r3, r12, r10, r3\n\t"
        "smlad r4, r12, r8, r4\n\t"
        "smlabb r4, lr, r10, r4\n\t" CE_ASM_DW3_ROW_EXIT CE_ASM_END(ce_dw3s2_row2));
#else
/* one kernel row's taps for the two columns: x the row at column A's first input, k01 (w0, w1), k2 w2 (low half) */
static inline void ce_dw3_taps2(const int16_t *x, int32_t k01, int32_t k2, const int s2, int32_t *a, int32_t *b)
{
    const int32_t u = ce_rd32(x), v = ce_rd32(x + 2);
    *a = ce_smlabb(v, k2, ce_smlad(u, k01, *a));
    if (s2) {
        *b = ce_smlabb(ce_rd32(x + 4), k2, ce_smlad(v, k01, *b));
    } else {
        *b = ce_smlatb(v, k2, ce_smladx(ce_pkhtb(u, v), k01, *b));
    }
}

static void ce_dw3_rows2_c(const int16_t *x0, const int16_t *x1, const int16_t *x2, int8_t *dst,
                           const ce_dw3p_tile_args *a, const int s2)
{
    const int32_t n = a->tile_bytes >> (s2 ? 3 : 2), step = s2 ? 4 : 2;
    const int32_t k2_0 = (int16_t)(uint16_t)((uint32_t)a->k[3] & 0xFFFFu);
    const int32_t k2_1 = (int16_t)(uint16_t)((uint32_t)a->k[3] >> 16);
    const int32_t k2_2 = (int16_t)(uint16_t)((uint32_t)a->k[4] & 0xFFFFu);
    int32_t i;
    for (i = 0; i < n; ++i) {
        int32_t aa = a->bias, ab = a->bias;
        ce_dw3_taps2(x0, a->k[0], k2_0, s2, &aa, &ab);
        ce_dw3_taps2(x1, a->k[1], k2_1, s2, &aa, &ab);
        ce_dw3_taps2(x2, a->k[2], k2_2, s2, &aa, &ab);
        dst[0] = (int8_t)ce_ssat8(ce_fold2(aa, a->mult, a->khi, a->rs));
        dst[a->ch] = (int8_t)ce_ssat8(ce_fold2(ab, a->mult, a->khi, a->rs));
        x0 += step;
        x1 += step;
        x2 += step;
        dst += 2 * a->ch;
    }
}

static void ce_dw3_row2(const int16_t *x0, const int16_t *x1, const int16_t *x2, int8_t *dst,
                        const ce_dw3p_tile_args *a)
{
    ce_dw3_rows2_c(x0, x1, x2, dst, a, 0);
}

static void ce_dw3s2_row2(const int16_t *x0, const int16_t *x1, const int16_t *x2, int8_t *dst,
                          const ce_dw3p_tile_args *a)
{
    ce_dw3_rows2_c(x0, x1, x2, dst, a, 1);
}
#endif

/* The row-ring kernel keeps one ce_dw3p_tile_args per channel after its three row slots (the generator adds
 * in_c * sizeof(ce_dw3p_tile_args) of scratch under the same condition) when the assembly rows apply: int8 weights,
 * the branch-free output stage, the activation range all of int8, out_w >= 2. A channel whose |bias| is above
 * CE_DW3_BIAS_MAX gets tile_bytes 0 (the C rows). */
static int ce_dw3_table_used(const ce_conv_params *p, const int w4)
{
    return !w4 && p->rq != NULL && p->act_min == -128 && p->act_max == 127 && p->out_w >= 2;
}

static void ce_dw3_table(const ce_conv_params *p, ce_dw3p_tile_args *tab)
{
    const int32_t ch = p->in_c;
    const int32_t tile_bytes = (p->stride_w == 2 ? 8 : 4) * (p->out_w >> 1);
    int32_t c;
    for (c = 0; c < ch; ++c) {
        const int32_t wa = ce_rd32(p->weights + 8 * c), wb = ce_rd32(p->weights + 8 * c + 4);
        const int32_t k[5] = {ce_sxtb16(wa), ce_sxtb16_ror8(wa), ce_sxtb16(wb), ce_sxtb16_ror8(wb),
                              p->weights[8 * ch + c]};
        const int32_t bias = p->bias[c];
        tab[c].ch = ch;
        tab[c].tile_bytes = 0;
        if (bias >= -CE_DW3_BIAS_MAX && bias <= CE_DW3_BIAS_MAX) { /* 2 * bias fits */
            ce_dw3_args(&tab[c], k, bias, p->rq[3 * c], p->rq[3 * c + 1], p->shift[c]);
            tab[c].tile_bytes = tile_bytes;
        }
    }
}

/* channel c's columns 0 .. 2 * (ow / 2) - 1 by the assembly rows when its table entry allows; returns the first
 * column left to the C rows (ow: none) */
static inline int32_t ce_dw3_row_asm(const ce_dw3p_tile_args *tab, int32_t c, const int16_t *r0, const int16_t *r1,
                                     const int16_t *r2, int8_t *dst_row, int32_t pw, int32_t ow, const int s2)
{
    if (tab == NULL || tab[c].tile_bytes == 0) {
        return 0;
    }
    if (s2) {
        ce_dw3s2_row2(r0 + c * pw, r1 + c * pw, r2 + c * pw, dst_row + c, &tab[c]);
    } else {
        ce_dw3_row2(r0 + c * pw, r1 + c * pw, r2 + c * pw, dst_row + c, &tab[c]);
    }
    return ow & ~1;
}

/* one output row of every channel from the staged rows r0..r2; fold / full as in ce_conv_pairs; w4: int4 weights
 * (ce_depthwise3x3_s8_w4's layout) */
static CE_ALWAYS_INLINE void ce_dw3_row(const ce_conv_params *p, const int16_t *r0, const int16_t *r1,
                                        const int16_t *r2, int8_t *dst_row, const ce_dw3p_tile_args *tab,
                                        const int fold, const int full, const int w4)
{
    const int32_t ch = p->in_c;
    const int32_t ow = p->out_w;
    const int32_t pw = ce_dw3_pw(p);
    const int32_t out_off = p->out_offset, act_min = p->act_min, act_max = p->act_max;
    int32_t ox, c;
    for (c = 0; c < ch; ++c) {
        const int32_t ox0 = ce_dw3_row_asm(tab, c, r0, r1, r2, dst_row, pw, ow, 0);
        if (ox0 == ow) {
            continue;
        }
        /* k01_r = (w[r][0], w[r][1]); k2_01 = (w[0][2], w[1][2]); k2_2 = w[2][2] */
        int32_t k01_0, k01_1, k01_2, k2_01, k2_2;
        if (w4) {
            const int32_t v = ce_rd32(p->weights + 4 * c);
            const int32_t lo = ce_w4_lo(v), hi = ce_w4_hi(v);
            const uint32_t b22 = (uint8_t)p->weights[4 * ch + (c >> 1)];
            k01_0 = ce_w4_exact(ce_sxtb16(lo));
            k01_1 = ce_w4_exact(ce_sxtb16_ror8(lo));
            k01_2 = ce_w4_exact(ce_sxtb16(hi));
            k2_01 = ce_w4_exact(ce_sxtb16_ror8(hi));
            k2_2 = (int32_t)((((c & 1) ? b22 >> 4 : b22) & 15u) ^ 8u) - 8;
        } else {
            const int32_t wa = ce_rd32(p->weights + 8 * c), wb = ce_rd32(p->weights + 8 * c + 4);
            k01_0 = ce_sxtb16(wa);
            k01_1 = ce_sxtb16_ror8(wa);
            k01_2 = ce_sxtb16(wb);
            k2_01 = ce_sxtb16_ror8(wb);
            k2_2 = p->weights[8 * ch + c];
        }
        const int32_t bias = p->bias[c], mult = p->mult[c], shift = p->shift[c];
        const int32_t khi = fold ? p->rq[3 * c + 1] : 0;
        const int16_t *x0 = r0 + c * pw, *x1 = r1 + c * pw, *x2 = r2 + c * pw;
        int8_t *dst = dst_row + c + ox0 * ch;
        for (ox = ox0; ox + 1 < ow; ox += 2) {
            int32_t a = bias, b = bias, v;
            v = ce_rd32(x0 + ox + 2);
            a = ce_smlad(ce_rd32(x0 + ox), k01_0, a);
            b = ce_smlad(ce_rd32(x0 + ox + 1), k01_0, b);
            a = ce_smlabb(v, k2_01, a);
            b = ce_smlatb(v, k2_01, b);
            v = ce_rd32(x1 + ox + 2);
            a = ce_smlad(ce_rd32(x1 + ox), k01_1, a);
            b = ce_smlad(ce_rd32(x1 + ox + 1), k01_1, b);
            a = ce_smlabt(v, k2_01, a);
            b = ce_smlatt(v, k2_01, b);
            v = ce_rd32(x2 + ox + 2);
            a = ce_smlad(ce_rd32(x2 + ox), k01_2, a);
            b = ce_smlad(ce_rd32(x2 + ox + 1), k01_2, b);
            a = ce_smlabb(v, k2_2, a);
            b = ce_smlatb(v, k2_2, b);
            if (fold) {
                ce_requant_pair_fold(a, b, mult, khi, shift, act_min, act_max, full, dst, dst + ch);
            } else {
                ce_requant_pair(a, b, mult, shift, out_off, act_min, act_max, dst, dst + ch);
            }
            dst += 2 * ch;
        }
        if (ox < ow) {
            int32_t a = bias;
            a = ce_smlad(ce_rd32(x0 + ox), k01_0, a);
            a = ce_smlabb(ce_rd32(x0 + ox + 2), k2_01, a);
            a = ce_smlad(ce_rd32(x1 + ox), k01_1, a);
            a = ce_smlabt(ce_rd32(x1 + ox + 2), k2_01, a);
            a = ce_smlad(ce_rd32(x2 + ox), k01_2, a);
            a = ce_smlabb(ce_rd32(x2 + ox + 2), k2_2, a);
            *dst = fold ? ce_requant_fold(a, mult, khi, shift, act_min, act_max)
                        : ce_requant(a, mult, shift, out_off, act_min, act_max);
        }
    }
}

/* stride 2: output ox reads x[2ox .. 2ox+2], i.e. the aligned words (x[2ox], x[2ox+1]) and (x[2ox+2], x[2ox+3]);
 * two outputs per step share the middle word: a = SMLAD(A, (w0, w1)) + B.lo * w2, b = SMLAD(B, (w0, w1)) + C.lo * w2 */
static CE_ALWAYS_INLINE void ce_dw3s2_row(const ce_conv_params *p, const int16_t *r0, const int16_t *r1,
                                          const int16_t *r2, int8_t *dst_row, const ce_dw3p_tile_args *tab,
                                          const int fold, const int full)
{
    const int32_t ch = p->in_c;
    const int32_t ow = p->out_w;
    const int32_t pw = ce_dw3_pw(p);
    const int32_t out_off = p->out_offset, act_min = p->act_min, act_max = p->act_max;
    int32_t ox, c;
    for (c = 0; c < ch; ++c) {
        const int32_t ox0 = ce_dw3_row_asm(tab, c, r0, r1, r2, dst_row, pw, ow, 1);
        if (ox0 == ow) {
            continue;
        }
        const int32_t wa = ce_rd32(p->weights + 8 * c), wb = ce_rd32(p->weights + 8 * c + 4);
        const int32_t k01_0 = ce_sxtb16(wa), k01_1 = ce_sxtb16_ror8(wa), k01_2 = ce_sxtb16(wb);
        const int32_t k2_01 = ce_sxtb16_ror8(wb), k2_2 = p->weights[8 * ch + c];
        const int32_t bias = p->bias[c], mult = p->mult[c], shift = p->shift[c];
        const int32_t khi = fold ? p->rq[3 * c + 1] : 0;
        const int16_t *x0 = r0 + c * pw, *x1 = r1 + c * pw, *x2 = r2 + c * pw;
        int8_t *dst = dst_row + c + ox0 * ch;
        for (ox = ox0; ox + 1 < ow; ox += 2) {
            const int32_t i = 2 * ox;
            int32_t a = bias, b = bias, v;
            v = ce_rd32(x0 + i + 2);
            a = ce_smlad(ce_rd32(x0 + i), k01_0, a);
            a = ce_smlabb(v, k2_01, a);
            b = ce_smlad(v, k01_0, b);
            b = ce_smlabb(ce_rd32(x0 + i + 4), k2_01, b);
            v = ce_rd32(x1 + i + 2);
            a = ce_smlad(ce_rd32(x1 + i), k01_1, a);
            a = ce_smlabt(v, k2_01, a);
            b = ce_smlad(v, k01_1, b);
            b = ce_smlabt(ce_rd32(x1 + i + 4), k2_01, b);
            v = ce_rd32(x2 + i + 2);
            a = ce_smlad(ce_rd32(x2 + i), k01_2, a);
            a = ce_smlabb(v, k2_2, a);
            b = ce_smlad(v, k01_2, b);
            b = ce_smlabb(ce_rd32(x2 + i + 4), k2_2, b);
            if (fold) {
                ce_requant_pair_fold(a, b, mult, khi, shift, act_min, act_max, full, dst, dst + ch);
            } else {
                ce_requant_pair(a, b, mult, shift, out_off, act_min, act_max, dst, dst + ch);
            }
            dst += 2 * ch;
        }
        if (ox < ow) {
            const int32_t i = 2 * ox;
            int32_t a = bias;
            a = ce_smlad(ce_rd32(x0 + i), k01_0, a);
            a = ce_smlabb(ce_rd32(x0 + i + 2), k2_01, a);
            a = ce_smlad(ce_rd32(x1 + i), k01_1, a);
            a = ce_smlabt(ce_rd32(x1 + i + 2), k2_01, a);
            a = ce_smlad(ce_rd32(x2 + i), k01_2, a);
            a = ce_smlabb(ce_rd32(x2 + i + 2), k2_2, a);
            *dst = fold ? ce_requant_fold(a, mult, khi, shift, act_min, act_max)
                        : ce_requant(a, mult, shift, out_off, act_min, act_max);
        }
    }
}

static CE_ALWAYS_INLINE void ce_dw3_run(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch,
                                        const int w4)
{
    const int32_t ch = p->in_c;
    const int32_t ow = p->out_w;
    const int32_t pw = ce_dw3_pw(p);
    const int32_t slot_len = ch * pw;
    const int32_t sh = p->stride_h;
    const int full = p->act_min == -128 && p->act_max == 127;
    int32_t oy, staged = 0;
    /* the assembly rows' per-channel constants, once per layer, after the three row slots (ce_dw3_table) */
    ce_dw3p_tile_args *tab = ce_dw3_table_used(p, w4) ? (ce_dw3p_tile_args *)(void *)(scratch + 3 * slot_len) : NULL;
    memset(scratch, 0, (size_t)(6 * slot_len));
    if (tab != NULL) {
        ce_dw3_table(p, tab);
    }
    for (oy = 0; oy < p->out_h; ++oy) {
        /* padded rows oy*sh .. oy*sh + 2 in slots (row % 3); in place (stride 1) row oy + 2 is staged before output
         * row oy overwrites input row oy */
        const int16_t *r0 = scratch + ((oy * sh) % 3) * slot_len;
        const int16_t *r1 = scratch + ((oy * sh + 1) % 3) * slot_len;
        const int16_t *r2 = scratch + ((oy * sh + 2) % 3) * slot_len;
        int8_t *dst_row = out + oy * ow * ch;
        for (; staged <= oy * sh + 2; ++staged) {
            ce_dw3_stage(p, in, scratch + (staged % 3) * slot_len, pw, staged - p->pad_t);
        }
        if (w4) { /* int4: stride 1 (generator), generic or branch-free output stage */
            if (p->rq == NULL) {
                ce_dw3_row(p, r0, r1, r2, dst_row, NULL, 0, 0, 1);
            } else {
                ce_dw3_row(p, r0, r1, r2, dst_row, NULL, 1, 0, 1);
            }
        } else if (p->stride_w == 2) {
            if (p->rq == NULL) {
                ce_dw3s2_row(p, r0, r1, r2, dst_row, NULL, 0, 0);
            } else if (full) {
                ce_dw3s2_row(p, r0, r1, r2, dst_row, tab, 1, 1);
            } else {
                ce_dw3s2_row(p, r0, r1, r2, dst_row, NULL, 1, 0);
            }
        } else if (p->rq == NULL) {
            ce_dw3_row(p, r0, r1, r2, dst_row, NULL, 0, 0, 0);
        } else if (full) {
            ce_dw3_row(p, r0, r1, r2, dst_row, tab, 1, 1, 0);
        } else {
            ce_dw3_row(p, r0, r1, r2, dst_row, NULL, 1, 0, 0);
        }
    }
}

void ce_depthwise3x3_s8(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch)
{
    ce_dw3_run(p, in, out, scratch, 0);
}

/* ---- DEPTHWISE_CONV_2D 3x3 by channel planes (small feature maps) ------------------------------------------ */
/* Same weights and arithmetic as ce_depthwise3x3_s8, another order: four channels at a time are staged whole as
 * int16 planes P[r][i] (input offset added, padding 0; ph = (out_h-1)*stride_h + 3 rows of pw = ce_dw3_pw values),
 * then each channel's outputs are computed with its weights and requantisation constants held for the whole
 * plane, two output rows per step (a: rows oy*sh .. +2, b: rows (oy+1)*sh .. +2; at stride 1 they share three of
 * four row loads). The generator picks this kernel when the four planes take no more scratch than the row ring.
 * In place (out == in) is safe: a group's four output channels are written after its four input channels are
 * staged, and no other channel is touched. */
static inline int32_t ce_dw3p_ph(const ce_conv_params *p) { return (p->out_h - 1) * p->stride_h + 3; }

static void ce_dw3p_stage4(const ce_conv_params *p, const int8_t *in, int32_t c, int16_t *planes, int32_t ph,
                           int32_t pw)
{
    const int32_t ch = p->in_c;
    const int32_t plane = ph * pw;
    const int32_t off2 = ce_pack16(p->in_offset, p->in_offset);
    const int32_t y1 = p->in_h < ph - p->pad_t ? p->in_h : ph - p->pad_t;
    const int32_t x1 = p->in_w < pw - p->pad_l ? p->in_w : pw - p->pad_l;
    const int32_t src_row = p->in_w * ch;
    const int8_t *src0 = in + c;
    int16_t *d0 = planes + p->pad_t * pw + p->pad_l;
    int32_t iy, ix;
    for (iy = 0; iy < y1; ++iy) {
        const int8_t *src = src0;
        int16_t *dst = d0;
        for (ix = 0; ix < x1; ++ix) {
            const int32_t v = ce_rd32(src);
            const int32_t x02 = ce_sxtab16(off2, v), x13 = ce_sxtab16_ror8(off2, v);
            src += ch;
            dst[0] = (int16_t)x02;
            dst[plane] = (int16_t)x13;
            dst[2 * plane] = (int16_t)(x02 >> 16);
            dst[3 * plane] = (int16_t)(x13 >> 16);
            ++dst;
        }
        src0 += src_row;
        d0 += pw;
    }
}

/* Stride 1, every shift in [-23, -2], activation range all of int8: the 2 x 2 output tiles of one channel plane,
 * rows 2j, 2j + 1 and columns 2i, 2i + 1 (j < nrp, i < ntiles). Per plane row the words (x0, x1) and (x2, x3):
 * column 2i takes SMLAD on (x0, x1) and x2 from the bottom half; column 2i + 1 takes (x1, x2) as one PKHTB word with
 * SMLADX and x3 from the top half; with odd set, the last column as the A column of a tile. The last row (odd
 * out_h) is left to the caller. */

#if defined(CE_ARM_DSP) && defined(__thumb2__) && !defined(CE_NO_ASM)
/* r0 plane pointer, r1 plane row bytes, r2..r5 the tile's accumulators (row a col A, row a col B, row b col A,
 * row b col B), r6..r10 the weights, r11, r12, lr scratch. Frame: [sp] weights, [sp+20] mult, khi, rs, output
 * pointer, ch, orow (one LDM), [sp+44] bias, [sp+48] end of the tile row, [sp+52] args, [sp+56] rows of tiles left. */
void ce_dw3p_tiles(const int16_t *q, int8_t *dst, const ce_dw3p_tile_args *a);


/* the plane rows of a 2 x 2 tile: loads (r11 = (x0, x1), r12 = (x2, x3)) and column A's taps (rows a: r2, b: r4) */
#define CE_DW3P_LOAD0 "ldr r11, [r0]\n\t" "ldr r12, [r0, #4]\n\t"
#define CE_DW3P_LOAD1 "ldr r11, [r0, r1]\n\t" "add r12, r0, #4\n\t" "ldr r12, [r12, r1]\n\t"
#define CE_DW3P_LOAD2 "ldr r11, [r0, r1, lsl #1]\n\t" "add r12, r0, #4\n\t" "ldr r12, [r12, r1, lsl #1]\n\t"
#define CE_DW3P_LOAD3                                                                                           \
    "add lr, r1, r1, lsl #1\n\t"                                                                                \
    "ldr r11, [r0, lr]\n\t"                                                                                     \
    "add lr, lr, #4\n\t"                                                                                        \
    "ldr r12, [r0, lr]\n\t"
#define CE_DW3P_A0 "smlad r2, r11, r6, lr\n\t" "smlabb r2, r12, r9, r2\n\t"
#define CE_DW3P_A1                                                                                              \
    "smlad r2, r11, r7, r2\n\t"                                                                                 \
    "smlabt r2, r12, r9, r2\n\t"                                                                                \
    "smlad r4, r11, r6, lr\n\t"                                                                                 \
    "smlabb r4, r12, r9, r4\n\t"
#define CE_DW3P_A2                                                                                              \
    "smlad r2, r11, r8, r2\n\t"                                                                                 \
    "smlabb r2, r12, r10, r2\n\t"                                                                               \
    "smlad r4, r11, r7, r4\n\t"                                                                                 \
    "smlabt r4, r12, r9, r4\n\t"
#define CE_DW3P_A3 "smlad r4, r11, r8, r4\n\t" "smlabb r4, r12, r10, r4\n\t"

__asm__(CE_ASM_BEGIN(ce_dw3p_tiles) "push {r4-r11, lr}\n\t"
        "sub sp, sp, #60\n\t"
        "ldm r2, {r3-r11}\n\t" /* k[5], mult, khi, rs, bias */
        "stm sp, {r3-r10}\n\t"
        "str r11, [sp, #44]\n\t"
        "str r1, [sp, #32]\n\t"
        "ldr r3, [r2, #40]\n\t"
        "str r3, [sp, #36]\n\t"
        "ldr r3, [r2, #44]\n\t"
        "str r3, [sp, #40]\n\t"
        "str r2, [sp, #52]\n\t"
        "ldr r3, [r2, #52]\n\t"
        "str r3, [sp, #56]\n\t"
        "ldr r1, [r2, #36]\n"
        "1:\n\t"
        "ldr r12, [sp, #52]\n\t"
        "ldr r12, [r12, #48]\n\t"
        "add r12, r0, r12\n\t"
        "str r12, [sp, #48]\n"
        "2:\n\t"
        "ldmia sp, {r6-r10}\n\t"
        "ldr lr, [sp, #44]\n\t"
        /* plane row 0: output row a */
        CE_DW3P_LOAD0
        CE_DW3P_A0
        "pkhtb r11, r11, r12\n\t"
        "smladx r3, r11, r6, lr\n\t"
        "smlatb r3, r12, r9, r3\n\t"
        /* plane row 1: a (weights row 1), b (weights row 0) */
        CE_DW3P_LOAD1
        CE_DW3P_A1
        "pkhtb r11, r11, r12\n\t"
        "smladx r3, r11, r7, r3\n\t"
        "smlatt r3, r12, r9, r3\n\t"
        "smladx r5, r11, r6, lr\n\t"
        "smlatb r5, r12, r9, r5\n\t"
        /* plane row 2: a (weights row 2), b (weights row 1) */
        CE_DW3P_LOAD2
        CE_DW3P_A2
        "pkhtb r11, r11, r12\n\t"
        "smladx r3, r11, r8, r3\n\t"
        "smlatb r3, r12, r10, r3\n\t"
        "smladx r5, r11, r7, r5\n\t"
        "smlatt r5, r12, r9, r5\n\t"
        /* plane row 3: b (weights row 2) */
        CE_DW3P_LOAD3
        CE_DW3P_A3
        "pkhtb r11, r11, r12\n\t"
        "smladx r5, r11, r8, r5\n\t"
        "smlatb r5, r12, r10, r5\n\t"
        /* output stage: r6 mult, r7 khi, r8 rs, r9 output, r10 ch, lr orow */
        "add r11, sp, #20\n\t"
        "ldm r11, {r6-r10, lr}\n\t"
        CE_ASM_RQ("r2") "strb r12, [r9]\n\t"
        CE_ASM_RQ("r3") "strb r12, [r9, r10]\n\t"
        "add lr, r9, lr\n\t"
        CE_ASM_RQ("r4") "strb r12, [lr]\n\t"
        CE_ASM_RQ("r5") "strb r12, [lr, r10]\n\t"
        "add r9, r9, r10, lsl #1\n\t"
        "str r9, [sp, #32]\n\t"
        "add r0, r0, #4\n\t"
        "ldr r11, [sp, #48]\n\t"
        "cmp r0, r11\n\t"
        "bne 2b\n\t"
        /* odd out_w: the last column (rows a, b) */
        "ldr r12, [sp, #52]\n\t"
        "ldr r11, [r12, #64]\n\t"
        "cmp r11, #0\n\t"
        "beq 3f\n\t"
        "ldmia sp, {r6-r10}\n\t"
        "ldr lr, [sp, #44]\n\t"
        CE_DW3P_LOAD0
        CE_DW3P_A0
        CE_DW3P_LOAD1
        CE_DW3P_A1
        CE_DW3P_LOAD2
        CE_DW3P_A2
        CE_DW3P_LOAD3
        CE_DW3P_A3
        "add r11, sp, #20\n\t"
        "ldm r11, {r6-r10, lr}\n\t"
        CE_ASM_RQ("r2") "strb r12, [r9]\n\t"
        "add lr, r9, lr\n\t"
        CE_ASM_RQ("r4") "strb r12, [lr]\n\t"
        "add r9, r9, r10\n\t"
        "str r9, [sp, #32]\n"
        "3:\n\t"
        /* next row of tiles */
        "ldr r12, [sp, #52]\n\t"
        "ldr r11, [r12, #56]\n\t"
        "add r0, r0, r11\n\t"
        "ldr r11, [r12, #60]\n\t"
        "ldr r9, [sp, #32]\n\t"
        "add r9, r9, r11\n\t"
        "str r9, [sp, #32]\n\t"
        "ldr r11, [sp, #56]\n\t"
        "subs r11, r11, #1\n\t"
        "str r11, [sp, #56]\n\t"
        "bne 1b\n\t"
        "add sp, sp, #60\n\t"
        "pop {r4-r11, pc}\n\t" CE_ASM_END(ce_dw3p_tiles));
#else
static void ce_dw3p_tiles(const int16_t *q, int8_t *dst, const ce_dw3p_tile_args *a)
{
    const int32_t pw = a->pwb >> 1, ntiles = a->tile_bytes >> 2;
    const int32_t k01_0 = a->k[0], k01_1 = a->k[1], k01_2 = a->k[2], k2_01 = a->k[3], k2_2 = a->k[4];
    int32_t j, i, r, t[4];
    for (j = 0; j < a->nrp; ++j) {
        for (i = 0; i < ntiles; ++i) {
            const int16_t *q1 = q + pw, *q2 = q1 + pw, *q3 = q2 + pw;
            const int32_t u0 = ce_rd32(q), v0 = ce_rd32(q + 2), u1 = ce_rd32(q1), v1 = ce_rd32(q1 + 2);
            const int32_t u2 = ce_rd32(q2), v2 = ce_rd32(q2 + 2), u3 = ce_rd32(q3), v3 = ce_rd32(q3 + 2);
            const int32_t d0 = ce_pkhtb(u0, v0), d1 = ce_pkhtb(u1, v1);
            const int32_t d2 = ce_pkhtb(u2, v2), d3 = ce_pkhtb(u3, v3);
            t[0] = ce_smlabb(v2, k2_2, ce_smlad(u2, k01_2, ce_smlabt(v1, k2_01, ce_smlad(u1, k01_1,
                   ce_smlabb(v0, k2_01, ce_smlad(u0, k01_0, a->bias))))));
            t[1] = ce_smlatb(v2, k2_2, ce_smladx(d2, k01_2, ce_smlatt(v1, k2_01, ce_smladx(d1, k01_1,
                   ce_smlatb(v0, k2_01, ce_smladx(d0, k01_0, a->bias))))));
            t[2] = ce_smlabb(v3, k2_2, ce_smlad(u3, k01_2, ce_smlabt(v2, k2_01, ce_smlad(u2, k01_1,
                   ce_smlabb(v1, k2_01, ce_smlad(u1, k01_0, a->bias))))));
            t[3] = ce_smlatb(v3, k2_2, ce_smladx(d3, k01_2, ce_smlatt(v2, k2_01, ce_smladx(d2, k01_1,
                   ce_smlatb(v1, k2_01, ce_smladx(d1, k01_0, a->bias))))));
            for (r = 0; r < 4; ++r) {
                dst[(r & 1) * a->ch + (r >> 1) * a->orow] = (int8_t)ce_ssat8(ce_fold2(t[r], a->mult, a->khi, a->rs));
            }
            q += 2;
            dst += 2 * a->ch;
        }
        if (a->odd) {
            const int16_t *q1 = q + pw, *q2 = q1 + pw, *q3 = q2 + pw;
            const int32_t u1 = ce_rd32(q1), v1 = ce_rd32(q1 + 2), u2 = ce_rd32(q2), v2 = ce_rd32(q2 + 2);
            t[0] = ce_smlabb(v2, k2_2, ce_smlad(u2, k01_2, ce_smlabt(v1, k2_01, ce_smlad(u1, k01_1,
                   ce_smlabb(ce_rd32(q + 2), k2_01, ce_smlad(ce_rd32(q), k01_0, a->bias))))));
            t[2] = ce_smlabb(ce_rd32(q3 + 2), k2_2, ce_smlad(ce_rd32(q3), k01_2, ce_smlabt(v2, k2_01,
                   ce_smlad(u2, k01_1, ce_smlabb(v1, k2_01, ce_smlad(u1, k01_0, a->bias))))));
            dst[0] = (int8_t)ce_ssat8(ce_fold2(t[0], a->mult, a->khi, a->rs));
            dst[a->orow] = (int8_t)ce_ssat8(ce_fold2(t[2], a->mult, a->khi, a->rs));
            dst += a->ch;
        }
        q += a->q_step >> 1;
        dst += a->o_step;
    }
}
#endif

static CE_ALWAYS_INLINE void ce_dw3p_channel(const ce_conv_params *p, const int16_t *P, int32_t c, int8_t *out,
                                             const int fold, const int full, const int s2)
{
    const int32_t ch = p->in_c, ow = p->out_w, oh = p->out_h;
    const int32_t pw = ce_dw3_pw(p);
    const int32_t sw = s2 ? 2 : 1, rstep = (s2 ? 2 : 1) * pw; /* input values per output column / row */
    const int32_t orow = ow * ch;
    const int32_t out_off = p->out_offset, act_min = p->act_min, act_max = p->act_max;
    const int32_t wa = ce_rd32(p->weights + 8 * c), wb = ce_rd32(p->weights + 8 * c + 4);
    const int32_t k01_0 = ce_sxtb16(wa), k01_1 = ce_sxtb16_ror8(wa), k01_2 = ce_sxtb16(wb);
    const int32_t k2_01 = ce_sxtb16_ror8(wb), k2_2 = p->weights[8 * ch + c];
    const int32_t bias = p->bias[c], mult = p->mult[c], shift = p->shift[c];
    const int32_t khi = fold ? p->rq[3 * c + 1] : 0;
    int32_t oy = 0, ox;
    if (!s2 && fold && full && oh >= 2 && ow >= 2 && bias >= -CE_DW3_BIAS_MAX && bias <= CE_DW3_BIAS_MAX) {
        /* the 2 x 2 tiles (doubled accumulators), the last column (odd out_w) with them; the last row (odd
         * out_h) after the loop */
        const int32_t k[5] = {k01_0, k01_1, k01_2, k2_01, k2_2};
        ce_dw3p_tile_args a;
        ce_dw3_args(&a, k, bias, mult, khi, shift);
        a.pwb = 2 * pw;
        a.ch = ch;
        a.orow = orow;
        a.tile_bytes = 4 * (ow >> 1);
        a.nrp = oh >> 1;
        a.q_step = 2 * a.pwb - a.tile_bytes;
        a.o_step = 2 * orow - ch * ow;
        a.odd = ow & 1;
        ce_dw3p_tiles(P, out + c, &a);
        oy = oh & ~1;
    }
    for (; oy + 1 < oh; oy += 2) {
        const int16_t *q = P + oy * rstep;
        int8_t *dst = out + oy * orow + c;
        for (ox = 0; ox < ow; ++ox) {
            int32_t a = bias, b = bias;
            const int16_t *q1 = q + pw, *q2 = q + 2 * pw;
            a = ce_smlad(ce_rd32(q), k01_0, a);
            a = ce_smlabb(q[2], k2_01, a);
            if (s2) {
                const int16_t *q3 = q2 + pw, *q4 = q3 + pw;
                a = ce_smlad(ce_rd32(q1), k01_1, a);
                a = ce_smlabt(q1[2], k2_01, a);
                a = ce_smlad(ce_rd32(q2), k01_2, a);
                a = ce_smlabb(q2[2], k2_2, a);
                b = ce_smlad(ce_rd32(q2), k01_0, b);
                b = ce_smlabb(q2[2], k2_01, b);
                b = ce_smlad(ce_rd32(q3), k01_1, b);
                b = ce_smlabt(q3[2], k2_01, b);
                b = ce_smlad(ce_rd32(q4), k01_2, b);
                b = ce_smlabb(q4[2], k2_2, b);
            } else {
                const int32_t w1 = ce_rd32(q1), w2 = ce_rd32(q2);
                const int32_t h1 = q1[2], h2 = q2[2];
                const int16_t *q3 = q2 + pw;
                a = ce_smlad(w1, k01_1, a);
                a = ce_smlabt(h1, k2_01, a);
                a = ce_smlad(w2, k01_2, a);
                a = ce_smlabb(h2, k2_2, a);
                b = ce_smlad(w1, k01_0, b);
                b = ce_smlabb(h1, k2_01, b);
                b = ce_smlad(w2, k01_1, b);
                b = ce_smlabt(h2, k2_01, b);
                b = ce_smlad(ce_rd32(q3), k01_2, b);
                b = ce_smlabb(q3[2], k2_2, b);
            }
            if (fold) {
                ce_requant_pair_fold(a, b, mult, khi, shift, act_min, act_max, full, dst, dst + orow);
            } else {
                ce_requant_pair(a, b, mult, shift, out_off, act_min, act_max, dst, dst + orow);
            }
            q += sw;
            dst += ch;
        }
    }
    if (oy < oh) {
        const int16_t *q = P + oy * rstep;
        int8_t *dst = out + oy * orow + c;
        ox = 0;
        if (!s2 && fold && full) {
            /* two columns per step, as in ce_dw3p_tiles */
            const int32_t rs = -shift - 1;
            for (; ox + 1 < ow; ox += 2) {
                const int16_t *q1 = q + pw, *q2 = q1 + pw;
                const int32_t u0 = ce_rd32(q), v0 = ce_rd32(q + 2), u1 = ce_rd32(q1), v1 = ce_rd32(q1 + 2);
                const int32_t u2 = ce_rd32(q2), v2 = ce_rd32(q2 + 2);
                const int32_t aa = ce_smlabb(v2, k2_2, ce_smlad(u2, k01_2, ce_smlabt(v1, k2_01,
                                   ce_smlad(u1, k01_1, ce_smlabb(v0, k2_01, ce_smlad(u0, k01_0, bias))))));
                const int32_t ab = ce_smlatb(v2, k2_2, ce_smladx(ce_pkhtb(u2, v2), k01_2, ce_smlatt(v1, k2_01,
                                   ce_smladx(ce_pkhtb(u1, v1), k01_1, ce_smlatb(v0, k2_01,
                                   ce_smladx(ce_pkhtb(u0, v0), k01_0, bias))))));
                dst[0] = (int8_t)ce_ssat8(ce_fold_rs(aa, mult, khi, rs));
                dst[ch] = (int8_t)ce_ssat8(ce_fold_rs(ab, mult, khi, rs));
                q += 2;
                dst += 2 * ch;
            }
        }
        for (; ox < ow; ++ox) {
            int32_t a = bias;
            a = ce_smlad(ce_rd32(q), k01_0, a);
            a = ce_smlabb(q[2], k2_01, a);
            a = ce_smlad(ce_rd32(q + pw), k01_1, a);
            a = ce_smlabt(q[pw + 2], k2_01, a);
            a = ce_smlad(ce_rd32(q + 2 * pw), k01_2, a);
            a = ce_smlabb(q[2 * pw + 2], k2_2, a);
            *dst = fold ? ce_requant_fold(a, mult, khi, shift, act_min, act_max)
                        : ce_requant(a, mult, shift, out_off, act_min, act_max);
            q += sw;
            dst += ch;
        }
    }
}

static CE_ALWAYS_INLINE void ce_dw3p_run(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch,
                                         const int fold, const int full, const int s2)
{
    const int32_t ph = ce_dw3p_ph(p), pw = ce_dw3_pw(p);
    const int32_t plane = ph * pw;
    int32_t c, j;
    memset(scratch, 0, (size_t)(8 * plane)); /* the padding; the interior is overwritten by every group */
    for (c = 0; c < p->in_c; c += 4) {
        ce_dw3p_stage4(p, in, c, scratch, ph, pw);
        for (j = 0; j < 4; ++j) {
            ce_dw3p_channel(p, scratch + j * plane, c + j, out, fold, full, s2);
        }
    }
}

void ce_depthwise3x3_plane_s8(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch)
{
    const int full = p->act_min == -128 && p->act_max == 127;
    if (p->stride_w == 2) {
        if (p->rq == NULL) {
            ce_dw3p_run(p, in, out, scratch, 0, 0, 1);
        } else if (full) {
            ce_dw3p_run(p, in, out, scratch, 1, 1, 1);
        } else {
            ce_dw3p_run(p, in, out, scratch, 1, 0, 1);
        }
    } else if (p->rq == NULL) {
        ce_dw3p_run(p, in, out, scratch, 0, 0, 0);
    } else if (full) {
        ce_dw3p_run(p, in, out, scratch, 1, 1, 0);
    } else {
        ce_dw3p_run(p, in, out, scratch, 1, 0, 0);
    }
}

/* ---- FULLY_CONNECTED -------------------------------------------------------------------------- */
/* Weights laid out like CONV_2D's (rows padded to in_depth rounded up to 4, pair-interleaved). */

void ce_fully_connected_s8(const ce_fc_params *p, const int8_t *in, int8_t *out)
{
    const int32_t k = p->in_depth;
    const int32_t kp = (k + 3) & ~3;
    const int32_t full = k >> 2;
    const int32_t off2 = ce_pack16(p->in_offset, p->in_offset);
    int32_t b, o, g, r;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = in + b * k;
        int8_t *y = out + b * p->out_depth;
        for (o = 0; o < p->out_depth; o += 2) {
            const int paired = o + 1 < p->out_depth;
            const int8_t *w = p->weights + o * kp;
            const int32_t wstep = paired ? 8 : 4;
            int32_t a0 = p->bias[o];
            int32_t a1 = paired ? p->bias[o + 1] : 0;
            for (g = 0; g < full; ++g) {
                const int32_t xv = ce_rd32(x + 4 * g);
                const int32_t x02 = ce_sxtab16(off2, xv), x13 = ce_sxtab16_ror8(off2, xv);
                const int32_t wa = ce_rd32(w + g * wstep);
                a0 = ce_smlad(ce_sxtb16(wa), x02, a0);
                a0 = ce_smlad(ce_sxtb16_ror8(wa), x13, a0);
                if (paired) {
                    const int32_t wb = ce_rd32(w + g * wstep + 4);
                    a1 = ce_smlad(ce_sxtb16(wb), x02, a1);
                    a1 = ce_smlad(ce_sxtb16_ror8(wb), x13, a1);
                }
            }
            for (r = 0; r < (k & 3); ++r) {
                const int32_t xv = x[4 * full + r] + p->in_offset;
                a0 += xv * w[full * wstep + r];
                if (paired) {
                    a1 += xv * w[full * wstep + 4 + r];
                }
            }
            y[o] = ce_requant(a0, p->mult[o], p->shift[o], p->out_offset, p->act_min, p->act_max);
            if (paired) {
                y[o + 1] = ce_requant(a1, p->mult[o + 1], p->shift[o + 1], p->out_offset, p->act_min, p->act_max);
            }
        }
    }
}

/* ---- int4 weights (packed two per byte) -------------------------------------------------------- */
/* Weights of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED may be int4 (values in [-8, 7], zero point 0), stored
 * packed in flash and unpacked in registers as they are used: no unpacking scratch.
 *
 * Convolution / fully connected rows: the int8 row layout (padded rows, pairs interleaved) with two groups of 4
 * values in one word: byte i of word j = (row[8j + 4 + i] << 4) | (row[8j + i] & 15), so the low nibbles hold
 * group 2j and the high nibbles group 2j+1 (rows padded to a multiple of 8 values). Pairs of rows are interleaved by
 * words (row 2p word j at byte 8j, row 2p+1 word j at 8j + 4). One AND with 0xF0F0F0F0 (after a left shift by 4 for
 * the low nibbles) gives each group as bytes of 16 x value, which SXTB16 extends into the int16 pairs that meet the
 * unchanged int16 im2col column: the dot products run on 16 x the weights and the sum is divided by 16 (exact, an
 * arithmetic shift) before the bias is added. |16 w (x + offset)| <= 128 x 255, so a run of CE_W4_CHUNK words
 * (32768 products) cannot overflow int32; longer rows are summed chunk by chunk. */

#define CE_W4_MASK 0xF0F0F0F0u
#define CE_W4_CHUNK 4096

static inline int32_t ce_w4_lo(int32_t v) { return (int32_t)(((uint32_t)v << 4) & CE_W4_MASK); }
static inline int32_t ce_w4_hi(int32_t v) { return (int32_t)((uint32_t)v & CE_W4_MASK); }

/* nibble r (0..7) of the 4-byte word at w (byte r & 3, high nibble for r >= 4), sign-extended */
static inline int32_t ce_w4_nibble(const int8_t *w, int32_t r)
{
    const uint32_t b = (uint8_t)w[r & 3];
    const uint32_t n = (r & 4 ? b >> 4 : b) & 15u;
    return (int32_t)(n ^ 8u) - 8;
}

/* (16 a, 16 b) int16 pair -> (a, b) */
static inline int32_t ce_w4_exact(int32_t t)
{
    return ce_pack16((int32_t)(int16_t)(uint16_t)((uint32_t)t & 0xFFFFu) >> 4, t >> 20);
}

/* two packed rows (word-interleaved) x two interleaved columns, `words` words (8 values each, >= 1):
 * acc += 16 x {row a col A, row a col B, row b col A, row b col B} */
#if defined(CE_ARM_DSP) && defined(__OPTIMIZE__) && !defined(CE_NO_ASM)
#define CE_DOT4_HALF(acc0, acc1)                                                                                \
    "sxtb16 %[wv], %[t]\n\t"                                                                                    \
    "smlad %[" acc0 "], %[wv], %[x0], %[" acc0 "]\n\t"                                                          \
    "smlad %[" acc1 "], %[wv], %[x2], %[" acc1 "]\n\t"                                                          \
    "sxtb16 %[t], %[t], ror #8\n\t"                                                                             \
    "smlad %[" acc0 "], %[t], %[x1], %[" acc0 "]\n\t"                                                           \
    "smlad %[" acc1 "], %[t], %[x3], %[" acc1 "]\n\t"

static CE_NOINLINE void ce_dot4_2x2(const int8_t *w, const int32_t *c, int32_t words, int32_t *acc)
{
    register int32_t x0 __asm__("r3");
    register int32_t x1 __asm__("r4");
    register int32_t x2 __asm__("r5");
    register int32_t x3 __asm__("r6");
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
    int32_t wv, t;
    int32_t n = words;
    __asm__ volatile("1:\n\t"
                     "ldmia %[c]!, {%[x0], %[x1], %[x2], %[x3]}\n\t" /* group 2j: low nibbles */
                     "ldr %[wv], [%[w]]\n\t"
                     "lsl %[t], %[wv], #4\n\t"
                     "and %[t], %[t], #0xF0F0F0F0\n\t"
                     CE_DOT4_HALF("a0", "a1")
                     "ldr %[wv], [%[w], #4]\n\t"
                     "lsl %[t], %[wv], #4\n\t"
                     "and %[t], %[t], #0xF0F0F0F0\n\t"
                     CE_DOT4_HALF("b0", "b1")
                     "ldmia %[c]!, {%[x0], %[x1], %[x2], %[x3]}\n\t" /* group 2j + 1: high nibbles */
                     "ldr %[wv], [%[w]], #8\n\t"
                     "and %[t], %[wv], #0xF0F0F0F0\n\t"
                     CE_DOT4_HALF("a0", "a1")
                     "ldr %[wv], [%[w], #-4]\n\t"
                     "and %[t], %[wv], #0xF0F0F0F0\n\t"
                     CE_DOT4_HALF("b0", "b1")
                     "subs %[n], %[n], #1\n\t"
                     "bne 1b\n\t"
                     : [w] "+r"(w), [c] "+r"(c), [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1),
                       [x0] "=&r"(x0), [x1] "=&r"(x1), [x2] "=&r"(x2), [x3] "=&r"(x3), [wv] "=&r"(wv),
                       [t] "=&r"(t), [n] "+r"(n)
                     :
                     : "cc", "memory");
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}
#else
static inline void ce_dot4_2x2(const int8_t *w, const int32_t *c, int32_t words, int32_t *acc)
{
    int32_t s0a = acc[0], s0b = acc[1], s1a = acc[2], s1b = acc[3];
    while (words-- > 0) {
        const int32_t wa = ce_rd32(w), wb = ce_rd32(w + 4);
        int32_t t, u;
        w += 8;
        t = ce_w4_lo(wa);
        u = ce_sxtb16(t);
        s0a = ce_smlad(u, c[0], s0a);
        s0b = ce_smlad(u, c[2], s0b);
        u = ce_sxtb16_ror8(t);
        s0a = ce_smlad(u, c[1], s0a);
        s0b = ce_smlad(u, c[3], s0b);
        t = ce_w4_lo(wb);
        u = ce_sxtb16(t);
        s1a = ce_smlad(u, c[0], s1a);
        s1b = ce_smlad(u, c[2], s1b);
        u = ce_sxtb16_ror8(t);
        s1a = ce_smlad(u, c[1], s1a);
        s1b = ce_smlad(u, c[3], s1b);
        t = ce_w4_hi(wa);
        u = ce_sxtb16(t);
        s0a = ce_smlad(u, c[4], s0a);
        s0b = ce_smlad(u, c[6], s0b);
        u = ce_sxtb16_ror8(t);
        s0a = ce_smlad(u, c[5], s0a);
        s0b = ce_smlad(u, c[7], s0b);
        t = ce_w4_hi(wb);
        u = ce_sxtb16(t);
        s1a = ce_smlad(u, c[4], s1a);
        s1b = ce_smlad(u, c[6], s1b);
        u = ce_sxtb16_ror8(t);
        s1a = ce_smlad(u, c[5], s1a);
        s1b = ce_smlad(u, c[7], s1b);
        c += 8;
    }
    acc[0] = s0a;
    acc[1] = s0b;
    acc[2] = s1a;
    acc[3] = s1b;
}
#endif

/* one packed row (wstride bytes per word) x one column (cstride words per group of 4): 16 x the dot product */
static inline int32_t ce_dot4_1x1(const int8_t *w, int32_t wstride, const int32_t *c, int32_t cstride, int32_t words)
{
    int32_t acc = 0;
    while (words-- > 0) {
        const int32_t v = ce_rd32(w);
        const int32_t lo = ce_w4_lo(v), hi = ce_w4_hi(v);
        acc = ce_smlad(ce_sxtb16(lo), c[0], acc);
        acc = ce_smlad(ce_sxtb16_ror8(lo), c[1], acc);
        acc = ce_smlad(ce_sxtb16(hi), c[cstride], acc);
        acc = ce_smlad(ce_sxtb16_ror8(hi), c[cstride + 1], acc);
        w += wstride;
        c += 2 * cstride;
    }
    return acc;
}

/* bias + dot product of one packed row with one column, chunk by chunk */
static inline int32_t ce_dot4_1x1_full(const int8_t *w, int32_t wstride, const int32_t *c, int32_t cstride,
                                       int32_t words, int32_t bias)
{
    int32_t acc = bias;
    while (words > 0) {
        const int32_t n = words < CE_W4_CHUNK ? words : CE_W4_CHUNK;
        acc += ce_dot4_1x1(w, wstride, c, cstride, n) >> 4;
        w += n * wstride;
        c += n * 2 * cstride;
        words -= n;
    }
    return acc;
}

static CE_NOINLINE void ce_conv_single_w4(const ce_conv_params *p, const int32_t *col, int32_t cstride, int32_t oc0,
                                          int8_t *dst)
{
    const int32_t words = p->k_padded >> 3;
    int32_t oc;
    for (oc = oc0; oc < p->out_c; ++oc) {
        const int paired = (oc | 1) < p->out_c;
        const int8_t *w = p->weights + (oc & ~1) * (p->k_padded >> 1) + (paired ? (oc & 1) * 4 : 0);
        const int32_t acc = ce_dot4_1x1_full(w, paired ? 8 : 4, col, cstride, words, p->bias[oc]);
        dst[oc] = ce_requant(acc, p->mult[oc], p->shift[oc], p->out_offset, p->act_min, p->act_max);
    }
}

/* CONV_2D with int4 weights: ce_conv2d_s8's loop; p->k_padded is the row length rounded up to a multiple of 8 (the
 * im2col column ends one group earlier when the int8 padding is not a multiple of 8: that group meets zero weights,
 * whatever the scratch holds) */
void ce_conv2d_s8_w4(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch)
{
    const int32_t words = p->k_padded >> 3;
    const int32_t wrow = p->k_padded >> 1; /* bytes per packed row */
    const int32_t npix = p->out_h * p->out_w;
    const int32_t oc_n = p->out_c;
    ce_conv_state st;
    int32_t *col;
    const int32_t out_off = p->out_offset, act_min = p->act_min, act_max = p->act_max;
    const int32_t *bias = p->bias, *mult = p->mult;
    const int8_t *shift = p->shift;
    int32_t pix;
    ce_conv_state_init(p, scratch, &st);
    col = st.col;
    for (pix = 0; pix < npix; pix += 2) {
        int8_t *out0 = out + pix * oc_n;
        int32_t oc;
        if (pix + 1 < npix) {
            int8_t *out1 = out0 + oc_n;
            ce_im2col(p, in, pix, col, 4, &st);
            ce_im2col(p, in, pix + 1, col + 2, 4, &st);
            for (oc = 0; oc + 1 < oc_n; oc += 2) {
                int32_t acc[4], j0;
                acc[0] = acc[1] = bias[oc];
                acc[2] = acc[3] = bias[oc + 1];
                for (j0 = 0; j0 < words; j0 += CE_W4_CHUNK) {
                    const int32_t n = words - j0 < CE_W4_CHUNK ? words - j0 : CE_W4_CHUNK;
                    int32_t s[4] = {0, 0, 0, 0};
                    ce_dot4_2x2(p->weights + oc * wrow + 8 * j0, col + 8 * j0, n, s);
                    acc[0] += s[0] >> 4;
                    acc[1] += s[1] >> 4;
                    acc[2] += s[2] >> 4;
                    acc[3] += s[3] >> 4;
                }
                if (p->rq != NULL) {
                    ce_requant_pair_fold(acc[0], acc[1], mult[oc], p->rq[3 * oc + 1], shift[oc], act_min,
                                         act_max, 0, out0 + oc, out1 + oc);
                    ce_requant_pair_fold(acc[2], acc[3], mult[oc + 1], p->rq[3 * oc + 4], shift[oc + 1],
                                         act_min, act_max, 0, out0 + oc + 1, out1 + oc + 1);
                } else {
                    ce_requant_pair(acc[0], acc[1], mult[oc], shift[oc], out_off, act_min, act_max, out0 + oc,
                                    out1 + oc);
                    ce_requant_pair(acc[2], acc[3], mult[oc + 1], shift[oc + 1], out_off, act_min, act_max,
                                    out0 + oc + 1, out1 + oc + 1);
                }
            }
            if (oc < oc_n) {
                ce_conv_single_w4(p, col, 4, oc, out0);
                ce_conv_single_w4(p, col + 2, 4, oc, out1);
            }
        } else {
            ce_im2col(p, in, pix, col, 2, &st);
            ce_conv_single_w4(p, col, 2, 0, out0);
        }
    }
}

/* DEPTHWISE_CONV_2D with int4 weights: ce_depthwise_s8's loop. Weights [k_h][k_w][ceil(out_c / 4)] x 16 bits: the
 * 4 channels c0..c3 of a block as nibbles (c2, c0, c3, c1) from the least significant, so that
 * (h | h << 20) & 0xF0F0F0F0 holds them as bytes of 16 x value in channel order (4 channels: 2 bytes instead of 4).
 * Accumulators hold 16 x the sum; |16 w (x + offset)| <= 32640 per tap, far from overflow for any real kernel
 * (the generator refuses more than 65536 taps). */
static inline int32_t ce_w4_dw_block(const int8_t *w)
{
    const uint32_t h = (uint32_t)(uint8_t)w[0] | ((uint32_t)(uint8_t)w[1] << 8);
    return (int32_t)((h | (h << 20)) & CE_W4_MASK);
}

/* weight of channel c at tap `tap` (blocks: 4-channel blocks per tap) */
static inline int32_t ce_w4_dw_weight(const int8_t *weights, int32_t tap, int32_t blocks, int32_t c)
{
    static const uint8_t sh[4] = {4, 12, 0, 8};
    const int8_t *b = weights + 2 * (tap * blocks + (c >> 2));
    const uint32_t h = (uint32_t)(uint8_t)b[0] | ((uint32_t)(uint8_t)b[1] << 8);
    return (int32_t)(((h >> sh[c & 3]) & 15u) ^ 8u) - 8;
}

#define CE_DW4_TAP(src, w, xo, wo)                                                                              \
    do {                                                                                                        \
        const int32_t xv_ = ce_rd32((src) + (xo));                                                              \
        const int32_t wv_ = ce_w4_dw_block((w) + (wo));                                                         \
        const int32_t x02_ = ce_sxtab16(off2, xv_), x13_ = ce_sxtab16_ror8(off2, xv_);                          \
        const int32_t w02_ = ce_sxtb16(wv_), w13_ = ce_sxtb16_ror8(wv_);                                        \
        a0 = ce_smlabb(x02_, w02_, a0);                                                                         \
        a2 = ce_smlatt(x02_, w02_, a2);                                                                         \
        a1 = ce_smlabb(x13_, w13_, a1);                                                                         \
        a3 = ce_smlatt(x13_, w13_, a3);                                                                         \
    } while (0)

void ce_depthwise_s8_w4(const ce_conv_params *p, const int8_t *in, int8_t *out, int8_t *scratch)
{
    const int32_t oc_n = p->out_c;
    const int32_t dm = p->depth_multiplier;
    const int32_t row_bytes = p->in_w * p->in_c;
    const int32_t out_row_bytes = p->out_w * oc_n;
    const int32_t blocks = (oc_n + 3) >> 2;
    const int32_t tap_bytes = 2 * blocks;
    int8_t *tmp = scratch;
    int8_t *ring = scratch + out_row_bytes;
    const int32_t out_off = p->out_offset, act_min = p->act_min, act_max = p->act_max;
    const int32_t wrow = p->k_w * tap_bytes;
    const int32_t off2 = ce_pack16(p->in_offset, p->in_offset);
    int32_t oy, ox, ky, kx, oc;
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_t;
        const int32_t ky0 = iy0 < 0 ? (-iy0 + p->dil_h - 1) / p->dil_h : 0;
        int32_t ky1 = p->k_h;
        int8_t *dst_row = p->inplace ? tmp : out + oy * out_row_bytes;
        const int8_t *rows[16];
        while (ky1 > ky0 && iy0 + (ky1 - 1) * p->dil_h >= p->in_h) {
            --ky1;
        }
        for (ky = ky0; ky < ky1; ++ky) {
            rows[ky] = ce_dw_row(p, in, ring, iy0 + ky * p->dil_h, oy, row_bytes);
        }
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_l;
            const int32_t kx0 = ix0 < 0 ? (-ix0 + p->dil_w - 1) / p->dil_w : 0;
            int32_t kx1 = p->k_w;
            int8_t *dst = dst_row + ox * oc_n;
            while (kx1 > kx0 && ix0 + (kx1 - 1) * p->dil_w >= p->in_w) {
                --kx1;
            }
            oc = 0;
            if (dm == 1) {
                const int32_t xstep = p->dil_w * p->in_c;
                const int32_t ntaps_x = kx1 - kx0;
                const int32_t xoff = (ix0 + kx0 * p->dil_w) * p->in_c;
                const int8_t *wbase = p->weights + kx0 * tap_bytes;
                for (; oc + 3 < oc_n; oc += 4) {
                    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                    for (ky = ky0; ky < ky1; ++ky) {
                        const int8_t *src = rows[ky] + xoff + oc;
                        const int8_t *w = wbase + ky * wrow + (oc >> 1);
                        int32_t n = ntaps_x;
                        if (n == 3) {
                            CE_DW4_TAP(src, w, 0, 0);
                            CE_DW4_TAP(src, w, xstep, tap_bytes);
                            CE_DW4_TAP(src, w, 2 * xstep, 2 * tap_bytes);
                            continue;
                        }
                        while (n-- > 0) {
                            CE_DW4_TAP(src, w, 0, 0);
                            src += xstep;
                            w += tap_bytes;
                        }
                    }
                    dst[oc] = ce_requant(p->bias[oc] + (a0 >> 4), p->mult[oc], p->shift[oc], out_off, act_min,
                                         act_max);
                    dst[oc + 1] = ce_requant(p->bias[oc + 1] + (a1 >> 4), p->mult[oc + 1], p->shift[oc + 1],
                                             out_off, act_min, act_max);
                    dst[oc + 2] = ce_requant(p->bias[oc + 2] + (a2 >> 4), p->mult[oc + 2], p->shift[oc + 2],
                                             out_off, act_min, act_max);
                    dst[oc + 3] = ce_requant(p->bias[oc + 3] + (a3 >> 4), p->mult[oc + 3], p->shift[oc + 3],
                                             out_off, act_min, act_max);
                }
            }
            for (; oc < oc_n; ++oc) {
                int32_t acc = p->bias[oc];
                const int32_t ic = oc / dm;
                for (ky = ky0; ky < ky1; ++ky) {
                    for (kx = kx0; kx < kx1; ++kx) {
                        const int32_t ix = ix0 + kx * p->dil_w;
                        acc += (rows[ky][ix * p->in_c + ic] + p->in_offset) *
                               ce_w4_dw_weight(p->weights, ky * p->k_w + kx, blocks, oc);
                    }
                }
                dst[oc] = ce_requant(acc, p->mult[oc], p->shift[oc], out_off, act_min, act_max);
            }
        }
        if (p->inplace) {
            if (p->pad_t > 0) {
                ce_copy_s8(in + oy * row_bytes, ring + (oy % p->pad_t) * row_bytes, row_bytes);
            }
            ce_copy_s8(tmp, out + oy * out_row_bytes, out_row_bytes);
        }
    }
}

/* DEPTHWISE_CONV_2D 3x3 stride 1 with int4 weights: ce_depthwise3x3_s8's loop. Weights: one word per channel whose
 * low nibbles are the int8 kernel's first 4 bytes (w00 w10 w01 w11) and high nibbles the next 4 (w20 w02 w21 w12),
 * then w22 of every channel two per byte (even channel in the low nibble). The pairs are unpacked to exact int16
 * values once per channel and output row (outside the pixel loop), so the accumulation is ce_depthwise3x3_s8's. */
void ce_depthwise3x3_s8_w4(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch)
{
    ce_dw3_run(p, in, out, scratch, 1);
}

/* FULLY_CONNECTED with int4 weights: rows of in_depth rounded up to 8 values, packed and word-interleaved like
 * CONV_2D's; the input is read as two words per weight word. */
void ce_fully_connected_s8_w4(const ce_fc_params *p, const int8_t *in, int8_t *out)
{
    const int32_t k = p->in_depth;
    const int32_t wrow = ((k + 7) & ~7) >> 1; /* bytes per packed row */
    const int32_t full = k >> 3;
    const int32_t rest = k & 7;
    const int32_t off2 = ce_pack16(p->in_offset, p->in_offset);
    int32_t b, o, j, j0, r;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = in + b * k;
        int8_t *y = out + b * p->out_depth;
        for (o = 0; o < p->out_depth; o += 2) {
            const int paired = o + 1 < p->out_depth;
            const int8_t *w = p->weights + o * wrow;
            int32_t a0 = p->bias[o];
            int32_t a1 = paired ? p->bias[o + 1] : 0;
            for (j0 = 0; j0 < full; j0 += CE_W4_CHUNK) {
                const int32_t j1 = full - j0 < CE_W4_CHUNK ? full : j0 + CE_W4_CHUNK;
                int32_t s0 = 0, s1 = 0;
                if (paired) {
                    for (j = j0; j < j1; ++j) {
                        const int32_t xa = ce_rd32(x + 8 * j), xb = ce_rd32(x + 8 * j + 4);
                        const int32_t xa02 = ce_sxtab16(off2, xa), xa13 = ce_sxtab16_ror8(off2, xa);
                        const int32_t xb02 = ce_sxtab16(off2, xb), xb13 = ce_sxtab16_ror8(off2, xb);
                        const int32_t wa = ce_rd32(w + 8 * j), wb = ce_rd32(w + 8 * j + 4);
                        int32_t t = ce_w4_lo(wa);
                        s0 = ce_smlad(ce_sxtb16(t), xa02, s0);
                        s0 = ce_smlad(ce_sxtb16_ror8(t), xa13, s0);
                        t = ce_w4_hi(wa);
                        s0 = ce_smlad(ce_sxtb16(t), xb02, s0);
                        s0 = ce_smlad(ce_sxtb16_ror8(t), xb13, s0);
                        t = ce_w4_lo(wb);
                        s1 = ce_smlad(ce_sxtb16(t), xa02, s1);
                        s1 = ce_smlad(ce_sxtb16_ror8(t), xa13, s1);
                        t = ce_w4_hi(wb);
                        s1 = ce_smlad(ce_sxtb16(t), xb02, s1);
                        s1 = ce_smlad(ce_sxtb16_ror8(t), xb13, s1);
                    }
                } else {
                    for (j = j0; j < j1; ++j) {
                        const int32_t xa = ce_rd32(x + 8 * j), xb = ce_rd32(x + 8 * j + 4);
                        const int32_t wa = ce_rd32(w + 4 * j);
                        int32_t t = ce_w4_lo(wa);
                        s0 = ce_smlad(ce_sxtb16(t), ce_sxtab16(off2, xa), s0);
                        s0 = ce_smlad(ce_sxtb16_ror8(t), ce_sxtab16_ror8(off2, xa), s0);
                        t = ce_w4_hi(wa);
                        s0 = ce_smlad(ce_sxtb16(t), ce_sxtab16(off2, xb), s0);
                        s0 = ce_smlad(ce_sxtb16_ror8(t), ce_sxtab16_ror8(off2, xb), s0);
                    }
                }
                a0 += s0 >> 4;
                a1 += s1 >> 4;
            }
            for (r = 0; r < rest; ++r) {
                const int32_t xv = x[8 * full + r] + p->in_offset;
                a0 += xv * ce_w4_nibble(w + full * (paired ? 8 : 4), r);
                if (paired) {
                    a1 += xv * ce_w4_nibble(w + full * 8 + 4, r);
                }
            }
            y[o] = ce_requant(a0, p->mult[o], p->shift[o], p->out_offset, p->act_min, p->act_max);
            if (paired) {
                y[o + 1] = ce_requant(a1, p->mult[o + 1], p->shift[o + 1], p->out_offset, p->act_min, p->act_max);
            }
        }
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
            c = 0;
            if ((p->ch & 3) == 0 && count <= 255) {
                /* four channels per word, summed in int16 lanes (|sum| <= 255 * 128 fits) */
                for (; c < p->ch; c += 4) {
                    int32_t s02 = 0, s13 = 0, j;
                    int32_t sum[4];
                    for (fy = fy0; fy < fy1; ++fy) {
                        const int8_t *src = in + ((iy0 + fy) * p->in_w + ix0 + fx0) * p->ch + c;
                        for (fx = fx0; fx < fx1; ++fx) {
                            const int32_t v = ce_rd32(src);
                            s02 = ce_sxtab16(s02, v);
                            s13 = ce_sxtab16_ror8(s13, v);
                            src += p->ch;
                        }
                    }
                    sum[0] = (int16_t)(uint16_t)((uint32_t)s02 & 0xFFFFu);
                    sum[1] = (int16_t)(uint16_t)((uint32_t)s13 & 0xFFFFu);
                    sum[2] = (int16_t)(uint16_t)((uint32_t)s02 >> 16);
                    sum[3] = (int16_t)(uint16_t)((uint32_t)s13 >> 16);
                    for (j = 0; j < 4; ++j) {
                        int32_t acc = sum[j];
                        if (count > 0) {
                            acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                        }
                        acc = acc < p->act_min ? p->act_min : acc;
                        acc = acc > p->act_max ? p->act_max : acc;
                        out[(oy * p->out_w + ox) * p->ch + c + j] = (int8_t)acc;
                    }
                }
            }
            for (; c < p->ch; ++c) {
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

/* MultiplyByQuantizedMultiplier (double rounding) with the shift split into left/right parts by the caller */
static inline int32_t ce_mbqm_split(int32_t x, int32_t multiplier, int32_t left, int32_t right, int32_t mask)
{
    const int32_t xs = (int32_t)((uint32_t)x << left);
    const int32_t hm = (int32_t)(((int64_t)xs * multiplier + ((int64_t)1 << 30)) >> 31);
    const int32_t threshold = (mask >> 1) + (hm < 0 ? 1 : 0);
    return (hm >> right) + ((hm & mask) > threshold ? 1 : 0);
}

/* The rescaled inputs depend on one int8 value each: they are tabulated once per call (2 x 256 int32 in scratch),
 * leaving one multiply-high + rounding shift per output element. As in TFLite, every multiplier is < 1 (shifts
 * <= 0; the generator refuses others). |input term| < 2^27, so |sum| < 2^28 and RoundingDivideByPOT can be written
 * without its remainder test: (x + 2^(r-1) - (x < 0)) >> r, exactly round-half-away-from-zero. */
/* t[0..255]: input 1 rescaled for every int8 value, t[256..511]: input 2 */
static void ce_add_tables(const ce_add_params *p, int32_t *t)
{
    const int32_t r1 = -p->in1_shift, r2 = -p->in2_shift;
    const int32_t m1 = (int32_t)(((uint32_t)1 << r1) - 1u), m2 = (int32_t)(((uint32_t)1 << r2) - 1u);
    int32_t *t1 = t + 128; /* t1[v] for v in [-128, 127] */
    int32_t *t2 = t + 256 + 128;
    int32_t i;
    for (i = -128; i < 128; ++i) {
        t1[i] = ce_mbqm_split((int32_t)((uint32_t)(i + p->in1_offset) << p->left_shift), p->in1_mult, 0, r1, m1);
        t2[i] = ce_mbqm_split((int32_t)((uint32_t)(i + p->in2_offset) << p->left_shift), p->in2_mult, 0, r2, m2);
    }
}

/* the usual output rescale of ce_add_rows (2 <= ro <= 23): one SMLAL (ce_fold_fast) with the output offset folded
 * into the constant khi; sat: 0 clamp to [amin, amax], 1 SSAT then max amin (amax 127), 2 SSAT only (all of int8) */
static CE_ALWAYS_INLINE void ce_add_rows_fold(const int32_t *t1, const int32_t *t2, const int8_t *in1,
                                              const int8_t *in2, int8_t *out, int32_t n, int32_t mulo, int32_t khi,
                                              int32_t ro, int32_t amin, int32_t amax, const int sat)
{
    const int8_t *end = in1 + n;
    while (in1 != end) {
        int32_t v = ce_fold_fast(t1[*in1++] + t2[*in2++], mulo, khi, -ro);
        if (sat == 2) {
            v = ce_ssat8(v);
        } else if (sat == 1) {
            v = ce_ssat8(v);
            v = v < amin ? amin : v;
        } else {
            v = ce_clamp(v, amin, amax);
        }
        *out++ = (int8_t)v;
    }
}

/* n elements with the tables of ce_add_tables; out may be in1 or in2 (element-wise) */
static void ce_add_rows(const ce_add_params *p, const int32_t *t, const int8_t *in1, const int8_t *in2, int8_t *out,
                        int32_t n)
{
    const int32_t ro = -p->out_shift;
    const int32_t half = (int32_t)(((uint32_t)1 << ro) >> 1);
    const int32_t mulo = p->out_mult, offo = p->out_offset;
    const int32_t amin = p->act_min, amax = p->act_max;
    const int32_t *t1 = t + 128, *t2 = t + 256 + 128;
    int32_t i;
    if (ro >= 2 && ro <= 23 && n > 0) {
        /* 2^(ro-2) rounds; offo * 2^(ro-1) adds the output offset exactly (|offo| <= 128: no overflow) */
        const int32_t khi = (int32_t)(((uint32_t)1 << ro) >> 2) + (int32_t)((uint32_t)offo << (ro - 1));
        if (amin == -128 && amax == 127) {
            ce_add_rows_fold(t1, t2, in1, in2, out, n, mulo, khi, ro, amin, amax, 2);
        } else if (amax == 127) {
            ce_add_rows_fold(t1, t2, in1, in2, out, n, mulo, khi, ro, amin, amax, 1);
        } else {
            ce_add_rows_fold(t1, t2, in1, in2, out, n, mulo, khi, ro, amin, amax, 0);
        }
        return;
    }
    if (ro >= 2) { /* larger shifts: the offset added after the rescale */
        const int32_t khi = (int32_t)(((uint32_t)1 << ro) >> 2);
        for (i = 0; i < n; ++i) {
            const int32_t v = ce_fold_fast(t1[in1[i]] + t2[in2[i]], mulo, khi, -ro) + offo;
            out[i] = (int8_t)ce_clamp(v, amin, amax);
        }
        return;
    }
    if (ro > 0) {
        for (i = 0; i < n; ++i) {
            const int32_t sum = t1[in1[i]] + t2[in2[i]];
            const int32_t hm = (int32_t)(((int64_t)sum * mulo + ((int64_t)1 << 30)) >> 31);
            int32_t v = ((hm + half - (int32_t)((uint32_t)hm >> 31)) >> ro) + offo;
            v = v < amin ? amin : v;
            v = v > amax ? amax : v;
            out[i] = (int8_t)v;
        }
        return;
    }
    for (i = 0; i < n; ++i) {
        int32_t v = (int32_t)(((int64_t)(t1[in1[i]] + t2[in2[i]]) * mulo + ((int64_t)1 << 30)) >> 31) + offo;
        v = v < amin ? amin : v;
        v = v > amax ? amax : v;
        out[i] = (int8_t)v;
    }
}


void ce_add_s8(const ce_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out, int32_t *scratch)
{
    ce_add_tables(p, scratch);
    ce_add_rows(p, scratch, in1, in2, out, p->size);
}

/* ---- residual block: CONV_2D -> CONV_2D -> ADD with the block input (or a CONV_2D of it), streamed by rows ---- */
/* The first convolution's output y is kept in a ring of the second's k_h rows only, each output row of the block
 * is computed (z = second convolution, s = shortcut convolution or the block input itself, out = ADD(s, z) in the
 * model's operand order) as soon as the y rows it needs exist: neither y nor z is ever stored whole. With the
 * identity shortcut the output may overwrite the input row by row (the generator checks that no later y row reads
 * an overwritten input row). Bit-exact with the layers run one by one. scratch words: ADD tables [512], then at the
 * offsets of ce_resblock_params the y ring, the z row, the shortcut row and each convolution's scratch. */

void ce_resblock_s8(const ce_resblock_params *p, const int8_t *x, int8_t *out, int32_t *scratch)
{
    const ce_conv_params *c1 = p->c1, *c2 = p->c2, *cs = p->cs;
    const int32_t w1 = c1->out_w, w2 = c2->out_w;
    const int32_t yrow = w1 * c1->out_c, orow = w2 * c2->out_c;
    const int32_t slots = c2->k_h;
    int8_t *ring = (int8_t *)(void *)(scratch + p->ring_at);
    int8_t *zrow = (int8_t *)(void *)(scratch + p->z_at);
    int8_t *srow = (int8_t *)(void *)(scratch + p->s_at);
    ce_conv_state st1, st2, sts;
    int32_t next = 0, r;
    ce_add_tables(p->add, scratch);
    ce_conv_state_init(c1, (int16_t *)(void *)(scratch + p->c1_at), &st1);
    ce_conv_state_init(c2, (int16_t *)(void *)(scratch + p->c2_at), &st2);
    st2.in_slots = slots;
    if (cs != NULL) {
        ce_conv_state_init(cs, (int16_t *)(void *)(scratch + p->cs_at), &sts);
    }
    for (r = 0; r < c2->out_h; ++r) {
        int32_t last = r * c2->stride_h - c2->pad_t + c2->k_h - 1;
        const int8_t *sc;
        last = last < c1->out_h - 1 ? last : c1->out_h - 1;
        for (; next <= last; ++next) {
            ce_conv2d_range(c1, x, ring + (next % slots) * yrow, next * w1, (next + 1) * w1, &st1);
        }
        ce_conv2d_range(c2, ring, zrow, r * w2, (r + 1) * w2, &st2);
        if (cs != NULL) {
            ce_conv2d_range(cs, x, srow, r * w2, (r + 1) * w2, &sts);
            sc = srow;
        } else {
            sc = x + r * orow;
        }
        if (p->shortcut_first) {
            ce_add_rows(p->add, scratch, sc, zrow, out + r * orow, orow);
        } else {
            ce_add_rows(p->add, scratch, zrow, sc, out + r * orow, orow);
        }
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
            v = ce_mbqm(acc, p->mult, p->shift) + p->out_zero_point;
            v = v < -128 ? -128 : v;
            v = v > 127 ? 127 : v;
            out[o * p->inner + i] = (int8_t)v;
        }
    }
}

/* ---- SOFTMAX (TFLite reference int8 kernel: gemmlowp fixed point, as TFLM and CMSIS-NN) ---------- */

static inline int32_t ce_sm_mul(int32_t a, int32_t b) { return ce_srdhm(a, b); }

static inline int32_t ce_sm_mul_pow2(int32_t v, int32_t e)
{
    /* SaturatingRoundingMultiplyByPOT for 1 <= e <= 30 */
    const int32_t thresh = (int32_t)(((uint32_t)1 << (31 - e)) - 1u);
    if (v > thresh) {
        return INT32_MAX;
    }
    if (v < -thresh) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)v << e);
}

/* gemmlowp exp_on_negative_values: Q5.26 input <= 0 -> Q0.31 */
static int32_t ce_sm_exp_neg(int32_t val)
{
    static const int32_t k_mult[7] = { 1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242 };
    const int32_t val_mod_minus_quarter = (val & ((1 << 24) - 1)) - (1 << 24);
    const int32_t remainder = val_mod_minus_quarter - val;
    const int32_t x = (int32_t)((uint32_t)val_mod_minus_quarter << 5) + (1 << 28);
    const int32_t x2 = ce_sm_mul(x, x);
    const int32_t x3 = ce_sm_mul(x2, x);
    const int32_t x4_over_4 = ce_rdbpot(ce_sm_mul(x2, x2), 2);
    const int32_t poly = x + ce_rdbpot(ce_sm_mul(x4_over_4 + x3, 715827883) + x2, 1);
    int32_t result = 1895147668 + ce_sm_mul(1895147668, poly);
    int32_t k;
    for (k = 0; k < 7; ++k) {
        if (remainder & (1 << (24 + k))) {
            result = ce_sm_mul(result, k_mult[k]);
        }
    }
    return val == 0 ? INT32_MAX : result;
}

/* gemmlowp one_over_one_plus_x_for_x_in_0_1: Q0.31 input in [0, 1) -> Q2.29 of 1 / (1 + x) */
static int32_t ce_sm_one_over_one_plus_x(int32_t val)
{
    const int64_t sum = (int64_t)val + (int64_t)INT32_MAX;
    const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    int32_t x = 1515870810 + ce_sm_mul(half_denominator, -1010580540);
    int32_t k;
    for (k = 0; k < 3; ++k) {
        x += ce_sm_mul_pow2(ce_sm_mul(x, (1 << 29) - ce_sm_mul(half_denominator, x)), 2);
    }
    return ce_sm_mul_pow2(x, 1);
}

static inline int32_t ce_clz32(uint32_t v)
{
    int32_t n = 0;
    if (v == 0u) {
        return 32;
    }
    while ((v & 0x80000000u) == 0u) {
        v <<= 1;
        ++n;
    }
    return n;
}

void ce_softmax_s8(const ce_softmax_params *p, const int8_t *in, int8_t *out)
{
    int32_t o, j;
    for (o = 0; o < p->outer; ++o) {
        const int8_t *x = in + o * p->depth;
        int8_t *y = out + o * p->depth;
        int32_t max_val = -128;
        int32_t sum = 0;
        int32_t headroom, shifted_scale, bits_over_unit;
        for (j = 0; j < p->depth; ++j) {
            max_val = x[j] > max_val ? x[j] : max_val;
        }
        for (j = 0; j < p->depth; ++j) {
            const int32_t diff = x[j] - max_val;
            if (diff >= p->diff_min) {
                sum += ce_rdbpot(ce_sm_exp_neg(ce_sm_mul(diff * (1 << p->left_shift), p->mult)), 12);
            }
        }
        headroom = ce_clz32((uint32_t)sum);
        shifted_scale = ce_sm_one_over_one_plus_x(
            (int32_t)((sum > 0 ? (uint32_t)sum << headroom : 0u) - 0x80000000u));
        bits_over_unit = 12 - headroom + 23;
        for (j = 0; j < p->depth; ++j) {
            const int32_t diff = x[j] - max_val;
            int32_t q = -128;
            if (diff >= p->diff_min) {
                q = ce_rdbpot(ce_sm_mul(shifted_scale, ce_sm_exp_neg(ce_sm_mul(diff * (1 << p->left_shift), p->mult))),
                              bits_over_unit) - 128;
                q = q > 127 ? 127 : q;
            }
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
    const int32_t total = od[0] * od[1] * od[2] * od[3];
    int32_t i;
    for (i = 0; i < total; ++i) {
        out[i] = (int8_t)p->pad_value;
    }
    for (a = 0; a < id[0]; ++a) {
        for (b = 0; b < id[1]; ++b) {
            for (c = 0; c < id[2]; ++c) {
                const int8_t *src = in + ((a * id[1] + b) * id[2] + c) * id[3];
                int8_t *dst = out + (((a + pb[0]) * od[1] + (b + pb[1])) * od[2] + (c + pb[2])) * od[3] + pb[3];
                ce_copy_s8(src, dst, id[3]);
            }
        }
    }
}

/* byte copy (no C library call: keeps memcpy out of the firmware); in-place safe when out <= in */
/* ---- element-wise int8 activations (RELU, RELU6, LEAKY_RELU, LOGISTIC, TANH, HARD_SWISH) ------------------ */

void ce_lut_s8(const int8_t *lut, const int8_t *in, int8_t *out, int32_t n)
{
    const int8_t *t = lut + 128;
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = t[in[i]];
    }
}

/* ---- SUB, MUL, MAXIMUM, MINIMUM (TFLM reference arithmetic, 4-D broadcasting) ---------------------------- */

static inline int8_t ce_binary_one(const ce_binary_params *p, int32_t a, int32_t b)
{
    int32_t v;
    switch (p->op) {
    case 0: {
        const int32_t s1 = ce_mbqm((int32_t)((uint32_t)(a + p->in1_offset) << 20), p->in1_mult, p->in1_shift);
        const int32_t s2 = ce_mbqm((int32_t)((uint32_t)(b + p->in2_offset) << 20), p->in2_mult, p->in2_shift);
        v = ce_mbqm(s1 - s2, p->out_mult, p->out_shift) + p->out_offset;
        break;
    }
    case 1:
        v = ce_mbqm((a + p->in1_offset) * (b + p->in2_offset), p->out_mult, p->out_shift) + p->out_offset;
        break;
    case 2:
        v = a > b ? a : b;
        break;
    default:
        v = a < b ? a : b;
        break;
    }
    v = v < p->act_min ? p->act_min : v;
    v = v > p->act_max ? p->act_max : v;
    return (int8_t)v;
}

void ce_binary_s8(const ce_binary_params *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    int32_t i0, i1, i2, i3;
    for (i0 = 0; i0 < p->dims[0]; ++i0) {
        for (i1 = 0; i1 < p->dims[1]; ++i1) {
            for (i2 = 0; i2 < p->dims[2]; ++i2) {
                const int8_t *a = in1 + i0 * p->stride1[0] + i1 * p->stride1[1] + i2 * p->stride1[2];
                const int8_t *b = in2 + i0 * p->stride2[0] + i1 * p->stride2[1] + i2 * p->stride2[2];
                for (i3 = 0; i3 < p->dims[3]; ++i3) {
                    *out++ = ce_binary_one(p, a[i3 * p->stride1[3]], b[i3 * p->stride2[3]]);
                }
            }
        }
    }
}

/* ---- TRANSPOSE ----------------------------------------------------------------------------------------- */

void ce_transpose_s8(const ce_transpose_params *p, const int8_t *in, int8_t *out)
{
    int32_t i0, i1, i2, i3;
    for (i0 = 0; i0 < p->dims[0]; ++i0) {
        for (i1 = 0; i1 < p->dims[1]; ++i1) {
            for (i2 = 0; i2 < p->dims[2]; ++i2) {
                const int8_t *src = in + i0 * p->stride[0] + i1 * p->stride[1] + i2 * p->stride[2];
                for (i3 = 0; i3 < p->dims[3]; ++i3) {
                    *out++ = src[i3 * p->stride[3]];
                }
            }
        }
    }
}

void ce_copy_s8(const int8_t *in, int8_t *out, int32_t n)
{
    int32_t i;
    if (in == out) {
        return;
    }
    for (i = 0; i + 3 < n; i += 4) {
        const int32_t v = ce_rd32(in + i);
        memcpy(out + i, &v, 4);
    }
    for (; i < n; ++i) {
        out[i] = in[i];
    }
}

void ce_quantize_f32_s8(const float *in, int8_t *out, int32_t n, float scale, int32_t zero_point)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        const float q = in[i] / scale;
        int32_t v;
        if (q != q) {
            v = zero_point; /* NaN: the zero point (what an Arm VCVT of NaN gives in TFLM's kernel) */
        } else if (q > 1.0e6f) {
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

void ce_dequantize_s8_f32(const int8_t *in, float *out, int32_t n, float scale, int32_t zero_point)
{
    /* float only (no double on an M4F): the product of a float and an integer below 2^9 is exact in double, so
     * one float multiplication rounds it exactly as TFLite's double expression does */
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = scale * (float)(in[i] - zero_point);
    }
}
