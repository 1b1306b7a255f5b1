"""All SQL lives in collector/store/ (issue 9): readers and the writer are the only code that talks to
SQLite, so a dialect or an exporter cannot grow a query of its own. This test walks the source tree
(collector/, exporters/, api/ — not tests/ or bench/) and fails, naming the file and line, where a SQL
statement or a cursor call appears outside collector/store/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("collector", "exporters", "api")
STORE = Path("collector") / "store"

# Statement shapes, case-insensitive: a keyword followed by what makes it a statement, not prose
# ("SELECT … FROM <name>", "INSERT INTO", "UPDATE <name> SET", ...).
_STATEMENT = re.compile(r"""
      \bSELECT\s+(?:DISTINCT\s+)?[\w*.,()'"\s?+\-/|<>=]+?\s+FROM\s+["\w(]
    | \bINSERT\s+(?:OR\s+\w+\s+)?INTO\s
    | \bREPLACE\s+INTO\s
    | \bUPDATE\s+(?:OR\s+\w+\s+)?["\w.]+\s+SET\s+["\w.]+\s*=
    | \bDELETE\s+FROM\s
    | \b(?:CREATE|DROP)\s+(?:UNIQUE\s+|TEMP\s+|TEMPORARY\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b
    | \bALTER\s+TABLE\s
    | \bPRAGMA\s+\w+
    | \bWITH\s+(?:RECURSIVE\s+)?\w+(?:\s*\([^)]*\))?\s+AS\s*(?:NOT\s+)?(?:MATERIALIZED\s*)?\(
    | ^\s*(?:BEGIN(?:\s+(?:DEFERRED|IMMEDIATE|EXCLUSIVE))?|COMMIT|ROLLBACK|VACUUM|ANALYZE)\s*;?\s*$
""", re.IGNORECASE | re.VERBOSE | re.MULTILINE)
_CURSOR_CALLS = {"execute", "executemany", "executescript", "create_function", "create_aggregate"}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def _text(node: ast.AST) -> str | None:
    """The text of a string literal, an f-string (placeholders as `?`) or a `+` chain of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "?" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        if left is not None or right is not None:
            return (left or "?") + (right or "?")
    return None


def sql_findings(path: Path, source: str) -> list[str]:
    """`file:line: what` for every SQL statement or cursor call in `source`."""
    tree = ast.parse(source, str(path))
    skip = _docstrings(tree)
    inside: set[int] = set()  # string nodes already read as part of a larger expression
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _CURSOR_CALLS:
            out.append(f"{path}:{node.lineno}: .{node.func.attr}() call")
        if id(node) in skip or id(node) in inside:
            continue
        text = _text(node)
        if text is None:
            continue
        inside.update(id(n) for n in ast.walk(node))
        m = _STATEMENT.search(text)
        if m:
            out.append(f"{path}:{node.lineno}: SQL {m.group(0).strip()[:40]!r}")
    return out


def test_no_sql_outside_the_store():
    findings = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == STORE.parts:
                continue
            findings += sql_findings(rel, path.read_text())
    assert not findings, "SQL outside collector/store/:\n" + "\n".join(findings)


def test_the_store_itself_is_seen_as_sql():
    # The detector recognizes the store's own statements (or the walk above would prove nothing).
    hits = []
    for path in sorted((ROOT / STORE).glob("*.py")):
        hits += sql_findings(path.relative_to(ROOT), path.read_text())
    for module in ("metrics.py", "points.py", "tracing.py", "writer.py", "migrations.py", "db.py", "keys.py"):
        assert any(f"/{module}:" in h for h in hits), module


def test_findings_name_the_file_and_line(tmp_path):
    planted = '''"""Docstrings may say: select the rows from a table; update the set."""
import sqlite3

MESSAGE = "pick a series from the list, then update its set of labels"  # prose, not SQL


def rows(conn, name):
    sql = f"SELECT id, {name} FROM metric_points WHERE series_id = ?"
    extra = f"DELETE FROM spans WHERE id IN ({name})"
    part = "WITH RECURSIVE b(i) AS (SELECT 1) " + "SELECT i FROM b"
    conn.execute("PRAGMA query_only=ON")
    return sql, extra, part
'''
    findings = sql_findings(Path("api/planted.py"), planted)
    assert [f.split(": ")[0] for f in findings] == ["api/planted.py:8", "api/planted.py:9", "api/planted.py:10",
                                                    "api/planted.py:11", "api/planted.py:11"], findings
    assert any("execute" in f for f in findings) and any("PRAGMA" in f for f in findings)
    for statement in ("insert or replace into t (a) values (?)", "update metric_series set x = 1",
                      "CREATE INDEX i ON t (a)", "BEGIN IMMEDIATE", "ROLLBACK",
                      "select count(*) from metric_points"):
        assert sql_findings(Path("x.py"), f"q = {statement!r}\n"), statement
