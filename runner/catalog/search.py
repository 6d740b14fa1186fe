"""Full-text search over finished transcripts: FTS5 on SQLite, to_tsvector + GIN on PostgreSQL.

The user's text is always a bound parameter. By default it is plain words (each quoted, so FTS
syntax characters are just text); raw=True hands it to the engine's own query syntax.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import sqlalchemy as sa

from runner.catalog.models import TEXT_SEARCH_CONFIG, UTCDateTime
from runner.catalog.db import Catalog
from runner.errors import SearchError
from runner.catalog.status import Status

MARK_OPEN, MARK_CLOSE = "[", "]"

_SELECT = """
SELECT m.path, s.start, s."end", s.text, {marked} AS marked, t.media_id, s.id AS segment_id, t.model_name
"""
_JOINS = """
JOIN transcripts t ON t.id = s.transcript_id
JOIN media_files m ON m.id = t.media_id
"""
# Ranking every match costs ~1 us a row in FTS5 (600 ms for a word in half of 1M segments), so the
# ranking looks at the newest SQLITE_CANDIDATES matches that pass the filters (newest first is FTS5's
# cheap order); a query with fewer matches (nearly all) gets exactly the full ranking. highlight()
# then runs on the `limit` winners only.
SQLITE_CANDIDATES = 10_000
SQLITE_SQL = (
    "WITH hits AS (SELECT segments_fts.rowid AS id, bm25(segments_fts) AS score, m.path AS path, s.start AS start\n"
    "FROM segments_fts JOIN segments s ON s.id = segments_fts.rowid"
    + _JOINS
    + "WHERE segments_fts MATCH :query AND t.status = :done {filters}\n"
    + "ORDER BY segments_fts.rowid DESC LIMIT :candidates),\n"
    + "top AS (SELECT id, score, path, start FROM hits ORDER BY score, path, start LIMIT :limit)\n"
    + _SELECT.format(marked="highlight(segments_fts, 0, :mark_open, :mark_close)")
    + "FROM top JOIN segments_fts ON segments_fts.rowid = top.id JOIN segments s ON s.id = top.id"
    + _JOINS
    + "WHERE segments_fts MATCH :query\n"
    + "ORDER BY top.score, top.path, top.start"
)
# Expressions must match the migration's index: to_tsvector('simple', text).
_TSV = f"to_tsvector('{TEXT_SEARCH_CONFIG}', s.text)"
_HEADLINE = f"ts_headline('{TEXT_SEARCH_CONFIG}', s.text, q.query, :headline)"
POSTGRES_SQL = (
    _SELECT.format(marked=_HEADLINE)
    + f"FROM (SELECT {{to_tsquery}}('{TEXT_SEARCH_CONFIG}', :query) AS query) q CROSS JOIN segments s"
    + _JOINS
    + f"WHERE {_TSV} @@ q.query AND t.status = :done {{filters}}\n"
    + f"ORDER BY ts_rank({_TSV}, q.query) DESC, m.path, s.start LIMIT :limit"
)
PG_HEADLINE_OPTIONS = f"StartSel={MARK_OPEN}, StopSel={MARK_CLOSE}, HighlightAll=true"


@dataclass(frozen=True)
class Hit:
    """One matching segment: where it is, when it is said, and its text with the hit marked."""

    path: str
    start: float
    end: float
    text: str
    marked: str  # text with each matched word wrapped in [ and ]
    media_id: int
    segment_id: int
    model_name: str


def plain_fts5_query(query: str) -> str:
    """The user's words as FTS5 strings ANDed together: quoting makes every character plain text."""
    terms = [term for term in query.split() if any(ch.isalnum() for ch in term)]
    return " ".join('"' + term.replace('"', '""') + '"' for term in terms)


def folder_pattern(folder: str) -> str:
    """A LIKE pattern (escape character backslash) for every path under `folder`."""
    base = os.path.abspath(os.path.expanduser(folder)).rstrip(os.sep) + os.sep
    return base.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _filters(params: dict, folder: str | None, model: str | None, scanned_from: dt.datetime | None = None,
             scanned_before: dt.datetime | None = None) -> str:
    """The optional WHERE clauses (fixed SQL text), their values put in `params`."""
    clauses = []
    if scanned_from is not None:
        params["scanned_from"] = scanned_from
        clauses.append("AND m.scanned_at >= :scanned_from")
    if scanned_before is not None:
        params["scanned_before"] = scanned_before
        clauses.append("AND m.scanned_at < :scanned_before")
    if folder:
        params["folder"] = folder_pattern(folder)
        clauses.append("AND m.path LIKE :folder ESCAPE '\\'")
    if model:
        params["model"] = model
        clauses.append("AND t.model_name = :model")
    return " ".join(clauses)


def _statement(dialect: str, query: str, raw: bool, params: dict, filters: str) -> sa.TextClause:
    """The dialect's SQL with the query put in `params`; SearchError for an unsupported database."""
    if dialect == "sqlite":
        params.update(query=query if raw else plain_fts5_query(query), mark_open=MARK_OPEN, mark_close=MARK_CLOSE,
                      candidates=SQLITE_CANDIDATES)
        return sa.text(SQLITE_SQL.format(filters=filters))
    if dialect == "postgresql":
        params.update(query=query, headline=PG_HEADLINE_OPTIONS)
        to_tsquery = "websearch_to_tsquery" if raw else "plainto_tsquery"
        return sa.text(POSTGRES_SQL.format(to_tsquery=to_tsquery, filters=filters))
    raise SearchError(query, f"full-text search is not available on {dialect}")


def _reason(exc: sa.exc.DBAPIError) -> str | None:
    """The database's complaint about a query, or None when the error is not about the query."""
    message = str(exc.orig).strip()
    transient = ("locked", "busy", "connection", "timeout")
    if isinstance(exc, sa.exc.OperationalError) and any(word in message.lower() for word in transient):
        return None
    return message.splitlines()[0] if message else type(exc.orig).__name__


def search(
    catalog: Catalog, query: str, limit: int = 20, folder: str | None = None, model: str | None = None,
    raw: bool = False, scanned_from: dt.datetime | None = None, scanned_before: dt.datetime | None = None,
) -> list[Hit]:  # fmt: skip
    """Segments of finished transcripts matching `query`, best first; SearchError for a bad raw query.

    `scanned_from` (inclusive) and `scanned_before` (exclusive) keep files whose last scan falls between them.
    """
    if limit <= 0 or not query.strip() or (not raw and catalog.dialect == "sqlite" and not plain_fts5_query(query)):
        return []
    params: dict = {"limit": int(limit), "done": Status.done.value}
    filters = _filters(params, folder, model, scanned_from, scanned_before)
    statement = _statement(catalog.dialect, query, raw, params, filters)
    # Times are bound as the column's type, so SQLite compares them in the format it stores.
    typed = [sa.bindparam(k, type_=UTCDateTime()) for k in ("scanned_from", "scanned_before") if k in params]
    if typed:
        statement = statement.bindparams(*typed)
    try:
        with catalog.read() as session:
            rows = session.execute(statement, params).all()
    except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.DataError) as exc:
        reason = _reason(exc)
        if reason is None:
            raise
        raise SearchError(query, reason) from None
    return [Hit(*row) for row in rows]
