"""Alembic environment: runs on a connection passed in config.attributes, or on a URL.

runner.catalog.db passes its own connection (so in-memory and temporary databases work and SQLite
pragmas apply); by hand, the URL comes from -x url=..., SCRIPTORIUM_DB_URL or sqlalchemy.url.
"""

from __future__ import annotations

import logging.config
import os

from alembic import context
from sqlalchemy import create_engine, pool

from runner.catalog.models import FTS_TABLE, PG_TEXT_INDEX, Base, UTCDateTime

config = context.config
target_metadata = Base.metadata

if config.config_file_name and config.cmd_opts is not None:  # the alembic CLI only: never reconfigure a host app
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def include_name(name, type_, parent_names) -> bool:
    """Keep the full-text objects made by hand (FTS5 table and its shadow tables, GIN index) out of drift checks."""
    if type_ == "table" and name and name.startswith(FTS_TABLE):
        return False
    return not (type_ == "index" and name == PG_TEXT_INDEX)


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Same filter for objects that reach comparison (e.g. a reflected expression index)."""
    return include_name(name, type_, {})


def render_item(type_, obj, autogen_context):
    """Render the catalog's UTC timestamp type as the plain type it stores, so new revisions need no runner import."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _url() -> str:
    """The database URL when no connection was passed in."""
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("SCRIPTORIUM_DB_URL")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: pass -x url=..., set SCRIPTORIUM_DB_URL or sqlalchemy.url")
    return url


def _configure(**kw) -> None:
    """Shared context settings: batch mode on SQLite (it cannot ALTER most things), type comparison on."""
    context.configure(
        target_metadata=target_metadata,
        include_name=include_name,
        include_object=include_object,
        render_item=render_item,
        compare_type=True,
        **kw,
    )


def run_migrations_offline() -> None:
    """Emit SQL for a URL without connecting."""
    url = _url()
    _configure(url=url, literal_binds=True, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection) -> None:
    """Run the migrations on one open connection."""
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run on the passed connection, else on a fresh engine for the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run_on(conn)
        conn.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
