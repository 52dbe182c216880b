"""The `churnwatch` command line: one subcommand per module, imported lazily.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``,
so ``churnwatch --help`` stays fast and a command's imports (Faust, River) load
only when that command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("stream.tools.demo",
             "embedded broker + worker + simulated feed, alerts as they arrive"),
    "broker": ("stream.tools.broker", "start the embedded Kafka-protocol broker (Tansu)"),
    "worker": ("stream.tools.worker", "run one Faust worker"),
    "replay": ("stream.tools.replay", "run the detectors over a directory of JSON Lines files"),
    "produce": ("stream.tools.produce", "publish a replay directory to the input topics"),
    "alerts": ("stream.tools.alerts_tail", "read the alert topic (`churnwatch alerts tail`)"),
    "simulate": ("stream.tools.simulator", "write a labelled simulated telecom world"),
    "evaluate": ("stream.tools.evaluate", "score alerts against a simulated world's truth"),
    "bench": ("stream.tools.bench", "measure throughput, latency, state size and recovery"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="churnwatch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module_name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            sp.set_defaults(_missing=True)
            continue
        module.add_arguments(sp)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_missing", False):
        parser.error(f"command {args.command!r} is not available in this build")
    module = importlib.import_module(args._module)
    sys.exit(module.run(args))
