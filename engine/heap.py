"""Keep freed memory in the process on glibc, so CTranslate2's per-call buffers are not page-faulted in again.

By default glibc hands blocks over 32 MB (and the top of each heap) back to the kernel on free;
CTranslate2 on CPU allocates and frees its activations on every call (about 200 MB for one
encoder window, 3.4 GB of page touches for a batch of 8), so each call paid for zeroing fresh
pages: measured on 2 cores, 40% of an encoder call was page faults. One arena that is never
trimmed and never uses mmap makes the second call reuse the first call's memory (resident size
stays at the high-water mark instead of going up and down).

It changes the whole process's allocator, so only a process that owns itself asks for it (a worker,
the `transcribe` command), before it loads the model; building a Transcriber never does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_done = False


def keep_heap() -> bool:
    """Tune glibc malloc once per process; False where it does not apply (not glibc)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    ok = all(mallopt(option, value) == 1 for option, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 31 - 1)))
    if not ok:
        log.debug("mallopt refused a setting; allocator left partly tuned")
    _done = ok
    return ok
