"""Thresholds of the group model (:mod:`detectors.group`), every number in one place."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detectors.config import EngineConfig

__all__ = ["GroupConfig"]


@dataclass(frozen=True)
class GroupConfig:
    """Thresholds of the group model (every number in one documented place).

    Parameters
    ----------
    tz_offset_hours, allowed_lateness_s
        The operator's time zone and the day-close lateness, as in
        :class:`~detectors.config.EngineConfig`: a day decided is stamped at its close.
    hold_days
        Extra days of event time a group waits before deciding a day (0: day ``D`` is
        decided on the first signal of day ``D + 1``). Partitions lagging each other by
        more than this may change a decision.
    min_members
        Members a group must have (signals seen) before it can alert, and members who must
        move (forward, warn, leave) for a movement to count: one member is a subscriber.
    fwd_window, fwd_base_rate, fwd_grace_days
        Forwarding: the span within which members' forwarding must have started, the
        chance a member starts forwarding to one competitor in such a span by themselves,
        and how long a member whose forwarding stopped still counts (the engine's
        forwarding judgement can lapse for a day).
    warn_window, warn_base_rate, herd_min_members
        Herd: the span within which members entered yellow or worse, its base rate, and
        the fewest members in warning that make a herd (two in warning at once happens).
    leave_window, leave_base_rate
        Leaving: the span of port-outs counted, and its base rate.
    spend_start, spend_full, spend_surprise
        The group's spend against its baseline: no evidence at ``spend_start`` or above,
        ``spend_surprise`` at ``spend_full`` or below (linear between).
    baseline_days
        Horizon of each member's calm monthly value (an exponential average over the
        days decided while the member is calm), the group's baseline.
    yellow_surprise, red_surprise
        Surprise (``-log10`` of the binomial tail, corroborated) for a yellow and a red
        group; risk scores follow (0.45 at yellow, 0.7 at red).
    corroboration
        Weight of the other kinds of evidence added to the strongest one.
    white_leave_surprise
        A red group whose leaving surprise reaches this is white (the group is going).
    resolve_days, cooldown_days
        Calm days that resolve a group episode; days after a resolution before a new one.
    forget_days
        Members who left this long ago are dropped from the state.

    """

    tz_offset_hours: float = 8.0
    allowed_lateness_s: float = 3600.0
    hold_days: int = 0
    min_members: int = 2
    fwd_window: int = 14
    fwd_base_rate: float = 0.005
    fwd_grace_days: int = 3
    warn_window: int = 6
    warn_base_rate: float = 0.01
    herd_min_members: int = 3
    leave_window: int = 30
    leave_base_rate: float = 0.02
    spend_start: float = 0.8
    spend_full: float = 0.3
    spend_surprise: float = 4.5
    baseline_days: int = 28
    yellow_surprise: float = 3.0
    red_surprise: float = 6.0
    corroboration: float = 0.5
    white_leave_surprise: float = 3.0
    resolve_days: int = 7
    cooldown_days: int = 14
    forget_days: int = 60

    def on_clock_of(self, engine: EngineConfig) -> GroupConfig:
        """These thresholds on the engines' clock: a group's days are its members' days,
        and its alerts are stamped in their local time.

        >>> from detectors.config import EngineConfig
        >>> GroupConfig().on_clock_of(EngineConfig(tz_offset_hours=1.0)).tz_offset_hours
        1.0
        """
        return replace(self, tz_offset_hours=engine.tz_offset_hours,
                       allowed_lateness_s=engine.allowed_lateness_s)
