"""The store's schema as ordered migrations (sqlite-utils' `Migrations`).

Each migration runs in one transaction together with the row that records it. `PRAGMA user_version`
mirrors the number of applied migrations so a quick look (and older tools) can tell the schema version;
a file whose version is newer than this build knows is refused rather than guessed at (store.md).

Design notes (store.md):
- Every row carries `project_id` (project isolation); project 1 `default` exists from the start.
- Resources, scopes and metric series use a 63-bit fingerprint as their id, computed while parsing, so
  ingest never needs a round trip to look an id up; `INSERT OR IGNORE` makes repeats free.
- Span ids are BLOBs (16/8 bytes), half the size of hex and faster to index.
- `metric_points.value` has no declared type (no affinity): an int64 stays an exact integer, a double a
  REAL, and a Flux set member or Trifle value can be stored without another table.
- The span attribute rollup is kept per hour at ingest so the tracing pickers never scan spans.
"""

from __future__ import annotations

import datetime as _dt

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from otelite.collector.store.series_state import STATE_COLUMNS
from otelite.collector.store.series_state import backfill as _backfill_series_state
from otelite.collector.store.series_state import backfill_distributions as _backfill_distributions
from otelite.collector.store.span_counts import start_backfill as _start_count_backfill
from otelite.collector.store.spans import start_backfill as _start_run_backfill
from otelite.collector.store.tracing import LEGACY_ROLLUP

MIGRATIONS = Migrations("otelite")


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer otelite; opening it could corrupt it."""


@MIGRATIONS(name="0001_initial")
def _m0001_initial(db: Database) -> None:
    now = _dt.datetime.now(_dt.timezone.utc).isoformat()
    for sql in (
        """CREATE TABLE projects (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            timezone TEXT NOT NULL DEFAULT 'UTC',
            created_at TEXT NOT NULL)""",
        """CREATE TABLE resources (
            id INTEGER PRIMARY KEY,            -- fingerprint of (project, attributes, dropped, schema_url)
            project_id INTEGER NOT NULL,
            attributes TEXT NOT NULL,          -- JSON object, AnyValue arrays/maps kept as JSON
            dropped_attributes_count INTEGER NOT NULL DEFAULT 0,
            schema_url TEXT NOT NULL DEFAULT '',
            service_name TEXT,
            service_namespace TEXT,
            service_instance_id TEXT)""",
        """CREATE TABLE scopes (
            id INTEGER PRIMARY KEY,            -- fingerprint of (project, name, version, attributes, ...)
            project_id INTEGER NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            version TEXT NOT NULL DEFAULT '',
            attributes TEXT NOT NULL,
            dropped_attributes_count INTEGER NOT NULL DEFAULT 0,
            schema_url TEXT NOT NULL DEFAULT '')""",
        """CREATE TABLE spans (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL,
            trace_id BLOB NOT NULL,
            span_id BLOB NOT NULL,
            parent_span_id BLOB,               -- NULL for a root span
            trace_state TEXT NOT NULL DEFAULT '',
            flags INTEGER NOT NULL DEFAULT 0,
            name TEXT NOT NULL,
            kind INTEGER NOT NULL,
            start_ns INTEGER NOT NULL,
            end_ns INTEGER NOT NULL,
            status_code INTEGER NOT NULL,
            status_message TEXT NOT NULL DEFAULT '',
            attributes TEXT NOT NULL,          -- JSON object
            events TEXT,                       -- JSON list of {name, time_ns, attributes, dropped_attributes_count}
            links TEXT,                        -- JSON list of {trace_id, span_id, trace_state, flags, attributes, ...}
            dropped_attributes_count INTEGER NOT NULL DEFAULT 0,
            dropped_events_count INTEGER NOT NULL DEFAULT 0,
            dropped_links_count INTEGER NOT NULL DEFAULT 0,
            resource_id INTEGER NOT NULL,
            scope_id INTEGER NOT NULL,
            service_name TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX spans_by_time ON spans (project_id, start_ns)",
        "CREATE INDEX spans_by_trace ON spans (trace_id)",
        "CREATE INDEX spans_by_service ON spans (project_id, service_name, start_ns)",
        # Attribute pickers (posthog-tracing.md): keys and values counted per hour at ingest.
        """CREATE TABLE span_attribute_keys (
            project_id INTEGER NOT NULL,
            attribute_type TEXT NOT NULL,      -- 'span' or 'resource'
            key TEXT NOT NULL,
            hour INTEGER NOT NULL,             -- start_ns // 3600e9
            count INTEGER NOT NULL,
            PRIMARY KEY (project_id, attribute_type, key, hour)) WITHOUT ROWID""",
        """CREATE TABLE span_attribute_values (
            project_id INTEGER NOT NULL,
            attribute_type TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            hour INTEGER NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (project_id, attribute_type, key, value, hour)) WITHOUT ROWID""",
        """CREATE TABLE metric_series (
            id INTEGER PRIMARY KEY,            -- fingerprint of store.md's series identity
            project_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            type TEXT NOT NULL,                -- gauge | sum | histogram | exponential_histogram | summary
            unit TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT '',
            temporality INTEGER NOT NULL DEFAULT 0,  -- AggregationTemporality: 1 delta, 2 cumulative
            is_monotonic INTEGER NOT NULL DEFAULT 0,
            resource_id INTEGER NOT NULL,
            scope_id INTEGER NOT NULL,
            attributes TEXT NOT NULL,          -- point attributes, JSON object with sorted keys
            first_seen_ns INTEGER NOT NULL,
            last_seen_ns INTEGER NOT NULL)""",
        "CREATE INDEX metric_series_by_name ON metric_series (project_id, name)",
        "CREATE INDEX metric_series_by_last_seen ON metric_series (project_id, last_seen_ns)",
        # Labels of a series (point and resource attributes) as rows, so filters and group-by on a key
        # find series without scanning points (store.md: series identity).
        """CREATE TABLE metric_series_labels (
            project_id INTEGER NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            source TEXT NOT NULL,              -- 'point' or 'resource'
            series_id INTEGER NOT NULL,
            PRIMARY KEY (project_id, key, value, source, series_id)) WITHOUT ROWID""",
        "CREATE INDEX metric_series_labels_by_series ON metric_series_labels (series_id)",
        """CREATE TABLE metric_points (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL,
            series_id INTEGER NOT NULL,
            start_ns INTEGER NOT NULL DEFAULT 0,
            time_ns INTEGER NOT NULL,
            value,                             -- no affinity: exact int64, double, or text member
            count INTEGER,
            sum REAL,
            min REAL,
            max REAL,
            flags INTEGER NOT NULL DEFAULT 0,
            buckets TEXT,                      -- JSON: explicit / exponential buckets, summary quantiles
            exemplars TEXT)                    -- JSON list""",
        "CREATE INDEX metric_points_by_series_time ON metric_points (series_id, time_ns)",
        "CREATE INDEX metric_points_by_time ON metric_points (time_ns)",
    ):
        db.execute(sql)
    db.execute("INSERT INTO projects (id, key, name, timezone, created_at) VALUES (1, 'default', "
               "'Default project', 'UTC', ?)", [now])


@MIGRATIONS(name="0002_api_keys")
def _m0002_api_keys(db: Database) -> None:
    # auth.md: keys are stored only as SHA-256 hashes; `display` keeps a few leading characters so a
    # person can tell keys apart in `otelite keys list` without the secret being recoverable.
    db.execute("""CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL REFERENCES projects (id),
        name TEXT NOT NULL DEFAULT '',
        display TEXT NOT NULL,
        secret_hash BLOB NOT NULL UNIQUE,
        scopes TEXT NOT NULL,                  -- JSON list of scope names
        created_at TEXT NOT NULL,
        revoked_at TEXT)""")


@MIGRATIONS(name="0003_series_state")
def _m0003_series_state(db: Database) -> None:
    # prometheus.md: a scrape reads the latest state of each live series, one row each, never the points
    # table; the writer keeps it current in the commit that stores the points (series_state.py). Columns
    # as in metric_points; for delta sums/histograms the row holds the running total of every delta.
    db.execute("""CREATE TABLE metric_series_state (
        series_id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL,
        time_ns INTEGER NOT NULL,
        start_ns INTEGER NOT NULL DEFAULT 0,
        value,
        count INTEGER,
        sum REAL,
        min REAL,
        max REAL,
        flags INTEGER NOT NULL DEFAULT 0,
        buckets TEXT,
        exemplars TEXT)""")
    _backfill_series_state(db.conn)  # a store written before this migration: the same fold as the writer


@MIGRATIONS(name="0004_tracing_indexes")
def _m0004_tracing_indexes(db: Database) -> None:
    # posthog-tracing.md: the span list shows root spans by default and the root-span sparkline counts
    # traces. Partial indexes hold only spans without a parent (a few percent of rows), so they cost
    # ingest almost nothing; `trace_id` makes the per-service one covering for distinct-trace counts.
    db.execute("CREATE INDEX spans_roots_by_time ON spans (project_id, start_ns, span_id) "
               "WHERE parent_span_id IS NULL")
    db.execute("CREATE INDEX spans_roots_by_service ON spans (project_id, service_name, start_ns, trace_id) "
               "WHERE parent_span_id IS NULL")


@MIGRATIONS(name="0005_flux_events")
def _m0005_flux_events(db: Database) -> None:
    # flux.md: Flux events (`POST /api/v1/flux/batch`) are stored with every field the SDK sends and listed
    # newest first by name (exact or prefix), user and time (collector/store/events.py).
    db.execute("""CREATE TABLE flux_events (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        time_ns INTEGER NOT NULL,
        value REAL,                            -- NULL: the event carried no value
        properties TEXT,                       -- JSON object, or NULL
        tags TEXT,                             -- JSON object of strings, or NULL
        user_id TEXT,
        session_id TEXT,
        environment TEXT,
        service TEXT)""")
    db.execute("CREATE INDEX flux_events_by_time ON flux_events (project_id, time_ns)")
    db.execute("CREATE INDEX flux_events_by_name ON flux_events (project_id, name, time_ns)")
    db.execute("CREATE INDEX flux_events_by_user ON flux_events (project_id, user_id, time_ns) "
               "WHERE user_id IS NOT NULL")
    # The scrape's summary of a Flux distribution reads running totals the writer now keeps (series_state.py).
    _backfill_distributions(db.conn)


@MIGRATIONS(name="0006_metric_groups")
def _m0006_metric_groups(db: Database) -> None:
    # metric-groups.md (LaunchDarkly metric groups): one row per group, written only through Store.write
    # (collector/store/metric_groups.py). `version` is the compare-and-set token of PATCH. `metrics` is the
    # ordered JSON list [{key, nameInGroup, snapshot}], where `snapshot` is the metric's last-known catalog
    # entry, so a group still renders a metric that retention has since deleted from metric_series.
    # `search_text` is the case-folded "key\nname" the list's fuzzy `query` filter searches.
    db.execute("""CREATE TABLE metric_groups (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL REFERENCES projects (id),
        key TEXT NOT NULL,
        uuid TEXT NOT NULL UNIQUE,             -- the representation's _id
        name TEXT NOT NULL,
        kind TEXT NOT NULL,                    -- funnel | standard
        description TEXT,
        maintainer_id TEXT NOT NULL,
        tags TEXT NOT NULL,                    -- JSON list of strings
        metrics TEXT NOT NULL,                 -- JSON list, see above
        version INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        modified_ms INTEGER NOT NULL,
        search_text TEXT NOT NULL,
        UNIQUE (project_id, key))""")
    db.execute("CREATE INDEX metric_groups_by_created ON metric_groups (project_id, created_ms)")


@MIGRATIONS(name="0007_export_log")
def _m0007_export_log(db: Database) -> None:
    # Forwarding exporters (issue 17, export_log.py): the OTLP request of every committed batch of a
    # forwarded signal, appended in the commit that stores its rows, and a durable cursor per exporter and
    # signal over it. AUTOINCREMENT: a seq is never reused, even after the newest entries were trimmed, so a
    # cursor can never point past an entry it has not seen. `end_items` / `end_bytes` are running totals per
    # signal (a backlog is two subtractions, never a scan); `payload` is last so reading the other columns
    # never touches its overflow pages.
    for sql in (
        """CREATE TABLE export_log (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            signal TEXT NOT NULL,              -- 'traces' or 'metrics'
            project_id INTEGER NOT NULL,
            committed_ns INTEGER NOT NULL,     -- when the commit that holds it started (lag, age bound)
            items INTEGER NOT NULL,            -- spans or data points stored from it
            end_items INTEGER NOT NULL,        -- running total of `items` of this signal, this entry included
            end_bytes INTEGER NOT NULL,        -- likewise of payload bytes
            payload BLOB NOT NULL)             -- the Export*ServiceRequest protobuf, as received""",
        "CREATE INDEX export_log_by_signal ON export_log (signal, seq)",
        """CREATE TABLE export_log_heads (
            signal TEXT PRIMARY KEY,
            end_items INTEGER NOT NULL,        -- the running totals of the newest entry ever appended
            end_bytes INTEGER NOT NULL) WITHOUT ROWID""",
        """CREATE TABLE export_cursors (
            exporter TEXT NOT NULL,            -- component id, e.g. 'otlp/upstream'
            signal TEXT NOT NULL,
            seq INTEGER NOT NULL,              -- entries of `signal` up to here were delivered or dropped
            end_items INTEGER NOT NULL,        -- the running totals at that point
            end_bytes INTEGER NOT NULL,
            in_flight_to INTEGER NOT NULL,     -- entries up to here may have reached the upstream
            PRIMARY KEY (exporter, signal)) WITHOUT ROWID""",
        # What a forwarder must remember beside its cursor, committed with it (prometheusremotewrite:
        # running totals of delta series by series id, the newest timestamp sent by label-set key).
        """CREATE TABLE export_state (
            exporter TEXT NOT NULL,
            kind TEXT NOT NULL,
            key INTEGER NOT NULL,
            time_ms INTEGER,
            state TEXT,                        -- JSON
            PRIMARY KEY (exporter, kind, key)) WITHOUT ROWID""",
    ):
        db.execute(sql)
@MIGRATIONS(name="0008_metric_chunks")
def _m0008_metric_chunks(db: Database) -> None:
    # Issue 16: `metric_points` becomes the head (no secondary index; chunks.py, compactor.py) and the
    # points' long-term home is `metric_chunks`: one row per metric (project, name, type), hour and
    # compaction, the points packed as numpy columns. `seq` is the smallest head rowid a chunk holds, so
    # reads keep the arrival order of points with equal times; `level` drives the merges. The payload is
    # the last column so scans of the other columns never read its overflow pages. AUTOINCREMENT: a chunk
    # written later always has a larger id, even after a merge deleted the largest (the query cache reads
    # only the chunks past the last id it saw; points.py).
    db.execute("""CREATE TABLE metric_chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        block_start INTEGER NOT NULL,          -- the hour (ns) every point of the chunk lies in
        level INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        n INTEGER NOT NULL,                    -- points, readings or not
        t_min INTEGER NOT NULL,
        t_max INTEGER NOT NULL,
        payload BLOB NOT NULL)""")
    db.execute("CREATE INDEX metric_chunks_by_metric ON metric_chunks (project_id, name, type, block_start)")
    # Retention records its cutoff here before deleting, so readers hide expired rows at once and exactly,
    # whatever is left to delete (a chunk the cutoff cuts through stays until all of it has expired).
    db.execute("""CREATE TABLE retention_cutoffs (
        signal TEXT PRIMARY KEY,               -- 'metrics' or 'traces'
        before_ns INTEGER NOT NULL)""")
    # Work a migration leaves to the writer's background steps (online and resumable), with its cursor.
    db.execute("""CREATE TABLE background_migrations (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL)                   -- JSON""")
    # The largest head rowid the compactor has moved: head rowids must keep growing once it has emptied the
    # head (SQLite would start again at 1), since they order the points of equal times and are a tally's
    # write order (compactor.py, writer.py).
    db.execute("""CREATE TABLE metric_head_marks (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL) WITHOUT ROWID""")
    if db.execute("SELECT 1 FROM metric_points LIMIT 1").fetchone() is None:
        # A new store: nothing to drain, so the head is index-free from the start. A store with points
        # keeps the indexes until the compactor has moved its backlog (compactor.py, "Migration").
        db.execute("DROP INDEX metric_points_by_series_time")
        db.execute("DROP INDEX metric_points_by_time")


@MIGRATIONS(name="0009_span_trace_runs")
def _m0009_span_trace_runs(db: Database) -> None:
    # Issue 16: a trace's spans are found through runs (spans.py): one row per trace and commit instead of
    # one index entry per span at a random place. `hi` is indexed for retention (runs whose spans are gone)
    # and for the next rowid; it grows with time, so that index is appended to, not written at random.
    db.execute("""CREATE TABLE span_trace_runs (
        trace_id BLOB NOT NULL,
        lo INTEGER NOT NULL,                   -- first span rowid of the run
        hi INTEGER NOT NULL,                   -- last span rowid of the run
        PRIMARY KEY (trace_id, lo)) WITHOUT ROWID""")
    db.execute("CREATE INDEX span_trace_runs_by_hi ON span_trace_runs (hi)")
    _start_run_backfill(db.conn)


@MIGRATIONS(name="0010_span_attribute_values_by_hour")
def _m0010_span_attribute_values_by_hour(db: Database) -> None:
    # Issue 16: the value rollup keyed (key, value, hour) put each commit's few thousand upserts (one per
    # distinct attribute value) at as many places of a table that grows all week, and on a large store
    # that was almost half of the span writing. Keyed hour first, a commit's upserts fall in the current
    # hour's few pages. Readers seek one hour at a time (tracing.py, `_value_rows`). Same columns in the
    # same order. Nothing is copied, so the migration is instant at any size (the table holds a row per
    # distinct value and hour, up to one per span for an id-like attribute): a store with rows keeps them
    # in `span_attribute_values_legacy`, which readers add in and retention empties (an empty table is left,
    # not dropped: a reader between its look at the schema and its query must not lose the table).
    if db.execute("SELECT 1 FROM span_attribute_values LIMIT 1").fetchone() is not None:
        db.execute(f"ALTER TABLE span_attribute_values RENAME TO {LEGACY_ROLLUP}")
    else:
        db.execute("DROP TABLE span_attribute_values")
    db.execute("""CREATE TABLE span_attribute_values (
        project_id INTEGER NOT NULL,
        attribute_type TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        hour INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (project_id, attribute_type, hour, key, value)) WITHOUT ROWID""")


@MIGRATIONS(name="0011_metric_rollups")
def _m0011_metric_rollups(db: Database) -> None:
    # Issue 16: per closed hour of a counter or distribution metric, the readings that increases need
    # (rollups.py), so a day's rate or histogram_quantile reads a few readings per series and quarter hour
    # instead of every point. Derived data: `chunks` / `max_chunk_id` are the hour's chunks when it was
    # built, and a reader uses it only while they are the same (a late point or a merge makes it stale
    # until it is built again). Empty on upgrade; the rollup builder's thread fills it, newest hours first.
    db.execute("""CREATE TABLE metric_rollups (
        project_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        block_start INTEGER NOT NULL,          -- the hour (ns), as metric_chunks.block_start
        chunks INTEGER NOT NULL,               -- how many chunks the hour had when this was built
        max_chunk_id INTEGER NOT NULL,         -- and the largest of their ids
        n INTEGER NOT NULL,                    -- readings kept
        payload BLOB NOT NULL,                 -- a chunk payload (chunks.py) of the kept readings
        PRIMARY KEY (project_id, name, type, block_start))""")


@MIGRATIONS(name="0012_series_state_by_arrival")
def _m0012_series_state_by_arrival(db: Database) -> None:
    # Issue 16: keyed by the series id, a 63-bit fingerprint, the state rows of one request lay all over the
    # table, and each commit rewrote a page per series it touched (an upsert on 8,000 series took 6.5-7.7 µs
    # against 5.1-5.5 in this layout, on 32,000 series 10.7-12.4 against 3.7-5.9: docs/benchmarks.md,
    # 2026-12-03 11:20). Rows are now stored in the order their series first arrived (`slot`, a rowid that
    # only grows), so the series an exporter sends together, which arrive together, share pages; the series
    # id is a unique index, which an update does not write to. Same columns otherwise; the copy keeps the
    # order in which the series were first seen.
    db.execute("""CREATE TABLE metric_series_state_by_arrival (
        slot INTEGER PRIMARY KEY,
        series_id INTEGER NOT NULL,
        project_id INTEGER NOT NULL,
        time_ns INTEGER NOT NULL,
        start_ns INTEGER NOT NULL DEFAULT 0,
        value,
        count INTEGER,
        sum REAL,
        min REAL,
        max REAL,
        flags INTEGER NOT NULL DEFAULT 0,
        buckets TEXT,
        exemplars TEXT)""")
    columns = ", ".join(STATE_COLUMNS)
    db.execute(f"INSERT INTO metric_series_state_by_arrival ({columns}) "
               f"SELECT {', '.join('st.' + c for c in STATE_COLUMNS)} FROM metric_series_state AS st "
               "LEFT JOIN metric_series AS s ON s.id = st.series_id ORDER BY s.first_seen_ns, st.series_id")
    db.execute("DROP TABLE metric_series_state")
    db.execute("ALTER TABLE metric_series_state_by_arrival RENAME TO metric_series_state")
    db.execute("CREATE UNIQUE INDEX metric_series_state_by_series ON metric_series_state (series_id)")


@MIGRATIONS(name="0013_metric_chunk_rollups")
def _m0013_metric_chunk_rollups(db: Database) -> None:
    # Issue 16: the readings increases need of one chunk (rollups.py, "chunk rollups"), for the hours no
    # hourly rollup answers yet (the open one above all), so a first query of a busy open hour reads a few
    # readings per series and quarter hour of each large chunk instead of all of them. A chunk never
    # changes under its id (merges and retention delete it, AUTOINCREMENT never reuses an id), so the row
    # needs no stamp. Derived data: empty on upgrade; the rollup builder's thread fills it.
    db.execute("""CREATE TABLE metric_chunk_rollups (
        chunk_id INTEGER PRIMARY KEY,          -- metric_chunks.id
        block_start INTEGER NOT NULL,          -- the chunk's hour (ns): rows of old hours are deleted
        n INTEGER NOT NULL,                    -- readings kept
        payload BLOB NOT NULL)                 -- a chunk payload (chunks.py) of the kept readings""")


@MIGRATIONS(name="0014_span_service_counts")
def _m0014_span_service_counts(db: Database) -> None:
    # Issue 16: spans counted per service and 10-second slot, and per service and minute, in place of the
    # per-span index spans_by_service (span_counts.py). Keyed time first: a commit's upserts land in the
    # last pages and retention deletes one range. A store with spans keeps the index until the background
    # steps have counted them (span_counts.CountBackfill); an empty one drops it now.
    for table, width in (("span_service_10s", "10e9"), ("span_service_1m", "60e9")):
        db.execute(f"""CREATE TABLE {table} (
            project_id INTEGER NOT NULL,
            slot INTEGER NOT NULL,                 -- start_ns // {width}
            service_name TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (project_id, slot, service_name)) WITHOUT ROWID""")
    _start_count_backfill(db.conn)


@MIGRATIONS(name="0015_span_trace_runs_head")
def _m0015_span_trace_runs_head(db: Database) -> None:
    # Issue 16: new trace-index runs go to a small head table that background steps merge into
    # span_trace_runs in key order (spans.py, RunMerge). Same shape, `hi` indexed for the same reasons.
    # Nothing is moved: the runs stored so far stay where they are, so this is instant at any size.
    db.execute("""CREATE TABLE span_trace_runs_head (
        trace_id BLOB NOT NULL,
        lo INTEGER NOT NULL,
        hi INTEGER NOT NULL,
        PRIMARY KEY (trace_id, lo)) WITHOUT ROWID""")
    db.execute("CREATE INDEX span_trace_runs_head_by_hi ON span_trace_runs_head (hi)")


def schema_version() -> int:
    """The schema version this build writes: the number of migrations it knows."""
    return len(MIGRATIONS._migrations)


def migrate(db: Database) -> int:
    """Bring `db` to this build's schema; refuse a file written by a newer build. Returns the version."""
    known = {m.name for m in MIGRATIONS._migrations}
    applied = [m.name for m in MIGRATIONS.applied(db)]
    unknown = [name for name in applied if name not in known]
    file_version = db.execute("PRAGMA user_version").fetchone()[0]
    if unknown or file_version > schema_version():
        raise SchemaTooNewError(
            f"the database has schema version {max(file_version, len(applied))}, newer than this otelite "
            f"understands ({schema_version()}); upgrade otelite or use another --db")
    if MIGRATIONS.pending(db):
        MIGRATIONS.apply(db)
    if file_version != schema_version():
        # Only when it changes: opening an up-to-date file writes nothing, so the CLI can open a file whose
        # write lock a server holds and leave the waiting to its writer (collector/commands.py).
        db.execute(f"PRAGMA user_version = {schema_version()}")
    return schema_version()
