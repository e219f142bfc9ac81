"""Entry point of the `concordkv` command: parses arguments and dispatches.

Subcommands grow with the server issue (serve, cli, status, bench); this module only
routes and must not hold their logic.
"""

from __future__ import annotations

import argparse
import sys

from concordkv_mp.errors import ConcordKVError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="concordkv", description="ConcordKV-MP key-value database")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a short embedded demo and print what it does")
    demo.add_argument("path", nargs="?", default="./demo-data", help="database directory (recreated)")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from concordkv_mp.cli.demo import run_demo

            run_demo(args.path)
    except ConcordKVError as exc:
        print(f"error [{exc.code}]: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
