"""The Python API: `Transcriber(model=..., compute=...).transcribe(path, TranscribeOptions(...))`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import engine
from engine.backends import create_backend
from engine.batching import BatchTranscriber, Event, FileDone, FileFailed, FileTask, WindowDone
from engine.errors import ModelError
from engine.models import ModelSpec, resolve_model
from engine.options import RuntimeOptions, TranscribeOptions
from engine.results import Segment, TranscriptInfo, in_order
from engine.scheduling import LOOKAHEAD
from engine.tokenizer import Tokenizer
from engine.vad_pool import shared_pool
from engine.window_server import WindowServer, run_tasks


@dataclass(frozen=True)
class Transcript:
    """A finished file: its segments and how they were made."""

    segments: tuple[Segment, ...]
    info: TranscriptInfo
    timings: dict
    wall_seconds: float


class Transcriber:
    """A loaded model on one backend; load once, transcribe many files."""

    def __init__(self, model: str | Path | ModelSpec | None = None, compute: str = "auto",
                 backend: str = "ctranslate2", threads: int = 0, compute_type: str | None = None,
                 models_dir: Path | None = None, runtime: RuntimeOptions | None = None):
        """`runtime` says how this process runs the model (copies, VAD helper processes); it never
        changes the text. The process's allocator is left alone (engine.heap is the worker's call)."""
        self.model = model if isinstance(model, ModelSpec) else resolve_model(model, models_dir)
        self.runtime = runtime or RuntimeOptions()
        kwargs = {"compute": compute, "threads": threads}
        if compute_type:
            kwargs["compute_type"] = compute_type
        if (self.runtime.replicas or 1) != 1:  # model copies whose calls run at once (ctranslate2 only)
            kwargs["replicas"] = self.runtime.replicas
        self.backend = create_backend(backend, self.model, **kwargs)
        # helpers shared by the Transcribers of this process that ask for as many; None: VAD in-process
        self.vad_pool = shared_pool(self.runtime.vad_processes)
        self._tokenizers: dict[tuple[str, str], Tokenizer] = {}

    def tokenizer(self, options: TranscribeOptions) -> Tokenizer:
        """The tokenizer for these options, read from tokenizer.json once (~50 ms) and reused for every job."""
        key = (options.task, options.language or "en")
        if options.task == "translate" and not self.model.multilingual:  # Whisper would transcribe silently
            raise ModelError(self.model.name, "is English-only: task=translate needs a multilingual model")
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer.from_model_dir(self.model.path, self.model.multilingual,
                                                             task=key[0], language=key[1])
        return self._tokenizers[key]

    def info(self, path: str, duration: float, options: TranscribeOptions, language: str = "en",
             language_probability: float = 1.0) -> TranscriptInfo:
        """What a transcript of `path` made by this transcriber records about itself."""
        return TranscriptInfo(str(path), duration, language, language_probability, self.model.name,
                              self.model.sha256, self.backend.name, self.backend.compute,
                              options.to_dict(), engine.__version__)

    def stream(self, tasks: Iterable[FileTask], options: TranscribeOptions | None = None,
               batch_size: int = 1) -> Iterator[Event]:
        """Events (window done, file done, file failed) for many files decoded together: LOOKAHEAD x
        batch_size files in flight, `tasks` pulled lazily as they finish; closing the iterator ends their readers."""
        options = options or TranscribeOptions()
        batcher = BatchTranscriber(self.backend, self.tokenizer(options), self.model.n_mels, options, batch_size,
                                   self.vad_pool)
        return run_tasks(batcher, tasks, batch_size * LOOKAHEAD)

    def window_server(self, options: TranscribeOptions | None = None, batch_size: int = 8):
        """A server that batches the windows of files transcribed from many threads (with `options`
        unless a file's stream() gives its own)."""
        options = options or TranscribeOptions()
        return WindowServer(BatchTranscriber(self.backend, self.tokenizer(options), self.model.n_mels, options,
                                             batch_size, self.vad_pool))

    def transcribe(self, path: str | Path, options: TranscribeOptions | None = None) -> Transcript:
        """The whole transcript of one file."""
        options = options or TranscribeOptions()
        result = next(iter(self.transcribe_many([path], options)))
        if isinstance(result, FileFailed):
            raise result.error
        return result

    def transcribe_many(self, paths: Iterable[str | Path | FileTask], options: TranscribeOptions | None = None,
                        batch_size: int = 1) -> Iterator[Transcript | FileFailed]:
        """Whole transcripts, in the order files finish; a bad file yields FileFailed and the rest go on.

        A FileTask (its key the path) may stand for a path, to give its known duration: batched,
        the files with the most audio left are decoded first.
        """
        options = options or TranscribeOptions()
        segments: dict[str, list[Segment]] = {}
        started: dict[str, float] = {}
        tasks = (p if isinstance(p, FileTask) else FileTask(str(p), str(p)) for p in paths)
        for event in self.stream(tasks, options, batch_size):
            started.setdefault(event.key, time.perf_counter())
            if isinstance(event, WindowDone):
                segments.setdefault(event.key, []).extend(event.segments)
            elif isinstance(event, FileFailed):
                yield event
            elif isinstance(event, FileDone):
                info = self.info(event.key, event.duration, options, event.language, event.language_probability)
                yield Transcript(in_order(segments.pop(event.key, [])), info, event.timings,
                                 time.perf_counter() - started.pop(event.key))
