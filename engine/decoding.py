"""Decode a batch of 30 s windows: prompts, beam search, temperature fallback, quality checks."""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from engine.backends.base import Backend, Generation
from engine.options import TranscribeOptions
from engine.tokenizer import Tokenizer

# Whisper's limit on the prompt: n_text_ctx // 2 - 1 tokens (its DecodingTask keeps the last ones).
MAX_PROMPT = 223

# Previous-text lengths are cut to one of these, so that prompts of files decoded together
# line up (CTranslate2 needs <|startoftranscript|> at one position across a batch) while a
# file's prompt depends only on its own history: batched results equal unbatched ones.
# Few rungs (powers of two below Whisper's 223) make more windows share a length, so calls
# fill: 40 files, 2 replicas, median of 3: 47.3 -> 42.5 s; WER of the scored files 4.49 -> 4.43%.
PREVIOUS_TEXT_LADDER = (MAX_PROMPT, 128, 64, 32, 16, 8, 4, 2, 1)

# A sampled fallback attempt first runs this many tokens. One that has not ended and already fails
# the compression check is Whisper's hallucination loop (the same words until the 224-token limit):
# it would fail anyway, so it is judged as it stands; any other is run again to its end.
TRIAL_TOKENS = 64


@dataclass(frozen=True)
class DecodedWindow:
    """The accepted result for one window, with the measures the fallback judged it by."""

    tokens: tuple[int, ...]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    cut: bool = False  # a looping trial run, judged before its end


def compression_ratio(text: str) -> float:
    """How much zlib shrinks the text: repetitive (hallucinated) text compresses well."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def previous_context(text: list[int], initial: list[int] = (), limit: int = MAX_PROMPT) -> list[int]:
    """The previous text to condition on: the initial prompt while it still applies, then the text
    decoded since, cut to a ladder rung. The ladder cuts only decoded text, so a user's prompt reaches
    the model whole; once the two fill `limit`, Whisper's own cut keeps their last `limit` tokens
    (every such prompt has that one length, so batches still line up)."""
    if len(initial) + len(text) >= limit:
        return [*initial, *text][len(initial) + len(text) - limit:]
    for n in PREVIOUS_TEXT_LADDER:
        if len(text) >= n:
            return [*initial, *text[len(text) - n:]]
    return list(initial)


def build_prompt(tokenizer: Tokenizer, previous: list[int], without_timestamps: bool,
                 hotwords: list[int] = ()) -> list[int]:
    """<|startofprev|> hotwords and previous text (faster-whisper's order), the start sequence, then
    <|notimestamps|> if asked."""
    context = [*hotwords, *previous]
    prompt = [tokenizer.sot_prev, *context] if context else []
    prompt.extend(tokenizer.sot_sequence)
    if without_timestamps:
        prompt.append(tokenizer.no_timestamps)
    return prompt


def sampling_seed(window_seed: int, temperature: float) -> int:
    """The seed of a window's sampled attempt at `temperature` (a 32-bit unsigned int)."""
    return zlib.crc32(f"{window_seed}:{temperature:.4f}".encode())


def decode_rounds(backend: Backend, encoded: np.ndarray, prompts: list[list[int]], options: TranscribeOptions,
                  tokenizer: Tokenizer, seeds: list[int] | None = None
                  ) -> Iterator[tuple[list[int], list[DecodedWindow], list[int]]]:
    """Decode every window, re-running only the failing ones at the next temperature.

    One temperature per round; after each, yields (indices settled in it, their results, indices
    decoded in it), so a caller can hand the settled windows on while the others fall back (a
    window in fallback may take 20 s; the windows decoded beside it need not wait for it).
    With `seeds` (one per window: engine.transcribe.Window.seed), each sampled attempt is one window
    in a call of its own, seeded by its window and temperature: what it samples depends on nothing
    else (not the windows beside it, not the replica), so batched, sequential and resumed runs agree.
    """
    attempts: list[list[DecodedWindow]] = [[] for _ in prompts]
    pending = list(range(len(prompts)))
    temperatures = tuple(options.temperatures)
    for n, temperature in enumerate(temperatures):
        if not pending:
            return
        decode_options = options.decode_options(temperature)
        last = n == len(temperatures) - 1
        # the last temperature always runs to its end: when every attempt fails, its may be the one kept
        trial = temperature > 0 and not last and options.compression_ratio_threshold is not None \
            and getattr(backend, "cuts_short", False)
        seeded = seeds is not None and temperature > 0
        for group in [[i] for i in pending] if seeded else _same_length_groups(pending, prompts):
            attempt = _attempt_with_trial if trial else _attempt
            call_options = replace(decode_options, seed=sampling_seed(seeds[group[0]], temperature)) \
                if seeded else decode_options
            for i, result in zip(group, attempt(backend, encoded[group], [prompts[i] for i in group],
                                                call_options, tokenizer, options)):
                attempts[i].append(result)
        failing = {i for i in pending if _needs_fallback(attempts[i][-1], options)}
        settled = pending if last else [i for i in pending if i not in failing]
        # every temperature failed: the likeliest attempt that is not too repetitive
        yield settled, [_best(attempts[i], options) if i in failing else attempts[i][-1] for i in settled], pending
        pending = [i for i in pending if i not in settled]


def _attempt(backend: Backend, encoded: np.ndarray, prompts: list[list[int]], decode_options,
             tokenizer: Tokenizer, options: TranscribeOptions) -> list[DecodedWindow]:
    generations = backend.generate(encoded, prompts, decode_options)
    return [_judge(g, decode_options.temperature, tokenizer) for g in generations]


def _attempt_with_trial(backend: Backend, encoded: np.ndarray, prompts: list[list[int]], decode_options,
                        tokenizer: Tokenizer, options: TranscribeOptions) -> list[DecodedWindow]:
    """A sampled attempt run for TRIAL_TOKENS first: ended ones are final, looping ones judged as they
    stand (cut), the rest run again in full. apollo11.mp3 alone on 2 cores: its looping window's sampled
    attempts took 3.9-5.1 s against 8.7-10.6 s run whole, the file 10.0-12.0 s against 14.9-17.1 s."""
    trial = backend.generate(encoded, prompts, replace(decode_options, max_new_tokens=TRIAL_TOKENS))
    results = [_judge(g, decode_options.temperature, tokenizer) for g in trial]
    threshold = options.compression_ratio_threshold
    again = [k for k, (g, r) in enumerate(zip(trial, results)) if g.cut and not r.compression_ratio > threshold]
    for k, r in enumerate(results):
        if trial[k].cut and k not in again:
            results[k] = replace(r, cut=True)
    if again:
        full = _attempt(backend, encoded[again], [prompts[k] for k in again], decode_options, tokenizer, options)
        for k, r in zip(again, full):
            results[k] = r
    return results


def _same_length_groups(indices: list[int], prompts: list[list[int]]) -> list[list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i in indices:
        groups[len(prompts[i])].append(i)
    return list(groups.values())


def _judge(generation: Generation, temperature: float, tokenizer: Tokenizer) -> DecodedWindow:
    tokens = generation.tokens
    text = tokenizer.decode([t for t in tokens if t < tokenizer.eot])
    return DecodedWindow(tokens, generation.sum_logprob / (len(tokens) + 1), generation.no_speech_prob,
                         compression_ratio(text), temperature)


def _needs_fallback(result: DecodedWindow, options: TranscribeOptions) -> bool:
    """Whisper's rule: too repetitive or too unlikely, unless the window is silence anyway."""
    low_logprob = options.log_prob_threshold is not None and result.avg_logprob < options.log_prob_threshold
    if options.no_speech_threshold is not None and result.no_speech_prob > options.no_speech_threshold \
            and low_logprob:
        return False
    too_repetitive = options.compression_ratio_threshold is not None \
        and result.compression_ratio > options.compression_ratio_threshold
    return too_repetitive or low_logprob


def _best(attempts: list[DecodedWindow], options: TranscribeOptions) -> DecodedWindow:
    """When every temperature failed: the likeliest attempt that is not too repetitive."""
    threshold = options.compression_ratio_threshold
    fine = [a for a in attempts if threshold is None or a.compression_ratio <= threshold]
    whole = [a for a in attempts if not a.cut]  # never a cut trial run while a whole attempt exists
    return max(fine or whole or attempts, key=lambda a: a.avg_logprob)
