"""Typed errors of the engine: each carries the file (or model) and the reason."""

from __future__ import annotations


class ScriptoriumError(Exception):
    """Base of every error the engine raises on purpose."""


class MediaError(ScriptoriumError):
    """A media file cannot be read as audio; `path` names it, `reason` says why.

    `permanent` tells a job runner whether retrying could ever help (a corrupt
    file: no; a file that vanished mid-read or a full disk: maybe).
    """

    def __init__(self, path: str, reason: str, permanent: bool = True):
        self.path = str(path)
        self.reason = reason
        self.permanent = permanent
        super().__init__(f"{self.path}: {reason}")


class NoAudioStream(MediaError):
    """The file is a valid container but holds no audio stream."""


class ModelError(ScriptoriumError):
    """A model folder is missing, incomplete or fails verification."""

    def __init__(self, model: str, reason: str):
        self.model = str(model)
        self.reason = reason
        super().__init__(f"model {self.model}: {reason}")


class BackendUnavailable(ScriptoriumError):
    """The requested backend or compute kind cannot run on this machine."""

    def __init__(self, backend: str, reason: str):
        self.backend = backend
        self.reason = reason
        super().__init__(f"{backend}: {reason}")


class HubError(ScriptoriumError):
    """A model hub request failed: `url` is what was asked, `reason` says why, `retry` how to try again."""

    def __init__(self, url: str, reason: str, retry: str | None = None):
        self.url = str(url)
        self.reason = reason
        self.retry = retry
        super().__init__(f"{reason} ({self.url})" + (f"; retry with: {retry}" if retry else ""))


class HelperError(ScriptoriumError):
    """A helper the engine runs beside a file's decoding (a voice activity process, a window server
    thread) failed or stopped answering while `path` was decoded: the file is not at fault, a retry may succeed."""

    permanent = False

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
