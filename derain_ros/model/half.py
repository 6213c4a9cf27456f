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
- below ``2**-14`` (float16 subnormals, quantum ``2**-24``): ``(|x| + 0.5) - 0.5`` in
  float32: at 0.5 a float32's quantum is ``2**-24``, so the addition rounds ``|x|`` to
  a multiple of it, ties to even, and the subtraction is exact;
- infinity stays infinity, NaN becomes ``(a & 0x7fffe000) | 0x400000``.

One uint32 array, selects instead of branches: LLVM vectorises the loop (about 0.4 ns a
value, three times the first, two-view version of this kernel).
"""

from __future__ import annotations

import numpy as np

from derain_ros.events._jit import njit

__all__ = ["round_to_half_"]

_U = np.uint32
_HALF = np.float32(0.5)


@njit
def _round_half_kernel(u: np.ndarray) -> None:
    """``u``: the uint32 view of a float32 array; each value rounded in place."""
    for i in range(u.shape[0]):
        bits = u[i]
        a = bits & _U(0x7FFFFFFF)
        r = (a + _U(0xFFF) + ((a >> _U(13)) & _U(1))) & _U(0x7FFFE000)
        r = _U(0x7F800000) if r >= _U(0x47800000) else r
        r = ((a & _U(0x7FFFE000)) | _U(0x400000)) if a > _U(0x7F800000) else r
        f = _U(a).view(np.float32)
        sub = np.float32((f + _HALF) - _HALF).view(np.uint32)
        r = sub if a < _U(0x38800000) else r
        u[i] = _U(r | (bits & _U(0x80000000)))


def round_to_half_(array: np.ndarray) -> np.ndarray:
    """Round a C-contiguous float32 ``array`` to float16 precision in place; returns it."""
    if array.dtype != np.float32 or not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError("round_to_half_ needs a writeable C-contiguous float32 array")
    _round_half_kernel(array.reshape(-1).view(np.uint32))
    return array
