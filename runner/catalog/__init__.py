"""The catalog: what is known about each media file and its transcripts (SQLAlchemy models,
Alembic-managed schema, transactional helpers), full-text search, exports, output files, checks and repair."""
