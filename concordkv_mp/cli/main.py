"""Entry point of the `concordkv` command: parses arguments and dispatches.

Subcommands: serve, stop, status, cli, bench, demo. This module only routes and turns
errors into exit codes (a bad configuration: 2; any other ConcordKVError: 1); each
subcommand's logic lives in its own module and must not be written here.
"""

from __future__ import annotations

import argparse
import os
import sys

from concordkv_mp.cli.server_control import add_serve_arguments, add_stop_arguments, run_serve, run_stop
from concordkv_mp.config import DEFAULT_ENDPOINT
from concordkv_mp.errors import ConcordKVError, ConfigError

CONFIG_ERROR_EXIT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="concordkv", description="ConcordKV-MP key-value database")
    commands = parser.add_subparsers(dest="command", required=True)

    add_serve_arguments(commands.add_parser("serve", help="start the server (config: file < CKV_* < flags)"))
    add_stop_arguments(commands.add_parser("stop", help="stop the server of a data directory (by its pid file)"))

    # The client commands default to $CKV_ENDPOINT, the variable that also sets where
    # `serve` listens, so one export serves both.
    endpoint_help = f"server endpoint (default: $CKV_ENDPOINT or {DEFAULT_ENDPOINT})"
    status = commands.add_parser("status", help="show the server's processes, partitions and I/O")
    status.add_argument("endpoint", nargs="?", help=endpoint_help)
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the reply (default 5)")

    cli = commands.add_parser(
        "cli",
        help="interactive shell, or run one command: concordkv cli [ENDPOINT] SET k v",
        description="Without COMMAND: an interactive shell (type HELP). With it: runs it once.",
    )
    cli.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each reply (default 5)")
    cli.add_argument("words", nargs=argparse.REMAINDER, metavar="[ENDPOINT] [COMMAND ARG ...]", help=endpoint_help)

    # bench declares no arguments: main() passes whatever follows it to the script.
    commands.add_parser("bench", help="run profiles/bench_server.py (arguments are passed on)")

    demo = commands.add_parser("demo", help="run a short embedded demo and print what it does")
    demo.add_argument("path", nargs="?", default="./demo-data", help="database directory (recreated)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # parse_known_args: argparse's REMAINDER drops a leading "--option", which bench's
    # arguments usually start with.
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return _dispatch(args, unknown)
    except ConcordKVError as exc:
        print(f"error [{exc.code}]: {exc}", file=sys.stderr)
        return CONFIG_ERROR_EXIT if isinstance(exc, ConfigError) else 1


def _dispatch(args: argparse.Namespace, bench_arguments: list[str]) -> int:
    default_endpoint = os.environ.get("CKV_ENDPOINT") or DEFAULT_ENDPOINT
    if args.command == "serve":
        return run_serve(args)
    if args.command == "stop":
        return run_stop(args)
    # Imported on use: rich and prompt_toolkit take a while to load and serve needs neither.
    if args.command == "status":
        from concordkv_mp.cli.status_view import run_status

        return run_status(args.endpoint or default_endpoint, timeout=args.timeout, as_json=args.json)
    if args.command == "cli":
        from concordkv_mp.cli.shell import run_cli

        words = args.words
        # An endpoint has a scheme ("tcp://..."); a command name never does.
        endpoint = words.pop(0) if words and "://" in words[0] else default_endpoint
        return run_cli(endpoint, words, timeout=args.timeout)
    if args.command == "bench":
        from concordkv_mp.cli.bench import run_bench

        return run_bench(bench_arguments)
    from concordkv_mp.cli.demo import run_demo

    run_demo(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
