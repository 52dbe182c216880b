"""Engine configuration: every threshold in one frozen, documented place."""

from __future__ import annotations

from dataclasses import dataclass, field

from detectors.days import calendar_days

__all__ = ["EngineConfig", "MODEL_VERSION"]

#: Written into every alert; bump when thresholds or features change meaning.
MODEL_VERSION = "detectors-1.2"


@dataclass(frozen=True)
class EngineConfig:
    """Configuration of the detectors engine.

    Parameters
    ----------
    tz_offset_hours
        Offset of the operator's time zone from UTC; days run midnight to midnight there.
    allowed_lateness_s
        A subscriber's day closes once event time passes its end by this much. Events for
        a closed day are counted as ``late`` (their spend still lands in the recent window).
    our_operator
        The operator whose subscribers we watch; forwarding elsewhere is off-net.
    ported_numbers
        Number -> operator overrides for ported numbers (digits as in the contract).
    sweep
        Close every subscriber's days when the engine's event time crosses a day, so silent
        subscribers are judged too (the store must then be iterable).
    baseline_days
        Horizon of the spend baseline (exponential weights, effective window).
    recent_days
        Recent window compared with the baseline (a whole number of weeks cancels the
        weekly rhythm).
    warmup_days
        Days of history before any spend or silence judgement.
    min_daily_spend
        Baselines below this (per day) are too small to judge a spend drop.
    min_daily_calls
        Baselines below this many outgoing calls a day are too small to judge.
    drop_ratio_start, drop_ratio_full
        Recent/baseline ratio (fortnight) at which a drop signal starts, and reaches 1.
    week_ratio_start, week_ratio_full
        The same for the last week alone (faster, so stricter).
    bill_ratio
        A monthly bill below this share of the usual ones is a (weak) signal.
    cusum_rho
        The drop in outgoing calls the CUSUM is tuned to (0.5: half the usual rate).
    cusum_green, cusum_yellow, cusum_red
        CUSUM levels (log-likelihood, dispersion-scaled) for a weak (``usage_green_strength``:
        green alone, it only adds to other evidence), a yellow and a red usage drop.
    cusum_phi_max
        Cap on the dispersion (variance / mean of daily calls) that scales the CUSUM.
    presence_ratio
        Incoming calls below this share of usual scale down the calls expected out (a quiet
        or absent subscriber, not a drift to another SIM, which keeps incoming calls); a
        usage drop's reason says when incoming calls fell below it too (a customer who
        moves loses both directions).
    absent_ratio
        Outgoing *and* incoming calls of the last week both below this share of usual:
        the subscriber is away or unreachable (a trip), not drifting to another SIM,
        whose contacts still call the old number.
    usage_red_strength, usage_green_strength
        Strength of a usage drop past ``cusum_red``, and past ``cusum_green``.
    absence_collapse
        A day with outgoing calls at or below this share of usual, and incoming calls
        too or forwarded to a new off-net number, after a steady fortnight, begins a
        stay away (:class:`detectors.absence.StayAway`).
    absence_back
        Outgoing calls at this share of usual end a stay away (with nothing forwarded
        off-net), or, with calls still forwarded off-net, show the subscriber is present.
    absence_partial
        Outgoing calls over a stay away at this share of usual show presence.
    absence_min_expected
        Usual outgoing calls, and usual incoming calls, over the collapsed days before a
        collapse of incoming calls too (without forwarding) confirms a stay away (a line
        nobody calls has no incoming calls to lose).
    trip_days
        The longest a trip lasts: a stay away past it is not an absence.
    absence_fwd_strength
        What calls forwarded off-net weigh while a stay away with them may be an absence:
        yellow (0.45 to 0.7), and short of red with a bill drop (0.3) beside it; a trip
        forwarding off-net is yellow until it ends, a switch that looks like one is not
        left unalerted.
    absence_red_strength
        Strength of a stay away that is not an absence (red at 0.7).
    holiday_ratio, holiday_days
        A segment whose outgoing calls over the last ``holiday_days`` closed days are
        below ``holiday_ratio`` of the same weekdays a week before is at a holiday: many
        of its people travel: while it lasts, forwarding off-net, alone or in a stay away
        that may be an absence, is a possible trip (``holiday_trip_strength``), and a stay
        away is not judged present (``absence_partial``).
    holidays
        The operator's holiday calendar: dates ``YYYY-MM-DD`` or inclusive ranges
        ``YYYY-MM-DD..YYYY-MM-DD`` (operator days). Their days are a holiday for every
        segment, whatever the calls say, from the first (the data rule above needs
        ``holiday_days`` of them to see one).
    holiday_trip_strength
        What forwarding off-net weighs at a holiday while it may be a trip: green (0.2 to
        0.45), watched but not alerted; other evidence beside it (a bill drop, 0.3) makes
        it yellow. Others of the group or account forwarding to the same operator lift it.
    absence_group_members
        Other members of the group in a stay away forwarding to the same operator that
        make one member's stay away not an absence.
    absence_z
        Standard errors (Poisson) by which the outgoing calls of a stay away without
        forwarding (incoming calls collapsed too) must fall short of usual before it is
        confirmed and held: a few quiet days of a subscriber who calls little are chance.
        With calls forwarded off-net no such test: with few calls usual over the days
        (anyone who calls little, and everyone at a holiday) a trip's collapse cannot be
        told from chance for days, and its forwarding was alerted like a switch's.
    absence_min_days
        Days a stay away without forwarding must last before it is confirmed and held: one
        or two quiet days inside a decline are not a trip, and holding them took the
        decline's days out of the usage window and reset its CUSUM.
    drop_z
        Minimum significance (standard errors below the baseline) of the recent sum.
    silent_days
        Days without own activity after which an active subscriber is white.
    fwd_min_calls
        Forwarded calls to a new off-net target needed to flag forwarding intra-day.
    low_value_month
        A line worth less than this a month (the spend baseline) is low-value: fewer than
        ``fwd_min_calls`` forwarded calls there are a warning, not a red alert on their own.
    fwd_min_share
        Share of the day's incoming calls they must be.
    fwd_habit_share
        A usual off-net forwarded share above this makes forwarding habitual.
    fwd_strong_share
        Share of today's incoming calls forwarded to new off-net numbers that is
        overwhelming (with ``fwd_min_calls``): judged at once, red.
    fwd_carried_strong
        Calls forwarded to new off-net numbers on the first day of a switch that, at
        ``fwd_carried_share`` or more of the day's incoming calls, make the day's close
        judge it overwhelming (red at once, not yellow then red the next day).
    fwd_carried_share
        The share of the day's incoming calls they must be for that.
    yellow, red
        Risk score thresholds of the zones (green starts at ``green``).
    resolve_days
        Consecutive judged days at green/blue that resolve an episode.
    cooldown_days
        Days after a resolution before a new episode may open (flapping guard).
    segment_weights, tier_weights
        Value weights for ``value_at_risk``.
    manager_first_segments
        Segments whose alerts name the account manager as the first contact (the
        relationship goes through them), before the subscriber's own contact windows.

    """

    tz_offset_hours: float = 8.0
    allowed_lateness_s: float = 3600.0
    our_operator: str = "China Mobile"
    ported_numbers: dict[str, str] = field(default_factory=dict)
    sweep: bool = True
    baseline_days: int = 90
    recent_days: int = 14
    warmup_days: int = 28
    min_daily_spend: float = 0.5
    min_daily_calls: float = 0.3
    drop_ratio_start: float = 0.75
    drop_ratio_full: float = 0.3
    week_ratio_start: float = 0.6
    week_ratio_full: float = 0.2
    bill_ratio: float = 0.7
    cusum_rho: float = 0.5
    cusum_green: float = 5.0
    cusum_yellow: float = 7.0
    cusum_red: float = 7.5
    usage_red_strength: float = 0.72
    usage_green_strength: float = 0.35
    cusum_phi_max: float = 3.0
    presence_ratio: float = 0.6
    absent_ratio: float = 0.35
    absence_collapse: float = 0.25
    absence_back: float = 0.5
    absence_partial: float = 0.35
    absence_min_expected: float = 4.0
    trip_days: int = 21
    absence_fwd_strength: float = 0.5
    absence_red_strength: float = 0.75
    holiday_ratio: float = 0.8
    holiday_days: int = 3
    holidays: tuple[str, ...] = ()
    holiday_trip_strength: float = 0.3
    absence_group_members: int = 1
    absence_z: float = 3.0
    absence_min_days: int = 3
    drop_z: float = 3.0
    silent_days: int = 21
    fwd_min_calls: int = 4
    low_value_month: float = 50.0
    fwd_min_share: float = 0.5
    fwd_habit_share: float = 0.2
    fwd_strong_share: float = 0.65
    fwd_carried_strong: float = 2.0
    fwd_carried_share: float = 0.5
    green: float = 0.2
    yellow: float = 0.45
    red: float = 0.7
    resolve_days: int = 7
    cooldown_days: int = 14
    segment_weights: dict[str, float] = field(
        default_factory=lambda: {
            "key_account": 1.5,
            "government": 1.4,
            "sme": 1.2,
            "consumer": 1.0,
        }
    )
    tier_weights: dict[str, float] = field(
        default_factory=lambda: {"diamond": 1.5, "gold": 1.3, "silver": 1.1}
    )
    manager_first_segments: tuple[str, ...] = ("key_account",)

    def __post_init__(self) -> None:
        # A calendar from TOML is a list, one from a caller may be a single string; a bad
        # entry fails here, at start-up, rather than on the first holiday.
        holidays = self.holidays
        if isinstance(holidays, str):
            holidays = (holidays,)
        object.__setattr__(self, "holidays", tuple(holidays))
        calendar_days(self.holidays)
