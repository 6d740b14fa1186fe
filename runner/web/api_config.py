"""What the HTTP API (/v1) needs besides the catalog: queue, uploads, limits, token, webhook policy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_UPLOAD = 2 * 1024**3  # 2 GiB
SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """'2G', '500M', '1048576' -> bytes (binary units, an optional trailing B)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if match is None:
        raise ValueError(f"not a size: {text!r} (try 2G, 500M or a number of bytes)")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()])


@dataclass(frozen=True)
class WebhookPolicy:
    """How callbacks are retried: attempt k (from 1) waits first_delay * factor**(k-1), at most max_delay."""

    attempts: int = 8
    first_delay: float = 2.0
    factor: float = 2.0
    max_delay: float = 600.0
    timeout: float = 10.0  # per attempt

    def __post_init__(self):
        if self.attempts < 1 or self.first_delay < 0 or self.factor < 1 or self.timeout <= 0:
            raise ValueError("webhook policy: attempts >= 1, first_delay >= 0, factor >= 1 and timeout > 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return min(self.max_delay, self.first_delay * self.factor ** (attempt - 1))


@dataclass(frozen=True)
class ApiConfig:
    """The /v1 routes' settings; `redis_url` is the queue the catalog's workers read."""

    data_dir: Path
    redis_url: str
    queue_name: str = "scriptorium"
    model: str | None = None  # the model jobs ask for (None: whatever the workers run)
    token: str | None = None
    max_upload: int = DEFAULT_MAX_UPLOAD
    webhook_secret: str | None = None
    wait_timeout: float = 600.0  # how long POST /v1/audio/* waits for its transcript before a 504
    roots: tuple[Path, ...] = ()  # folders whose files POST /v1/jobs may name by path
    worker_max_age: float = 30.0  # a worker whose heartbeat is older is not counted (heartbeats every 10 s)
    poll: float = 0.05  # seconds between catalog looks of a waiting request
    monitor_every: float = 0.5  # seconds between the background looks at jobs and due callbacks
    webhooks: WebhookPolicy = WebhookPolicy()

    def __post_init__(self):
        if self.max_upload < 1:
            raise ValueError("max_upload must be at least 1 byte")
        if self.wait_timeout <= 0:
            raise ValueError("wait_timeout must be > 0")
        if self.token is not None and not self.token.strip():
            raise ValueError("an empty token protects nothing")

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"
