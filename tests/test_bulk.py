"""collector/store/bulk.py: an upsert of many rows a statement stores what executemany stores (real SQLite)."""

import random
import sqlite3

import pytest

from otelite.collector.store import db
from otelite.collector.store.bulk import BulkInsert

_TABLE = "CREATE TABLE t (k INTEGER PRIMARY KEY, n INTEGER NOT NULL, v, note TEXT)"
_HEAD = "INSERT INTO t (k, n, v, note)"
# Rows of one statement that share a key must see each other, as successive executemany steps do.
_TAIL = (" ON CONFLICT (k) DO UPDATE SET n = n + excluded.n, v = excluded.v, "
         "note = COALESCE(excluded.note, note) WHERE excluded.n >= 0")


def _table(tmp_path, name):
    conn = db.connect_writer(str(tmp_path / f"{name}.db"))
    conn.execute(_TABLE)
    return conn


@pytest.mark.parametrize("count", [0, 1, 3, 4, 5, 8, 13, 50])
def test_an_upsert_of_many_rows_a_statement_stores_what_executemany_stores(tmp_path, count):
    rng = random.Random(count)
    # Few keys, so that rows of one statement and of successive statements conflict; negative counts
    # are refused by the upsert's WHERE; None, floats, texts and big ints among the values.
    rows = [(rng.randrange(6), rng.choice([1, 2, -1, 2**62]), rng.choice([None, 1.5, "x", 7, float("inf")]),
             rng.choice([None, "a", "é"])) for _ in range(count)]
    bulk = BulkInsert(_HEAD, 4, _TAIL, rows=4)  # 4 rows a statement: whole statements and a remainder
    one, many = _table(tmp_path, "one"), _table(tmp_path, "many")
    for conn in (one, many):
        conn.execute("INSERT INTO t VALUES (0, 10, 'old', 'kept')")
    one.executemany(bulk.sql, rows)
    bulk.run(many, rows)
    dump = "SELECT k, n, v, typeof(v), note FROM t ORDER BY k"
    assert many.execute(dump).fetchall() == one.execute(dump).fetchall()
    # (the rows did change the table: the test compares something)
    assert count < 3 or one.execute(dump).fetchall() != [(0, 10, "old", "text", "kept")]


def test_a_row_of_the_wrong_width_is_refused_before_anything_is_written(tmp_path):
    # Flattened into one parameter list, a short row followed by a long one would shift values into
    # other columns without an error; executemany refuses such a row, and so must this.
    conn = _table(tmp_path, "w")
    bulk = BulkInsert(_HEAD, 4, _TAIL, rows=2)
    with pytest.raises(sqlite3.ProgrammingError):
        bulk.run(conn, [(2, 1, None), (3, 1, None, None, "extra"), (4, 1, None, None)])  # 3 + 5 values: 2 rows' worth
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
