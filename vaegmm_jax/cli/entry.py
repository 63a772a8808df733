"""The parser of every command and :func:`main`, which runs one and turns what it raises into
an exit code (see :mod:`vaegmm_jax.cli.errors`)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Sequence

from vaegmm_jax import __version__
from vaegmm_jax.cli import compile_cache, demo, evaluate, fit, info, score
from vaegmm_jax.cli.args import Parser
from vaegmm_jax.cli.display import PROG
from vaegmm_jax.cli.errors import USER_ERRORS
from vaegmm_jax.io.messages import one_line

__all__ = ["build_parser", "main"]

#: the commands, in the order --help lists them
COMMANDS = (demo, fit, score, evaluate, info)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Deep density-based outlier detection (VAEGMM, DAGMM/AEGMM, VAE) with JAX.",
               epilog="Exit codes: 0 success, 2 bad usage or input, 1 internal error.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--no-compile-cache", dest="compile_cache", action="store_false",
                   help=f"do not keep compiled programs between runs (default: kept in {compile_cache.cache_dir()}; "
                        f"also {compile_cache.ENV_SWITCH}=0)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("VAEGMM_DEBUG", "") not in ("", "0")
    command = argv[0] if argv and not argv[0].startswith("-") else None
    prefix = f"{PROG} {command}" if command else PROG
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        compile_cache.enable(args.compile_cache)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `vaegmm info DIR | head`: the reader left; nothing is wrong
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 2
    except USER_ERRORS as err:
        if debug:
            traceback.print_exc()
        print(f"{prefix}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except BaseException as err:  # noqa: BLE001 - the top of the program: a bug, shown as one
        traceback.print_exc()
        print(f"{prefix}: internal error: {one_line(err)} (please report this with the traceback above)",
              file=sys.stderr)
        return 1
