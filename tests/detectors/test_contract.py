"""One contract for every per-subscriber model: River's conventions, state round-trip,
determinism and size.

River's general estimator checks (``river.checks.common``: repr, clone, default
parameters, docstrings, pickling, ``_get_params`` matching the signature) run on every
model; ``check_tags`` only on estimators (:class:`~detectors.forwarding.Forwarding`; the
others are River ``Base`` objects, statistics and drift detectors, which have no tags).
``river.checks.check_estimator`` as a whole does not apply: its dataset checks draw
datasets from scikit-learn (not a dependency here) and feed arbitrary feature dicts, which
say nothing about a model that learns from a day's counts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from river import base
from river.checks import common

from detectors.absence import AwayState, StayAway
from detectors.bill import BillLevel
from detectors.contact import ContactWindows
from detectors.forwarding import Forwarding
from detectors.policy import ZONES, AlertPolicy
from detectors.presence import HomeCell, HomeState
from detectors.spend import SpendDrop
from detectors.usage import IncomingRate, PoissonCusum


@dataclass
class Model:
    """How to drive one model: build it, feed it one step of a seeded stream, read its
    state as stored, and load a stored state into a fresh one."""

    make: Callable[[], Any]
    step: Callable[[Any, random.Random, int], None]
    dump: Callable[[Any], list[Any]]
    load: Callable[[Any, list[Any]], None]
    max_bytes: int


def _cusum_step(m: PoissonCusum, rng: random.Random, i: int) -> None:
    m.expect(3.0, 1.5)
    m.update(rng.randint(0, 6 if i < 200 else 2))


def _set(model: Any, names: tuple[str, ...], values: list[Any]) -> None:
    for name, value in zip(names, values, strict=True):
        setattr(model, name, value)


def _contact_step(c: ContactWindows, rng: random.Random, i: int) -> None:
    # A call every few hours of event time: evenings answered, days mostly missed.
    ts = 1_767_225_600 + i * 3 * 3600 + rng.randint(0, 3599)
    evening = c.bucket(ts)[0] == 3  # weekdays 18:00-21:00 (None outside the call hours)
    c.learn_one({"ts": ts, "direction": "out" if rng.random() < 0.3 else "in",
                 "answered": rng.random() < (0.9 if evening else 0.2)})


def _policy_step(p: AlertPolicy, rng: random.Random, i: int) -> None:
    p.step(rng.choice(range(len(ZONES))), i * 86400, daily=rng.random() < 0.9)


def _policy_load(p: AlertPolicy, state: list[Any]) -> None:
    p.level, p.start, p.good, p.resolved_at, p.resolved_level = state


def _fwd_step(f: Forwarding, rng: random.Random, i: int) -> None:
    n_in = rng.randint(0, 9)
    new = rng.randint(0, n_in) if i > 150 else 0
    f.score_one({"n_in": n_in, "n_new_off": new})
    f.learn_one({"n_in": n_in, "n_fwd": new + rng.randint(0, 1), "n_new_off": new})


def _fwd_load(f: Forwarding, state: list[Any]) -> None:
    loaded = Forwarding.from_state(state)
    f.__dict__.update({k: loaded.__dict__[k] for k in
                       ("days", "usual_fwd", "usual_new_off", "streak", "acc_in", "acc_new")})


def _spend_load(s: SpendDrop, state: list[Any]) -> None:
    loaded = SpendDrop.from_state(state)
    s.n, s.mean, s.var, s.recent = loaded.n, loaded.mean, loaded.var, loaded.recent


def _stay_step(m: StayAway, rng: random.Random, i: int) -> None:
    # Eight days of every twenty collapse (half of them with calls forwarded off-net).
    collapsed = i % 20 >= 12
    n_in = rng.randint(0, 8)
    forwarded = rng.randint(0, n_in) if collapsed and i % 40 < 20 else 0
    m.expect(4.0, 4.0, n_in if not collapsed or forwarded else 0, forwarded, steady=True,
             day=i, cusum=round(rng.random(), 3))
    m.update(0 if collapsed else rng.randint(2, 7))


def _stay_load(m: StayAway, state: list[Any]) -> None:
    m.state = AwayState(state) if state else None


MODELS: dict[str, Model] = {
    "StayAway": Model(StayAway, _stay_step, lambda m: list(m.state or []), _stay_load, 80),
    "HomeCell": Model(
        HomeCell, lambda m, rng, i: m.update(1 if rng.random() < 0.7 else rng.randint(2, 5)),
        lambda m: list(m.state), lambda m, s: setattr(m, "state", HomeState(s)), 60),
    "PoissonCusum": Model(
        PoissonCusum, _cusum_step, lambda m: [m.level],
        lambda m, s: setattr(m, "level", s[0]), 12),
    "IncomingRate": Model(
        IncomingRate, lambda m, rng, i: m.update(rng.randint(0, 9)),
        lambda m: [m.n, m.base, m.fast], lambda m, s: _set(m, ("n", "base", "fast"), s), 30),
    "BillLevel": Model(
        BillLevel, lambda m, rng, i: m.update(round(rng.uniform(20, 90), 2)),
        lambda m: [m.n, m.mean, m.ratio], lambda m, s: _set(m, ("n", "mean", "ratio"), s), 30),
    "SpendDrop": Model(
        SpendDrop, lambda m, rng, i: m.update(rng.randint(0, 3000)),
        lambda m: m.to_state(), _spend_load, 120),
    "Forwarding": Model(Forwarding, _fwd_step, lambda m: m.to_state(), _fwd_load, 60),
    "AlertPolicy": Model(AlertPolicy, _policy_step, lambda m: m.to_state(), _policy_load, 60),
    "ContactWindows": Model(
        ContactWindows, _contact_step, lambda m: [m.state],
        lambda m, s: setattr(m, "state", s[0]), 24),
}

GENERAL_CHECKS = [
    common.check_repr, common.check_str, common.check_clone_same_class,
    common.check_clone_is_idempotent, common.check_init_has_default_params_for_tests,
    common.check_init_default_params_are_not_mutable, common.check_doc,
    common.check_clone_changes_memory_addresses, common.check_mutate_can_be_idempotent,
    common.check_pickling_supports_roundtrip, common.check_repr_roundtrips_clone,
    common.check_clone_with_new_params_applies, common.check_get_params_matches_signature,
]


def _run(model: Model, seed: int = 12345, n: int = 400) -> Any:
    rng = random.Random(seed)
    m = model.make()
    for i in range(n):
        model.step(m, rng, i)
    return m


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("check", GENERAL_CHECKS, ids=lambda c: c.__name__)
def test_river_general_checks(name: str, check: Callable[[Any], None]) -> None:
    model = _run(MODELS[name], n=50)
    assert isinstance(model, base.Base)
    check(model.clone())


@pytest.mark.parametrize("name", MODELS)
def test_estimators_have_tags(name: str) -> None:
    model = MODELS[name].make()
    if isinstance(model, base.Estimator):
        common.check_tags(model)
    else:
        assert not hasattr(model, "_tags")


@pytest.mark.parametrize("name", MODELS)
def test_state_round_trips_and_the_model_carries_on_the_same(name: str) -> None:
    spec = MODELS[name]
    model = _run(spec, n=300)
    stored = orjson.loads(orjson.dumps(spec.dump(model)))
    assert stored == spec.dump(model)
    restored = model.clone()  # same parameters, fresh state
    spec.load(restored, stored)
    assert spec.dump(restored) == spec.dump(model)
    rng_a, rng_b = random.Random(7), random.Random(7)
    for i in range(300, 400):
        spec.step(model, rng_a, i)
        spec.step(restored, rng_b, i)
        assert spec.dump(restored) == spec.dump(model)


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_and_clone_starts_afresh(name: str) -> None:
    spec = MODELS[name]
    a, b = _run(spec), _run(spec)
    assert spec.dump(a) == spec.dump(b)
    early = spec.dump(_run(spec, n=37))
    assert spec.dump(_run(spec, seed=1, n=37)) != early, "the stream must move the state"
    assert spec.dump(a.clone()) == spec.dump(spec.make())


@pytest.mark.parametrize("name", MODELS)
def test_state_stays_small_however_long_the_stream(name: str) -> None:
    spec = MODELS[name]
    # Bounded whatever the stream's length (windows are fixed, counts are small numbers).
    sizes = [len(orjson.dumps(spec.dump(_run(spec, n=n)))) for n in (100, 1000, 5000)]
    assert max(sizes) <= spec.max_bytes
