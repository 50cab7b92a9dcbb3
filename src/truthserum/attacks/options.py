"""The options of an attack scoring: those every attack shares (the shadow budget, the seed) and
those an attack owns (RMIA's), each validated where it is defined."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from truthserum.config.schema import Count, Rate, StrictSection
from truthserum.errors import SignalsError

TUNE = "tune"
DEFAULT_GAMMA = 2.0
DEFAULT_OFFLINE_A = TUNE

# Seeds are 64-bit signed integers wherever they go (torch.manual_seed, numpy, JSON readers).
MAX_SEED = 2**63 - 1


class RmiaOptions(StrictSection):
    """RMIA's options, the ``rmia`` section of a config (Zarifzadeh et al. 2024; definitions in
    docs/attacks.md)."""

    gamma: Rate = Field(
        default=DEFAULT_GAMMA, gt=0, le=1e6,
        description="likelihood-ratio threshold: the score counts the population points z with LR(x, z) >= gamma",
    )
    offline_a: float | Literal["tune"] = Field(
        default=DEFAULT_OFFLINE_A,
        description="rmia-offline's a in [0, 1] (linear stand-in for the missing IN models), or tune: fitted on "
                    "shadows only",
    )
    population: Count | None = Field(
        default=None, ge=1, le=10_000_000,
        description="population points drawn at random (seeded) from the non-targets; null, or as many as there "
                    "are: all of them",
    )

    @field_validator("offline_a", mode="before")
    @classmethod
    def _number_in_unit_interval_or_tune(cls, value: Any) -> float | str:
        if value == TUNE and isinstance(value, str):
            return value
        message = f"must be a number in [0, 1] or '{TUNE}', got {value!r}"
        if isinstance(value, bool):
            raise ValueError(message)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(message) from None
        if not 0.0 <= number <= 1.0:
            raise ValueError(message)
        return number


@dataclass(frozen=True)
class AttackOptions:
    """Settings of one scoring.

    Attributes:
        shadow_models: shadows per target point (k/2 IN + k/2 OUT), or None for the default
            shadows (every other model, less one on a balanced design; see
            :class:`~truthserum.attacks.shadows.ShadowPlan`).
        seed: seeds the shadow draw, the population subset and the tuning.
        rmia: RMIA's own options (gamma, offline a or ``"tune"``, population size).
    """

    shadow_models: int | None = None
    seed: int = 0
    rmia: RmiaOptions = RmiaOptions()

    def validate(self) -> None:
        """Raise :class:`SignalsError` naming the first bad option."""
        if not 0 <= self.seed <= MAX_SEED:
            raise SignalsError(f"the seed must be an integer in 0..{MAX_SEED} (2**63 - 1), got {self.seed}")


def rmia_options(**values: Any) -> RmiaOptions:
    """RMIA's options from keyword values, a bad one reported as :class:`SignalsError`."""
    try:
        return RmiaOptions(**values)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise SignalsError(f"rmia {where}: {problem['msg'].removeprefix('Value error, ')}") from None
