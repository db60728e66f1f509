"""ClickHouse behind a narrow interface, on two engines that run the same SQL:

* :class:`DriverExecutor`: a ClickHouse server over the native protocol (``clickhouse-driver``);
  in tests and the local stack that is Debian's 18.16 server, in Docker a current one;
* :class:`ChdbExecutor`: a current ClickHouse engine in-process (``chdb``).

SQL takes parameters (``%(name)s``), escaped by clickhouse-driver's own escaper on both
engines; identifiers (table and column names) are checked against a strict pattern.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from pipeline.settings import REPO_ROOT

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MIGRATIONS_DIR = REPO_ROOT / "schemas" / "clickhouse"


def ident(name: str) -> str:
    if not IDENT.match(name):
        raise ValueError(f"not a safe ClickHouse identifier: {name!r}")
    return name


class _UtcContext:
    """Minimal stand-in for clickhouse-driver's context: the server time zone is UTC."""

    class server_info:  # noqa: N801 - mirrors the driver's attribute name
        @staticmethod
        def get_timezone() -> str:
            return "UTC"


def literal(value: Any) -> str:
    """One SQL literal, escaped exactly as clickhouse-driver escapes parameters."""
    from clickhouse_driver.util.escape import escape_param

    if isinstance(value, datetime):
        value = value.astimezone(UTC).replace(tzinfo=None)
        return "'" + value.strftime("%Y-%m-%d %H:%M:%S") + "'"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float | int) or value is None:
        return "NULL" if value is None else repr(value)
    out = escape_param(value, _UtcContext)
    return str(out)


def render(sql: str, params: dict[str, Any] | None) -> str:
    if not params:
        return sql
    return sql % {k: literal(v) for k, v in params.items()}


class Executor(Protocol):
    """What the rest of gpumeter needs from ClickHouse."""

    engine: str
    database: str

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None: ...


class DriverExecutor:
    """A ClickHouse server over the native protocol."""

    engine = "server"

    def __init__(
        self,
        host: str,
        port: int,
        database: str,
        user: str = "default",
        password: str = "",
        connect_timeout: float = 5,
    ) -> None:
        from clickhouse_driver import Client

        self.database = ident(database)
        self._admin = Client(
            host=host, port=port, user=user, password=password, connect_timeout=connect_timeout
        )
        self._client = Client(
            host=host,
            port=port,
            database=self.database,
            user=user,
            password=password,
            connect_timeout=connect_timeout,
            send_receive_timeout=60,
        )

    def create_database(self) -> None:
        self._admin.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self._admin.disconnect()

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        rows = self._client.execute(render(sql, params))
        return [tuple(_norm(v) for v in r) for r in rows] if rows else []

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        cols = ", ".join(ident(c) for c in columns)
        self._client.execute(f"INSERT INTO {ident(table)} ({cols}) VALUES", list(rows))

    def close(self) -> None:
        self._client.disconnect()
        self._admin.disconnect()


def _norm(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC)
    return value


class ChdbExecutor:
    """A current ClickHouse engine embedded in-process through chdb."""

    engine = "chdb"

    def __init__(self, path: str | Path, database: str) -> None:
        try:
            from chdb import session
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "chdb is not installed: pip install 'gpumeter[chdb]' (or pip install chdb)"
            ) from exc
        self.database = ident(database)
        self._session = session.Session(str(path))

    def create_database(self) -> None:
        self._session.query(f"CREATE DATABASE IF NOT EXISTS {self.database}")

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self._session.query(f"USE {self.database}")
        text = render(sql, params)
        stripped = text.lstrip().upper()
        if not stripped.startswith(("SELECT", "WITH", "SHOW", "DESCRIBE", "EXISTS")):
            self._session.query(text)
            return []
        res = self._session.query(text, "JSONCompact")
        raw = res.bytes()
        if not raw:
            return []
        doc = json.loads(raw)
        types = [m["type"] for m in doc["meta"]]
        return [
            tuple(_from_json(v, t) for v, t in zip(row, types, strict=True)) for row in doc["data"]
        ]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        self._session.query(f"USE {self.database}")
        cols = ", ".join(ident(c) for c in columns)
        values = ",".join("(" + ",".join(literal(v) for v in row) + ")" for row in rows)
        self._session.query(f"INSERT INTO {ident(table)} ({cols}) VALUES {values}")

    def close(self) -> None:
        self._session.close()


def _from_json(value: Any, ch_type: str) -> Any:
    if value is None:
        return None
    base = ch_type[9:-1] if ch_type.startswith("Nullable(") else ch_type
    if base.startswith(("UInt", "Int")):
        return int(value)
    if base.startswith("Float"):
        return float(value)
    if base.startswith("DateTime"):
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    if base == "Date":
        return date.fromisoformat(value)
    return value


# --- migrations ----------------------------------------------------------------------------


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, Path]]:
    out = []
    for path in sorted(directory.glob("*.sql")):
        m = re.match(r"^(\d{4})_([a-z0-9_]+)\.sql$", path.name)
        if not m:
            raise ValueError(f"migration file name {path.name!r} is not NNNN_name.sql")
        out.append((int(m.group(1)), m.group(2), path))
    return out


def statements(path: Path) -> list[str]:
    text = "\n".join(
        line for line in path.read_text().splitlines() if not line.strip().startswith("--")
    )
    return [s.strip() for s in text.split(";") if s.strip()]


def migrate(ex: DriverExecutor | ChdbExecutor, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the versioned DDL in order; each version once. Returns the names applied."""
    ex.create_database()
    ex.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
        "applied_at DateTime('UTC')) ENGINE = ReplacingMergeTree() ORDER BY version"
    )
    done = {r[0] for r in ex.execute("SELECT version FROM schema_migrations")}
    applied = []
    for version, name, path in migration_files(directory):
        if version in done:
            continue
        for stmt in statements(path):
            ex.execute(stmt)
        ex.insert(
            "schema_migrations",
            ["version", "name", "applied_at"],
            [(version, name, datetime.now(UTC))],
        )
        applied.append(f"{version:04d}_{name}")
    return applied


# --- cluster DDL -----------------------------------------------------------------------------

_CREATE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+) \(", re.I)
_ENGINE = re.compile(r"ENGINE = (Replacing)?MergeTree\(([^)]*)\)")
_ORDER = re.compile(r"ORDER BY \(?\s*(\w+)")
_DROP = re.compile(r"^DROP TABLE IF EXISTS (\w+)$", re.I)
_ALTER = re.compile(r"^ALTER TABLE (\w+) (.*)$", re.I | re.S)


def cluster_statements(cluster: str, database: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """The migrations rewritten for a ClickHouse cluster: every table ``ON CLUSTER``, on a
    Replicated engine (one replica path per shard), plus a ``<table>_all`` Distributed table
    sharded by the table's first sort column (``tenant_id`` for usage and invoices), so that
    every version of a key lands on one shard and ``FINAL`` still deduplicates correctly."""
    cl, db = ident(cluster), ident(database)
    out = [f"CREATE DATABASE IF NOT EXISTS {db} ON CLUSTER {cl}"]
    for _version, _name, path in migration_files(directory):
        for stmt in statements(path):
            created = _CREATE.match(stmt)
            altered = _ALTER.match(stmt)
            if created:
                table = created.group(1)
                body = _CREATE.sub(
                    f"CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {cl} (", stmt, count=1
                )

                def replicated(m: re.Match[str], table: str = table) -> str:
                    args = [f"'/clickhouse/tables/{{shard}}/{db}/{table}'", "'{replica}'"]
                    if m.group(2).strip():
                        args.append(m.group(2).strip())
                    return f"ENGINE = Replicated{m.group(1) or ''}MergeTree({', '.join(args)})"

                out.append(_ENGINE.sub(replicated, body))
                order = _ORDER.search(stmt)
                shard_key = f"cityHash64({order.group(1)})" if order else "rand()"
                out.append(
                    f"CREATE TABLE IF NOT EXISTS {db}.{table}_all ON CLUSTER {cl} AS {db}.{table} "
                    f"ENGINE = Distributed({cl}, {db}, {table}, {shard_key})"
                )
            elif altered:
                table, rest = altered.group(1), altered.group(2)
                out.append(f"ALTER TABLE {db}.{table} ON CLUSTER {cl} {rest}")
                out.append(f"ALTER TABLE {db}.{table}_all ON CLUSTER {cl} {rest}")
            elif dropped := _DROP.match(stmt):
                table = dropped.group(1)
                out.append(f"DROP TABLE IF EXISTS {db}.{table}_all ON CLUSTER {cl}")
                out.append(f"DROP TABLE IF EXISTS {db}.{table} ON CLUSTER {cl}")
            else:
                raise ValueError(f"{path.name}: no cluster form for statement: {stmt[:60]}")
    return out
