#!/usr/bin/env python
"""Peak memory of one `scriptorium worker --batch 8` on a 3-hour file plus seven short ones.

Issue #4 asks that this stays under 1.5 GB. The benchmark runs the real CLI, as a user would:

  scriptorium scan MEDIA --data DATA
  scriptorium worker --batch 8 --burst --data DATA

in a temp folder (media and a fresh data folder, with its embedded Redis), so exactly one worker
process decodes the eight files together. MEDIA holds the long file, built from the shared
real-speech corpus the way memory_long.py builds it (its `build`, Opus in Ogg), and seven short
real files copied from the corpus (FLAC, MP3, WAV at 8, 16 and 44.1 kHz, 3 s to 1.5 min).

Once a second it reads from /proc the RSS (and high-water mark) of the worker process alone, and
the sum of the worker and its children (the ffmpeg decoders; the embedded redis-server it starts is
counted apart, since it is the queue, not the worker). At the end it prints the peaks, the worker's
wall time, audio hours, x real time, and checks in the catalog (`scriptorium status --json`) that
all eight files are done.

  python benchmarks/memory_batch.py --minutes 10                 # quick check (about 2 min)
  python benchmarks/memory_batch.py --json /tmp/membatch.json    # 3 hours (about 15 min on 2 cores)

Run from the repository root, with the venv's python (its `scriptorium` is used). Needs ffmpeg.
Exit code 0 when all eight files are done and the worker's peak is under --limit-gb.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_long import SHARED, build  # noqa: E402

SHORT = (
    "jfk.flac", "apollo11.mp3", "LDC93S1.wav", "2412-153948-0000.flac",
    "ohf_kathleen_arctic_a0001_1592748574.mp3", "picovoice_diarization_test.wav", "OSR_us_000_0034_8k.wav",
)
MIB = 1024 * 1024


def scriptorium_exe() -> str:
    """The `scriptorium` console script next to this python (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "scriptorium"
    if here.exists():
        return str(here)
    found = shutil.which("scriptorium")
    if not found:
        sys.exit("scriptorium not found: run with the venv's python (pip install -e .)")
    return found


def _status_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) once it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


def _comm_state(pid: int) -> tuple[str, str]:
    """(command name, state letter) from /proc/PID/stat; state Z is a zombie not yet reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return "?", "?"
    return stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:][:1]


class TreeSampler(threading.Thread):
    """Once a second: RSS of the worker, of the worker plus its descendants (redis-server apart)."""

    def __init__(self, pid: int, every: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.every, self.stopped = pid, every, threading.Event()
        self.t0 = time.perf_counter()
        self.curve: list[dict] = []
        self.peak_worker_kb = self.hwm_worker_kb = self.peak_tree_kb = self.peak_redis_kb = 0
        self.peak_children = 0

    def sample(self) -> None:
        rss, hwm = _status_kb(self.pid)
        if rss == 0:
            return
        tree, redis_kb, kids, zombies, stack = rss, 0, 0, 0, _children(self.pid)
        while stack:
            pid = stack.pop()
            stack.extend(_children(pid))
            kb = _status_kb(pid)[0]
            comm, state = _comm_state(pid)
            if comm.startswith("redis-server"):
                redis_kb += kb
            elif state == "Z":
                zombies += 1
            else:
                tree, kids = tree + kb, kids + 1
        self.peak_worker_kb = max(self.peak_worker_kb, rss)
        self.hwm_worker_kb = max(self.hwm_worker_kb, hwm)
        self.peak_tree_kb = max(self.peak_tree_kb, tree)
        self.peak_redis_kb = max(self.peak_redis_kb, redis_kb)
        self.peak_children = max(self.peak_children, kids)
        self.curve.append({"t": round(time.perf_counter() - self.t0, 1), "worker_mb": round(rss / 1024, 1),
                           "tree_mb": round(tree / 1024, 1), "children": kids, "zombies": zombies, "redis_mb": round(redis_kb / 1024, 1)})

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            self.sample()


def cli(*args: str, cwd: Path, log=None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([scriptorium_exe(), *args], cwd=cwd, stdin=subprocess.DEVNULL, text=True,
                          stdout=subprocess.PIPE if log is None else log, stderr=subprocess.STDOUT, check=check)


def wait_redis_gone(data: Path, timeout: float = 15.0) -> None:
    """scan's embedded Redis gets SIGTERM when scan exits; let it finish saving before the worker starts its own."""
    pidfile = data / "redis" / "redis.pid"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        if not Path(f"/proc/{pid}").exists() or _status_kb(pid) == (0, 0):
            return
        time.sleep(0.1)


def curve_shape(curve: list[dict], key: str = "worker_mb") -> str:
    """RSS at each tenth of the run, and the median of the first and last quarter of the decoding."""
    if not curve:
        return "no samples"
    n = len(curve)
    tenths = [curve[min(n - 1, round(i * (n - 1) / 10))][key] for i in range(11)]
    quarter = max(1, n // 4)
    mid = sorted(c[key] for c in curve[quarter:2 * quarter]) or [curve[0][key]]
    end = sorted(c[key] for c in curve[-quarter - 1:-1] or curve[-1:])
    return (f"{key} at 0%,10%,...,100% of the run: {' '.join(f'{v:.0f}' for v in tenths)} MiB; "
            f"median of 2nd quarter {mid[len(mid) // 2]:.0f}, of last quarter {end[len(end) // 2]:.0f} MiB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=3.0, help="length of the long file (default 3)")
    ap.add_argument("--minutes", type=float, default=None, help="length in minutes (overrides --hours)")
    ap.add_argument("--batch", type=int, default=8, help="the worker's --batch (default 8)")
    ap.add_argument("--threads", type=int, default=None, help="pass --threads to the worker (default: its own, all cores)")
    ap.add_argument("--limit-gb", type=float, default=1.5, help="fail above this peak RSS of the worker, in 1e9 bytes")
    ap.add_argument("--every", type=float, default=None,
                    help="print the RSS every this many seconds (default: 60, or 10 for files under 30 min)")
    ap.add_argument("--shared", type=Path, default=SHARED, help="the shared audio folder")
    ap.add_argument("--json", type=Path, default=None, help="write the summary and the RSS curve (one sample a second) here")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (media, data, worker log)")
    args = ap.parse_args()
    seconds = args.minutes * 60 if args.minutes is not None else args.hours * 3600
    every = args.every or (10.0 if seconds < 1800 else 60.0)

    folder = Path(tempfile.mkdtemp(prefix="scriptorium-membatch-"))
    media, data = folder / "media", folder / "data"
    media.mkdir()
    try:
        t0 = time.perf_counter()
        long_file = build(folder, seconds, args.shared)
        long_file = long_file.rename(media / long_file.name)
        for name in SHORT:
            shutil.copyfile(args.shared / name, media / name)
        past = time.time() - 60  # as in an archive: the scanner skips files modified in the last 2 s
        for path in media.iterdir():
            os.utime(path, (past, past))
        print(f"built {long_file.name}: {seconds / 60:.1f} min, {long_file.stat().st_size / 1e6:.1f} MB "
              f"in {time.perf_counter() - t0:.0f} s, plus {len(SHORT)} short files ({folder})", flush=True)

        scan = cli("scan", str(media), "--data", str(data), cwd=folder, check=False)
        print(f"$ scriptorium scan {media} --data {data}\n{scan.stdout.strip()}", flush=True)
        queued = [f for f in json.loads(cli("status", "--json", "--data", str(data), cwd=folder).stdout)["files"]
                  if f["status"] == "queued"]
        if scan.returncode != 0 or len(queued) != len(SHORT) + 1:
            print(f"FAIL: scan queued {len(queued)} of {len(SHORT) + 1} files", file=sys.stderr)
            return 1
        wait_redis_gone(data)

        cmd = [scriptorium_exe(), "worker", "--batch", str(args.batch), "--burst", "--data", str(data)]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        print(f"$ scriptorium {' '.join(cmd[1:])}", flush=True)
        log_path = folder / "worker.log"
        with open(log_path, "w") as log:
            started = time.perf_counter()
            worker = subprocess.Popen(cmd, cwd=folder, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            sampler = TreeSampler(worker.pid)
            sampler.start()
            next_print = every
            while worker.poll() is None:
                time.sleep(0.5)
                if sampler.curve and sampler.curve[-1]["t"] >= next_print:
                    c = sampler.curve[-1]
                    next_print += every
                    print(f"  t={c['t']:6.0f} s  worker {c['worker_mb']:6.0f} MiB  tree {c['tree_mb']:6.0f} MiB "
                          f"({c['children']} children, {c['zombies']} zombies)  redis {c['redis_mb']:.0f} MiB", flush=True)
            wall = time.perf_counter() - started
            sampler.stopped.set()
            sampler.join(timeout=5)
        if worker.returncode != 0:
            print(f"worker exited {worker.returncode}; last lines of {log_path}:", file=sys.stderr)
            print("\n".join(log_path.read_text().splitlines()[-30:]), file=sys.stderr)

        report = json.loads(cli("status", "--json", "--data", str(data), cwd=folder).stdout)
        files = report["files"]
        done = [f for f in files if f["status"] == "done"]
        audio_s = sum(f["duration"] or 0 for f in done)
        peak_worker = max(sampler.peak_worker_kb, sampler.hwm_worker_kb) * 1024
        limit = args.limit_gb * 1e9
        ok = worker.returncode == 0 and len(done) == len(SHORT) + 1 == len(files) and peak_worker < limit
        summary = {
            "long_file_s": seconds, "short_files": list(SHORT), "batch": args.batch, "threads": args.threads,
            "cpus": os.cpu_count(), "worker_exit": worker.returncode, "files": len(files), "files_done": len(done),
            "not_done": [(f["path"], f["status"], f["error"]) for f in files if f["status"] != "done"],
            "audio_hours": round(audio_s / 3600, 3), "wall_s": round(wall, 1),
            "x_real_time": round(audio_s / wall, 2) if wall else None,
            "peak_worker_rss_mib": round(sampler.peak_worker_kb / 1024, 1),
            "worker_vmhwm_mib": round(sampler.hwm_worker_kb / 1024, 1),
            "peak_tree_rss_mib": round(sampler.peak_tree_kb / 1024, 1),
            "peak_children": sampler.peak_children, "peak_redis_rss_mib": round(sampler.peak_redis_kb / 1024, 1),
            "limit_bytes": limit, "ok": ok, "date": time.strftime("%Y-%m-%d"),
        }
        print(f"\nworker --batch {args.batch} on {len(done)}/{len(files)} files done "
              f"({audio_s / 3600:.2f} h of audio: {seconds / 60:.0f} min + {len(SHORT)} short): "
              f"wall {wall:.0f} s, {audio_s / wall:.1f}x real time", flush=True)
        print(f"peak RSS: worker alone {sampler.peak_worker_kb / 1024:.0f} MiB (VmHWM {sampler.hwm_worker_kb / 1024:.0f} MiB), "
              f"worker + children {sampler.peak_tree_kb / 1024:.0f} MiB (up to {sampler.peak_children} children); "
              f"embedded redis-server apart {sampler.peak_redis_kb / 1024:.0f} MiB", flush=True)
        print(curve_shape(sampler.curve), flush=True)
        print(curve_shape(sampler.curve, "tree_mb"), flush=True)
        print(f"{'PASS' if ok else 'FAIL'}: all {len(SHORT) + 1} files done: {len(done) == len(SHORT) + 1 == len(files)}, "
              f"worker peak {peak_worker / 1e9:.2f} GB < {args.limit_gb} GB: {peak_worker < limit}", flush=True)
        for path, status, error in summary["not_done"]:
            print(f"  not done: {path}: {status}: {error}", flush=True)
        if args.json:
            args.json.write_text(json.dumps({**summary, "curve": sampler.curve}, indent=1))
            print(f"wrote {args.json}", flush=True)
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
