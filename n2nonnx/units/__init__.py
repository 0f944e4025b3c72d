"""The units core: reachability, consistent and coupled removal of units, and the removal itself.

Built on the op rules of :mod:`n2nonnx.graph.units` (what each op does to units) and the
layer view, in the spirit of Torch-Pruning's dependency graph:

- :mod:`.reach`: which units are alive (one reachability, used by deployment,
  connectivity, repair and skip placement);
- :mod:`.settle`: narrowing a set of dead units to a removal that is exact;
- :mod:`.coupling`: the groups of units that must be removed together, and which
  cannot be removed at all (with the reason);
- :mod:`.removal`: :func:`remove_units`, the transform that deletes units from the graph;
- :mod:`.padding`: :func:`pad_units`, its inverse: zero units appended, exactly.
"""

from __future__ import annotations

from n2nonnx.units.padding import pad_units
from n2nonnx.units.reach import Liveness, dead_units, liveness, unit_matrices
from n2nonnx.units.removal import remove_units

__all__ = ["Liveness", "dead_units", "liveness", "pad_units", "remove_units", "unit_matrices"]
