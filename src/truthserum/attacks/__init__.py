"""Stage 6, attack: membership scores from signals."""

from truthserum.attacks.inputs import AttackInputs, load_signals, signals_logits_name
from truthserum.attacks.registry import (
    ATTACKS, TUNE, AttackName, AttackOptions, score_attacks, score_attacks_with_details,
)
from truthserum.attacks.shadows import ShadowPlan, check_shadow_budget
from truthserum.attacks.signals import phi_from_logits

__all__ = [
    "ATTACKS", "TUNE", "AttackInputs", "AttackName", "AttackOptions", "ShadowPlan",
    "check_shadow_budget", "load_signals", "phi_from_logits", "score_attacks", "signals_logits_name",
    "score_attacks_with_details",
]
