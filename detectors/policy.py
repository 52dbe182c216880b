"""Alert policy: one alert per episode, escalations, resolution, and a cooldown."""

from __future__ import annotations

from river import base

__all__ = ["ZONES", "AlertPolicy"]

#: Zones in order of severity; the index is the zone's level.
ZONES: tuple[str, ...] = ("blue", "green", "yellow", "red", "white")
YELLOW = 2


class AlertPolicy(base.Base):
    """Decide which zone changes deserve an alert.

    An episode opens (``"open"``) when a subscriber enters yellow or worse, unless an
    episode that reached that zone or a worse one was resolved less than ``cooldown_s``
    ago; within an episode only a worse zone
    alerts again (``"escalated"``: yellow -> red -> white); ``resolve_days`` consecutive
    daily judgements at green or blue close it (``"resolved"``). Intra-day judgements can
    open or escalate but never count towards a resolution. An open episode also ends when
    the subscriber or group is gone (:meth:`close`: ``"closed"``).

    State: ``[level, episode_start, good_days, resolved_at, resolved_level]`` (level 0: no
    open episode; times in epoch seconds).

    Parameters
    ----------
    resolve_days
        Consecutive calm days that resolve an episode.
    cooldown_s
        Quiet time after a resolution before a new episode may open.

    Examples
    --------
    A subscriber whose daily zone wanders, one judgement a day:

    >>> import random
    >>> rng = random.Random(12345)
    >>> policy = AlertPolicy(resolve_days=3, cooldown_s=7 * 86400)
    >>> zones = ["blue"] * 3 + ["yellow", "green", "yellow", "red", "red"] + ["green"] * 4
    >>> zones += [rng.choice(["green", "yellow"]) for _ in range(6)] + ["yellow"] * 3
    >>> for day, zone in enumerate(zones):
    ...     status = policy.step(ZONES.index(zone), day * 86400, daily=True)
    ...     if status:
    ...         print(day, zone, status)
    3 yellow open
    6 red escalated
    10 green resolved
    17 yellow open
    >>> AlertPolicy.from_state(policy.to_state()).to_state() == policy.to_state()
    True

    """

    def __init__(self, resolve_days: int = 3, cooldown_s: float = 7 * 86400):
        self.resolve_days = resolve_days
        self.cooldown_s = cooldown_s
        self.level = 0
        self.start = 0
        self.good = 0
        self.resolved_at = -(10**10)
        self.resolved_level = 0

    def step(self, level: int, now: float, daily: bool) -> str | None:
        """Judge one zone level at event time ``now``; return the alert status or None."""
        if self.level == 0:
            cooled = now - self.resolved_at >= self.cooldown_s or level > self.resolved_level
            if level >= YELLOW and cooled:
                self.level = level
                self.start = int(now)
                self.good = 0
                return "open"
            return None
        if level > self.level:
            self.level = level
            self.good = 0
            return "escalated"
        if not daily:
            return None
        if level < YELLOW:
            self.good += 1
            if self.good >= self.resolve_days:
                self.resolved_level = self.level
                self.level = 0
                self.good = 0
                self.resolved_at = int(now)
                return "resolved"
        else:
            self.good = 0
        return None

    def close(self) -> str | None:
        """End the open episode because its subject is gone (ported out, deactivated, a
        group with no member left); ``"closed"``, or None when no episode is open.

        >>> policy = AlertPolicy()
        >>> policy.step(3, 0.0, daily=True), policy.close(), policy.close()
        ('open', 'closed', None)
        """
        if self.level == 0:
            return None
        self.level = 0
        self.good = 0
        return "closed"

    def to_state(self) -> list[int]:
        """``[level, episode_start, good_days, resolved_at, resolved_level]``."""
        return [self.level, self.start, self.good, self.resolved_at, self.resolved_level]

    @classmethod
    def from_state(
        cls, state: list[int], resolve_days: int = 3, cooldown_s: float = 7 * 86400
    ) -> AlertPolicy:
        """Rebuild a policy from :meth:`to_state`."""
        policy = cls(resolve_days, cooldown_s)
        (policy.level, policy.start, policy.good, policy.resolved_at,
         policy.resolved_level) = (int(v) for v in state)
        return policy
