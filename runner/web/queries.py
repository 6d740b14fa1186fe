"""What the pages read from the catalog, as plain data; and where a media file may be served from."""

from __future__ import annotations

import datetime as dt
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup, escape
from sqlalchemy import select

from runner.catalog import models as m
from runner.catalog.db import Catalog
from runner.catalog.search import MARK_CLOSE, MARK_OPEN, Hit
from runner.catalog.status import Status

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ogv", ".mpg", ".mpeg", ".wmv", ".flv",
                  ".3gp", ".ts", ".mts"}
EXTRA_TYPES = {".mkv": "video/x-matroska", ".flac": "audio/flac", ".m4a": "audio/mp4", ".opus": "audio/ogg",
               ".ogg": "audio/ogg", ".wav": "audio/wav", ".webm": "video/webm", ".mts": "video/mp2t"}
BUCKETS_S = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
MAX_BARS = 48
MAX_BAR_W = 36  # px: a few bars stay bars, not a wall


def clock(seconds: float | None) -> str:
    """0:42, 12:03, 1:02:03: how a player shows a time."""
    whole = max(0, int(seconds or 0))
    h, rest = divmod(whole, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def duration_words(seconds: float | None) -> str:
    """A rough human duration: 45 s, 12 min, 3.4 h, 2.1 days."""
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def marked_html(text: str, marked: str) -> Markup:
    """The hit's text, escaped, with each matched stretch in <mark>.

    `marked` is `text` with [ and ] inserted around matches; walking both strings tells an inserted
    bracket from one that was in the text. If they do not line up, the plain text is shown.
    """
    out, depth, i = [], 0, 0
    for ch in marked:
        if i < len(text) and ch == text[i]:
            out.append(str(escape(ch)))
            i += 1
        elif ch == MARK_OPEN and depth == 0:
            out.append("<mark>")
            depth = 1
        elif ch == MARK_CLOSE and depth == 1:
            out.append("</mark>")
            depth = 0
        else:
            return Markup(escape(text))
    if i != len(text):
        return Markup(escape(text))
    return Markup("".join(out) + ("</mark>" if depth else ""))


@dataclass
class FileHits:
    """The hits of one file, in time order."""

    media_id: int
    path: str
    name: str
    model: str
    hits: list[Hit]


def group_hits(hits: list[Hit]) -> list[FileHits]:
    """Hits grouped by file; files in the order of their best hit, hits within a file by time."""
    groups: dict[int, FileHits] = {}
    for hit in hits:
        group = groups.get(hit.media_id)
        if group is None:
            group = groups[hit.media_id] = FileHits(hit.media_id, hit.path, Path(hit.path).name, hit.model_name, [])
        group.hits.append(hit)
    for group in groups.values():
        group.hits.sort(key=lambda h: h.start)
    return list(groups.values())


def filter_choices(catalog: Catalog) -> dict:
    """Suggestions for the search filters: scan roots and models of finished transcripts."""
    with catalog.read() as session:
        roots = session.scalars(select(m.MediaFile.scan_root).distinct().where(m.MediaFile.scan_root.is_not(None))
                                .order_by(m.MediaFile.scan_root)).all()
        models = session.scalars(select(m.Transcript.model_name).distinct().where(m.Transcript.status == Status.done)
                                 .order_by(m.Transcript.model_name)).all()
    return {"folders": list(roots), "models": list(models)}


def recent_files(catalog: Catalog, limit: int = 20) -> list[dict]:
    """The last files whose transcript finished, newest first."""
    with catalog.read() as session:
        rows = session.execute(
            select(m.MediaFile.id, m.MediaFile.path, m.MediaFile.duration, m.Transcript.model_name,
                   m.Transcript.finished_at)
            .join(m.Transcript, m.Transcript.media_id == m.MediaFile.id)
            .where(m.Transcript.status == Status.done)
            .order_by(m.Transcript.finished_at.desc(), m.MediaFile.id.desc()).limit(limit)).all()
    return [{"id": r.id, "path": r.path, "name": Path(r.path).name, "duration": clock(r.duration),
             "model": r.model_name, "finished_at": r.finished_at} for r in rows]


def media_kind(path: str) -> tuple[str, str]:
    """("video" | "audio", MIME type) judged by the file's name."""
    suffix = Path(path).suffix.lower()
    mime = EXTRA_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"
    kind = "video" if suffix in VIDEO_SUFFIXES or mime.startswith("video/") else "audio"
    return kind, mime


def servable_path(path: str | None, scan_root: str | None) -> Path | None:
    """The real file behind a catalog row if it lies inside the row's scan root, else None.

    Both sides are resolved (symlinks, `..`), so a link that points out of the root is refused.
    """
    if not path or not scan_root or not os.path.isabs(path) or not os.path.isabs(scan_root):
        return None
    root = os.path.realpath(scan_root)
    real = os.path.realpath(path)
    try:
        inside = os.path.commonpath([root, real]) == root
    except ValueError:
        return None
    if not inside or real == root or not os.path.isfile(real):
        return None
    return Path(real)


def media_row(catalog: Catalog, media_id: int) -> m.MediaFile | None:
    """The media row (detached), or None."""
    with catalog.read() as session:
        row = session.get(m.MediaFile, media_id)
        if row is not None:
            session.expunge(row)
        return row


def media_page(catalog: Catalog, media_id: int) -> dict | None:
    """Everything the transcript page shows: the file, its finished transcript and its segments
    (in time order, as its subtitles and downloads: each one's id is its place in the transcript)."""
    segments = [{"id": s.id, "start": s.start, "end": s.end, "clock": clock(s.start), "text": s.text.strip()}
                for s in catalog.transcript_segments(media_id, words=False) if s.text.strip()]
    with catalog.read() as session:
        media = session.get(m.MediaFile, media_id)
        if media is None:
            return None
        t = session.scalars(select(m.Transcript).where(m.Transcript.media_id == media_id,
                                                       m.Transcript.status == Status.done)
                            .order_by(m.Transcript.id.desc()).limit(1)).first()
        kind, mime = media_kind(media.path)
        transcript = None if t is None else {
            "model": t.model_name, "model_hash": t.model_hash, "backend": t.backend, "compute": t.compute,
            "language": t.language, "language_probability": t.language_probability,
            "engine_version": t.engine_version, "options": dict(sorted((t.options or {}).items())),
            "finished_at": t.finished_at, "wall_seconds": t.wall_seconds, "rtf": t.rtf,
        }
        return {
            "id": media.id, "path": media.path, "name": Path(media.path).name, "status": media.status.value,
            "error": media.error, "duration": clock(media.duration), "scanned_at": media.scanned_at,
            "kind": kind, "mime": mime, "playable": servable_path(media.path, media.scan_root) is not None,
            "transcript": transcript, "segments": segments,
        }


def failed_files(catalog: Catalog, limit: int = 200) -> list[dict]:
    """Failed files with their last reason and attempt count, by path."""
    with catalog.read() as session:
        rows = session.scalars(select(m.MediaFile).where(m.MediaFile.status == Status.failed)
                               .order_by(m.MediaFile.path).limit(limit)).all()
        return [{"id": r.id, "path": r.path, "name": Path(r.path).name, "error": r.error or "",
                 "attempts": r.attempts or 0, "log": list(r.errors_log or [])} for r in rows]


def throughput_series(catalog: Catalog, now: dt.datetime | None = None) -> dict:
    """Audio transcribed per time bucket, as x real time, from finished transcripts.

    The bucket is the smallest of BUCKETS_S that fits the whole history in MAX_BARS bars.
    """
    with catalog.read() as session:
        rows = session.execute(select(m.Transcript.finished_at, m.Transcript.audio_seconds)
                               .where(m.Transcript.status == Status.done, m.Transcript.finished_at.is_not(None),
                                      m.Transcript.audio_seconds.is_not(None))).all()
    if not rows:
        return {"bucket_s": None, "bars": []}
    first = min(r.finished_at for r in rows)
    last = max(max(r.finished_at for r in rows), now or first)
    span = (last - first).total_seconds()
    bucket = next((b for b in BUCKETS_S if span / b < MAX_BARS), BUCKETS_S[-1])
    epoch = int(first.timestamp()) // bucket * bucket
    n = int((last.timestamp() - epoch) // bucket) + 1
    n = min(n, MAX_BARS)
    audio = [0.0] * n
    for finished, seconds in rows:
        i = min(n - 1, int((finished.timestamp() - epoch) // bucket))
        audio[i] += seconds
    bars = [{"start": dt.datetime.fromtimestamp(epoch + i * bucket, dt.timezone.utc), "audio_s": a, "x": a / bucket}
            for i, a in enumerate(audio)]
    return {"bucket_s": bucket, "bars": bars}


def chart(series: dict, width: int = 640, height: int = 140) -> dict | None:
    """Bar geometry for the inline SVG throughput chart, or None without data."""
    bars = series["bars"]
    if not bars:
        return None
    top = max(b["x"] for b in bars) or 1.0
    pad_left, pad_bottom, pad_top = 44, 20, 10
    plot_w, plot_h = width - pad_left - 4, height - pad_bottom - pad_top
    slot = plot_w / len(bars)
    rects = []
    for i, b in enumerate(bars):
        h = plot_h * b["x"] / top
        w = max(1.0, min(slot * 0.8, MAX_BAR_W))
        rects.append({"x": round(pad_left + i * slot + (slot - w) / 2, 1), "y": round(pad_top + plot_h - h, 1),
                      "w": round(w, 1), "h": round(h, 1),
                      "title": f"{b['start']:%Y-%m-%d %H:%M} UTC: {duration_words(b['audio_s'])} of audio, "
                               f"{b['x']:.2f}x real time"})
    return {"width": width, "height": height, "rects": rects, "top": f"{top:.2f}x", "axis_y": pad_top + plot_h,
            "left": pad_left, "right": width - 4, "pad_top": pad_top,
            "first": f"{bars[0]['start']:%Y-%m-%d %H:%M}", "last": f"{bars[-1]['start']:%Y-%m-%d %H:%M}",
            "bucket": duration_words(series["bucket_s"])}
