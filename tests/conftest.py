"""Shared test fixtures: the real-speech corpus in ../shared/audio and generated media files.

Generated files live in a session temp folder (never in the repository); shared
audio is only read, never copied into the repo.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

# A short, well-known clip used as the audio track of generated containers.
VIDEO_SOURCE = "jfk.flac"


def _shared_audio_path() -> Path | None:
    """../shared/audio next to the repo, else $SCRIPTORIUM_SHARED_AUDIO, else None."""
    candidate = Path(__file__).resolve().parents[2] / "shared" / "audio"
    if (candidate / "manifest.json").is_file():
        return candidate
    env = os.environ.get("SCRIPTORIUM_SHARED_AUDIO")
    if env and (Path(env) / "manifest.json").is_file():
        return Path(env)
    return None


def _load_manifest() -> list[dict]:
    """The manifest entries, or [] when the corpus is absent (used at collection time)."""
    path = _shared_audio_path()
    if path is None:
        return []
    return json.loads((path / "manifest.json").read_text(encoding="utf-8"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes `manifest_entry` runs once per corpus recording (skipped if none)."""
    if "manifest_entry" in metafunc.fixturenames:
        entries = _load_manifest()
        metafunc.parametrize("manifest_entry", entries, ids=[e["file"] for e in entries])


@pytest.fixture(scope="session")
def shared_audio_dir() -> Path:
    """Folder of the shared real-speech corpus; skips the test when it is absent."""
    path = _shared_audio_path()
    if path is None:
        pytest.skip("shared audio corpus not found (set SCRIPTORIUM_SHARED_AUDIO)")
    return path


@pytest.fixture(scope="session")
def manifest(shared_audio_dir: Path) -> list[dict]:
    """The corpus manifest: one dict per recording (file, duration_s, sample_rate, ...)."""
    return _load_manifest()


@pytest.fixture(scope="session")
def manifest_by_file(manifest: list[dict]) -> dict[str, dict]:
    """The manifest keyed by file name."""
    return {entry["file"]: entry for entry in manifest}


def run_ffmpeg(*args: str) -> None:
    """Run the system ffmpeg quietly; fail the test with its stderr on error."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.skip("system ffmpeg is needed to build test media")
    res = subprocess.run([exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"ffmpeg {' '.join(args)} failed: {res.stderr.strip()}")


class MediaFactory:
    """Builds (once per session, on first use) the generated media files the tests need."""

    def __init__(self, folder: Path, shared: Path | None):
        self.folder = folder
        self.shared = shared
        self._built: dict[str, Path] = {}

    def get(self, name: str) -> Path:
        """Path of the named test file (see the _make_* methods), building it if needed."""
        if name not in self._built:
            builder = getattr(self, f"_make_{name}", None)
            if builder is None:
                raise KeyError(f"no test media named {name!r}")
            self._built[name] = builder(self.folder / name)
        return self._built[name]

    def source(self) -> Path:
        """The shared clip that generated containers carry as their audio."""
        if self.shared is None:
            pytest.skip("shared audio corpus not found")
        return self.shared / VIDEO_SOURCE

    def _video(self, out: Path, vcodec: list[str], acodec: list[str], seconds: float = 11.0) -> Path:
        """Mux a tiny test-pattern video with the source clip's audio."""
        run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-i", f"file:{self.source()}",
                   "-map", "0:v", "-map", "1:a", *vcodec, *acodec, "-t", str(seconds), f"file:{out}")
        return out

    def _make_mp4(self, base: Path) -> Path:
        """MPEG-4 video + AAC audio in mp4."""
        return self._video(base.with_suffix(".mp4"), ["-c:v", "mpeg4"], ["-c:a", "aac"])

    def _make_mkv(self, base: Path) -> Path:
        """MPEG-4 video + FLAC audio in Matroska."""
        return self._video(base.with_suffix(".mkv"), ["-c:v", "mpeg4"], ["-c:a", "flac"])

    def _make_webm(self, base: Path) -> Path:
        """VP8 video + Opus audio in WebM."""
        return self._video(base.with_suffix(".webm"),
                           ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "50k"],
                           ["-c:a", "libopus", "-b:a", "32k"])

    def _make_video_no_audio(self, base: Path) -> Path:
        """A valid mp4 with a video track only."""
        out = base.with_suffix(".mp4")
        run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-t", "2", "-c:v", "mpeg4", f"file:{out}")
        return out

    def _make_silence_wav(self, base: Path) -> Path:
        """2 s of digital silence, 16 kHz mono wav."""
        out = base.with_suffix(".wav")
        run_ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "2", "-c:a", "pcm_s16le", f"file:{out}")
        return out

    def _make_empty(self, base: Path) -> Path:
        """A 0-byte file named .wav."""
        out = base.with_suffix(".wav")
        out.touch()
        return out

    def _make_random_mp3(self, base: Path) -> Path:
        """64 KiB of (seeded) random bytes named .mp3."""
        out = base.with_suffix(".mp3")
        out.write_bytes(random.Random(1234).randbytes(64 * 1024))
        return out

    def _make_truncated_m4a(self, base: Path) -> Path:
        """A plain ffmpeg m4a keeps its moov atom at the end: cutting the tail loses it."""
        full = base.with_name("full_for_truncation.m4a")
        run_ffmpeg("-i", f"file:{self.source()}", "-t", "4", "-c:a", "aac", f"file:{full}")
        data = full.read_bytes()
        moov = data.find(b"moov")
        assert moov > len(data) // 2, "expected the moov atom at the end of the m4a"
        out = base.with_suffix(".m4a")
        out.write_bytes(data[: moov // 2])
        return out


@pytest.fixture(scope="session")
def media_factory(tmp_path_factory: pytest.TempPathFactory) -> MediaFactory:
    """Session-wide builder of generated media (mp4, mkv, webm, video_no_audio, silence_wav,
    empty, random_mp3, truncated_m4a): `media_factory.get("mkv")` returns its Path."""
    return MediaFactory(tmp_path_factory.mktemp("media"), _shared_audio_path())


# --------------------------------------------------------------------------- engine end-to-end

@pytest.fixture(scope="session")
def cpu_transcriber():
    """The packaged tiny.en model on CPU with 2 threads, loaded once for the whole session."""
    from engine.api import Transcriber

    return Transcriber(compute="cpu", threads=2)


@pytest.fixture(scope="session")
def ffmpeg():
    """`run_ffmpeg` as a fixture, for tests that build their own media: ffmpeg("-i", src, out)."""
    return run_ffmpeg


# --------------------------------------------------------------------------- hangs and stopped processes

def run_within(seconds: float, fn):
    """fn()'s result (or its error) from a thread of its own; fails the test when fn is still running
    after `seconds`, so a hang shows as a failure instead of a stuck suite."""
    import threading

    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="within")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still waiting after {seconds:g} s: hung")
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.fixture()
def within():
    """run_within as a fixture: within(60, fn)."""
    return run_within


@pytest.fixture()
def suspend():
    """suspend(psutil.Process): SIGSTOP it now; at teardown, whatever is still stopped is killed, so a
    failing test leaves no stopped child (nor a thread blocked on one) behind."""
    import psutil

    stopped: list = []

    def stop(process):
        process.suspend()
        stopped.append(process)

    yield stop
    for process in stopped:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
