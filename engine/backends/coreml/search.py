"""Host-side token search over per-step logits: Whisper's logit rules, beam search, sampling.

The rules follow openai-whisper (and CTranslate2, which copies them): suppress listed and
special tokens, a blank or end of text as the first token, and ApplyTimestampRules (timestamps
come in pairs and never go back; the first one is at most `max_initial_timestamp`; when the
timestamps together are likelier than any text token, a timestamp comes next).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.constants import TIME_PRECISION
from engine.options import DecodeOptions

NEG_INF = np.float32(-np.inf)


@dataclass(frozen=True)
class TokenRules:
    """Token ids the rules need, from the tokenizer and the model's config."""

    eot: int
    timestamp_begin: int
    no_timestamps: int
    specials: tuple[int, ...]  # never sampled: sot, sot_prev, sot_lm, task, no_speech
    default_suppress: tuple[int, ...]  # what `-1` in suppress_tokens stands for
    suppress_begin: tuple[int, ...]  # blank and end of text, forbidden as the first token

    def suppressed(self, options: DecodeOptions) -> np.ndarray:
        ids = set(self.specials)
        for token in options.suppress_tokens:
            ids.update(self.default_suppress if token == -1 else (token,))
        return np.array(sorted(ids), dtype=np.int64)


def log_softmax(x: np.ndarray) -> np.ndarray:
    top = np.max(x, axis=-1, keepdims=True)
    shifted = x - top
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def apply_rules(logits: np.ndarray, generated: list[list[int]], options: DecodeOptions, rules: TokenRules,
                timestamps: bool) -> np.ndarray:
    """Mask (to -inf) what may not come next after each row's `generated` tokens; in place."""
    logits[:, rules.suppressed(options)] = NEG_INF
    for row, seq in enumerate(generated):
        if not seq and options.suppress_blank:
            logits[row, list(rules.suppress_begin)] = NEG_INF
        if options.repetition_penalty != 1.0 and seq:
            _penalize_repeats(logits[row], seq, options.repetition_penalty)
        if options.no_repeat_ngram_size > 0:
            _ban_repeated_ngrams(logits[row], seq, options.no_repeat_ngram_size)
        if timestamps:
            _timestamp_rules(logits[row], seq, options, rules)
    return logits


def _penalize_repeats(row: np.ndarray, seq: list[int], penalty: float) -> None:
    ids = np.unique(seq)
    values = row[ids]
    row[ids] = np.where(values < 0, values * penalty, values / penalty)


def _ban_repeated_ngrams(row: np.ndarray, seq: list[int], n: int) -> None:
    if len(seq) < n - 1 or n < 1:
        return
    tail = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
    banned = [seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i:i + n - 1]) == tail]
    row[banned] = NEG_INF


def _timestamp_rules(row: np.ndarray, seq: list[int], options: DecodeOptions, rules: TokenRules) -> None:
    begin = rules.timestamp_begin
    row[rules.no_timestamps] = NEG_INF
    last_was_timestamp = len(seq) >= 1 and seq[-1] >= begin
    penultimate_was_timestamp = len(seq) < 2 or seq[-2] >= begin
    if last_was_timestamp:
        if penultimate_was_timestamp:
            row[begin:] = NEG_INF  # a pair is closed: text (or end of text) comes next
        else:
            row[:rules.eot] = NEG_INF  # an open timestamp: another timestamp or end of text
    stamps = [t for t in seq if t >= begin]
    if stamps:
        floor = stamps[-1] if last_was_timestamp and not penultimate_was_timestamp else stamps[-1] + 1
        row[begin:floor] = NEG_INF  # timestamps never go back
    if not seq:
        row[:begin] = NEG_INF  # a window opens with a timestamp
        limit = int(round(options.max_initial_timestamp / TIME_PRECISION))
        row[begin + limit + 1:] = NEG_INF
    logprobs = log_softmax(row[None])[0]
    timestamp_logprob = np.logaddexp.reduce(logprobs[begin:])
    if timestamp_logprob > logprobs[:begin].max():
        row[:begin] = NEG_INF


@dataclass
class Hypotheses:
    """One window's beam search: the live beams and the finished candidates."""

    beam_size: int
    max_candidates: int
    finished: dict[tuple[int, ...], float] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return len(self.finished) >= self.max_candidates

    def step(self, seqs: list[tuple[int, ...]], scores: np.ndarray, logprobs: np.ndarray, eot: int):
        """openai-whisper's BeamSearchDecoder.update for one window: ([(parent, token, score)], done)."""
        candidates: dict[tuple[int, ...], tuple[float, int, int]] = {}
        k = min(self.beam_size + 1, logprobs.shape[1])
        for parent, (seq, score, row) in enumerate(zip(seqs, scores, logprobs)):
            top = np.argpartition(-row, k - 1)[:k]
            for token in top[np.argsort(-row[top], kind="stable")]:
                if not np.isfinite(row[token]):
                    continue
                key = seq + (int(token),)
                if key not in candidates:
                    candidates[key] = (float(score + row[token]), parent, int(token))
        live, newly_finished = [], {}
        for key in sorted(candidates, key=lambda s: candidates[s][0], reverse=True):
            value, parent, token = candidates[key]
            if token == eot:
                newly_finished[key] = value
            else:
                live.append((parent, token, value))
                if len(live) == self.beam_size:
                    break
        for key in sorted(newly_finished, key=newly_finished.get, reverse=True):
            if len(self.finished) >= self.max_candidates:
                break
            self.finished[key] = newly_finished[key]
        return live

    def finalize(self, seqs: list[tuple[int, ...]], scores: np.ndarray, eot: int) -> None:
        """When the length limit stops the search: the best live beams count as finished."""
        for i in np.argsort(-np.asarray(scores), kind="stable"):
            if len(self.finished) >= self.beam_size:
                break
            self.finished.setdefault(seqs[i] + (eot,), float(scores[i]))


def rank(candidates: dict[tuple[int, ...], float], prompt_length: int, eot: int,
         length_penalty: float) -> tuple[tuple[int, ...], float]:
    """The best (generated tokens without end of text, sum of log-probabilities)."""
    def text(seq):
        out = seq[prompt_length:]
        return out[:-1] if out and out[-1] == eot else out

    def score(seq):
        return candidates[seq] / max(len(text(seq)), 1) ** length_penalty

    best = max(candidates, key=score)
    return tuple(text(best)), candidates[best]


def sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """One token per row from softmax(logits / temperature) (the Gumbel-max trick)."""
    gumbel = -np.log(-np.log(rng.uniform(1e-12, 1.0, size=logits.shape)))
    with np.errstate(invalid="ignore"):
        return np.argmax(logits / np.float32(temperature) + gumbel, axis=-1)
