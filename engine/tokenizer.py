"""Whisper tokenizer over the model's tokenizer.json: special, language, task and timestamp tokens."""

from __future__ import annotations

import string
from functools import cached_property
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer


LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur "
    "hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si "
    "km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha "
    "ba jw su yue"
).split()
_NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}


class Tokenizer:
    """Text and special tokens of one Whisper model, for one task and language."""

    def __init__(self, hf: HFTokenizer, multilingual: bool, task: str = "transcribe",
                 language: str | None = None):
        self.hf = hf
        self.multilingual = multilingual
        self.task = task
        self.language = language if multilingual else "en"
        self.eot = self._id("<|endoftext|>")
        self.sot = self._id("<|startoftranscript|>")
        self.sot_prev = self._id("<|startofprev|>")
        self.sot_lm = self._id("<|startoflm|>")
        self.no_timestamps = self._id("<|notimestamps|>")
        self.no_speech = hf.token_to_id("<|nospeech|>") or hf.token_to_id("<|nocaptions|>")
        self.transcribe = self._id("<|transcribe|>")
        self.translate = self._id("<|translate|>")
        self.timestamp_begin = self.no_timestamps + 1

    @classmethod
    def from_model_dir(cls, model_dir: Path | str, multilingual: bool, **kw) -> "Tokenizer":
        return cls(HFTokenizer.from_file(str(Path(model_dir) / "tokenizer.json")), multilingual, **kw)

    def _id(self, token: str) -> int:
        value = self.hf.token_to_id(token)
        if value is None:
            raise ValueError(f"tokenizer.json lacks the special token {token}")
        return value

    def language_token(self, language: str) -> int:
        return self._id(f"<|{language}|>")

    def with_language(self, language: str) -> "Tokenizer":
        """The same tokenizer for another language (used after detection)."""
        return Tokenizer(self.hf, self.multilingual, self.task, language)

    def with_task(self, task: str, language: str | None) -> "Tokenizer":
        """The same vocabulary for another task and language (another job's options), unread from disk."""
        return Tokenizer(self.hf, self.multilingual, task, language)

    @cached_property
    def sot_sequence(self) -> tuple[int, ...]:
        """The fixed prefix: start, then language and task on multilingual models."""
        seq = [self.sot]
        if self.multilingual:
            seq.append(self.language_token(self.language or "en"))
            seq.append(self.transcribe if self.task == "transcribe" else self.translate)
        return tuple(seq)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, tokens) -> str:
        return self.hf.decode([t for t in tokens if t < self.eot])

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Symbol tokens to suppress, as openai-whisper's `-1` suppression set."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
        miscellaneous = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + list(miscellaneous):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in miscellaneous:
                    result.add(tokens[0])
        return tuple(sorted(result))

    def split_to_word_tokens(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """Group text tokens into words (by spaces, or by characters for CJK-like languages)."""
        if self.language in _NO_SPACE_LANGUAGES:
            return self._split_on_unicode(tokens)
        subwords, subword_tokens = self._split_on_unicode(tokens)
        words: list[str] = []
        word_tokens: list[list[int]] = []
        for subword, toks in zip(subwords, subword_tokens):
            special = toks[0] >= self.eot
            with_space = subword.startswith(" ")
            punctuation = subword.strip() in string.punctuation
            if special or with_space or punctuation or not words:
                words.append(subword)
                word_tokens.append(list(toks))
            else:
                words[-1] += subword
                word_tokens[-1].extend(toks)
        return words, word_tokens

    def _split_on_unicode(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """Split where the decoded text forms whole unicode characters."""
        words: list[str] = []
        word_tokens: list[list[int]] = []
        current: list[int] = []
        for token in tokens:
            current.append(token)
            decoded = self.hf.decode([t for t in current if t < self.eot]) if current[0] < self.eot else ""
            if current[0] >= self.eot or "\ufffd" not in decoded:
                words.append(decoded)
                word_tokens.append(current)
                current = []
        return words, word_tokens
