"""Weight layouts of the C engine's kernels (``ce_kernels.c``): int8 rows interleaved in pairs, packed int4 rows,
packed int4 depthwise blocks, and the 3x3 depthwise kernel's tap order."""

from __future__ import annotations

import numpy as np

def widen_groups(interleaved: np.ndarray) -> np.ndarray:
    """int16 weight layout of the ``wide`` convolution kernels: every group of 4 int8 weights (w0, w1, w2, w3) of the
    ``interleave_rows`` layout becomes the int16 values (w0, w2, w1, w3), i.e. the two words SXTB16 and SXTB16 ROR 8
    would make of it, so the kernel loads them instead of extending them."""
    flat = np.asarray(interleaved, dtype=np.int8).reshape(-1, 4)
    return flat[:, [0, 2, 1, 3]].astype(np.int16).reshape(-1)


# a convolution's weights are stored as int16 (twice the flash, no sign extension in the inner loop) when each
# weight is used for at least WIDE_MIN_PIXELS output pixels; between WIDE_SMALL_MIN_PIXELS and that (fewer uses, so
# fewer instructions saved per byte of flash) only when the layer holds at most WIDE_SMALL_MAX_WEIGHTS weights, which
# bounds the flash a model can grow by (MobileNetV1's 6 x 6 layers qualify, a 200 K-weight 5 x 5 layer does not)
WIDE_MIN_PIXELS = 64
WIDE_SMALL_MIN_PIXELS = 36
WIDE_SMALL_MAX_WEIGHTS = 32768


def wide_weights(pixels: int, weights: int) -> bool:
    """Whether a convolution with this many output pixels and weights gets int16 weights (see WIDE_MIN_PIXELS)."""
    return pixels >= WIDE_MIN_PIXELS or (pixels >= WIDE_SMALL_MIN_PIXELS and weights <= WIDE_SMALL_MAX_WEIGHTS)


# int4 dot products run on 16 x the weights: |16 w (x + offset)| <= 128 * 255 per product; a depthwise kernel
# accumulates at most this many taps without a partial sum (CONV_2D / FULLY_CONNECTED sum in chunks, ce_kernels.c)
MAX_INT4_DEPTHWISE_TAPS = (2 ** 31 - 1) // (128 * 255)


def interleave_rows(w2d: np.ndarray) -> np.ndarray:
    """Kernel weight layout: rows zero-padded to a multiple of 4 and stored in pairs interleaved by groups of 4."""
    n, k = w2d.shape
    kp = (k + 3) // 4 * 4
    padded = np.zeros((n, kp), dtype=np.int8)
    padded[:, :k] = w2d
    out = []
    for r in range(0, n - 1, 2):
        pair = padded[r:r + 2].reshape(2, kp // 4, 4)
        out.append(np.transpose(pair, (1, 0, 2)).reshape(-1))
    if n % 2:
        out.append(padded[-1])
    return np.concatenate(out) if out else padded.reshape(-1)


def _nibbles(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.int16) & 15


def pack_int4_rows(w2d: np.ndarray) -> np.ndarray:
    """Packed int4 layout of ce_conv2d_s8_w4 / ce_fully_connected_s8_w4: rows zero-padded to a multiple of 8 values,
    byte i of word j = (row[8j + 4 + i] << 4) | (row[8j + i] & 15), then pairs of rows interleaved by words."""
    n, k = w2d.shape
    k8 = (k + 7) // 8 * 8
    padded = np.zeros((n, k8), dtype=np.int16)
    padded[:, :k] = w2d
    r = _nibbles(padded).reshape(n, k8 // 8, 2, 4)
    rows = (r[:, :, 0, :] | (r[:, :, 1, :] << 4)).astype(np.uint8).reshape(n, k8 // 2)
    return interleave_rows(rows.view(np.int8)).view(np.uint8)


def pack_int4_depthwise(w: np.ndarray) -> np.ndarray:
    """ce_depthwise_s8_w4 layout: [taps][out_c] -> per tap, blocks of 4 channels (zero-padded) in 16 bits holding
    the nibbles (c2, c0, c3, c1) from the least significant."""
    taps, oc = w.shape
    blocks = (oc + 3) // 4
    padded = np.zeros((taps, blocks * 4), dtype=np.int16)
    padded[:, :oc] = w
    c = _nibbles(padded).reshape(taps, blocks, 4)
    lo = c[..., 2] | (c[..., 0] << 4)
    hi = c[..., 3] | (c[..., 1] << 4)
    return np.stack([lo, hi], axis=-1).astype(np.uint8).reshape(-1)


def pack_int4_pairs(values: np.ndarray) -> np.ndarray:
    """Two values per byte, the first in the low nibble (TFLite's packed int4 order)."""
    v = _nibbles(np.asarray(values).reshape(-1))
    if v.size % 2:
        v = np.concatenate([v, np.zeros(1, dtype=v.dtype)])
    return (v[0::2] | (v[1::2] << 4)).astype(np.uint8)


DW3X3_TAP_ORDER = [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (0, 2), (2, 1), (1, 2)]


def dw3x3_layout(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 depthwise weights [1,3,3,C] -> ([C][8] taps in DW3X3_TAP_ORDER, [C] w22) for ce_depthwise3x3_s8."""
    w = arr.reshape(3, 3, -1).astype(np.int64)
    return np.stack([w[ky, kx] for ky, kx in DW3X3_TAP_ORDER], axis=-1), w[2, 2]


def pack_dw3x3_int4(arr: np.ndarray) -> np.ndarray:
    """ce_depthwise3x3_s8_w4: per channel one word, low nibbles = bytes 0-3 and high nibbles = bytes 4-7 of the
    int8 kernel's [w00 w10 w01 w11 w20 w02 w21 w12], then w22 of every channel two per byte."""
    head, last = dw3x3_layout(arr)
    head = _nibbles(head)
    words = (head[:, :4] | (head[:, 4:] << 4)).astype(np.uint8).reshape(-1)
    return np.concatenate([words, pack_int4_pairs(last)])

