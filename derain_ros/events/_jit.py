"""numba's ``njit`` with an on-disk cache where possible, and a plain-Python fallback.

Why: the decoders and the voxel kernel are per-event loops (the evt3 and libcaer_cmp
formats are state machines that numpy cannot vectorise). numba compiles them once;
``cache=True`` keeps the machine code on disk so a node's first message does not wait for
the compiler. numba is a declared dependency (setup.py; ``python3-numba`` in package.xml);
where it is missing anyway the same functions run as plain Python, correct but about
100x slower, and a warning says so.
When numba's cache directory is not writable, the kernels compile without a cache.

A habit of the kernels: they index arrays with ``np.uint64(i)``. numba wraps negative
signed indices around (``a[-1]``), which costs a few instructions per access and ties up
registers; an unsigned index skips that, worth about 15 % in the decoders' loops.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any, ParamSpec, TypeAlias, TypeVar, cast

import numpy as np

__all__ = ["HAVE_NUMBA", "KFloat", "KInt", "leading_zeros", "njit", "trailing_zeros"]

#: An integer scalar inside a kernel (for annotations): numba types Python ints and
#: numpy integers alike, and the kernels mix them (``np.int64(words[i]) >> 12``).
KInt: TypeAlias = "int | np.integer[Any]"
#: A floating-point scalar inside a kernel, likewise.
KFloat: TypeAlias = "float | np.floating[Any]"

_log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def _py_leading_zeros(m: KInt) -> int:
    """Leading zero bits of a 64-bit ``m`` (numba's intrinsic, in plain Python)."""
    return 64 - int(m).bit_length()


def _py_trailing_zeros(m: KInt) -> int:
    """Trailing zero bits of a non-zero 64-bit ``m``."""
    return (int(m) & -int(m)).bit_length() - 1


leading_zeros: Callable[[KInt], int] = _py_leading_zeros
trailing_zeros: Callable[[KInt], int] = _py_trailing_zeros
try:
    import numba as _numba
    from numba.cpython.unsafe import numbers as _numba_numbers
except ImportError:  # pragma: no cover - exercised only where numba is absent
    HAVE_NUMBA = False
else:
    HAVE_NUMBA = True
    # numba's stubs type these intrinsics by their typing-time signature (context, x);
    # inside a kernel, which is where they are called, they take the one integer.
    leading_zeros = cast("Callable[[KInt], int]", _numba_numbers.leading_zeros)
    trailing_zeros = cast("Callable[[KInt], int]", _numba_numbers.trailing_zeros)
_warned = False


def njit(func: Callable[P, R]) -> Callable[P, R]:
    """Compile ``func`` with ``numba.njit(cache=True)``; see the module docstring."""
    global _warned  # noqa: PLW0603 - one warning per process
    if not HAVE_NUMBA:  # pragma: no cover
        if not _warned:
            warnings.warn("numba is not installed: event kernels run as slow plain Python "
                          "(pip install numba, or rosdep's python3-numba)", RuntimeWarning,
                          stacklevel=2)
            _warned = True
        return func
    try:
        return _numba.njit(cache=True, nogil=True)(func)
    except RuntimeError as err:  # no writable cache locator for this file
        _log.info("numba cache unavailable for %s (%s): compiling without a cache",
                  func.__qualname__, err)
        return _numba.njit(cache=False, nogil=True)(func)
