"""``python -m kvstore``: the command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command."""
    parser = argparse.ArgumentParser(prog="kvstore", description="kvstore: a two-tier key-value and list store")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the main jobs on the embedded default (no server needed)")
    demo.add_argument("--config", help="a TOML or YAML config file instead of the embedded default")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from kvstore._demo import run

        return run(args.config)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
