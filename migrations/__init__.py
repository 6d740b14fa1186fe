"""Alembic migrations of the Scriptorium catalog (script_location for runner.catalog.db)."""
