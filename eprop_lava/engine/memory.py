"""Keep freed large arrays in the process heap (glibc) during training.

Every training step (and every block of the fixed-point engine) allocates and frees several (T, B, N) arrays (records,
learning signals, adjoints: ~29 MB each for the evidence task at batch 32).
glibc hands allocations above its mmap threshold straight back to the
operating system when they are freed, so the next step takes a page fault
for every 4 KiB it touches again: measured ~20% of a CPU training step
(docs/benchmarks.md). Raising the mmap and trim thresholds keeps that memory
in the heap for reuse. The process then holds on to its peak working set,
which is what a training loop needs anyway.

Only glibc is touched; elsewhere (macOS, musl) this is a no-op.
``EPROP_LAVA_RETAIN_MEMORY=0`` switches it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1   # mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
RETAIN_BYTES = 1 << 30  # allocations up to 1 GiB come from (and go back to) the heap

_done = False


def retain_freed_memory() -> bool:
    """Raise glibc's mmap/trim thresholds once per process. Returns True when
    they are in effect."""
    global _done
    if _done:
        return True
    if os.environ.get("EPROP_LAVA_RETAIN_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _done = bool(mallopt(M_MMAP_THRESHOLD, RETAIN_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * RETAIN_BYTES - 1))
    return _done
