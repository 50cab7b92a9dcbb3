"""Stage 6, attack: membership scores from signals."""

from truthserum.attacks.inputs import AttackInputs, load_signals
from truthserum.attacks.registry import ATTACKS, AttackName, score_attacks
from truthserum.attacks.signals import phi_from_logits

__all__ = ["ATTACKS", "AttackInputs", "AttackName", "load_signals", "phi_from_logits", "score_attacks"]
