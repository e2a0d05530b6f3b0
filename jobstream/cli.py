"""The ``jobstream`` command line: one argparse tree, sub-commands registered by modules.

Each ``cli_*`` module owns its sub-commands (``register(subparsers)``), so the
core, projection and scheduler commands grow independently. The command names
and flags are a contract (see README); keep them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from jobstream import cli_core, cli_cron, cli_projections, dev, web


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobstream", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (cli_core, cli_projections, cli_cron, dev, web):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
