"""Growth operators (torch): each grows a `GPT` and moves its optimizer state with the weights."""

from lagdsl.ops.core import Carry, Grown, GrowthError, GrowthSpec, check_training_state, grow, implementation

__all__ = ["Carry", "Grown", "GrowthError", "GrowthSpec", "check_training_state", "grow", "implementation"]
