"""Stage 6, attack: membership scores from signals, through an open registry of attacks."""

from truthserum.attacks.inputs import AttackInputs, load_signals, signals_logits_name
from truthserum.attacks.options import TUNE, AttackOptions, RmiaOptions
from truthserum.attacks.registry import (
    Attack, AttackName, Scoring, get_attack, register_attack, registered_attacks, score_attacks,
    score_attacks_with_details, unregister_attack,
)
from truthserum.attacks.shadows import ShadowPlan, check_shadow_budget
from truthserum.attacks.signals import phi_from_logits

__all__ = [
    "TUNE", "Attack", "AttackInputs", "AttackName", "AttackOptions", "RmiaOptions", "Scoring", "ShadowPlan",
    "check_shadow_budget", "get_attack", "load_signals", "phi_from_logits", "register_attack",
    "registered_attacks", "score_attacks", "score_attacks_with_details", "signals_logits_name",
    "unregister_attack",
]
