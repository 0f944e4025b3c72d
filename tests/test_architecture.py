"""The house: no import circles, and one unit rule for every op family the graph view names."""

from __future__ import annotations

import grimp

from n2nonnx.graph import ops
from n2nonnx.graph.units import RULES


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("n2nonnx", "converters")
    circles = set()
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                circles.add(" -> ".join((module, *chain)))
    assert not circles, sorted(circles)[:5]


def test_every_named_op_family_has_unit_rules():
    named = ops.ACTIVATIONS | ops.ELEMENTWISE_MATH | ops.SPATIAL | ops.UNIT_NORMS | ops.REDUCTIONS
    assert named <= set(RULES), sorted(named - set(RULES))
    for op, rule in RULES.items():
        assert rule.op == op and rule.family
        assert rule.trace is not None or rule.family == "metadata", op
