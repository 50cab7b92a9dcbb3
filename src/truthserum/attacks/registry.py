"""Attack names and the functions behind them: the one place that maps a name to code."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from functools import partial

import numpy as np

from truthserum.attacks.inputs import AttackInputs
from truthserum.attacks.lira import global_threshold, lira_offline, lira_online
from truthserum.attacks.signals import phi_from_logits


class AttackName(str, Enum):
    """Membership-inference attacks on phi signals."""

    LIRA_ONLINE = "lira-online"
    LIRA_OFFLINE = "lira-offline"
    LIRA_ONLINE_FIXED = "lira-online-fixed"
    LIRA_OFFLINE_FIXED = "lira-offline-fixed"
    GLOBAL_THRESHOLD = "global-threshold"


ScoreFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]

ATTACKS: dict[AttackName, ScoreFunction] = {
    AttackName.LIRA_ONLINE: partial(lira_online, fixed_variance=False),
    AttackName.LIRA_OFFLINE: partial(lira_offline, fixed_variance=False),
    AttackName.LIRA_ONLINE_FIXED: partial(lira_online, fixed_variance=True),
    AttackName.LIRA_OFFLINE_FIXED: partial(lira_offline, fixed_variance=True),
    AttackName.GLOBAL_THRESHOLD: global_threshold,
}


def score_attacks(inputs: AttackInputs, attacks: Iterable[AttackName]) -> dict[AttackName, np.ndarray]:
    """Score every (model, target point) pair with each attack.

    Args:
        inputs: validated signals.
        attacks: which attacks to run.

    Returns:
        attack -> ``(M, T)`` float64 scores, higher meaning "more likely a member"; the
        ground truth is ``inputs.members``.
    """
    targets = inputs.targets
    phi = phi_from_logits(inputs.logits[:, targets], inputs.labels[targets])
    keep = inputs.keep[:, targets]
    return {AttackName(name): ATTACKS[AttackName(name)](phi, keep) for name in attacks}
