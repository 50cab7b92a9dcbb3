"""The building blocks of every config section: strict pydantic models and number types."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict


class StrictSection(BaseModel):
    # No silent coercion of counts ("4", 4.0 and true are refused) and no NaN or inf rates.
    # Rates stay lax: PyYAML reads 1e-3 (no dot) as the string "1e-3".
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Count = Annotated[int, Strict()]


def _not_a_boolean(value: Any) -> Any:
    """YAML reads yes/no/true/false as booleans, and pydantic would take them as 1.0 and 0.0."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


# A number: ints, floats and numeric strings (PyYAML reads 1e-3 as a string), never a boolean.
Rate = Annotated[float, BeforeValidator(_not_a_boolean)]
