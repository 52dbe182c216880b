"""``churnwatch evaluate``: score one simulated world (:mod:`stream.tools.evaluate`), or
simulate and score a suite of them (``--suite``, :mod:`stream.tools.suite`)."""

from __future__ import annotations

import argparse
import sys

from stream.tools import evaluate, suite


def add_arguments(parser: argparse.ArgumentParser) -> None:
    evaluate.add_arguments(parser)
    suite.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.suite:
        if args.directory is not None:
            print("evaluate: --suite simulates its own worlds; drop DIR", file=sys.stderr)
            return 2
        return suite.run(args)
    return evaluate.run(args)
