"""Presence: the subscriber's home cell, and stays away from it (a trip is not churn)."""

from __future__ import annotations

from typing import Any

from river import base

from detectors.record import Record

__all__ = ["HomeCell", "HomeState"]


class HomeState(Record):
    """The home-cell model's state (also the first fields of :class:`detectors.state.Numbers`).

    ``cell``: home cell fingerprint (-1: unknown); ``votes`` it has banked; ``run``: located
    calls in a row from other cells; ``last_cell``: the last of them; ``away``: a stay away
    is running (1) until the next call from home.
    """

    __slots__ = ()
    cell: int = -1
    votes: int = 0
    run: int = 0
    last_cell: int = -1
    away: int = 0


# Positions of the fields, from the record (the engine's Numbers starts with the same).
_CELL, _VOTES, _RUN, _LAST, _AWAY = (HomeState.FIELDS.index(name) for name in HomeState.FIELDS)


class HomeCell(base.DriftDetector):
    """Where a subscriber usually calls from, and when they stay somewhere else.

    A majority vote over located calls (the cell fingerprints): a call from the home cell
    adds a vote (at most ``home_cap`` banked, so a long trip does not move home), a call from
    another cell takes one away, and a cell that takes the last vote becomes home. A drift is
    a *stay* away: two calls in a row from the same other cell, or ``away_run`` other cells
    in a row, with no call from home in between (one call from elsewhere is a commute). The
    stay lasts (:attr:`away`) until the next call from home.

    The state is a :class:`HomeState` record in :attr:`state`; the engine points it at the
    subscriber's stored numbers, which begin with the same fields.

    Parameters
    ----------
    home_cap
        Votes the home cell can bank.
    away_run
        Located calls in a row from other cells that make a stay.

    Examples
    --------
    Calls from home (cell 1) with the odd commute (cells 2-9), then a trip to cell 7:

    >>> import random
    >>> rng = random.Random(12345)
    >>> home = HomeCell()
    >>> cells = [1 if rng.random() < 0.8 else rng.randint(2, 9) for _ in range(60)]
    >>> for i, cell in enumerate(cells + [7] * 5 + [1]):
    ...     home.update(cell)
    ...     if home.drift_detected:
    ...         print("stay away detected at index", i)
    stay away detected at index 61
    stay away detected at index 62
    stay away detected at index 63
    stay away detected at index 64
    >>> home.state.cell, home.away, home.at_home
    (1, False, True)

    """

    def __init__(self, home_cap: int = 50, away_run: int = 3):
        super().__init__()
        self.home_cap = home_cap
        self.away_run = away_run
        self.state: Any = HomeState.new()
        #: where the last call came from: the home cell, or another one (neither: the
        #: first located call, which makes its cell home)
        self.at_home = False
        self.elsewhere = False

    @property
    def away(self) -> bool:
        """A stay away is running."""
        return bool(self.state[_AWAY])

    def update(self, x: int | float) -> None:
        """One located call from the cell whose fingerprint is ``x``."""
        s = self.state
        fp = int(x)
        self._drift_detected = self.at_home = self.elsewhere = False
        if s[_CELL] < 0:
            s[_CELL], s[_VOTES] = fp, 1
        elif s[_CELL] == fp:
            if s[_VOTES] < self.home_cap:
                s[_VOTES] += 1
            s[_RUN] = s[_AWAY] = 0
            self.at_home = True
        else:
            self.elsewhere = True
            if (s[_RUN] >= 1 and s[_LAST] == fp) or s[_RUN] + 1 >= self.away_run:
                s[_AWAY] = 1
                self._drift_detected = True
            s[_RUN] += 1
            s[_LAST] = fp
            s[_VOTES] -= 1
            if s[_VOTES] <= 0:
                s[_CELL], s[_VOTES], s[_RUN], s[_LAST], s[_AWAY] = fp, 1, 0, -1, 0
