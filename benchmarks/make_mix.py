"""Build one long file from the shared corpus's scored clips, for `scriptorium bench FOLDER`.

The scored files of ../shared/audio (trustworthy reference, ted_60 left out) are joined in
manifest order, again and again, with 0.5 s gaps until the mix is `--minutes` long; the joined
references go beside it as <name>.txt, which `scriptorium bench` scores against. The file's
mtime is set an hour back so a scan does not take it for a file still being written.

    python benchmarks/make_mix.py /tmp/mix30 --minutes 30
    scriptorium bench /tmp/mix30 --compute cpu --threads 2 --beam-size 5 --batch 8 --fw-batched
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.audio import join_to_wav  # noqa: E402
from bench.items import load_items  # noqa: E402

GAP = 0.5


def build(out_dir: Path, minutes: float, audio_dir: Path, name: str = "mix", rotate: int = 0) -> Path:
    """Write out_dir/<name>.wav and <name>.txt; returns the wav's path. `rotate` starts the cycle
    that many files later: another mix of the same clips, with other neighbours and cut places."""
    items = load_items(audio_dir)
    items = items[rotate % len(items):] + items[:rotate % len(items)]
    chosen, total = [], 0.0
    for item in itertools.cycle(items):
        if total >= minutes * 60:
            break
        chosen.append(item)
        total += item.duration + GAP
    out_dir.mkdir(parents=True, exist_ok=True)
    wav = join_to_wav([i.path for i in chosen], out_dir / f"{name}.wav", pad_seconds=GAP)
    (out_dir / f"{name}.txt").write_text(" ".join(i.reference for i in chosen) + "\n", encoding="utf-8")
    hour_ago = time.time() - 3600
    for path in (wav, out_dir / f"{name}.txt"):
        os.utime(path, (hour_ago, hour_ago))
    print(f"{wav}: {len(chosen)} clips, {total / 60:.1f} min")
    return wav


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path, help="folder to write the mix and its reference into")
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the mix (default 30)")
    ap.add_argument("--name", default="mix30", help="file stem (default mix30)")
    ap.add_argument("--rotate", type=int, default=0, help="start the cycle this many files later (default 0)")
    ap.add_argument("--audio-dir", type=Path, default=ROOT.parent / "shared" / "audio",
                    help="the shared corpus (default ../shared/audio)")
    args = ap.parse_args()
    build(args.out_dir, args.minutes, args.audio_dir, args.name, args.rotate)


if __name__ == "__main__":
    main()
