/* ce_kernels.h - int8 kernel library of the generated C inference engine.
 *
 * Arithmetic follows TensorFlow Lite's reference integer kernels exactly, as TFLM and CMSIS-NN run them on the
 * device (MultiplyByQuantizedMultiplier with SaturatingRoundingDoublingHighMul + RoundingDivideByPOT, rounding
 * half away from zero; ADD with left shift 20; the gemmlowp fixed-point SOFTMAX), so outputs are bit-identical to
 * TFLM's reference kernels.
 *
 * The output stage of CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED folds the two roundings into one 64-bit
 * multiply-accumulate (SMLAL) whose rounding constant depends on the accumulator's sign; on doubled accumulators
 * (weights and bias doubled where the generator proves |acc| < 2^30: int16-weight convolutions, the 3x3 depthwise
 * assembly) one SMMLAR does it. Per-channel constants are triplets {mult, khi, rs} (rq) loaded with one LDM; outputs
 * are clamped with SSAT when the activation range is all of int8.
 * 3x3 depthwise convolutions have their own kernels: an int16 channel-major row ring (ce_depthwise3x3_s8, two
 * output columns per step) and, on small feature maps, int16 channel planes in 2 x 2 output tiles
 * (ce_depthwise3x3_plane_s8; PKHTB + SMLADX for the odd column).
 *
 * One algorithm, two implementations of its SIMD primitives, both bit-exact:
 *   - Cortex-M4/M7/M33 (__ARM_FEATURE_DSP): SXTB16/SXTAB16/SMLAD/SMLADX/PKH/SMLAL/SMMLAR/SSAT intrinsics and Thumb-2
 *     assembly for the hot loops (2 output channels x 2 output pixels over an int16 im2col column, the output
 *     stages of channel pairs, the two-pixel im2col, the 3x3 depthwise rows and tiles);
 *   - portable C99 equivalents of the same instructions for any other target (host tests run this path).
 * Define CE_NO_DSP to force the portable path on a DSP-capable core, CE_NO_ASM to keep the DSP intrinsics but
 * replace the assembly loops (used in optimised builds only) by C.
 *
 * int4 weights (the *_w4 kernels, same parameter structs): packed two per byte in flash (layouts in ce_kernels.c)
 * and unpacked in registers as they are used (AND + SXTB16 into the same int16 pairs), no unpacking buffer.
 */
#ifndef CE_KERNELS_H
#define CE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* packed int4 weight arrays are word-aligned (the kernels load them as 32-bit words) */
#if defined(__GNUC__) || defined(__clang__)
#define CE_WEIGHTS_ALIGN __attribute__((aligned(4)))
#else
#define CE_WEIGHTS_ALIGN
#endif

typedef struct {
    int16_t in_h, in_w, in_c, out_h, out_w, out_c;
    int16_t k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_t, pad_l;
    int16_t depth_multiplier; /* depthwise only */
    int16_t inplace;          /* output overwrites the input buffer (planner decision) */
    int16_t wide;             /* conv: weights stored as int16 pair words (see ce_kernels.c), else int8 */
    int16_t dbl;              /* conv (wide, activation range all of int8): weights and bias doubled, rq holds
                               * {mult, 2 khi, -shift} for the doubled accumulators (ce_fold2) */
    int16_t in_offset, out_offset, act_min, act_max;
    int32_t k_padded;         /* conv: k_h*k_w*in_c rounded up to a multiple of 4 (int4 weights: of 8) */
    const int8_t *weights;  /* conv: [out_c][k_padded], pair-interleaved (see ce_kernels.c); dw: [k_h][k_w][out_c];
                             * dw 3x3 stride 1: [out_c][8] + [out_c] (see ce_depthwise3x3_s8) */
    const int32_t *bias;    /* [out_c] */
    const int32_t *mult;    /* [out_c] */
    const int8_t *shift;    /* [out_c] */
    const int32_t *rq;      /* [out_c][3] {mult, 2^(-shift-2) + out_offset * 2^(-shift-1), -shift-1} if every shift
                             * is in [-23, -2], else NULL */
} ce_conv_params;

typedef struct {
    int32_t batches, in_depth, out_depth;
    int32_t in_offset, out_offset, act_min, act_max;
    const int8_t *weights;  /* [out_depth][in_depth rounded up to 4], pair-interleaved like CONV_2D */
    const int32_t *bias;    /* [out_depth] */
    const int32_t *mult;    /* [out_depth] */
    const int8_t *shift;    /* [out_depth] */
    const int32_t *rq;      /* [out_depth][3] as ce_conv_params.rq */
} ce_fc_params;

typedef struct {
    int16_t in_h, in_w, ch, out_h, out_w;
    int16_t f_h, f_w, stride_h, stride_w, pad_t, pad_l;
    int16_t act_min, act_max;
} ce_pool_params;

typedef struct {
    int32_t size;
    int32_t in1_mult, in2_mult, out_mult;
    int16_t left_shift, in1_offset, in1_shift, in2_offset, in2_shift, out_offset, out_shift;
    int16_t act_min, act_max;
} ce_add_params;

/* a residual block streamed by rows (ce_resblock_s8); *_at: word offsets into the step's scratch */
typedef struct {
    const ce_conv_params *c1, *c2; /* x -> y -> z */
    const ce_conv_params *cs;      /* x -> shortcut, or NULL: the shortcut is x */
    const ce_add_params *add;
    int32_t shortcut_first;        /* the ADD's first operand is the shortcut */
    int32_t ring_at, z_at, s_at, c1_at, c2_at, cs_at;
} ce_resblock_params;

typedef struct {
    int32_t outer, reduce, inner;  /* input viewed as [outer][reduce][inner], output [outer][inner] */
    int32_t in_zero_point, out_zero_point;
    int32_t mult, shift;           /* QuantizeMultiplier(input_scale / (output_scale * reduce)) */
} ce_mean_params;

typedef struct {
    int32_t outer, depth;
    int32_t mult, left_shift;   /* PreprocessSoftmaxScaling(beta, input_scale, 5): Q5.26 input scaling */
    int32_t diff_min;           /* -CalculateInputRadius(5, left_shift): smaller differences give 0 */
} ce_softmax_params;            /* output scale 1/256, zero point -128 (validated by the generator) */

typedef struct {
    int32_t in_dims[4], out_dims[4], pad_before[4];
    int32_t pad_value;
} ce_pad_params;

/* SUB, MUL, MAXIMUM, MINIMUM over 4-D operands; a broadcast dimension has stride 0 */
typedef struct {
    int32_t op;                         /* 0 SUB, 1 MUL, 2 MAXIMUM, 3 MINIMUM */
    int32_t dims[4];                    /* output dimensions */
    int32_t stride1[4], stride2[4];     /* input element strides per output dimension */
    int32_t in1_offset, in2_offset, out_offset;
    int32_t in1_mult, in1_shift, in2_mult, in2_shift;  /* SUB: inputs to twice the larger scale, << 20 */
    int32_t out_mult, out_shift;        /* SUB, MUL */
    int32_t act_min, act_max;
} ce_binary_params;

/* TRANSPOSE of up to 4 dimensions: out[i0][i1][i2][i3] = in[sum_k i_k * stride[k]] */
typedef struct {
    int32_t dims[4];                    /* output dimensions */
    int32_t stride[4];                  /* input element stride of each output dimension */
} ce_transpose_params;

int32_t ce_mul_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift);

void ce_conv2d_s8(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch);
void ce_depthwise_s8(const ce_conv_params *p, const int8_t *in, int8_t *out, int8_t *scratch);
void ce_depthwise3x3_s8(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch);
/* the same layer by channel planes (four int16 planes of ce_dw3p_ph x ce_dw3_pw values in scratch) */
void ce_depthwise3x3_plane_s8(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch);
void ce_fully_connected_s8(const ce_fc_params *p, const int8_t *in, int8_t *out);
/* CONV_2D whose whole output feeds one FULLY_CONNECTED (batch 1): out = the fully-connected outputs */
void ce_conv2d_fc_s8(const ce_conv_params *cp, const ce_fc_params *fp, const int8_t *in, int8_t *out,
                     int32_t *scratch);
/* the same operators with packed int4 weights (p->weights points at the packed bytes) */
void ce_conv2d_s8_w4(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch);
void ce_depthwise_s8_w4(const ce_conv_params *p, const int8_t *in, int8_t *out, int8_t *scratch);
void ce_depthwise3x3_s8_w4(const ce_conv_params *p, const int8_t *in, int8_t *out, int16_t *scratch);
void ce_fully_connected_s8_w4(const ce_fc_params *p, const int8_t *in, int8_t *out);
void ce_avgpool_s8(const ce_pool_params *p, const int8_t *in, int8_t *out);
void ce_maxpool_s8(const ce_pool_params *p, const int8_t *in, int8_t *out);
void ce_resblock_s8(const ce_resblock_params *p, const int8_t *x, int8_t *out, int32_t *scratch);
void ce_add_s8(const ce_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out, int32_t *scratch);
void ce_mean_s8(const ce_mean_params *p, const int8_t *in, int8_t *out);
void ce_softmax_s8(const ce_softmax_params *p, const int8_t *in, int8_t *out);
void ce_pad_s8(const ce_pad_params *p, const int8_t *in, int8_t *out);
void ce_copy_s8(const int8_t *in, int8_t *out, int32_t n);
void ce_binary_s8(const ce_binary_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);
void ce_transpose_s8(const ce_transpose_params *p, const int8_t *in, int8_t *out);
/* element-wise table look-up: out[i] = lut[in[i] + 128] (the int8 activations, tables built by the generator) */
void ce_lut_s8(const int8_t *lut, const int8_t *in, int8_t *out, int32_t n);
void ce_quantize_f32_s8(const float *in, int8_t *out, int32_t n, float scale, int32_t zero_point);
void ce_dequantize_s8_f32(const int8_t *in, float *out, int32_t n, float scale, int32_t zero_point);

#ifdef __cplusplus
}
#endif
#endif /* CE_KERNELS_H */
