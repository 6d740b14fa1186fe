"""Which waiting windows are decoded together.

CTranslate2 decodes a batch only when every prompt has <|startoftranscript|> at the same place,
so windows whose previous text has another length need a call of their own, and a call of
one window costs about half a call of eight. More files are kept in flight than a call holds, so
calls can be filled from one length. The window server passes each file's audio left: the group
of the file with the most left goes first (its critical path); without it, the largest group.
A window passed over `max_age` times goes next, so none waits for ever. Which windows share a
call never changes what any of them decodes to.
"""

from __future__ import annotations

LOOKAHEAD = 2  # files in flight per batch slot when batching
# Calls a window may be passed over before it goes next. At 2, a backlog of first windows made the
# order first-in first-out and the long files waited behind it; at 8 the long files go on and calls
# fill better (40 files, 2 AMD AVX2 cores, engine timeline: median 91.4 s against 94.5-100.7 s).
MAX_AGE = 8


def choose(lengths: list[int], ages: list[int], batch_size: int, max_age: int = MAX_AGE,
           remaining: list[float] | None = None) -> list[int]:
    """Indices (into the waiting list, oldest first) of the windows to decode in this call.

    With `remaining` (seconds of audio left in each window's file), the file with the most left
    goes first, with the windows of its prompt length that have the most left: the longest file
    is the run's critical path, and a run whose long files trail at the end decodes them one
    window per call on a machine that is otherwise idle. Without it, the largest group goes.
    """
    if not lengths:
        return []
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(n, []).append(i)
    oldest = max(range(len(ages)), key=lambda i: (ages[i], -i))
    if ages[oldest] >= max_age:
        chosen = groups[lengths[oldest]]
    elif remaining is not None:
        urgent = max(range(len(lengths)), key=lambda i: (remaining[i], -i))
        chosen = groups[lengths[urgent]]
    else:
        chosen = max(groups.values(), key=lambda g: (min(len(g), batch_size), -g[0]))
    if remaining is not None:
        chosen = sorted(chosen, key=lambda i: (-remaining[i], i))
    return chosen[:batch_size]
