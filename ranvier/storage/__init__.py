"""Storage: the SQLite / PostgreSQL engine (``engine``) and, later, one store per area."""

from ranvier.storage.engine import (
    Database,
    DatabaseTooNewError,
    Engine,
    IntegrityError,
    MigrationError,
    Queryable,
    Row,
    Transaction,
    TransactionMisuseError,
    current_stream_position,
    next_stream_position,
    next_stream_positions,
    open_database,
    placeholders,
    upsert_sql,
)

__all__ = [
    "Database",
    "DatabaseTooNewError",
    "Engine",
    "IntegrityError",
    "MigrationError",
    "Queryable",
    "Row",
    "Transaction",
    "TransactionMisuseError",
    "current_stream_position",
    "next_stream_position",
    "next_stream_positions",
    "open_database",
    "placeholders",
    "upsert_sql",
]
