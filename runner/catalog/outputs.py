"""A finished file's SRT, VTT, JSON and TXT: where they go, under which name, and never over a file
Scriptorium did not write (a person's subtitles next to the media) unless told to overwrite."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select

from engine.writers import FORMATS, output_stems, safe_stem, write_outputs
from runner.catalog import models as m
from runner.config import Settings
from runner.catalog.db import Catalog
from runner.errors import RunnerError
from runner.catalog.status import Status

log = logging.getLogger(__name__)


def output_dir_for(settings: Settings, path: str, scan_root: str | None) -> Path:
    """DATA/outputs/<path relative to its scan root>'s folder, or the media's own folder."""
    media = Path(path)
    if settings.outputs == "beside":
        return Path(settings.local_path(path)).parent
    root = Path(scan_root) if scan_root else media.parent
    try:
        relative = media.parent.relative_to(root)
    except ValueError:
        relative = Path()
    target = (settings.outputs_dir / relative).resolve()
    if not target.is_relative_to(settings.outputs_dir.resolve()):
        raise RunnerError(f"{path}: output folder would leave {settings.outputs_dir}")
    return target


def write_media_outputs(catalog: Catalog, settings: Settings, media_id: int,
                        formats: tuple[str, ...] | None = None, output_dir: Path | None = None) -> list[Path]:
    """SRT, VTT, JSON and TXT of a done file, written from the catalog; a file already at a target
    that Scriptorium did not write is left alone and named in the log (unless settings.overwrite)."""
    with catalog.read() as session:
        media = session.get(m.MediaFile, media_id)
        path, root = media.path, media.scan_root
    segments = catalog.transcript_segments(media_id)
    info = catalog.transcript_info(media_id)
    target = output_dir_for(settings, path, root) if output_dir is None else output_dir
    stem = output_stem(catalog, path)
    wanted = list(dict.fromkeys(formats or FORMATS))
    kept = [] if settings.overwrite else [f for f in wanted if not may_replace(catalog, target / f"{safe_stem(stem)}.{f}")]
    for fmt in kept:
        log.warning("%s: not overwriting %s: Scriptorium did not write it (--overwrite replaces it)",
                    path, target / f"{safe_stem(stem)}.{fmt}")
    written = write_outputs(segments, info, target, stem, [f for f in wanted if f not in kept])
    record_written(catalog, media_id, written)
    return written


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def may_replace(catalog: Catalog, path: Path) -> bool:
    """True if nothing is at `path`, or what is there is a file Scriptorium wrote, unchanged since."""
    if not path.exists():
        return True
    with catalog.read() as session:
        row = session.get(m.OutputFile, str(path.resolve()))
    try:
        return row is not None and path.is_file() and _sha256(path) == row.sha256
    except OSError:
        return False


def record_written(catalog: Catalog, media_id: int | None, paths: list[Path]) -> None:
    """Remember each file written and its content, so a later write may replace it."""
    if not paths:
        return
    with catalog.write() as session:
        for path in paths:
            session.merge(m.OutputFile(path=str(path.resolve()), media_id=media_id, sha256=_sha256(path),
                                       written_at=m.utcnow()))


def write_pending(catalog: Catalog, settings: Settings) -> int:
    """Write the outputs of every finished file whose outputs are still pending (a worker killed
    between finishing a transcript and writing its files), each where it was meant to go; returns
    how many were written. A disk that still refuses leaves the file pending, with the reason."""
    count = 0
    for media_id, where in catalog.pending_outputs():
        try:
            write_media_outputs(catalog, replace(settings, outputs=where), media_id)
        except OSError as exc:
            catalog.outputs_failed(media_id, f"outputs not written: {exc.strerror or exc}")
            continue
        catalog.outputs_written(media_id)
        count += 1
    return count


def output_stem(catalog: Catalog, path: str) -> str:
    """The stem of a catalogued file's outputs (engine.writers.output_stems among the files of its
    folder, skipped ones aside): talk.mp3 -> talk, unless talk.wav is catalogued there too."""
    media = Path(path)
    prefix = str(media.parent / media.stem) + "."
    with catalog.read() as session:
        siblings = session.scalars(select(m.MediaFile.path).where(
            m.MediaFile.path.startswith(prefix, autoescape=True), m.MediaFile.path != path,
            m.MediaFile.status != Status.skipped)).all()
    return output_stems([path, *(p for p in siblings if Path(p).parent == media.parent)])[path]
