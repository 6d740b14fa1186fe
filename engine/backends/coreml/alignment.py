"""Word alignment from the decoder's `alignment_heads_weights` (Whisper's cross-attention DTW).

WhisperKit's TextDecoder returns, per token, the cross-attention weights already averaged over
the model's alignment heads ([1, 1500]). Whisper normalizes each head before averaging; with
the mean only, the steps are: keep the window's frames, renormalize each token's row, standardize
every frame over the tokens, median-filter along time (width 7), then DTW on the negated matrix.
"""

from __future__ import annotations

import numpy as np


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over a sliding window along the last axis, reflect-padded (as whisper's)."""
    if width <= 1 or x.shape[-1] <= width // 2:
        return x
    pad = width // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1), axis=-1)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic path through `cost` [N, M] from (0, 0) to (N-1, M-1): (row indices, column indices).

    whisper's dtw_cpu, computed one anti-diagonal at a time; ties prefer the diagonal, then up.
    """
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    total[0, 0] = 0.0
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        c0, c1, c2 = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
        choice = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        total[i, j] = cost[i - 1, j - 1] + np.choose(choice, [c0, c1, c2])
        trace[i, j] = choice
    trace[0, :], trace[:, 0] = 2, 1
    i, j, path = n, m, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    path = np.array(path[::-1], dtype=np.int64).reshape(-1, 2)
    return path[:, 0], path[:, 1]


def align_weights(weights: np.ndarray, num_frames: int, keep: slice,
                  medfilt_width: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(text indices, time indices) from head-averaged weights [positions, 1500] of the whole
    teacher-forced sequence; `keep` selects the rows that predict the text and end of text."""
    frames = max(1, min(num_frames // 2, weights.shape[1]))
    w = np.asarray(weights[:, :frames], dtype=np.float64)
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    mean, std = w.mean(axis=0, keepdims=True), w.std(axis=0, keepdims=True)
    w = (w - mean) / np.maximum(std, 1e-12)
    w = median_filter(w, medfilt_width)
    return dtw(-w[keep])
