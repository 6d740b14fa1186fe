"""The files `bench` and `eval` read and their references: a folder, the shared corpus manifest, JSON, JSON
lines, CSV/TSV manifests and LibriSpeech-style folders. Relative paths resolve against the manifest's folder."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from bench.wer import normalize
from runner.errors import RunnerError

# Reference qualities of the shared corpus manifest that count as ground truth.
GOOD_QUALITY = ("exact", "exact-canonical", "exact-verbatim", "corrected-official")
# Licensed for local evaluation only (CC BY-NC-ND): never part of a benchmark we commit or publish.
LOCAL_ONLY = {"ted_60.m4a"}
MEDIA_SUFFIXES = {
    ".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif", ".amr",
    ".mka", ".webm", ".mp4", ".m4v", ".mov", ".mkv", ".avi", ".ogv", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
    ".3gp",
}
_PATH_KEYS = ("file", "path", "audio", "audio_path", "audio_filepath", "filename")
_TEXT_KEYS = ("reference", "text", "transcript", "transcription", "sentence")




class BenchError(RunnerError):
    """A folder or manifest cannot be benchmarked or evaluated; the message says why."""


@dataclass
class Item:
    """One file to transcribe and its reference (None: not scored)."""

    name: str
    path: Path
    duration: float | None = None
    reference: str | None = None
    reference_words: int = 0

    def __post_init__(self):
        if self.reference is not None and not self.reference_words:
            self.reference_words = len(normalize(self.reference).split())




# --------------------------------------------------------------------------- corpus: the shared format

def load_items(audio_dir: Path, subset: list[str] | None = None) -> list[Item]:
    """The files of a shared-format manifest.json with a trustworthy reference, in manifest order.

    subset: only these file names (BenchError if one is not in the scored set). LOCAL_ONLY files
    are left out.
    """
    manifest = _read_json(Path(audio_dir) / "manifest.json")
    usable = {e["file"]: e for e in manifest
              if e.get("reference") and e.get("reference_quality") in GOOD_QUALITY
              and e["file"] not in LOCAL_ONLY}
    if subset:
        unknown = [f for f in subset if f not in usable]
        if unknown:
            raise BenchError(f"not in the scored set (no trustworthy reference): {', '.join(unknown)}")
        names = list(subset)
    else:
        names = [e["file"] for e in manifest if e["file"] in usable]
    return [Item(name, Path(audio_dir) / name, float(usable[name]["duration_s"]), usable[name]["reference"])
            for name in names]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from exc


# --------------------------------------------------------------------------- bench: a folder

def media_files(folder: Path) -> list[Path]:
    """Media files under folder (by extension), recursively, sorted; dot files and folders skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not name.startswith(".") and path.suffix.lower() in MEDIA_SUFFIXES and path.is_file():
                out.append(path)
    return out


def folder_items(folder: Path, scored_only: bool = False) -> list[Item]:
    """Every media file under folder, with its reference and duration where known.

    References, first found wins: manifest.json in folder (shared format: entries whose
    reference_quality, when given, is a trustworthy one), LibriSpeech *.trans.txt lines, a
    sidecar NAME.txt next to NAME.ext.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchError(f"{folder}: not a folder")
    known: dict[Path, tuple[str | None, float | None]] = {}
    if (folder / "manifest.json").is_file():
        for item in _json_items(folder / "manifest.json", require_files=False):
            known[_key(item.path)] = (item.reference, item.duration)
    for item in _librispeech_items(folder, require_files=False):
        known.setdefault(_key(item.path), (item.reference, None))
    items = []
    for path in media_files(folder):
        reference, duration = known.get(_key(path), (None, None))
        if reference is None:
            sidecar = path.with_suffix(".txt")
            if sidecar.is_file():
                reference = sidecar.read_text(encoding="utf-8", errors="replace").strip()
        if scored_only and reference is None:
            continue
        items.append(Item(path.relative_to(folder).as_posix(), path, duration, reference))
    if not items:
        raise BenchError(f"{folder}: no media files" + (" with a reference" if scored_only else ""))
    return items


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


# --------------------------------------------------------------------------- eval: a manifest

def read_manifest(path: Path) -> list[Item]:
    """Files and references of an evaluation manifest (JSON, JSON lines, CSV, TSV, or a LibriSpeech folder).

    Entries without a reference (null or absent) are left out; a listed file that does not
    exist, or a manifest with nothing to score, is a BenchError.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "manifest.json").is_file():
            items = _json_items(path / "manifest.json")
        else:
            items = _librispeech_items(path)
            if not items:
                raise BenchError(f"{path}: no manifest.json and no LibriSpeech *.trans.txt files")
    elif not path.is_file():
        raise BenchError(f"{path}: no such manifest")
    elif path.name.endswith(".trans.txt"):
        items = _trans_file_items(path, path.parent)
    elif path.suffix.lower() in (".csv", ".tsv"):
        items = _csv_items(path)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        items = _json_items(path, lines=True)
    else:
        items = _json_items(path)
    if not items:
        raise BenchError(f"{path}: no entries with a reference")
    names = [i.name for i in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BenchError(f"{path}: listed more than once: {', '.join(dupes[:5])}")
    return items


def _pick(entry: dict, keys: tuple[str, ...]):
    lowered = {str(k).strip().lower(): v for k, v in entry.items()}
    for key in keys:
        if lowered.get(key) not in (None, ""):
            return lowered[key]
    return None


def _resolve(base: Path, name: str) -> Path:
    path = Path(os.path.expanduser(name))
    return path if path.is_absolute() else base / path


def _check_exists(manifest: Path, items: list[Item]) -> list[Item]:
    missing = [i.name for i in items if not i.path.is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise BenchError(f"{manifest}: {len(missing)} listed file(s) not found: {', '.join(missing[:5])}{more}")
    return items


def _entries_to_items(manifest: Path, entries: Iterable[dict], require_files: bool) -> list[Item]:
    items = []
    for n, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise BenchError(f"{manifest}: entry {n} is not an object")
        name = _pick(entry, _PATH_KEYS)
        if name is None:
            raise BenchError(f"{manifest}: entry {n} names no file (one of: {', '.join(_PATH_KEYS)})")
        quality = entry.get("reference_quality")
        reference = _pick(entry, _TEXT_KEYS)
        if reference is None or (quality is not None and quality not in GOOD_QUALITY):
            continue
        duration = entry.get("duration_s", entry.get("duration"))
        items.append(Item(str(name), _resolve(manifest.parent, str(name)),
                          float(duration) if duration not in (None, "") else None, str(reference)))
    return _check_exists(manifest, items) if require_files else items


def _json_items(path: Path, lines: bool = False, require_files: bool = True) -> list[Item]:
    if lines:
        try:
            text = path.read_text(encoding="utf-8")
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        except (OSError, ValueError) as exc:
            raise BenchError(f"cannot read {path}: {exc}") from exc
    else:
        entries = _read_json(path)
    if isinstance(entries, dict):
        for key in ("files", "items", "data", "entries"):
            if isinstance(entries.get(key), list):
                entries = entries[key]
                break
        else:
            raise BenchError(f"{path}: expected a list of {{file, reference}} objects")
    if not isinstance(entries, list):
        raise BenchError(f"{path}: expected a list of {{file, reference}} objects")
    return _entries_to_items(path, entries, require_files)


def _csv_items(path: Path) -> list[Item]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            sample = fh.read(4096)
            fh.seek(0)
            delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in sample and "," not in sample) else ","
            reader = csv.DictReader(fh, delimiter=delimiter)
            header = [h.strip().lower() for h in reader.fieldnames or []]
            if not set(header) & set(_PATH_KEYS) or not set(header) & set(_TEXT_KEYS):
                raise BenchError(f"{path}: the header must name a file column ({', '.join(_PATH_KEYS[:3])}) "
                                 f"and a text column ({', '.join(_TEXT_KEYS[:2])}); got {', '.join(header)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from exc
    return _entries_to_items(path, rows, require_files=True)


def _librispeech_items(folder: Path, require_files: bool = True) -> list[Item]:
    items = []
    for trans in sorted(folder.rglob("*.trans.txt")):
        items += _trans_file_items(trans, folder, require_files)
    return items


def _trans_file_items(trans: Path, root: Path, require_files: bool = True) -> list[Item]:
    """`ID TEXT` lines of one LibriSpeech transcript file; audio is ID.flac (or another media suffix) beside it."""
    items, missing = [], []
    for line in trans.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        utt, text = parts[0], (parts[1] if len(parts) > 1 else "")
        candidates = [trans.parent / f"{utt}{s}" for s in (".flac", ".wav", ".mp3", ".ogg", ".opus", ".m4a")]
        audio = next((c for c in candidates if c.is_file()), None)
        if audio is None:
            missing.append(utt)
            continue
        items.append(Item(audio.relative_to(root).as_posix(), audio, None, text))
    if missing and require_files:
        raise BenchError(f"{trans}: no audio (ID.flac) for {len(missing)} line(s): {', '.join(missing[:5])}")
    return items


# --------------------------------------------------------------------------- engines
