"""The plan: a validated `Schedule` as a costed networkx graph, and its renderings. No torch here."""

from lagdsl.plan.build import KINDS, Plan, PlanNode, StageCost, Totals, build_plan
from lagdsl.plan.invariants import check_invariants

__all__ = ["KINDS", "Plan", "PlanNode", "StageCost", "Totals", "build_plan", "check_invariants"]
