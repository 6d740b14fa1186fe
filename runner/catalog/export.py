"""Export outputs from the catalog, and put failed files back in line."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from runner.catalog import models as m
from runner.catalog.db import Catalog
from runner.errors import RunnerError
from runner.catalog.outputs import write_media_outputs
from runner.catalog.status import Status


def _under(path: str, roots: list[Path]) -> bool:
    return not roots or any(Path(path).is_relative_to(r) for r in roots)


def export_outputs(catalog: Catalog, output_dir: Path, formats: tuple[str, ...], roots: list[Path],
                   overwrite: bool = False) -> int:
    """Write each done file's outputs under output_dir, mirroring its path under its scan root."""
    from runner.config import Settings

    roots = [r.expanduser().resolve() for r in roots]
    settings = Settings(output_dir.parent, catalog.url.render_as_string(hide_password=False), None, overwrite=overwrite)
    with catalog.read() as session:
        rows = session.execute(select(m.MediaFile.id, m.MediaFile.path, m.MediaFile.scan_root)
                               .where(m.MediaFile.status == Status.done)).all()
    count = 0
    for media_id, path, root in rows:
        if not _under(path, roots):
            continue
        target = (output_dir / _relative_dir(path, root)).resolve()
        if not target.is_relative_to(output_dir.resolve()):  # a path with '..' climbing out of its root
            raise RunnerError(f"{path}: export folder would leave {output_dir}")
        write_media_outputs(catalog, settings, media_id, formats, target)
        count += 1
    return count


def _relative_dir(path: str, root: str | None) -> Path:
    try:
        return Path(path).parent.relative_to(root) if root else Path()
    except ValueError:
        return Path()


def failed_to_queued(catalog: Catalog) -> list[tuple[int, float | None]]:
    """Failed files become queued with a fresh attempt count; returns (id, duration) of each."""
    with catalog.write() as session:
        rows = session.scalars(select(m.MediaFile).where(m.MediaFile.status == Status.failed)).all()
        for row in rows:
            row.status, row.attempts = Status.queued, 0
        return [(r.id, r.duration) for r in rows]
