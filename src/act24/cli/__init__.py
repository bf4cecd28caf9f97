"""The `act24` command line."""

from __future__ import annotations

import argparse
from . import bench, info, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="act24",
        description="2:4 activation sparsity for Squared-ReLU transformer FFNs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info.add_parser(sub)
    bench.add_parser(sub)
    train.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args) or 0
