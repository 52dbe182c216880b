"""Named scenario presets of the simulated world: ``churnwatch simulate --preset NAME``.

Each preset changes what the engine must not depend on (the contract allows it, or real
customers do it), and nothing else: the same seed draws the same cast, the same
schedules and the same calls in every preset, so two presets of one seed differ only
in what the preset names. ``default`` is the world as it always was, byte for byte.
``docs/simulator.md`` describes each preset.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from stream.tools.simulator import CELL_MODES, TRIP_CELL_MODES, WorldParams, _mix

__all__ = ["PRESETS", "apply_preset", "describe"]


def _default(p: WorldParams) -> WorldParams:
    return p


def _no_cells(p: WorldParams) -> WorldParams:
    return dataclasses.replace(p, cell_ids="none")


def _trips_at_home(p: WorldParams) -> WorldParams:
    return dataclasses.replace(p, trip_cells="home", trip_forward_off_net=True)


def _symmetric_decay(p: WorldParams) -> WorldParams:
    return dataclasses.replace(p, churn_in_follow=1.0)


def _plain_noise(p: WorldParams) -> WorldParams:
    return dataclasses.replace(p, daily_noise=0.0)


def _slow_decay(p: WorldParams) -> WorldParams:
    return dataclasses.replace(p, churn_decay_days=(28, 70))


def _mixed(p: WorldParams) -> WorldParams:
    # Drawn from the world's seed alone: the same seed, the same mixture.
    rng = random.Random(_mix(p.seed, 0x5C3A))
    return dataclasses.replace(
        p,
        cell_ids=rng.choice(CELL_MODES),
        trip_cells=rng.choice(TRIP_CELL_MODES),
        trip_forward_off_net=rng.random() < 0.5,
        churn_in_follow=round(rng.uniform(0.5, 1.0), 3),
        daily_noise=round(rng.uniform(0.0, 0.3), 3),
        churn_decay_days=(rng.randint(14, 28), rng.randint(49, 70)),
    )


#: name -> (what it varies, how it changes the parameters).
PRESETS: dict[str, tuple[str, Callable[[WorldParams], WorldParams]]] = {
    "default": ("the world as it always was", _default),
    "no-cells": ("cell_id null on every call (a feed without location)", _no_cells),
    "trips-at-home": ("absences change no cell; trips that forward do so off-net, to one "
                      "number, then the person returns", _trips_at_home),
    "symmetric-decay": ("churners' incoming calls fall as far as their outgoing ones",
                        _symmetric_decay),
    "plain-noise": ("Poisson call counts without day-level noise", _plain_noise),
    "slow-decay": ("individual churners decay over 28-70 days", _slow_decay),
    "mixed": ("each knob above drawn at random per world, from the seed", _mixed),
}


def apply_preset(name: str, params: WorldParams) -> WorldParams:
    """``params`` changed as preset ``name`` says, with ``preset`` set to the name.

    >>> p = apply_preset("no-cells", WorldParams(seed=3))
    >>> p.preset, p.cell_ids, p.trip_cells
    ('no-cells', 'none', 'roaming')
    >>> apply_preset("mixed", WorldParams(seed=3)) == apply_preset("mixed", WorldParams(seed=3))
    True
    >>> apply_preset("default", WorldParams()) == WorldParams()
    True
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: one of {', '.join(PRESETS)}")
    changed = PRESETS[name][1](params)
    return changed if name == "default" else dataclasses.replace(changed, preset=name)


def describe(params: WorldParams) -> str:
    """The knobs a preset sets, as ``NAME=VALUE`` (empty for the default world).

    >>> describe(apply_preset("slow-decay", WorldParams()))
    'churn_decay_days=(28, 70)'
    """
    base = WorldParams()
    names = ("cell_ids", "trip_cells", "trip_forward_off_net", "churn_in_follow",
             "daily_noise", "churn_decay_days")
    return " ".join(f"{n}={getattr(params, n)!r}".replace("'", "") for n in names
                    if getattr(params, n) != getattr(base, n))
