"""Options as frozen dataclasses: one for a window's decoding, one for a whole file, one for how a
process runs the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# TranscribeOptions fields that shape only one file's own loop (its prompt, language, VAD, parts),
# not a model call: files that differ only in these still share calls (TranscribeOptions.call_key).
PER_FILE_FIELDS = frozenset({
    "language", "task", "initial_prompt", "hotwords", "condition_on_previous_text", "prompt_reset_on_temperature",
    "vad", "vad_threshold", "vad_hysteresis", "min_silence", "speech_pad", "part_seconds",
})


@dataclass(frozen=True)
class DecodeOptions:
    """How one 30 s window is decoded (one temperature of the fallback ladder)."""

    beam_size: int = 5
    best_of: int = 5
    patience: float = 1.0
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    temperature: float = 0.0
    max_length: int = 448
    suppress_blank: bool = True
    suppress_tokens: tuple[int, ...] = (-1,)
    without_timestamps: bool = False
    max_initial_timestamp: float = 1.0
    max_new_tokens: int | None = None  # a trial run: stop every hypothesis after this many tokens
    seed: int | None = None  # temperature > 0: what sampling draws from (engine.decoding.sampling_seed)

    def __post_init__(self):
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.best_of < 1:
            raise ValueError(f"best_of must be >= 1, got {self.best_of}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be within [0, 2], got {self.temperature}")
        if self.seed is not None and not 0 <= self.seed < 2 ** 32:
            raise ValueError(f"seed must be a 32-bit unsigned int, got {self.seed}")


@dataclass(frozen=True)
class TranscribeOptions:
    """How a whole file is transcribed: the long-form loop's settings."""

    language: str | None = None  # None: detect on multilingual models, "en" on .en models
    task: str = "transcribe"
    beam_size: int = 5
    best_of: int = 5
    patience: float = 1.0
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    prompt_reset_on_temperature: float = 0.5
    # Text the first window is conditioned on (names, jargon), as Whisper's initial_prompt: it heads the
    # previous text until a prompt reset, whole up to Whisper's limit (its last 223 tokens)
    initial_prompt: str | None = None
    # Words put before the previous text in every window's prompt, as faster-whisper's hotwords (its first
    # 223 tokens); they are kept through prompt resets and without condition_on_previous_text
    hotwords: str | None = None
    suppress_blank: bool = True
    suppress_tokens: tuple[int, ...] = (-1,)
    without_timestamps: bool = False
    max_initial_timestamp: float = 1.0
    word_timestamps: bool = True
    vad: bool = True  # skip non-speech and trim segments to speech
    vad_threshold: float = 0.5
    vad_hysteresis: float = 0.15  # speech lasts while above vad_threshold - this: soft frames count (docs/design.md)
    min_silence: float = 5.0  # silences this long (s) are cut out; 3 s cut soft speech (docs/design.md)
    speech_pad: float = 1.0  # around speech (s); 0.4 started clips too near their first word (docs/design.md)
    # A file at least twice this long (s) is decoded as up to 8 parts cut at pauses, chains of windows
    # that batch with each other (engine.parts); None: one chain, the previous text never broken.
    part_seconds: float | None = 180.0

    def __post_init__(self):
        if self.task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', got {self.task!r}")
        if self.beam_size < 1 or self.best_of < 1:
            raise ValueError("beam_size and best_of must be >= 1")
        if not self.temperatures or any(not 0 <= t <= 2 for t in self.temperatures):
            raise ValueError(f"temperatures must be a non-empty ladder within [0, 2]: {self.temperatures}")
        if not 0 < self.vad_threshold < 1:
            raise ValueError(f"vad_threshold must be within (0, 1), got {self.vad_threshold}")
        if not 0 <= self.vad_hysteresis < self.vad_threshold:
            raise ValueError(f"vad_hysteresis must be within [0, vad_threshold), got {self.vad_hysteresis}")
        if self.min_silence <= 0 or self.speech_pad < 0:
            raise ValueError("min_silence must be > 0 and speech_pad >= 0")
        if self.part_seconds is not None and self.part_seconds < 60:
            raise ValueError(f"part_seconds must be at least 60 (or None), got {self.part_seconds}")
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
        object.__setattr__(self, "suppress_tokens", tuple(int(t) for t in self.suppress_tokens))

    def decode_options(self, temperature: float) -> DecodeOptions:
        """The window-level options for one step of the temperature ladder."""
        return DecodeOptions(
            beam_size=self.beam_size,
            best_of=self.best_of,
            patience=self.patience,
            length_penalty=self.length_penalty,
            repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            temperature=temperature,
            suppress_blank=self.suppress_blank,
            suppress_tokens=self.suppress_tokens,
            without_timestamps=self.without_timestamps,
            max_initial_timestamp=self.max_initial_timestamp,
        )

    def call_key(self) -> tuple:
        """What a batched model call must agree on: every field but PER_FILE_FIELDS (a field added
        later counts here until it is known to be per file, which only costs batching)."""
        return tuple((f.name, getattr(self, f.name)) for f in fields(self) if f.name not in PER_FILE_FIELDS)

    def to_dict(self) -> dict:
        """Plain data, for job kwargs and the transcript row."""
        d = asdict(self)
        d["temperatures"] = list(self.temperatures)
        d["suppress_tokens"] = list(self.suppress_tokens)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "TranscribeOptions":
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown transcribe options: {sorted(unknown)}")
        kw = dict(data)
        for key in ("temperatures", "suppress_tokens"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)


@dataclass(frozen=True)
class RuntimeOptions:
    """How this process runs the model: copies of it and voice activity helpers. None of these changes
    the text, so they are not recorded with a job or a transcript and are not part of a call key."""

    # Model copies whose calls run at once (engine.window_server runs one server per copy; CTranslate2
    # only). None: 1 for a Transcriber, which does not know its batch; a worker picks by device and batch
    # (engine.backends.ctranslate2_backend.default_replicas)
    replicas: int | None = None
    # Silero VAD helper processes (engine.vad_pool); 0 runs voice activity in this process. None: half
    # the cores, 1 to 8 (engine.vad_pool.default_size): in-process it competed with decoding for the GIL
    vad_processes: int | None = None

    def __post_init__(self):
        if self.replicas is not None and self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if self.vad_processes is not None and self.vad_processes < 0:
            raise ValueError(f"vad_processes must be >= 0, got {self.vad_processes}")
