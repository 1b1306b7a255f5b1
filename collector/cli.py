"""The `otelite` command line."""

from __future__ import annotations

import argparse
import logging
import sys

from collector.config import ConfigError, apply_overrides, load_config
from collector.store.migrations import SchemaTooNewError


def _serve(args: argparse.Namespace) -> int:
    try:
        config = apply_overrides(load_config(args.config), db=args.db, grpc_endpoint=args.grpc_endpoint,
                                 http_endpoint=args.http_endpoint)
    except ConfigError as e:
        print(f"otelite: invalid configuration: {e}", file=sys.stderr)
        return 2
    from collector.service import run  # imported late: config errors should not pay for grpc/uvicorn

    try:
        return run(config)
    except SchemaTooNewError as e:
        print(f"otelite: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"otelite: {e}", file=sys.stderr)
        return 1


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
