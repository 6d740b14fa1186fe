#!/usr/bin/env python
"""How CTranslate2's Whisper decoder scales with batch size, with and without timestamp tokens.

Takes the first 30 s window of real files (a packed corpus from bench_gpu.py pack), encodes them,
and times `generate` (beam 5, the engine's options) at each batch size: per call, per window, and
per decoding step (steps = the longest output in the call). Batching pays only where a step's
cost grows slower than the batch; this shows whether it does on a given device.

  python benchmarks/ct2_steps.py DATA --model MODEL --compute gpu --compute-type float16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="a folder written by bench_gpu.py pack")
    p.add_argument("--model", required=True)
    p.add_argument("--compute", default="gpu")
    p.add_argument("--compute-type", default="float16")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--windows", type=int, default=32, help="windows decoded at each batch size")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrent", type=int, nargs="*", default=[],
                   help="also: T threads each decoding one window at a time, on a model with T replicas")
    args = p.parse_args(argv)

    import bench_gpu
    from engine.api import Transcriber
    from engine.constants import N_SAMPLES
    from engine.features import window_features
    from engine.options import TranscribeOptions

    pcm, items = bench_gpu.load_corpus(Path(args.data))
    names = [i.name for i in items][: args.windows]
    names = (names * (args.windows // len(names) + 1))[: args.windows]
    t = Transcriber(args.model, compute=args.compute, compute_type=args.compute_type, threads=args.threads)
    backend, tok = t.backend, t.tokenizer(TranscribeOptions())
    features = np.stack([window_features(pcm[n][:N_SAMPLES].astype(np.float32) / 32768.0, t.model.n_mels)
                         for n in names])
    encoded = np.concatenate([backend.encode(features[i:i + 8]) for i in range(0, len(features), 8)])
    print(f"{backend.name} on {backend.compute} {args.compute_type}, {len(names)} windows, beam 5, median of {args.repeats}")
    print(f"{'timestamps':>10} {'batch':>5} {'calls':>5} {'s total':>8} {'ms/window':>9} {'steps':>6} {'ms/step':>8} {'ratio':>6}")
    for timestamps in (True, False):
        options = TranscribeOptions(without_timestamps=not timestamps).decode_options(0.0)
        prompt = list(tok.sot_sequence) + ([] if timestamps else [tok.no_timestamps])
        base = None
        for batch in args.batches:
            walls, steps = [], 0
            backend.generate(encoded[:batch], [prompt] * batch, options)  # warm
            for _ in range(args.repeats):
                steps, started = 0, time.perf_counter()
                for i in range(0, len(names), batch):
                    out = backend.generate(encoded[i:i + batch], [prompt] * len(encoded[i:i + batch]), options)
                    steps += max(len(g.tokens) for g in out)
                walls.append(time.perf_counter() - started)
            wall = statistics.median(walls)
            base = base or wall
            print(f"{str(timestamps):>10} {batch:>5} {-(-len(names) // batch):>5} {wall:>8.2f} "
                  f"{1000 * wall / len(names):>9.1f} {steps:>6} {1000 * wall / steps:>8.2f} {base / wall:>5.2f}x")
    if args.concurrent:
        concurrent(args, backend, encoded, tok)
    return 0


def concurrent(args, backend, encoded, tok) -> None:
    """Windows decoded one per call from T threads at once (CTranslate2 inter_threads=T replicas)."""
    from concurrent.futures import ThreadPoolExecutor

    import ctranslate2

    from engine.options import TranscribeOptions

    options = TranscribeOptions().decode_options(0.0)
    prompt = list(tok.sot_sequence)
    base = None
    print(f"{'threads':>7} {'s total':>8} {'ms/window':>9} {'ratio':>6}  (timestamps, batch 1 per call)")
    for threads in [1, *args.concurrent]:
        backend.model = ctranslate2.models.Whisper(str(args.model), device="cuda" if args.compute == "gpu" else "cpu",
                                                   compute_type=args.compute_type, inter_threads=threads,
                                                   intra_threads=args.threads)
        one = lambda i: backend.generate(encoded[i:i + 1], [prompt], options)  # noqa: E731
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(min(threads, len(encoded)))))  # warm
            walls = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                list(pool.map(one, range(len(encoded))))
                walls.append(time.perf_counter() - started)
        wall = statistics.median(walls)
        base = base or wall
        print(f"{threads:>7} {wall:>8.2f} {1000 * wall / len(encoded):>9.1f} {base / wall:>5.2f}x")


if __name__ == "__main__":
    sys.exit(main())
