"""Models: the real download code against a fake Hugging Face hub on 127.0.0.1, verify, remove, import, list.

The fake hub serves a model folder built from the packaged tiny.en: the listing API with
siblings and LFS sha256, file resolution honouring Range (206 + Content-Range), a file
that breaks halfway on its first request, and a variant whose listed checksum is wrong.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.errors import HubError, ModelError
from engine.hub import CATALOG, COREML_REPO, Hub
from engine.model_store import PARTIAL, download, import_model, installed, remove, verify_model
from engine.models import MANIFEST, packaged_model_dir, resolve_model
from runner.commands.cli import main

FILES = ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")
BREAKING = "tokenizer.json"  # breaks halfway on its first request in the tiny.en repo
COREML_FOLDERS = ("openai_whisper-tiny.en", "openai_whisper-large-v3-v20240930_626MB")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeHub:
    """repo -> {path: bytes | Path}; every request is logged as (path, Range header or None)."""

    def __init__(self):
        self.repos: dict[str, dict[str, bytes | Path]] = {}
        self.wrong_sha: set[tuple[str, str]] = set()
        self.break_once: dict[tuple[str, str], int] = {}  # (repo, path) -> bytes sent before the cut
        self.requests: list[tuple[str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hub.requests.append((self.path, self.headers.get("Range")))
                path = self.path.split("?", 1)[0]
                if path.startswith("/api/models/") and "/revision/" in path:
                    repo = path[len("/api/models/"):].split("/revision/", 1)[0]
                    return self._listing(repo)
                if "/resolve/main/" in path:
                    repo, file = path.lstrip("/").split("/resolve/main/", 1)
                    return self._file(repo, file)
                self.send_error(404)

            def _listing(self, repo):
                if repo not in hub.repos:
                    return self.send_error(404)
                siblings = [{"rfilename": ".gitattributes", "size": 10}, {"rfilename": "README.md", "size": 5}]
                for name, content in hub.repos[repo].items():
                    data = _bytes(content)
                    entry = {"rfilename": name, "size": len(data)}
                    if len(data) > 100_000 or (repo, name) in hub.wrong_sha:  # like git-lfs: big files only
                        sha = "0" * 64 if (repo, name) in hub.wrong_sha else _sha(data)
                        entry["lfs"] = {"sha256": sha, "size": len(data), "pointerSize": 134}
                    siblings.append(entry)
                self._send(200, json.dumps({"id": repo, "sha": "c0ffee" * 6 + "abcd", "siblings": siblings}).encode(),
                           "application/json")

            def _file(self, repo, name):
                content = hub.repos.get(repo, {}).get(name)
                if content is None:
                    return self.send_error(404)
                data = _bytes(content)
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=", 1)[1].split("-", 1)[0])
                    if start >= len(data):
                        return self.send_error(416)
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                cut = hub.break_once.pop((repo, name), None)
                if cut is not None:  # send part of the body, then drop the connection
                    self.wfile.write(data[start:start + cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def ranges(self, file: str) -> list[str | None]:
        return [rng for path, rng in self.requests if path.endswith(f"/resolve/main/{file}")]


_CACHE: dict[Path, bytes] = {}


def _bytes(content: bytes | Path) -> bytes:
    if isinstance(content, Path):
        if content not in _CACHE:
            _CACHE[content] = content.read_bytes()
        return _CACHE[content]
    return content


@pytest.fixture(scope="module")
def source_model(tmp_path_factory) -> Path:
    """A model folder built from the packaged tiny.en."""
    folder = tmp_path_factory.mktemp("hub-files") / "tiny.en"
    folder.mkdir()
    for name in FILES:
        shutil.copyfile(packaged_model_dir() / name, folder / name)
    return folder


@pytest.fixture
def hub(source_model):
    fake = FakeHub()
    files = {name: source_model / name for name in FILES}
    for variant in CATALOG:
        fake.repos[variant.repo] = dict(files)
    coreml: dict[str, bytes | Path] = {"README.md": b"# WhisperKit", "config.json": b"{}"}
    for folder in COREML_FOLDERS:
        for part in ("AudioEncoder", "TextDecoder", "MelSpectrogram"):
            coreml[f"{folder}/{part}.mlmodelc/model.mil"] = f"program {part}".encode()
            coreml[f"{folder}/{part}.mlmodelc/weights/weight.bin"] = bytes(range(256)) * 8
        coreml[f"{folder}/config.json"] = json.dumps({"vocab_size": 51864 if ".en" in folder else 51866,
                                                      "num_mel_bins": 80 if ".en" in folder else 128}).encode()
    fake.repos[COREML_REPO] = coreml
    yield fake
    fake.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(args, models_dir: Path, endpoint: str):
    env = {"SCRIPTORIUM_MODELS": str(models_dir), "HF_ENDPOINT": endpoint}
    return CliRunner().invoke(main, ["models", *args], prog_name="scriptorium", env=env)


def test_download_resumes_a_broken_file_checks_and_installs(hub, tmp_path, source_model):
    models_dir = tmp_path / "models"
    half = (source_model / BREAKING).stat().st_size // 2
    hub.break_once[("Systran/faster-whisper-tiny.en", BREAKING)] = half
    res = _cli(["download", "tiny.en"], models_dir, hub.url)
    assert res.exit_code == 0, res.output
    assert hub.ranges(BREAKING) == [None, f"bytes={half}-"], hub.requests
    spec = resolve_model("tiny.en", models_dir)
    assert spec.path == (models_dir / "tiny.en").resolve()
    assert hashlib.sha256((spec.path / BREAKING).read_bytes()).hexdigest() == \
        hashlib.sha256((source_model / BREAKING).read_bytes()).hexdigest()
    assert spec.sha256 == resolve_model(packaged_model_dir()).sha256  # same files as the packaged tiny.en
    assert sorted(p.name for p in models_dir.iterdir()) == ["tiny.en"]  # .partial is gone
    manifest = json.loads((spec.path / MANIFEST).read_text())
    assert manifest["repo"] == "Systran/faster-whisper-tiny.en" and manifest["format"] == "ctranslate2"
    assert {f["path"] for f in manifest["files"]} == set(FILES)  # no README, no .gitattributes
    assert verify_model(spec) == []
    assert _cli(["verify", "tiny.en"], models_dir, hub.url).exit_code == 0
    again = _cli(["download", "tiny.en"], models_dir, hub.url)
    assert again.exit_code == 0 and "already installed" in again.output
    listed = json.loads(_cli(["list", "--json"], models_dir, hub.url).output)["installed"]
    assert [(m["name"], m["source"]) for m in listed] == [("tiny.en", "packaged"), ("tiny.en", "hub")]
    assert _cli(["remove", "tiny.en"], models_dir, hub.url).exit_code == 0
    assert not (models_dir / "tiny.en").exists()
    assert resolve_model("tiny.en", models_dir).path == packaged_model_dir().resolve()


def test_a_wrong_checksum_is_refused_and_nothing_is_installed(hub, tmp_path):
    models_dir = tmp_path / "models"
    hub.wrong_sha.add(("Systran/faster-whisper-base.en", "config.json"))
    with pytest.raises(HubError, match="sha256 mismatch"):
        download("base.en", models_dir, Hub(hub.url))
    assert not (models_dir / "base.en").exists()
    assert not (models_dir / PARTIAL / "base.en" / "config.json").exists()  # the bad file is discarded
    with pytest.raises(ModelError):
        resolve_model("base.en", models_dir)
    res = _cli(["download", "base.en"], models_dir, hub.url)
    assert res.exit_code == 1 and "sha256 mismatch" in res.output and "Traceback" not in res.output


def test_an_interrupted_install_leaves_only_partial_and_resumes(hub, tmp_path):
    models_dir = tmp_path / "models"
    received = []

    def interrupt(n):
        received.append(n)
        if sum(received) > 20_000_000:  # into model.bin
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download("small.en", models_dir, Hub(hub.url), progress=interrupt)
    assert [p.name for p in models_dir.iterdir()] == [PARTIAL]
    assert (models_dir / PARTIAL / "small.en" / "model.bin").is_file()  # half a model, never a model
    with pytest.raises(ModelError):
        resolve_model("small.en", models_dir)
    assert [m.name for m in installed(models_dir)] == ["tiny.en"]
    spec = download("small.en", models_dir, Hub(hub.url))
    model_bin = hub.ranges("model.bin")
    assert model_bin[0] is None and model_bin[-1] and model_bin[-1].startswith("bytes=")  # resumed, not restarted
    assert int(model_bin[-1].split("=")[1].rstrip("-")) > 0
    assert hub.ranges("config.json") == [None]  # a finished file is not fetched again
    assert verify_model(spec) == [] and spec.sha256 == resolve_model(packaged_model_dir()).sha256
    assert sorted(p.name for p in models_dir.iterdir()) == ["small.en"]


def test_verify_detects_a_corrupted_byte_and_the_worker_refuses(tmp_path, source_model):
    models_dir = tmp_path / "models"
    spec = import_model(source_model, models_dir, name="mine")
    assert verify_model(spec) == []
    tokenizer = spec.path / "tokenizer.json"
    data = bytearray(tokenizer.read_bytes())
    data[len(data) // 2] ^= 0x01
    tokenizer.write_bytes(bytes(data))
    problems = verify_model(resolve_model("mine", models_dir))
    assert problems and "tokenizer.json" in problems[0]
    res = _cli(["verify", "mine"], models_dir, "http://127.0.0.1:9")
    assert res.exit_code == 1 and "tokenizer.json" in res.output
    assert verify_model(resolve_model(None)) == []  # the packaged model has no manifest and is trusted

    from runner.config import Settings
    from runner.queue.worker import run_worker

    settings = Settings(tmp_path / "data", "sqlite:///" + str(tmp_path / "c.db"), "redis://127.0.0.1:1",
                        models_dir=models_dir)
    with pytest.raises(ModelError, match="fails verification"):
        run_worker(settings, model="mine", burst=True)


def test_import_a_local_folder_by_link_and_by_copy(tmp_path):
    models_dir = tmp_path / "models"
    spec = import_model(packaged_model_dir(), models_dir, name="linked", link=True)
    assert spec.name == "linked" and spec.format == "ctranslate2" and not spec.multilingual
    assert resolve_model("linked", models_dir).path == (models_dir / "linked").resolve()
    assert (models_dir / "linked" / "model.bin").is_symlink()
    assert spec.sha256 == resolve_model(None).sha256  # same files, same content hash
    assert verify_model(spec) == []
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "model.bin").write_bytes(b"x")
    res = _cli(["import", str(incomplete)], models_dir, "http://127.0.0.1:9")
    assert res.exit_code == 1 and "missing config.json" in res.output
    coreml = tmp_path / "whisperkit-tiny"
    for part in ("AudioEncoder", "TextDecoder", "MelSpectrogram"):
        (coreml / f"{part}.mlmodelc").mkdir(parents=True)
        (coreml / f"{part}.mlmodelc" / "model.mil").write_text(part)
    res = _cli(["import", str(coreml)], models_dir, "http://127.0.0.1:9")
    assert res.exit_code == 0, res.output
    assert resolve_model("whisperkit-tiny", models_dir).format == "coreml"
    remove("linked", models_dir)
    assert (packaged_model_dir() / "model.bin").is_file()  # removing links never touches the original
    assert not (models_dir / "linked").exists()


def test_list_needs_no_network_and_shows_the_packaged_model(tmp_path):
    closed = f"http://127.0.0.1:{_closed_port()}"
    res = _cli(["list", "--json"], tmp_path / "models", closed)
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["installed"]
    assert rows[0]["name"] == "tiny.en" and rows[0]["languages"] == "en" and rows[0]["format"] == "ctranslate2"
    assert rows[0]["sha256"] == resolve_model(None).sha256 and rows[0]["size"] > 70_000_000
    offline = _cli(["download", "base.en"], tmp_path / "models", closed)
    assert offline.exit_code == 1
    line = offline.output.strip()
    assert len(line.splitlines()) == 1 and "cannot reach" in line
    assert line.endswith(f"retry with: scriptorium models download base.en --endpoint {closed} "
                         f"--models-dir {tmp_path / 'models'}")


def test_remote_lists_the_variants_and_the_coreml_folders(hub, tmp_path):
    models_dir = tmp_path / "models"
    res = _cli(["list", "--remote", "--json"], models_dir, hub.url)
    assert res.exit_code == 0, res.output
    remote = {v["name"]: v for v in json.loads(res.output)["remote"]}
    assert {"tiny", "tiny.en", "base", "base.en", "small", "medium.en", "large-v3", "distil-large-v3",
            "large-v3-turbo"} <= set(remote)
    assert remote["large-v3-turbo"]["repo"] == "mobiuslabsgmbh/faster-whisper-large-v3-turbo"
    assert remote["base.en"]["languages"] == "en" and remote["base"]["languages"] == "multilingual"
    assert remote["tiny.en"]["size"] == sum((packaged_model_dir() / f).stat().st_size for f in FILES)
    assert remote["tiny.en"]["installed"] and not remote["base"]["installed"]
    for folder in COREML_FOLDERS:
        assert remote[folder]["format"] == "coreml" and remote[folder]["repo"] == COREML_REPO
    assert remote["openai_whisper-tiny.en"]["languages"] == "en"
    assert "config.json" not in remote and "README.md" not in remote
    text = _cli(["list", "--remote"], models_dir, hub.url)
    assert text.exit_code == 0 and "openai_whisper-tiny.en" in text.output and "distil-large-v3" in text.output


def test_download_a_coreml_folder(hub, tmp_path):
    models_dir = tmp_path / "models"
    spec = download("openai_whisper-tiny.en", models_dir, Hub(hub.url))
    assert spec.format == "coreml" and not spec.multilingual
    assert (spec.path / "AudioEncoder.mlmodelc" / "weights" / "weight.bin").is_file()
    assert not (spec.path / "README.md").exists()
    assert verify_model(spec) == []
    assert hub.ranges("openai_whisper-large-v3-v20240930_626MB/config.json") == []  # only its own folder


def test_bad_bytes_left_by_an_earlier_run_are_fetched_again(hub, tmp_path, source_model):
    data = (source_model / BREAKING).read_bytes()
    dest = tmp_path / BREAKING
    dest.write_bytes(b"\0" * (len(data) // 2))  # an interrupted run that wrote garbage
    remote = next(f for f in Hub(hub.url).list_files("Systran/faster-whisper-base").files if f.path == BREAKING)
    assert remote.sha256 == _sha(data)
    assert Hub(hub.url).download("Systran/faster-whisper-base", remote, dest) == _sha(data)
    assert hub.ranges(BREAKING) == [f"bytes={len(data) // 2}-", None]
