"""n2nonnx's own nodes are recognised by tags in the ONNX, never by their names."""

from __future__ import annotations

import json

import builders
import numpy as np
import onnx
from onnx import helper, numpy_helper

import n2nonnx
from n2nonnx import tags
from n2nonnx.graph.masking import find_mask_sites
from n2nonnx.metadata import METADATA_KEY
from n2nonnx.runtime import run


def user_model_with_a_mask_named_input() -> onnx.ModelProto:
    """A user's MLP whose second weight is multiplied by an initializer called ``w2/mask``.

    The names follow n2nonnx 0.1's mask convention exactly, but nothing here was made by
    n2nonnx: ``w2/mask`` is a learned scale the user's model really applies.
    """
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Mul", ["w2", "w2/mask"], ["w2/masked"], name="w2/apply_mask"),
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "w2/masked"], ["y"], transB=1, name="fc2"),
    ]
    initializers = [
        builders.tensor("w1", builders.rand(rng, 6, 4)),
        builders.tensor("b1", builders.rand(rng, 6)),
        builders.tensor("w2", builders.rand(rng, 3, 6)),
        builders.tensor("w2/mask", 1 + builders.rand(rng, 3, 6)),
    ]
    return builders.make_model(
        nodes, [builders.value("x", "N", 4)], [builders.value("y", "N", 3)], initializers, 13
    )


def test_a_user_initializer_named_like_a_mask_is_not_a_mask():
    model = n2nonnx.load(user_model_with_a_mask_named_input())
    assert model.mask_sites == {} and model.mask("w2") is None
    # An ordinary constant product: load() folds it into fc2's weight, like any constant subgraph.
    assert model.parameter_count == 6 * 4 + 6 + 3 * 6 and model.layer("fc2").parameters == 18
    deployed = n2nonnx.deploy(model).model  # nothing to fold: the user's Mul stays
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(run(deployed, x)[0], run(model, x)[0], rtol=1e-5, atol=1e-6)


def test_a_model_written_by_version_0_1_still_loads_its_masks():
    proto = user_model_with_a_mask_named_input()
    keep = (np.arange(18).reshape(3, 6) % 2).astype(np.float32)
    mask = next(t for t in proto.graph.initializer if t.name == "w2/mask")
    mask.CopyFrom(numpy_helper.from_array(keep, "w2/mask"))
    document = {"version": 1, "stages": [{"stage": "prune", "method": "random", "density": 0.5}]}
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(document))
    model = n2nonnx.load(proto)
    assert set(model.mask_sites) == {"w2"}
    np.testing.assert_array_equal(model.mask("w2"), keep)
    assert (
        tags.role(next(t for t in model.proto.graph.initializer if t.name == "w2/mask"))
        == tags.MASK
    )


def test_tags_survive_constant_folding_and_the_mask_is_one_byte_per_weight(tmp_path):
    from n2nonnx.zoo import export_builtin

    model = n2nonnx.load(export_builtin("mlp", tmp_path / "mlp.onnx"))  # 144k weights
    pruned = n2nonnx.prune(model, "random", 0.1, seed=0)
    proto = pruned.proto
    # A Constant node forces load() through graphsurgeon's folding, which drops metadata_props.
    proto.graph.node.insert(0, helper.make_node("Constant", [], ["unused"], value_float=1.0))
    again = n2nonnx.load(proto)
    assert set(again.mask_sites) == set(pruned.mask_sites) and again.mask_sites
    masks = {t.name: t for t in again.proto.graph.initializer if tags.role(t) == tags.MASK}
    assert {site.mask for site in again.mask_sites.values()} == set(masks)
    assert all(t.data_type == onnx.TensorProto.BOOL for t in masks.values())
    dense_bytes = len(model.proto.SerializeToString())
    masked_bytes = len(again.proto.SerializeToString())
    assert 1.2 * dense_bytes < masked_bytes < 1.3 * dense_bytes  # was 2x with float masks


def test_skip_layers_are_found_by_tag_whatever_their_names(zoo_models):
    skipped = n2nonnx.add_n2nskip(
        n2nonnx.prune(n2nonnx.load(zoo_models["mlp"]), "random", 0.1, seed=0), seed=0
    )
    proto = skipped.proto
    for node in proto.graph.node:  # rename every node: names carry no meaning
        node.name = f"node{abs(hash(node.name)) % 10**8}"
    renamed = n2nonnx.load(proto)
    assert [layer.is_skip for layer in renamed.layers] == [
        layer.is_skip for layer in skipped.layers
    ]
    assert any(layer.is_skip for layer in renamed.layers)
    assert sum(1 for n in proto.graph.node if tags.role(n) == tags.SKIP_JOIN) >= 1
    assert set(find_mask_sites(renamed.proto.graph)) == set(skipped.mask_sites)


def test_top_level_api_and_subpackages_do_not_shadow_each_other():
    import n2nonnx.deployment.timing  # noqa: F401  (binds the subpackage on n2nonnx)
    import n2nonnx.pruning.allocation as allocation

    assert callable(n2nonnx.prune) and hasattr(allocation, "masks_from_scores")
    assert callable(n2nonnx.deploy) and callable(n2nonnx.train)
    assert {"load", "save", "prune", "add_n2nskip", "train", "analyze", "deploy"} <= set(
        n2nonnx.__all__
    )
