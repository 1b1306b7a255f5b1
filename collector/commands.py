"""The `otelite` command line's commands (collector/cli.py is its entry point).

`otelite projects/keys ...` write through the same Store machinery as the server (collector/store/): a
short-lived store of its own whose writer runs each change as a `Store.write_sync` function. With a server
running on the same file, SQLite's write lock and the writer's busy retry take turns between the two.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Any, Callable

from otelite.collector import malloc
from otelite.collector.config import Config, ConfigError, load_config
from otelite.collector.receivers.otlp.config import GrpcServerConfig, HttpServerConfig
from otelite.collector.store import keys
from otelite.collector.store.keys import SCOPES, KeyStore, KeyStoreError
from otelite.collector.store.migrations import SchemaTooNewError
from otelite.collector.store.store import Store, StoreLocked


def apply_overrides(cfg: Config, *, db: str | None = None, grpc_endpoint: str | None = None,
                    http_endpoint: str | None = None) -> Config:
    """Command-line flags override the file (DEVELOPERS.md: `otelite serve --db/--grpc-endpoint/...`)."""
    if db is not None:
        cfg.sqlite.path = db
    otlp = cfg.otlp
    if grpc_endpoint is not None:
        otlp.protocols.grpc = otlp.protocols.grpc or GrpcServerConfig()
        otlp.protocols.grpc.endpoint = grpc_endpoint
    if http_endpoint is not None:
        otlp.protocols.http = otlp.protocols.http or HttpServerConfig()
        otlp.protocols.http.endpoint = http_endpoint
    source, cfg.source = cfg.source, "command line"
    cfg.validate()
    cfg.source = source
    return cfg


def _serve(args: argparse.Namespace) -> int:
    try:
        config = apply_overrides(load_config(args.config), db=args.db, grpc_endpoint=args.grpc_endpoint,
                                 http_endpoint=args.http_endpoint)
    except ConfigError as e:
        print(f"otelite: invalid configuration: {e}", file=sys.stderr)
        return 2
    from otelite.collector.service import run  # imported late: config errors should not pay for grpc/uvicorn

    malloc.tune()  # before the server starts its threads (malloc.py)

    try:
        return run(config)
    except SchemaTooNewError as e:
        print(f"otelite: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"otelite: {e}", file=sys.stderr)
        return 1


class MissingDatabase(Exception):
    """A management command named a database that does not exist (and `--create` was not given)."""


def _store(args: argparse.Namespace) -> tuple[Store, Config]:
    """The database of `--db`, else of `--config`'s sqlite exporter, migrated like the server's. A missing
    file is refused unless `--create`: a typo in the path (or the wrong directory) would otherwise create
    an empty database, and a key in it that the running server rejects (issue 10)."""
    config = apply_overrides(load_config(args.config), db=args.db)
    path = config.sqlite.path
    if not getattr(args, "create", False) and not os.path.exists(path):
        raise MissingDatabase(
            f"no database at {os.path.abspath(path)}; point --db (or --config) at the server's database, "
            f"or add --create to start a new one")
    return Store(config.sqlite, config.batch, retention=False), config


def _write(args: argparse.Namespace, fn: Callable[[Any], Any]) -> Any:
    """Run one write function through a short-lived writer. A server holding the lock gets its turn:
    the writer retries while busy, for up to twice the busy timeout, then gives up having written nothing."""
    store, config = _store(args)
    store.start()
    try:
        return store.write_sync(fn, timeout=2 * config.sqlite.busy_timeout)
    finally:
        store.close()


def _read(args: argparse.Namespace, query: Callable[[KeyStore], Any]) -> Any:
    store, _ = _store(args)
    with contextlib.closing(store.reader()) as conn:
        return query(KeyStore(conn))


def _projects_create(args: argparse.Namespace) -> int:
    p = _write(args, lambda conn: keys.create_project(conn, args.key, name=args.name, timezone=args.timezone))
    print(f"created project {p.key} (id {p.id}, timezone {p.timezone})")
    return 0


def _projects_list(args: argparse.Namespace) -> int:
    print(f"{'ID':>4}  {'KEY':<20} {'TIMEZONE':<20} NAME")
    for p in _read(args, KeyStore.projects):
        print(f"{p.id:>4}  {p.key:<20} {p.timezone:<20} {p.name}")
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    key, secret = _write(args, lambda conn: keys.create_key(conn, args.project, args.scope, name=args.name or ""))
    print(f"created API key {key.id} for project {key.project_key} with scopes {' '.join(key.scopes)}.")
    print("It is shown only once; store it now:")
    print(secret)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    # Never prints a secret: only the first characters, which cannot authenticate.
    print(f"{'ID':>4}  {'PROJECT':<16} {'NAME':<20} {'KEY':<10} {'CREATED':<26} {'STATE':<8} SCOPES")
    for k in _read(args, KeyStore.keys):
        state = "revoked" if k.revoked_at else "active"
        print(f"{k.id:>4}  {k.project_key:<16} {k.name:<20} {k.display:<10} {k.created_at:<26} {state:<8} "
              f"{' '.join(k.scopes)}")
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    key = _write(args, lambda conn: keys.revoke_key(conn, args.id))
    print(f"revoked API key {key.id} ({key.display}, project {key.project_key})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otelite", description="A small OpenTelemetry collector with a "
                                     "SQLite store and PostHog/Flux/Trifle/LaunchDarkly/Prometheus APIs.")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the collector")
    serve.add_argument("--config", help="YAML file in the OpenTelemetry Collector's shape (default: "
                       "embedded defaults, see config/otelite.yaml)")
    serve.add_argument("--db", help="SQLite database path (default ./otelite.db); overrides exporters.sqlite.path")
    serve.add_argument("--grpc-endpoint", metavar="HOST:PORT", help="OTLP/gRPC listen address (default "
                       "127.0.0.1:4317)")
    serve.add_argument("--http-endpoint", metavar="HOST:PORT", help="OTLP/HTTP and API listen address "
                       "(default 127.0.0.1:4318)")
    serve.set_defaults(func=_serve)

    store_args = argparse.ArgumentParser(add_help=False)
    store_args.add_argument("--db", help="SQLite database path (default: the config's, ./otelite.db)")
    store_args.add_argument("--config", help="read the database path from this config file")
    store_args.add_argument("--create", action="store_true",
                            help="create the database if it does not exist (otherwise a missing one is an error)")

    projects = sub.add_parser("projects", help="manage projects").add_subparsers(dest="action", required=True)
    p = projects.add_parser("create", parents=[store_args], help="create a project")
    p.add_argument("key", help="the project's key (slug), used in API paths")
    p.add_argument("--timezone", default="UTC", help="IANA timezone for bucket alignment (default UTC)")
    p.add_argument("--name", help="display name (default: the key)")
    p.set_defaults(func=_projects_create)
    projects.add_parser("list", parents=[store_args], help="list projects").set_defaults(func=_projects_list)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    k = keys.add_parser("create", parents=[store_args], help="create an API key (printed once)")
    k.add_argument("--project", required=True, help="project key or id")
    k.add_argument("--scope", action="append", required=True, choices=SCOPES, help="repeat for several scopes")
    k.add_argument("--name", help="what the key is for")
    k.set_defaults(func=_keys_create)
    keys.add_parser("list", parents=[store_args], help="list keys (never their secrets)").set_defaults(
        func=_keys_list)
    r = keys.add_parser("revoke", parents=[store_args], help="revoke a key")
    r.add_argument("id", type=int)
    r.set_defaults(func=_keys_revoke)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (KeyStoreError, ConfigError, SchemaTooNewError, MissingDatabase) as e:
        print(f"otelite: {e}", file=sys.stderr)
        return 2
    except StoreLocked as e:
        print(f"otelite: {e}", file=sys.stderr)
        return 1
