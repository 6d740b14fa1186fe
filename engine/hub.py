"""A small client for Hugging Face–compatible model hubs (urllib only): list a repo, fetch files with resume.

The endpoint is `--endpoint`, else $HF_ENDPOINT, else https://huggingface.co; a mirror that
speaks the same two routes works:

- `GET {endpoint}/api/models/{repo}/revision/main?blobs=true`: JSON whose `siblings` list
  `{rfilename, size?, lfs?: {sha256, size}}`;
- `GET {endpoint}/{repo}/resolve/main/{path}`: the file, honouring `Range: bytes=N-`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.errors import HubError

DEFAULT_ENDPOINT = "https://huggingface.co"
COREML_REPO = "argmaxinc/whisperkit-coreml"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Variant:
    """A model a hub offers: a CTranslate2 repo, or one folder of the WhisperKit Core ML repo."""

    name: str
    repo: str
    format: str  # "ctranslate2" or "coreml"
    folder: str = ""  # Core ML: the top-level folder of COREML_REPO holding this variant
    size: int | None = None

    @property
    def languages(self) -> str:
        return languages_of(self.name)


def _ct2(name: str, repo: str | None = None) -> Variant:
    return Variant(name, repo or f"Systran/faster-whisper-{name}", "ctranslate2")


CATALOG: tuple[Variant, ...] = tuple(
    [_ct2(n) for n in ("tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en", "large-v3")]
    + [_ct2("distil-large-v3", "Systran/faster-distil-whisper-large-v3"),
       _ct2("large-v3-turbo", "mobiuslabsgmbh/faster-whisper-large-v3-turbo")])


def languages_of(name: str) -> str:
    """'en' for English-only checkpoints (a `.en` in the name), else 'multilingual'."""
    return "en" if re.search(r"\.en($|[_\-/])", name) else "multilingual"


def known_variant(name: str) -> Variant | None:
    """The catalog's CTranslate2 variant called `name`, or a WhisperKit folder name, or an owner/repo."""
    for variant in CATALOG:
        if name in (variant.name, variant.repo):
            return variant
    if re.match(r"^(openai|distil-whisper)_whisper", name) or name.startswith("distil-whisper_"):
        return Variant(name, COREML_REPO, "coreml", folder=name)
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", name):
        return Variant(name.rsplit("/", 1)[1], name, "ctranslate2")
    return None


@dataclass(frozen=True)
class RemoteFile:
    """One file of a hub repo: its path in the repo, size and sha256 when the hub gives them."""

    path: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Listing:
    """A repo's files at a revision (`revision` is the commit sha when the hub reports one)."""

    repo: str
    revision: str
    files: tuple[RemoteFile, ...]


def resolve_endpoint(endpoint: str | None = None) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


class Hub:
    """Requests to one endpoint; every failure is a HubError naming the URL."""

    def __init__(self, endpoint: str | None = None, timeout: float = 30.0, token: str | None = None,
                 retries: int = 4):
        self.endpoint = resolve_endpoint(endpoint)
        self.timeout = timeout
        self.token = token if token is not None else os.environ.get("HF_TOKEN")
        self.retries = retries

    def listing_url(self, repo: str, revision: str = "main") -> str:
        return f"{self.endpoint}/api/models/{repo}/revision/{revision}?blobs=true"

    def file_url(self, repo: str, path: str, revision: str = "main") -> str:
        return f"{self.endpoint}/{repo}/resolve/{revision}/{urllib.parse.quote(path)}"

    def list_files(self, repo: str, revision: str = "main") -> Listing:
        """Every file of `repo` with size and LFS sha256 where the hub gives them."""
        url = self.listing_url(repo, revision)
        with self._open(url) as resp:
            try:
                data = json.loads(resp.read())
            except (ValueError, OSError, http.client.HTTPException) as exc:
                raise HubError(url, f"unreadable listing: {exc}") from exc
        files = []
        for s in data.get("siblings") or []:
            if not isinstance(s, dict) or not s.get("rfilename"):
                continue
            lfs = s.get("lfs") or {}
            size = lfs.get("size", s.get("size"))
            files.append(RemoteFile(s["rfilename"], int(size) if size is not None else None, lfs.get("sha256")))
        return Listing(repo, str(data.get("sha") or revision), tuple(files))

    def coreml_variants(self) -> list[Variant]:
        """The WhisperKit Core ML repo's top-level folders, one variant each, with their total size."""
        listing = self.list_files(COREML_REPO)
        sizes: dict[str, int] = {}
        for f in listing.files:
            if "/" in f.path:
                folder = f.path.split("/", 1)[0]
                sizes[folder] = sizes.get(folder, 0) + (f.size or 0)
        return [Variant(folder, COREML_REPO, "coreml", folder, size or None) for folder, size in sorted(sizes.items())]

    def download(self, repo: str, remote: RemoteFile, dest: Path, revision: str = "main",
                 progress: Callable[[int], None] | None = None) -> str:
        """Fetch one file into `dest`, resuming from what `dest` already holds; returns its sha256.

        A connection that breaks mid-file is resumed with a Range request. A file whose size
        or sha256 differs from the hub's metadata is deleted and refused (HubError).
        """
        url = self.file_url(repo, remote.path, revision)
        dest.parent.mkdir(parents=True, exist_ok=True)
        leftover = dest.exists()  # bytes from an earlier, interrupted run
        while True:
            self._fetch_all(url, dest, remote.size, progress)
            digest = sha256_file(dest)
            size = dest.stat().st_size
            problem = None
            if remote.size is not None and size != remote.size:
                problem = f"size mismatch: the hub says {remote.size} bytes, got {size}; download discarded"
            elif remote.sha256 and digest != remote.sha256.lower():
                problem = f"sha256 mismatch: the hub says {remote.sha256}, got {digest}; download discarded"
            if problem is None:
                return digest
            dest.unlink()
            if not leftover:
                raise HubError(url, problem)
            leftover = False  # the earlier run's bytes were bad: fetch the whole file once more

    def _fetch_all(self, url: str, dest: Path, size: int | None, progress: Callable[[int], None] | None) -> None:
        """Requests until `dest` is complete, each resuming where the last one broke off."""
        failures = 0
        while True:
            have = dest.stat().st_size if dest.exists() else 0
            if size is not None and have > size:
                dest.unlink()
                have = 0
            if size is not None and have == size:
                return
            try:
                done = self._fetch(url, dest, have, size, progress)
                reason = "connection closed before the end of the file"
            except HubError as exc:
                if not re.search(r"HTTP (429|5\d\d)", exc.reason):  # only a busy or failing server is retried
                    raise
                done, reason = False, exc.reason
            except (OSError, http.client.HTTPException) as exc:  # a dropped connection, a timeout
                done, reason = False, f"{type(exc).__name__}: {exc}"
            if done:
                return
            grown = (dest.stat().st_size if dest.exists() else 0) > have
            failures = 0 if grown else failures + 1
            if failures > self.retries:
                raise HubError(url, f"download keeps failing ({reason})")
            if not grown:
                time.sleep(min(0.5 * 2 ** failures, 8.0))

    def _fetch(self, url: str, dest: Path, have: int, size: int | None,
               progress: Callable[[int], None] | None) -> bool:
        """One request from byte `have` on; True when the file is complete."""
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            resp = self._open(url, headers)
        except HubError as exc:
            if have and "HTTP 416" in exc.reason:  # nothing after `have`: the file is complete
                return size is None or have == size
            raise
        with resp:
            if have and resp.status != 206:  # the server ignored the range: start over
                have = 0
            expected = resp.headers.get("Content-Length")
            expected = int(expected) if expected and expected.isdigit() else None
            got = 0
            with dest.open("r+b" if have else "wb") as fh:
                fh.seek(have)
                fh.truncate()
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    got += len(block)
                    if progress is not None:
                        progress(len(block))
        if expected is not None:
            return got == expected
        return size is None or have + got == size

    def _open(self, url: str, headers: dict | None = None):
        request = urllib.request.Request(url, headers={"User-Agent": "scriptorium", **(headers or {})})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310 - http(s) endpoint
        except urllib.error.HTTPError as exc:
            raise HubError(url, _http_reason(exc.code)) from exc
        except urllib.error.URLError as exc:
            raise HubError(url, f"cannot reach {self.endpoint} ({_reason(exc.reason)})") from exc
        except (socket.timeout, TimeoutError) as exc:
            raise HubError(url, f"cannot reach {self.endpoint} (timed out after {self.timeout:g} s)") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise HubError(url, f"cannot reach {self.endpoint} ({_reason(exc)})") from exc


def _http_reason(code: int) -> str:
    if code == 404:
        return "not found on the hub (HTTP 404)"
    if code in (401, 403):
        return f"access denied (HTTP {code}): a gated or private repo needs HF_TOKEN"
    return f"the hub answered HTTP {code}"


def _reason(reason) -> str:
    if isinstance(reason, socket.gaierror):
        return "host not found: offline?"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused: offline?"
    return str(getattr(reason, "strerror", None) or reason)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
