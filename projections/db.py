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
- A schema serves ONE namespace (``job_events`` rows carry none): the first
  ``migrate`` with settings (or projector start) records it in
  ``projection_meta``; :func:`claim_namespace` raises
  :class:`NamespaceMismatch` for any other namespace afterwards.
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


class NamespaceMismatch(Exception):
    """The projection schema belongs to another namespace (JOBSTREAM_NAMESPACE)."""


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


async def claim_namespace(conn: Connection, namespace: str) -> None:
    """Record ``namespace`` as the schema's (if none is); raise NamespaceMismatch if another is.

    ``conn``'s search_path must be the projection schema, migrated.
    """
    await conn.execute(
        "INSERT INTO projection_meta (key, value) VALUES ('namespace', $1) "
        "ON CONFLICT (key) DO NOTHING",
        namespace,
    )
    owner = await conn.fetchval("SELECT value FROM projection_meta WHERE key = 'namespace'")
    if owner != namespace:
        schema = await conn.fetchval("SELECT current_schema()")
        raise NamespaceMismatch(
            f"Postgres schema {schema!r} holds the projection of namespace {owner!r}, "
            f"not {namespace!r}: set JOBSTREAM_NAMESPACE={owner} or use another schema "
            "(JOBSTREAM_PG_SCHEMA / --schema)"
        )


async def migrate(conn: Connection, schema: str, namespace: str | None = None) -> list[str]:
    """Create ``schema`` if needed and apply pending migrations; return the versions applied.

    With ``namespace``, also claim the schema for it (see :func:`claim_namespace`);
    on a mismatch nothing is applied.
    """
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
        if namespace is not None:
            await claim_namespace(conn, namespace)
    return applied


async def migrate_settings(settings: Settings, schema: str) -> list[str]:
    """Open a connection, migrate ``schema`` for ``settings.namespace``, close.

    Returns the versions applied; raises :class:`NamespaceMismatch`.
    """
    conn = await connect(settings, schema, app="jobstream-migrate")
    try:
        return await migrate(conn, schema, settings.namespace)
    finally:
        await conn.close()
