"""Rounding float32 to float16 precision in place, without torch and without a copy.

The input contract's ``float16`` precision means: every prepared value is what
``x.astype(np.float16).astype(np.float32)`` gives (IEEE 754 round to nearest, ties to
even; overflow to infinity; float16 subnormals). Doing that with numpy costs two full
passes and two arrays per frame; :func:`round_to_half_` does it in one pass over the
float32 array's bits (numba), the same bits as numpy's conversion for every finite
value and infinity; NaN stays NaN (quiet, its payload truncated to float16's, as the
x86 F16C instruction does).

How, per value with magnitude bits ``a`` (sign kept aside):

- float16 normal range (``2**-14 <= |x| < 65520``): drop the 13 low mantissa bits with
  round-to-nearest-even: ``(a + 0xfff + ((a >> 13) & 1)) & ~0x1fff``; a carry into
  the exponent is the correct result (also 65504 -> infinity past the half-way point);
- below ``2**-14`` (float16 subnormals, quantum ``2**-24``): ``rint(|x| * 2**24) *
  2**-24`` in float32 (both products exact, ``rint`` is ties-to-even);
- infinity stays infinity, NaN becomes ``(a & 0x7fffe000) | 0x400000``.
"""

from __future__ import annotations

import numpy as np

from derain_ros.events._jit import KInt, njit

__all__ = ["round_to_half_"]

_TWO24 = np.float32(2.0 ** 24)
_TWO_M24 = np.float32(2.0 ** -24)


@njit
def _round_half_kernel(x: np.ndarray, u: np.ndarray) -> None:
    """``x`` (float32, 1-D) and ``u`` (its uint32 view): each value rounded in place."""
    for i in range(u.shape[0]):
        bits = np.int64(u[i])
        a = bits & 0x7FFFFFFF
        r: KInt = (a + 0xFFF + ((a >> 13) & 1)) & 0x7FFFE000
        r = 0x7F800000 if r >= 0x47800000 else r
        r = ((a & 0x7FFFE000) | 0x400000) if a > 0x7F800000 else r
        sub = np.rint(np.abs(x[i]) * _TWO24) * _TWO_M24
        r = np.int64(np.float32(sub).view(np.uint32)) if a < 0x38800000 else r
        u[i] = np.uint32(r | (bits & 0x80000000))


def round_to_half_(array: np.ndarray) -> np.ndarray:
    """Round a C-contiguous float32 ``array`` to float16 precision in place; returns it."""
    if array.dtype != np.float32 or not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError("round_to_half_ needs a writeable C-contiguous float32 array")
    flat = array.reshape(-1)
    _round_half_kernel(flat, flat.view(np.uint32))
    return array
