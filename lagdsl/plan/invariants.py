"""The plan's invariants, checked by one function (the tests run it on every example and on
generated schedules)."""

from __future__ import annotations

import networkx as nx

from lagdsl.plan.build import Plan


def check_invariants(plan: Plan) -> list[str]:
    """Every broken invariant, in words; empty when the plan is sound.

    - the graph is acyclic, with one source (`init`) and one sink (`end`);
    - every path from `init` to `end` crosses the same mainline train nodes (each train node
      dominates `end`);
    - the shape is continuous: along every edge, the target starts in the shape the source ends in;
    - the mainline steps add up to the schedule's `total`.
    """
    graph = plan.graph
    problems: list[str] = []
    if not nx.is_directed_acyclic_graph(graph):
        return ["the plan has a cycle"]
    sources = [n for n, d in graph.in_degree() if d == 0]
    sinks = [n for n, d in graph.out_degree() if d == 0]
    if sources != ["init"]:
        problems.append(f"the plan's sources are {sources}, not just `init`")
    if sinks != ["end"]:
        problems.append(f"the plan's sinks are {sinks}, not just `end`")
    if problems:
        return problems

    dominators = nx.immediate_dominators(graph, "init")
    on_every_path = set()
    node = "end"
    while node != "init":
        on_every_path.add(node)
        node = dominators[node]
    trains = {n for n, data in graph.nodes(data=True) if data["payload"].kind == "train"}
    for missing in sorted(trains - on_every_path):
        problems.append(f"train node `{missing}` is not on every path from `init` to `end`")

    for source, target in graph.edges():
        end_shape = graph.nodes[source]["payload"].after
        start_shape = graph.nodes[target]["payload"].before
        if end_shape != start_shape:
            problems.append(f"the shape jumps along `{source}` -> `{target}`: {end_shape} then {start_shape}")

    mainline = sum(data["payload"].mainline_steps for _, data in graph.nodes(data=True))
    if mainline != plan.schedule.total_steps:
        problems.append(f"the mainline steps add up to {mainline}, not `total` {plan.schedule.total_steps}")
    return problems
