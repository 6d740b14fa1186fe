"""The scanner on a real SQLite catalog: idempotence, changes, moves, busy files, non-media, links, odd names."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from runner.catalog import models as m
from runner.config import sqlite_url_for
from runner.catalog.db import Catalog
from runner.queue.scanner import Scanner, walk
from runner.catalog.status import Status

CLIPS = ("LDC93S1.wav", "speechbrain_spk2_snt2.wav", "1089-134691-0000.flac")


def settle(*paths: Path) -> None:
    """Date files a minute back: the scanner skips files modified in the last 2 s."""
    past = time.time() - 60
    for p in paths:
        os.utime(p, (past, past))


def put(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    settle(dst)
    return dst


@pytest.fixture
def catalog(tmp_path):
    cat = Catalog.open(sqlite_url_for(tmp_path / "data"))
    yield cat
    cat.close()


@pytest.fixture
def root(tmp_path) -> Path:
    folder = tmp_path / "archive"
    folder.mkdir()
    return folder


def rows(catalog: Catalog) -> dict[str, m.MediaFile]:
    with catalog.read() as session:
        return {r.path: r for r in session.scalars(select(m.MediaFile)).all()}


def mark_done(catalog: Catalog, *media_ids: int) -> None:
    for media_id in media_ids:
        catalog.set_media_status(media_id, Status.done)


def test_second_scan_is_idempotent(catalog, root, shared_audio_dir):
    files = [put(shared_audio_dir / name, root / name) for name in CLIPS]
    first = Scanner(catalog).scan([root])
    assert (first.new, first.changed, first.unchanged, first.not_media, first.busy) == (3, 0, 0, 0, 0)
    known = rows(catalog)
    assert set(known) == {str(p) for p in files}
    assert sorted(i for i, _ in first.to_queue) == sorted(r.id for r in known.values())
    for row in known.values():
        assert row.status == Status.queued and row.duration > 0 and len(row.content_hash) == 64
        assert row.scan_root == str(root)

    mark_done(catalog, *(r.id for r in known.values()))
    second = Scanner(catalog).scan([root])
    assert (second.new, second.changed, second.unchanged, second.moved) == (0, 0, 3, 0)
    assert second.to_queue == []
    assert {p: r.id for p, r in rows(catalog).items()} == {p: r.id for p, r in known.items()}
    assert {r.status for r in rows(catalog).values()} == {Status.done}


def test_unfinished_files_are_queued_again_by_a_rescan(catalog, root, shared_audio_dir):
    put(shared_audio_dir / CLIPS[0], root / CLIPS[0])
    first = Scanner(catalog).scan([root])
    again = Scanner(catalog).scan([root])  # still queued (its job may have been lost): queue it again
    assert again.unchanged == 1 and again.to_queue == first.to_queue


def test_changed_file_is_queued_again(catalog, root, shared_audio_dir):
    target = put(shared_audio_dir / CLIPS[0], root / "tape.wav")
    Scanner(catalog).scan([root])
    (old,) = rows(catalog).values()
    mark_done(catalog, old.id)

    shutil.copyfile(shared_audio_dir / CLIPS[1], target)  # new bytes under the same name
    past = time.time() - 30
    os.utime(target, (past, past))
    summary = Scanner(catalog).scan([root])
    assert (summary.new, summary.changed, summary.unchanged) == (0, 1, 0)
    assert [i for i, _ in summary.to_queue] == [old.id]
    (row,) = rows(catalog).values()
    assert row.id == old.id and row.status == Status.queued
    assert row.size == target.stat().st_size and row.content_hash != old.content_hash
    assert row.duration != pytest.approx(old.duration)


def test_moved_done_file_is_adopted_not_queued(catalog, root, shared_audio_dir):
    original = put(shared_audio_dir / CLIPS[0], root / "inbox" / "tape.wav")
    Scanner(catalog).scan([root])
    (old,) = rows(catalog).values()
    mark_done(catalog, old.id)

    moved = root / "sorted" / "1962" / "tape renamed.wav"
    moved.parent.mkdir(parents=True)
    original.rename(moved)  # rename keeps the mtime
    summary = Scanner(catalog).scan([root])
    assert (summary.moved, summary.new, summary.changed) == (1, 0, 0)
    assert summary.to_queue == []
    (row,) = rows(catalog).values()
    assert (row.id, row.path, row.status) == (old.id, str(moved), Status.done)
    assert row.content_hash == old.content_hash

    again = Scanner(catalog).scan([root])
    assert (again.unchanged, again.moved, again.to_queue) == (1, 0, [])


def test_copy_of_a_done_file_that_still_exists_is_new(catalog, root, shared_audio_dir):
    first = put(shared_audio_dir / CLIPS[0], root / "a.wav")
    Scanner(catalog).scan([root])
    mark_done(catalog, rows(catalog)[str(first)].id)
    copy = put(first, root / "b.wav")
    summary = Scanner(catalog).scan([root])
    assert (summary.new, summary.moved, summary.unchanged) == (1, 0, 1)
    assert [i for i, _ in summary.to_queue] == [rows(catalog)[str(copy)].id]


def test_file_being_written_is_left_for_later(catalog, root, shared_audio_dir):
    fresh = root / "recording.wav"
    shutil.copyfile(shared_audio_dir / CLIPS[0], fresh)  # mtime: now
    summary = Scanner(catalog).scan([root])
    assert (summary.busy, summary.new, summary.to_queue) == (1, 0, [])
    assert rows(catalog) == {}

    settle(fresh)
    later = Scanner(catalog).scan([root])
    assert (later.busy, later.new) == (0, 1)


def test_non_media_is_recorded_with_its_reason(catalog, root, shared_audio_dir):
    (root / "notes.txt").write_text("minutes of the meeting\n", encoding="utf-8")
    (root / "fake.mp3").write_bytes(os.urandom(4096))
    (root / "empty.wav").touch()
    (root / ".hidden.wav").write_bytes(b"ignored")
    settle(*root.iterdir())
    summary = Scanner(catalog).scan([root])
    assert (summary.not_media, summary.new, summary.to_queue) == (3, 0, [])
    found = rows(catalog)
    assert set(found) == {str(root / n) for n in ("notes.txt", "fake.mp3", "empty.wav")}
    for row in found.values():
        assert row.status == Status.skipped and row.error and row.error.strip(), (row.path, row.error)
    assert "empty" in found[str(root / "empty.wav")].error

    again = Scanner(catalog).scan([root])
    assert (again.unchanged, again.not_media, again.to_queue) == (3, 0, [])


def test_symlink_loop_terminates(catalog, root, shared_audio_dir):
    clip = put(shared_audio_dir / CLIPS[0], root / "sub" / "clip.wav")
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # sub/up -> its parent
    (root / "sub" / "self").symlink_to(root / "sub", target_is_directory=True)  # sub/self -> sub

    result = {}
    thread = threading.Thread(target=lambda: result.update(s=Scanner(catalog).scan([root]),
                                                           w=list(walk(root))), daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "scan of a folder with a symlink loop did not terminate"
    assert result["w"] == [clip]
    assert result["s"].new == 1 and list(rows(catalog)) == [str(clip)]


HOSTILE_NAMES = ["with space.wav", "new\nline.wav", "-leading-dash.wav", "--help.wav", "ünïcödé 日本語 🎙.wav",
                 "quote'\"semi;colon $(x).wav", "%s %d.wav"]


def test_hostile_file_names(catalog, root, shared_audio_dir):
    files = []
    for name in HOSTILE_NAMES:
        try:
            files.append(put(shared_audio_dir / CLIPS[0], root / name))
        except OSError as exc:  # a file system that refuses the name: nothing to test for it
            pytest.skip(f"cannot create {name!r}: {exc}")
    summary = Scanner(catalog).scan([root])
    assert (summary.new, summary.failed, summary.not_media) == (len(files), 0, 0)
    found = rows(catalog)
    assert set(found) == {str(p) for p in files}
    for p in files:
        row = found[str(p)]
        assert row.status == Status.queued and row.duration == pytest.approx(2.925, abs=0.01), (p.name, row.error)
