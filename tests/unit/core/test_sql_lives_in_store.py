"""SQL belongs to ``gateway/store/`` (one module per table family); ``gateway/writer.py`` keeps the hot telemetry
write path, ``gateway/tools/`` seeds files offline. A statement anywhere else in ``gateway/`` fails here, naming
the file and line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[3] / "gateway"
# gateway/tools/ seeds database files offline for tests and benchmarks (not the running gateway).
ALLOWED = ("store/", "writer.py", "tools/")

# Keywords in capitals, as every statement of the project is written: prose ("select a pump from the list")
# stays out of it.
_SQL = re.compile(
    r"\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b"
    r"|\bSELECT\b.+?\bFROM\b"
    r"|\bUPDATE\s+\w+\s+SET\b"
    r"|\bDELETE\s+FROM\b",
    re.DOTALL,
)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (prose may say "insert into" and "select … from")."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string literal; an f-string's fixed parts are joined with ``{}`` for its fields."""
    skip = _docstrings(tree)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                           for v in node.values)
            out.append((node.lineno, text))
            skip.update(id(v) for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            out.append((node.lineno, node.value))
    return out


_DB_CALLS = frozenset({"execute", "executemany", "executescript", "fetchall", "fetchone"})


def _db_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of every ``x.execute(…)``-like call: SQL built elsewhere and run here is SQL here too."""
    return [
        (node.lineno, f".{node.func.attr}(")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _DB_CALLS
    ]


def sql_outside_store(root: Path) -> list[str]:
    """``path:line: statement`` for every SQL statement in a string literal, and every statement run, outside
    the allowed modules."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(ALLOWED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, text in _literals(tree):
            match = _SQL.search(text)
            if match:
                problems.append(f"gateway/{rel}:{line}: {' '.join(match.group(0).split())[:60]}")
        problems.extend(f"gateway/{rel}:{line}: {call}" for line, call in _db_calls(tree))
    return problems


def test_no_sql_outside_gateway_store() -> None:
    problems = sql_outside_store(GATEWAY)
    assert not problems, "SQL outside gateway/store/ (move it to the table family's store module):\n" + "\n".join(
        problems
    )


@pytest.mark.parametrize(
    "source",
    [
        'rows = db.fetchall("SELECT id FROM zones WHERE uid=?", (uid,))',
        'db.execute("INSERT INTO sync_outbox(stream, body) VALUES (?, ?)", p)',
        'db.execute("INSERT OR REPLACE INTO water_usage_daily VALUES (?)", p)',
        'db.execute(f"UPDATE commands SET {col}=? WHERE id=?", p)',
        'SQL = ("DELETE FROM alerts"\n       " WHERE id = ?")',
        'q = f"SELECT {cols}\\n FROM {table}"',
    ],
)
def test_the_scan_finds_sql(tmp_path: Path, source: str) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "fine.py").write_text(source + "\n", encoding="utf-8")
    (tmp_path / "writer.py").write_text(source + "\n", encoding="utf-8")
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "views.py").write_text(source + "\n", encoding="utf-8")
    assert {p.split(":")[0] for p in sql_outside_store(tmp_path)} == {"gateway/web/views.py"}


def test_the_scan_leaves_prose_alone(tmp_path: Path) -> None:
    (tmp_path / "prose.py").write_text(
        '"""Recompute the buckets (DELETE + INSERT … SELECT in one transaction), insert into a queue."""\n'
        'log.info("select a pump from the list, then update it")\n',
        encoding="utf-8",
    )
    assert sql_outside_store(tmp_path) == []


def test_sync_outbox_has_one_writer() -> None:
    """Every row upstream goes through ``sync.outbox.enqueue`` (its statement is the only INSERT of the table)."""
    root = GATEWAY.parent
    writers = []
    for package in ("gateway", "sync", "drivers", "bench"):
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            writers += [f"{path.relative_to(root)}:{line}" for line, text in _literals(tree)
                        if re.search(r"\bINSERT\s+(?:OR\s+\w+\s+)?INTO\s+sync_outbox\b", text)]
    assert len(writers) == 1 and writers[0].startswith("sync/outbox.py:"), writers
