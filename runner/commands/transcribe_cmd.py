"""`scriptorium transcribe FILE...`: transcribe files straight to subtitle and text files, no queue."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from engine.api import Transcriber
from engine.batching import FileDone, FileFailed, FileTask, WindowDone
from engine.errors import MediaError
from engine.options import TranscribeOptions
from engine.results import in_order
from engine.writers import FORMATS, output_stems, write_outputs


def transcribe_files(paths: list[str], transcriber: Transcriber, options: TranscribeOptions,
                     formats: tuple[str, ...], output_dir: Path, batch_size: int = 1,
                     progress: bool | None = None) -> int:
    """Transcribe each file, write its outputs; returns the number of files that failed."""
    progress = sys.stderr.isatty() if progress is None else progress
    segments: dict[str, list] = {}
    bars: dict[str, tqdm] = {}
    failed = 0
    stems = output_stems(paths)
    tasks = (FileTask(p, p) for p in paths)
    for event in transcriber.stream(tasks, options, batch_size):
        if isinstance(event, FileFailed):
            failed += 1
            _close(bars, event.key)
            print(f"error: {_one_line(event.error)}", file=sys.stderr)
        elif isinstance(event, WindowDone):
            segments.setdefault(event.key, []).extend(event.segments)
            _advance(bars, event, progress)
        elif isinstance(event, FileDone):
            _close(bars, event.key)
            info = transcriber.info(event.key, event.duration, options, event.language, event.language_probability)
            try:
                written = write_outputs(in_order(segments.pop(event.key, [])), info, output_dir, stems[event.key],
                                        formats)
            except OSError as exc:
                failed += 1
                print(f"error: {event.key}: cannot write outputs ({exc.strerror or exc})", file=sys.stderr)
                continue
            print(f"{event.key} -> {', '.join(str(p) for p in written)}", file=sys.stderr)
    return failed


def _advance(bars: dict[str, tqdm], event: WindowDone, progress: bool) -> None:
    if not progress:
        return
    bar = bars.get(event.key)
    if bar is None:
        bar = bars[event.key] = tqdm(total=round(event.duration, 1), unit="s", desc=Path(event.key).name,
                                     leave=False, dynamic_ncols=True)
    bar.total = round(event.duration, 1)
    bar.n = round(min(event.done_seconds, event.duration), 1)
    bar.refresh()


def _close(bars: dict[str, tqdm], key: str) -> None:
    bar = bars.pop(key, None)
    if bar is not None:
        bar.close()


def _one_line(error: Exception) -> str:
    text = str(error) if isinstance(error, MediaError) else f"{error.__class__.__name__}: {error}"
    return " ".join(text.split())


def resolve_formats(fmt: str) -> tuple[str, ...]:
    return FORMATS if fmt == "all" else (fmt,)
