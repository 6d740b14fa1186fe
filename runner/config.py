"""Where a run keeps its things: data folder, catalog URL, Redis URL, outputs, models, job limits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def sqlite_url_for(data_dir: str | Path) -> str:
    """The SQLite URL of the catalog kept in a data folder: sqlite:///DATA/catalog.db."""
    return f"sqlite:///{Path(data_dir).expanduser().resolve() / 'catalog.db'}"


def map_path(path: str, path_map: tuple[tuple[str, str], ...]) -> str:
    """`path` with its longest matching SRC prefix (whole folder names only) replaced by DST.

    Hosts that mount the shared archive elsewhere (/mnt/archive here, /media there) pass
    --path-map /mnt/archive=/media; the catalog keeps the scanning host's paths.
    """
    best = None
    for src, dst in path_map:
        src = src.rstrip("/") or "/"
        if path == src or path.startswith(src if src == "/" else src + "/"):
            if best is None or len(src) > len(best[0]):
                best = (src, dst)
    if best is None:
        return path
    src, dst = best
    rest = path[len(src):].lstrip("/")
    return os.path.join(dst, rest) if rest else dst


@dataclass(frozen=True)
class Settings:
    """One frozen bundle of locations and limits, passed down to every runner part."""

    data_dir: Path
    db_url: str
    redis_url: str | None  # None: start the embedded Redis under data_dir
    outputs: str = "data"  # "data": DATA/outputs/<relative path>; "beside": next to the media
    models_dir: Path | None = None
    queue_name: str = "scriptorium"
    max_attempts: int = 3
    path_map: tuple[tuple[str, str], ...] = ()  # (catalog prefix, this host's prefix): --path-map SRC=DST
    overwrite: bool = False  # replace output files Scriptorium did not write (a person's subtitles)

    def __post_init__(self):
        if self.outputs not in ("data", "beside"):
            raise ValueError(f"outputs must be 'data' or 'beside', got {self.outputs!r}")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")

    def local_path(self, path: str) -> str:
        """A catalog path as this host reaches it (see map_path)."""
        return map_path(path, self.path_map)

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @classmethod
    def resolve(cls, data: str | None = None, db: str | None = None, redis: str | None = None,
                **kw) -> "Settings":
        """From CLI options, then SCRIPTORIUM_* variables, then defaults."""
        data_dir = Path(data or os.environ.get("SCRIPTORIUM_DATA") or "scriptorium-data").expanduser().resolve()
        db_url = db or os.environ.get("SCRIPTORIUM_DB") or sqlite_url_for(data_dir)
        redis_url = redis or os.environ.get("SCRIPTORIUM_REDIS") or None
        models = kw.pop("models_dir", None) or os.environ.get("SCRIPTORIUM_MODELS")
        return cls(data_dir, db_url, redis_url, models_dir=Path(models) if models else None, **kw)
