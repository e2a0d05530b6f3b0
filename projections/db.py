"""Postgres access for the projection: the schema name, connections and migrations.

Owns: which Postgres schema holds the projection (default ``jobstream``, from
``JOBSTREAM_PG_SCHEMA`` or an explicit argument), opening connections whose
``search_path`` is that schema, and applying ``migrations/NNN_*.sql``.

Invariants:
- Every connection opened here has ``search_path`` = the projection schema, so
  SQL elsewhere in this package is unqualified yet always hits the right schema.
- Migrations are applied in file-name order, each at most once (recorded in
  ``schema_migrations``), under an advisory lock so concurrent ``migrate`` runs
  are safe; every file is itself idempotent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from typing import Final

import asyncpg

from streams.settings import Settings

DEFAULT_SCHEMA: Final = "jobstream"
_SCHEMA_RE: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_MIGRATE_LOCK_KEY: Final = 0x6A6F6273  # "jobs": one advisory lock id for every migrate run

Connection = asyncpg.Connection


def validate_schema(schema: str) -> str:
    """Return ``schema`` or raise ValueError: a lower-case SQL identifier, safe to interpolate."""
    if not _SCHEMA_RE.fullmatch(schema):
        raise ValueError(f"invalid Postgres schema name {schema!r}: use [a-z_][a-z0-9_]*")
    return schema


def schema_from_env(env: Mapping[str, str] | None = None) -> str:
    """The projection schema named by ``JOBSTREAM_PG_SCHEMA`` (default ``jobstream``)."""
    e = os.environ if env is None else env
    return validate_schema(e.get("JOBSTREAM_PG_SCHEMA", "") or DEFAULT_SCHEMA)


async def connect(settings: Settings, schema: str, *, app: str = "jobstream") -> Connection:
    """Open one connection whose ``search_path`` is ``schema`` (then ``public``)."""
    conn: Connection = await asyncpg.connect(
        settings.database_url,
        server_settings={
            "search_path": f"{validate_schema(schema)}, public",
            "application_name": app[:63],
        },
        timeout=10,
    )
    return conn


def migration_files() -> list[tuple[str, str]]:
    """(version, SQL) of every packaged migration, in order."""
    folder = resources.files("projections").joinpath("migrations")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(n.removesuffix(".sql"), folder.joinpath(n).read_text("utf-8")) for n in names]


async def migrate(conn: Connection, schema: str) -> list[str]:
    """Create ``schema`` if needed and apply pending migrations; return the versions applied."""
    schema = validate_schema(schema)
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK_KEY)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"SET LOCAL search_path TO {schema}, public")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
    return applied


async def migrate_settings(settings: Settings, schema: str) -> list[str]:
    """Open a connection, migrate ``schema``, close; return the versions applied."""
    conn = await connect(settings, schema, app="jobstream-migrate")
    try:
        return await migrate(conn, schema)
    finally:
        await conn.close()
