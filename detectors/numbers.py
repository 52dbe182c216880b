"""Which operator serves a number: mainland-China mobile prefixes plus ported overrides.

Number portability makes the prefix an unreliable guide, so a ported-numbers table
(number -> operator) is consulted first.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["PREFIXES", "OperatorLookup", "normalise"]

CHINA_MOBILE = "China Mobile"
CHINA_UNICOM = "China Unicom"
CHINA_TELECOM = "China Telecom"
CHINA_BROADNET = "China Broadnet"

_SEGMENTS: dict[str, tuple[int, ...]] = {
    CHINA_MOBILE: (134, 135, 136, 137, 138, 139, 147, 150, 151, 152, 157, 158, 159, 172, 178,
                   182, 183, 184, 187, 188, 195, 197, 198),
    CHINA_UNICOM: (130, 131, 132, 145, 155, 156, 166, 175, 176, 185, 186, 196),
    CHINA_TELECOM: (133, 149, 153, 173, 177, 180, 181, 189, 190, 191, 193, 199),
    CHINA_BROADNET: (192,),
}

#: Three-digit mobile number segment -> operator (public allocation, before portability).
PREFIXES: dict[str, str] = {
    str(prefix): operator for operator, prefixes in _SEGMENTS.items() for prefix in prefixes
}


def normalise(number: str) -> str:
    """Digits of a number without ``+``, ``0086`` or ``86`` before an 11-digit mobile number.

    Examples
    --------
    >>> normalise("+8613912345678"), normalise("008618612345678"), normalise("12580")
    ('13912345678', '18612345678', '12580')

    """
    digits = number[1:] if number.startswith("+") else number
    if len(digits) == 15 and digits.startswith("0086"):
        return digits[4:]
    if len(digits) == 13 and digits.startswith("86"):
        return digits[2:]
    return digits


class OperatorLookup:
    """Operator of a number, and whether it is off our network.

    Parameters
    ----------
    ours
        Our operator's name.
    ported
        Number -> operator for ported numbers; wins over the prefix.

    Examples
    --------
    >>> lookup = OperatorLookup("China Mobile", ported={"13912345678": "China Unicom"})
    >>> lookup.operator("18612345678"), lookup.operator("13800000000")
    ('China Unicom', 'China Mobile')
    >>> lookup.operator("+8613912345678"), lookup.is_off_net("13912345678")
    ('China Unicom', True)
    >>> lookup.operator("12580") is None, lookup.is_off_net("12580")
    (True, False)

    """

    def __init__(self, ours: str = CHINA_MOBILE, ported: Mapping[str, str] | None = None):
        self.ours = ours
        self.ported = {normalise(k): v for k, v in (ported or {}).items()}

    def operator(self, number: str) -> str | None:
        """The operator serving ``number``, or None for a number that is not mobile."""
        digits = normalise(number)
        found = self.ported.get(digits)
        if found is not None:
            return found
        if len(digits) != 11:
            return None
        return PREFIXES.get(digits[:3])

    def is_off_net(self, number: str) -> bool:
        """True when a known other operator serves ``number`` (unknown numbers are not)."""
        operator = self.operator(number)
        return operator is not None and operator != self.ours
