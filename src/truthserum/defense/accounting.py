"""Privacy accounting for DP-SGD, by Opacus's accountants.

Why Opacus (1.6): it is what the peers that integrate DP-SGD use (LeakPro trains through it),
it calibrates the noise to a target (epsilon, delta) in one call (``get_noise_multiplier``), it
has both the PRV accountant (Gopi, Lee and Wutschitz 2021: numerically tight) and the RDP one
(Mironov 2017), and its RDP curves give the group bound below. Its only dependencies beyond
ours are torch's and opt-einsum.

Group privacy: Opacus counts every row of a training set as one person. r replicas of one
input are r rows, so whatever concerns all of them at once (the poisons themselves, or one
person's r duplicates) is protected only at the group level. The group epsilon is the smaller
of two valid bounds, each converted to (epsilon, delta) by Opacus's RDP conversion: RDP's group
property (Mironov 2017, Proposition 2: a mechanism that is (alpha, e)-RDP for neighbouring data
sets is (alpha / 2^c, 3^c e)-RDP for data sets that differ in 2^c rows, for alpha >= 2^(c+1);
r rows are covered by c = ceil(log2 r)), and the Gaussian mechanism of sensitivity r C without
subsampling's help.

Note for the membership attack: its poisons are in the training sets of both worlds; the worlds
differ in the target alone, one row. The per-example epsilon is therefore the bound the
attack's empirical epsilon must respect; the group epsilon is reported beside it for the
replicas' own privacy.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.utils import get_noise_multiplier

from truthserum.config.defense import Accountant, DpSgd

# RDP orders: Opacus's own grid, extended upwards so that the group bound (orders divided by
# up to 2^c) still has orders to choose from
_ORDERS = np.unique(np.concatenate([
    1 + np.arange(1, 100) / 10.0, np.arange(11, 256), 2.0 ** np.arange(8, 17),
])).tolist()


@dataclass(frozen=True)
class PrivacySpent:
    """What one DP-SGD training run spends, per example and per group of ``group_size`` rows."""

    accountant: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    epsilon: float  # per example, by the configured accountant
    epsilon_rdp: float  # per example, by RDP (the curve the group bound starts from)
    group_size: int
    group_epsilon: float  # see group_epsilon

    def to_json(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=64)  # a matrix asks again for each column of equal size
def calibrate_noise(defense: DpSgd, *, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier sigma that the configured accountant says spends at most
    ``defense.epsilon`` at ``defense.delta`` over ``steps`` steps at ``sample_rate``."""
    # RDP searches the orders that epsilon_spent reports over, so the two agree
    orders = {"alphas": _ORDERS} if defense.accountant is Accountant.RDP else {}
    with warnings.catch_warnings():  # Opacus warns when its best RDP order is its largest
        warnings.simplefilter("ignore")
        return float(get_noise_multiplier(
            target_epsilon=defense.epsilon, target_delta=defense.delta, sample_rate=sample_rate, steps=steps,
            accountant=defense.accountant.value, epsilon_tolerance=0.01, **orders,
        ))


def epsilon_spent(accountant: Accountant, *, noise_multiplier: float, sample_rate: float, steps: int,
                  delta: float) -> float:
    """The per-example epsilon of ``steps`` DP-SGD steps, by Opacus's ``accountant``."""
    keeper = PRVAccountant() if accountant is Accountant.PRV else RDPAccountant()
    keeper.history = [(noise_multiplier, sample_rate, steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if accountant is Accountant.RDP:
            return float(keeper.get_epsilon(delta, alphas=_ORDERS))
        return float(keeper.get_epsilon(delta))


def _rdp_to_dp(orders: list[float], curve: np.ndarray, delta: float) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        epsilon, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=curve, delta=delta)
    return float(epsilon)


def group_epsilon(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float, group_size: int) -> float:
    """The epsilon for data sets that differ in ``group_size`` rows: the smaller of two valid
    bounds, RDP's group property on the subsampled mechanism, and the Gaussian mechanism of
    sensitivity ``group_size * C`` without subsampling's help (every step moves the clipped sum
    by at most that much, whichever rows are drawn)."""
    if group_size <= 1:
        return epsilon_spent(Accountant.RDP, noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                             steps=steps, delta=delta)
    doublings = math.ceil(math.log2(group_size))
    factor = 2 ** doublings
    orders = [order for order in _ORDERS if order >= 2 * factor]  # the property holds for alpha >= 2^(c+1)
    curve = rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=orders)
    by_property = _rdp_to_dp([order / factor for order in orders], (3.0 ** doublings) * np.asarray(curve), delta)
    unsampled = rdp_analysis.compute_rdp(q=1.0, noise_multiplier=noise_multiplier / group_size, steps=steps,
                                         orders=_ORDERS)
    return min(by_property, _rdp_to_dp(_ORDERS, np.asarray(unsampled), delta))


def privacy_spent(defense: DpSgd, *, noise_multiplier: float, sample_rate: float, steps: int,
                  group_size: int) -> PrivacySpent:
    common = {"noise_multiplier": noise_multiplier, "sample_rate": sample_rate, "steps": steps, "delta": defense.delta}
    return PrivacySpent(
        accountant=defense.accountant.value, **common,
        epsilon=epsilon_spent(defense.accountant, **common),
        epsilon_rdp=epsilon_spent(Accountant.RDP, **common),
        group_size=max(1, group_size),
        group_epsilon=group_epsilon(**common, group_size=max(1, group_size)),
    )
