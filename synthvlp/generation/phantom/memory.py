"""Keep freed heap at the top of glibc's arena instead of handing it back to the kernel after every map.

A render allocates and frees a few hundred full-size float32 maps (256 KB each at 256 px). By default glibc
returns the heap's free top to the kernel once it passes ~0.5 MB, so the next maps page-fault again: about
1,100 faults per 256 px image, a quarter to a third of its time. A top pad keeps that memory mapped (64 MB at
most, touched only as the render needs it). Elsewhere than glibc there is no ``mallopt`` and nothing changes.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

M_TOP_PAD = -2
TOP_PAD_BYTES = 64 << 20


@lru_cache(maxsize=1)
def keep_heap() -> bool:
    """Set glibc's top pad once per process; True if it was set."""
    try:
        return bool(ctypes.CDLL(None).mallopt(M_TOP_PAD, TOP_PAD_BYTES))
    except (AttributeError, OSError):
        return False
