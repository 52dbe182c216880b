"""The `churnwatch` command line: one subcommand per module, imported lazily.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Only the
chosen command's module is imported, so ``churnwatch --help`` stays fast and loads neither
Faust nor River. Every command starts the same way: all settings are validated at once
(exit 2 with one line naming the variable), a metrics endpoint beyond loopback is warned
about, and a command that talks to Kafka probes the brokers first (exit 2 within seconds,
naming the address and the likely cause).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("stream.tools.demo",
             "embedded broker + worker + simulated feed, alerts as they arrive"),
    "broker": ("stream.tools.broker", "start the embedded Kafka-protocol broker (Tansu)"),
    "worker": ("stream.tools.worker", "run one Faust worker"),
    "replay": ("stream.tools.replay", "run the detectors over a directory of JSON Lines files"),
    "produce": ("stream.tools.produce", "publish a replay directory to the input topics"),
    "alerts": ("stream.tools.alerts_tail", "read the alert topic (`churnwatch alerts tail`)"),
    "simulate": ("stream.tools.simulate", "write a labelled simulated telecom world"),
    "evaluate": ("stream.tools.evaluate_command", "score alerts against a simulated world's truth"),
    "bench": ("stream.tools.bench", "measure throughput, latency, state size and recovery"),
}
#: Commands that talk to a Kafka given by KAFKA_BOOTSTRAP (or --bootstrap): probed first.
KAFKA_COMMANDS = frozenset({"demo", "worker", "produce", "alerts", "bench"})
#: Commands that serve the Prometheus endpoint.
METRICS_COMMANDS = frozenset({"worker"})
#: Exit code of a command stopped by its configuration.
EXIT_CONFIG = 2

log = logging.getLogger("churnwatch")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command's module is imported for its options."""
    parser = argparse.ArgumentParser(prog="churnwatch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module_name)
        if only is not None and name != only:
            continue
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
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=chosen if chosen in COMMANDS else "")
    args = parser.parse_args(argv)
    if getattr(args, "_missing", False):
        parser.error(f"command {args.command!r} is not available in this build")
    sys.exit(run_command(args))


def run_command(args: argparse.Namespace) -> int:
    """Check the configuration as every command does, then run the command."""
    from stream.service.preflight import BrokerUnusable
    from stream.settings import SettingsError

    name = args.command
    try:
        module = importlib.import_module(args._module)
        settings = command_settings(module, args)
        if name in METRICS_COMMANDS and settings.metrics_exposed:
            log.warning("churnwatch %s: CHURNWATCH_METRICS_HOST=%s: the metrics endpoint is "
                        "reachable beyond this machine", name, settings.metrics_host)
        if name in KAFKA_COMMANDS and settings.bootstrap:
            from stream.service.preflight import check_brokers

            check_brokers(settings)
        # The detectors' overrides last: checking them imports the detectors (River,
        # numpy), seconds on a busy machine that the broker's verdict should not wait for.
        settings.engine_config()
        return int(module.run(args))
    except (SettingsError, BrokerUnusable) as exc:
        print(f"churnwatch {name}: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def command_settings(module: Any, args: argparse.Namespace) -> Any:
    """Every setting the command will use, validated: the environment, the TOML file and
    the command's own options (``--bootstrap``, a module's ``settings_from_args``)."""
    from stream.settings import Settings

    if hasattr(module, "settings_from_args"):
        settings = module.settings_from_args(args)
    else:
        settings = Settings.from_env()
    if getattr(args, "bootstrap", None):
        settings = settings.with_bootstrap(args.bootstrap)
    return settings
