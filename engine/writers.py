"""Transcript writers: readable subtitle cues (SRT, WebVTT), plain text and JSON, written atomically.

Cue timing is planned in integer milliseconds so that what is checked is exactly what is
written: no rounding can make two cues overlap or push a cue past its limits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence, TextIO

from engine.results import Segment, TranscriptInfo

FORMATS = ("txt", "srt", "vtt", "json")
MAX_WORD_GAP_MS = 1000  # a silence longer than this between two words always ends a cue
MAX_STEM_BYTES = 200
_INF = 1 << 62
_DROP_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # controls, bidi/format, lone surrogates, line seps


@dataclass(frozen=True)
class CueOptions:
    """Readability limits of a subtitle cue (broadcast norms by default)."""

    max_line_chars: int = 42
    max_lines: int = 2
    max_duration: float = 7.0
    max_cps: float = 17.0
    min_gap: float = 0.0
    cps_slack: float = 1.4  # a multi-word cue may reach max_cps * cps_slack when speech is that dense

    def __post_init__(self):
        for name in ("max_line_chars", "max_lines"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("max_duration", "max_cps"):
            v = getattr(self, name)
            if not _finite(v) or v < 0.001:
                raise ValueError(f"{name} must be a finite number >= 0.001, got {v!r}")
        if not _finite(self.cps_slack) or self.cps_slack < 1:
            raise ValueError(f"cps_slack must be a finite number >= 1, got {self.cps_slack!r}")
        if not _finite(self.min_gap) or self.min_gap < 0:
            raise ValueError(f"min_gap must be a finite number >= 0, got {self.min_gap!r}")


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: times in seconds (whole milliseconds) and its display lines."""

    start: float
    end: float
    lines: tuple[str, ...]


class _Tok(NamedTuple):
    """A word of a cue-to-be, with its time span in integer milliseconds."""

    text: str
    s: int
    e: int


def _finite(x) -> bool:
    """True for a real, finite number (bools excluded), so options and times can be trusted."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _ms(x, fallback: int) -> int:
    """Seconds to whole milliseconds; garbage (NaN, inf, negative) becomes `fallback`."""
    return round(x * 1000) if _finite(x) and x >= 0 else fallback


def _clean(text: str) -> str:
    """Collapse all whitespace (newlines included) to single spaces, so text cannot break a format."""
    return " ".join(text.split())


def _segment_words(seg: Segment) -> list[tuple[str, float, float]]:
    """A segment's words with times: its word timings, else its text spread by character count."""
    words: list[tuple[str, float, float]] = []
    for w in seg.words:
        text = _clean(w.word)
        if words and text and not w.word[:1].isspace():  # "flower" + "-fattened": one word on screen
            words[-1] = (words[-1][0] + text, words[-1][1], w.end)
        elif text:
            words.append((text, w.start, w.end))
    if words:
        return words
    parts = _clean(seg.text).split(" ")
    total = len(" ".join(parts))
    span = max(0.0, seg.end - seg.start) if _finite(seg.end) and _finite(seg.start) else 0.0
    out, pos = [], 0
    for p in parts:
        out.append((p, seg.start + span * pos / total, seg.start + span * (pos + len(p)) / total))
        pos += len(p) + 1
    return out


def _token_groups(segments: Sequence[Segment]) -> list[list[_Tok]]:
    """Per non-empty segment, its words in ms, clamped so starts never go back in time."""
    groups, prev = [], 0
    for seg in segments:
        if not _clean(seg.text):
            continue
        toks = []
        for text, s, e in _segment_words(seg):
            s_ms = max(prev, _ms(s, prev))
            e_ms = max(s_ms, _ms(e, s_ms))
            toks.append(_Tok(text, s_ms, e_ms))
            prev = s_ms
        groups.append(toks)
    return groups


def _gap_ms(o: CueOptions) -> int:
    """The minimum gap between cues in whole ms, rounded up so it is never undercut."""
    return math.ceil(o.min_gap * 1000 - 1e-6)


def _cue_end(toks: list[_Tok], i: int, j: int, chars: int, after: int, o: CueOptions) -> int:
    """End (ms) of a cue of toks[i..j]: its last word's end, stretched into the next gap if CPS needs it."""
    start = toks[i].s
    limit = (toks[j + 1].s if j + 1 < len(toks) else after) - _gap_ms(o)
    needed = start + math.ceil(chars * 1000 / o.max_cps - 1e-6)
    end = min(max(toks[j].e, needed), limit, start + math.floor(o.max_duration * 1000 + 1e-6))
    return max(end, start + 1)


def _plan(toks: list[_Tok], after: int, o: CueOptions) -> list[tuple[int, int, int]]:
    """Split one segment's words into the fewest readable cues (DP), balanced by size: (i, j, end_ms)."""
    n, max_ms = len(toks), math.floor(o.max_duration * 1000 + 1e-6)
    best: list[tuple | None] = [((0, 0, 0), -1, 0)] + [None] * n
    for i in range(n):
        if best[i] is None:
            continue
        lines, cur, chars = 0, 0, -1
        for j in range(i, n):
            w = len(toks[j].text)
            if j > i and toks[j].s - toks[j - 1].e > MAX_WORD_GAP_MS:
                break
            lines, cur = (lines, cur + 1 + w) if lines and cur + 1 + w <= o.max_line_chars else (lines + 1, w)
            chars += w + 1
            if lines > o.max_lines or (j > i and toks[j].e - toks[i].s > max_ms):
                break
            end = _cue_end(toks, i, j, chars, after, o)
            span = end - toks[i].s
            if j > i and chars * 1000 > o.max_cps * o.cps_slack * span * (1 + 1e-9):
                continue
            # Fewest cues over max_cps first: dense speech gets a few slightly fast cues, not a
            # flicker of one-word cues (which are over the limit too).
            over = int(chars * 1000 > o.max_cps * span * (1 + 1e-9))
            cost = (best[i][0][0] + over, best[i][0][1] + 1, best[i][0][2] + chars * chars)
            if best[j + 1] is None or cost < best[j + 1][0]:
                best[j + 1] = (cost, i, end)
    spans, k = [], n
    while k > 0:
        _, i, end = best[k]
        spans.append((i, k - 1, end))
        k = i
    return spans[::-1]


def _wrap(words: list[str], o: CueOptions) -> tuple[str, ...]:
    """Lay words out in the fewest lines that fit, balanced (min sum of squared lengths)."""
    text = " ".join(words)
    if len(text) <= o.max_line_chars or len(words) == 1:
        return (text,)
    n = len(words)
    n_lines = min(o.max_lines, n)

    pre = [0]
    for w in words:
        pre.append(pre[-1] + len(w) + 1)

    def line(a: int, b: int) -> int:
        """Length of words[a:b] on one line."""
        return pre[b] - pre[a] - 1

    # cost[l][k]: best (sum of squares, breaks) for words[:k] in l lines
    cost = [[None] * (n + 1) for _ in range(n_lines + 1)]
    cost[0][0] = (0, ())
    for l in range(1, n_lines + 1):
        for k in range(l, n + 1):
            for a in range(l - 1, k):
                prev, ln = cost[l - 1][a], line(a, k)
                if prev is None or (ln > o.max_line_chars and k - a > 1):
                    continue
                cand = (prev[0] + ln * ln, prev[1] + (a,))
                if cost[l][k] is None or cand[0] < cost[l][k][0]:
                    cost[l][k] = cand
    found = [cost[l][n] for l in range(2, n_lines + 1) if cost[l][n] is not None]
    breaks = found[0][1][1:] + (n,) if found else (n,)  # fewest lines that fit
    starts = (0,) + breaks[:-1]
    return tuple(" ".join(words[a:b]) for a, b in zip(starts, breaks))


def _settle(spans: list[list[int]], gap: int) -> None:
    """Force start < end and end + gap <= next start (ms), trimming ends before moving starts."""
    for k in range(1, len(spans)):
        prev, cur = spans[k - 1], spans[k]
        if cur[0] < prev[1] + gap:
            prev[1] = max(prev[0] + 1, cur[0] - gap)
        cur[0] = max(cur[0], prev[1] + gap)
        cur[1] = max(cur[1], cur[0] + 1)


def make_cues(segments: Sequence[Segment], opts: CueOptions = CueOptions()) -> list[Cue]:
    """Subtitle cues split at word times so each is readable (lines, duration, CPS) and none overlap."""
    groups = _token_groups(segments)
    planned: list[tuple[list[str], list[int]]] = []
    for g, toks in enumerate(groups):
        after = groups[g + 1][0].s if g + 1 < len(groups) else _INF
        for i, j, end in _plan(toks, after, opts):
            planned.append(([t.text for t in toks[i : j + 1]], [toks[i].s, end]))
    _settle([p[1] for p in planned], _gap_ms(opts))
    return [Cue(s / 1000, e / 1000, _wrap(words, opts)) for words, (s, e) in planned]


def format_timestamp(seconds: float, sep: str = ",") -> str:
    """`HH:MM:SS<sep>mmm` rounded to the millisecond; hours grow past 99 rather than wrap."""
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _vtt_escape(line: str) -> str:
    """Escape the characters WebVTT cue text reserves (&, <, >), which also defuses '-->'."""
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_srt(segments: Sequence[Segment], fp: TextIO, opts: CueOptions = CueOptions()) -> None:
    """Write SubRip subtitles: numbered cues with `HH:MM:SS,mmm` times."""
    for n, cue in enumerate(make_cues(segments, opts), 1):
        text = "\n".join(line.replace("-->", "->") for line in cue.lines)
        fp.write(f"{n}\n{format_timestamp(cue.start)} --> {format_timestamp(cue.end)}\n{text}\n\n")


def write_vtt(segments: Sequence[Segment], fp: TextIO, opts: CueOptions = CueOptions()) -> None:
    """Write WebVTT subtitles: a `WEBVTT` header, then cues with `HH:MM:SS.mmm` times."""
    fp.write("WEBVTT\n\n")
    for cue in make_cues(segments, opts):
        text = "\n".join(_vtt_escape(line) for line in cue.lines)
        fp.write(f"{format_timestamp(cue.start, '.')} --> {format_timestamp(cue.end, '.')}\n{text}\n\n")


def write_txt(segments: Sequence[Segment], fp: TextIO) -> None:
    """Write plain text: one non-empty segment per line, whitespace collapsed."""
    for seg in segments:
        text = _clean(seg.text)
        if text:
            fp.write(text + "\n")


def _jsonable(x):
    """A JSON-safe copy: floats rounded to 3 decimals, NaN/inf as null, tuples as lists."""
    if isinstance(x, float):
        return round(x, 3) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if x is None or isinstance(x, (str, int)):
        return x
    return str(x)


def write_json(segments: Sequence[Segment], info: TranscriptInfo | None, fp: TextIO) -> None:
    """Write the whole transcript and how it was made as one JSON object."""
    fields = ("language", "duration", "model", "model_hash", "backend", "compute", "options", "engine_version")
    doc = {"text": " ".join(t for t in (_clean(s.text) for s in segments) if t)}
    doc.update({f: getattr(info, f) if info is not None else None for f in fields})
    doc["segments"] = [s.to_dict() for s in segments]
    json.dump(_jsonable(doc), fp, ensure_ascii=False, allow_nan=False)
    fp.write("\n")


def safe_stem(name: str) -> str:
    """A file stem that cannot escape its folder or hide: no separators, controls or leading dots/dashes."""
    name = unicodedata.normalize("NFC", str(name)).replace("/", "_").replace("\\", "_")
    name = "".join(c for c in name if unicodedata.category(c) not in _DROP_CATEGORIES)
    name = name.strip().lstrip(".- \t").rstrip()
    name = name.encode("utf-8")[:MAX_STEM_BYTES].decode("utf-8", "ignore").rstrip()
    return name or "untitled"


def output_stems(paths: Iterable[str]) -> dict[str, str]:
    """A distinct output stem for each of files whose outputs go into one folder, by path.

    talk.mp3 -> talk, unless another of them is named talk.* too: then each keeps its extension
    (talk.mp3, talk.wav); files of the same name from different folders are numbered, the first as
    it is (talk.wav, talk.wav-2). A name that is not a safe file stem as it is (a leading '-' or '.',
    control characters, over 200 bytes) is cleaned and tagged with a hash of the full name, so it
    cannot take another's files ('-rf' and 'rf', 'a\\nb' and 'ab', long names alike in their first
    200 bytes).
    """
    paths = list(dict.fromkeys(str(p) for p in paths))
    stems = Counter(Path(p).stem for p in paths)
    taken: set[str] = set()
    chosen = {}
    for path in paths:
        media = Path(path)
        stem = media.name if stems[media.stem] > 1 else media.stem
        stem = next(c for c in [stem, *(f"{stem}-{i}" for i in range(2, len(paths) + 2))] if c not in taken)
        taken.add(stem)
        chosen[path] = _tagged(stem, media.name)
    return chosen


def _tagged(stem: str, name: str) -> str:
    """`stem` as it is when it is a safe file stem, else cleaned and tagged with 8 hex digits of `name`'s hash."""
    cleaned = safe_stem(stem)
    if cleaned == unicodedata.normalize("NFC", stem):
        return stem
    tag = hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    cleaned = cleaned.encode("utf-8")[:MAX_STEM_BYTES - len(tag) - 1].decode("utf-8", "ignore").rstrip()
    return f"{cleaned}-{tag}"


def _fsync_dir(path: Path) -> None:
    """Persist a rename by syncing its folder; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, write: Callable[[TextIO], None]) -> None:
    """Write via a temp file in the same folder, fsync, then rename, so no reader sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".scriptorium-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fp:
            write(fp)
            fp.flush()
            os.fchmod(fp.fileno(), 0o644)
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def write_outputs(
    segments: Sequence[Segment],
    info: TranscriptInfo | None,
    out_dir: Path,
    stem: str,
    formats: Sequence[str] = FORMATS,
    opts: CueOptions = CueOptions(),
) -> list[Path]:
    """Write `out_dir/<safe stem>.<fmt>` for each format atomically; returns the paths written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown output formats {unknown}; known: {FORMATS}")
    writers = {
        "txt": lambda fp: write_txt(segments, fp),
        "srt": lambda fp: write_srt(segments, fp, opts),
        "vtt": lambda fp: write_vtt(segments, fp, opts),
        "json": lambda fp: write_json(segments, info, fp),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base, stem = out_dir.resolve(), safe_stem(stem)
    paths = []
    for fmt in dict.fromkeys(formats):
        name = f"{stem}.{fmt}"
        if (base / name).parent != base or Path(name).name != name:
            raise ValueError(f"output {name!r} would leave {base}")
        _write_atomic(base / name, writers[fmt])
        paths.append(out_dir / name)
    return paths
