"""The ``kvstore`` command (console script and ``python -m kvstore``).

Errors print one line to stderr and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys

from kvstore.errors import KVStoreError

__all__ = ["main"]

INSTALL_HINT = 'the kvstore command needs its extra: pip install "kvstore-sdk[cli]"'


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args[: args.index("--") if "--" in args else len(args)]
    try:
        from kvstore._cli_app import app
    except ImportError as exc:
        if exc.name not in ("typer", "rich"):
            raise
        if args == ["demo"]:  # the README's first command works without the extra
            from kvstore._demo import run

            return run()
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return 1
    try:
        # Standalone mode: usage errors print their message and exit 2, --help exits 0.
        app(args=args, prog_name="kvstore")
    except SystemExit as exc:
        return _exit_code(exc.code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except KVStoreError as exc:
        if debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
