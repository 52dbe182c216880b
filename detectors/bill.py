"""Bill: each monthly bill against the usual ones."""

from __future__ import annotations

from river import stats

__all__ = ["BillLevel"]


class BillLevel(stats.base.Univariate):
    """The latest monthly bill as a share of the usual ones.

    The usual bill is an exponentially weighted mean (River's ``stats.EWMean``) with weight
    ``max(1/n, weight)``: the plain mean of the first bills, then quick to follow a new
    plan. A bill is compared with the mean of the bills *before* it, once there are two.
    :meth:`get` is that ratio (1.0 until it can be judged).

    Parameters
    ----------
    weight
        Weight of a new bill in the usual one, once the count-adaptive weight is below it.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(12345)
    >>> bill = BillLevel()
    >>> for month in range(6):
    ...     bill.update(round(rng.uniform(55, 65), 2) if month < 5 else 30.0)
    ...     print(month, bill.mean, bill.get())
    0 59.17 1.0
    1 57.14 1.0
    2 60.2 1.107
    3 59.09 0.963
    4 58.89 0.993
    5 44.45 0.509

    """

    def __init__(self, weight: float = 0.5):
        self.weight = weight
        self.n = 0
        self.mean: float = 0
        self.ratio: float = 1

    def update(self, x: float) -> None:
        """One bill's amount."""
        n, mean = self.n, (self.mean if self.n else 0.0)
        ratio = x / mean if n >= 2 and mean > 0 else 1.0
        n += 1
        self.n = n
        self.mean = round(mean + max(1.0 / n, self.weight) * (x - mean), 2)
        self.ratio = round(ratio, 3)

    def get(self) -> float:
        return self.ratio
