"""N2NSkip: candidate pairs, budget accounting, the rewritten graph and its numerics."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import random_masks

import n2nonnx
from n2nonnx import masks, metadata
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.runtime import run
from n2nonnx.skip import add_n2nskip, find_pairs

INPUTS = {
    "mlp": (5, 40),
    "vgg": (5, 3, 16, 16),
    "resnet": (5, 3, 16, 16),
    "densenet": (5, 3, 8, 8),
    "mobilenet": (5, 3, 16, 16),
}


def pair_names(pairs) -> list[tuple[str, str, int]]:
    return [(p.source.name, p.target.name, p.k) for p in pairs]


def skip_record(model: n2nonnx.Model) -> dict:
    return metadata.stages(model.proto, "n2nskip")[-1]


def nonzero_total(model: n2nonnx.Model) -> tuple[int, int]:
    sequential = skip = 0
    for layer in model.layers:
        count = (
            int(np.count_nonzero(model.mask(layer.weight)))
            if model.mask(layer.weight) is not None
            else layer.parameters
        )
        if layer.is_skip:
            skip += count
        else:
            sequential += count
    return sequential, skip


# ------------------------------------------------------------------------- candidate pairs


def test_mlp_chain_pairs(zoo_models):
    model = n2nonnx.load(zoo_models["mlp"])
    fc1, fc2, fc3 = (layer.name for layer in model.layers)
    pairs, left_out = find_pairs(model)
    assert pair_names(pairs) == [("input:x", fc2, 2), ("input:x", fc3, 3), (fc1, fc3, 2)]
    assert all(p.alignment == "identity" and p.kind == "fc" for p in pairs) and not left_out
    assert pair_names(find_pairs(model, 2)[0]) == [("input:x", fc2, 2), (fc1, fc3, 2)]
    assert pair_names(find_pairs(model, per_target=1)[0]) == [("input:x", fc2, 2), (fc1, fc3, 2)]
    explicit, left = find_pairs(model, [(fc1, fc3), ("x", fc1)])
    assert pair_names(explicit) == [(fc1, fc3, 2)]
    assert left[0].source == "input:x" and "directly" in left[0].reason
    with pytest.raises(InvalidArgumentError, match="unknown skip source"):
        find_pairs(model, [("nope", fc3)])
    with pytest.raises(InvalidArgumentError, match="at least 2"):
        find_pairs(model, 1)


def test_vgg_pooling_and_global_average_pool(zoo_models):
    model = n2nonnx.load(zoo_models["vgg"])
    convs = [layer.name for layer in model.layers if layer.op == "Conv"]
    fc1 = next(layer.name for layer in model.layers if layer.op == "Gemm")
    pairs = {(p.source.name, p.target.name): p for p in find_pairs(model)[0]}
    same = pairs[("input:x", convs[1])]
    assert (same.kind, same.pool, same.kernel, same.alignment) == ("conv", (), (3, 3), "identity")
    pooled = pairs[(convs[0], convs[2])]  # 16x16 -> 8x8
    assert (pooled.pool, pooled.alignment, pooled.dense_size) == (
        (2, 2),
        "max-pool 2x2",
        16 * 8 * 9,
    )
    to_fc = pairs[(convs[1], fc1)]
    assert (to_fc.kind, to_fc.alignment, to_fc.kernel) == ("conv->fc", "global-average-pool", ())
    assert find_pairs(model, pool="avg")[0][2].alignment.startswith("avg-pool")
    assert all(p.kernel == (1, 1) for p in find_pairs(model, kernel="1x1")[0] if p.kind == "conv")
    assert (convs[2], convs[3]) not in pairs  # consecutive


def test_resnet_pairs_follow_the_graph(zoo_models):
    model = n2nonnx.load(zoo_models["resnet"])
    pairs, _ = find_pairs(model)
    depth = {layer.name: layer.depth for layer in model.layers} | {"input:x": 0}
    for pair in pairs:
        assert pair.k == depth[pair.target.name] - depth[pair.source.name] >= 2
        assert pair.source.name not in {e.source for e in pair.target.fed_by}
    out = add_n2nskip(random_masks(model), seed=0)
    onnx.checker.check_model(out.proto, full_check=True)  # a cycle would fail here
    skips = [layer for layer in out.layers if layer.is_skip]
    assert len(skips) == len({p.target.name for p in pairs})  # one skip layer per target
    assert {layer.merges_into for layer in skips} == {p.target.name for p in pairs}
    per_pair = add_n2nskip(random_masks(model), seed=0, merge="pair")
    assert len([layer for layer in per_pair.layers if layer.is_skip]) == len(pairs)


def test_densenet_concat(zoo_models):
    model = n2nonnx.load(zoo_models["densenet"])
    stem, d1, d2, d3, fc = (layer.name for layer in model.layers)
    pairs, _ = find_pairs(model)
    # The stem and every dense layer reach all later layers directly through the concats.
    assert pair_names(pairs) == [
        ("input:x", d1, 2),
        ("input:x", d2, 3),
        ("input:x", d3, 4),
        ("input:x", fc, 5),
    ]
    out = add_n2nskip(random_masks(model), seed=1)
    x = np.random.default_rng(0).standard_normal(INPUTS["densenet"]).astype(np.float32)
    assert run(out, x)[0].shape == (5, 10)


def test_no_pair_warns_and_keeps_the_graph(zoo_models):
    model = random_masks(n2nonnx.load(zoo_models["transformer"]))
    with pytest.warns(UserWarning, match="no non-consecutive layer pair"):
        out = add_n2nskip(model)
    assert [n.op_type for n in out.proto.graph.node] == [n.op_type for n in model.proto.graph.node]
    record = skip_record(out)
    assert record["pairs"] == [] and record["left_out"] and record["skip_nonzeros"] == 0


# ------------------------------------------------------------------------------ the budget


@pytest.mark.parametrize("name", ["mlp", "vgg", "resnet"])
@pytest.mark.parametrize("spread", ["proportional", "equal"])
def test_budget_is_exact(zoo_models, name, spread):
    model = n2nonnx.load(zoo_models[name])
    dense = sum(layer.parameters for layer in model.layers)
    pruned = random_masks(model, 0.2)
    out = add_n2nskip(pruned, skip_share=0.5, spread=spread, seed=3)
    record = skip_record(out)
    sequential, skip = nonzero_total(out)
    before, _ = nonzero_total(pruned)
    assert sequential + skip == before == record["budget"]  # density=None keeps the density
    assert skip == record["skip_nonzeros"] == round(0.5 * before)
    for layer in out.layers:
        if layer.is_skip:
            mine = [p for p in record["pairs"] if p["weight"] == layer.weight]
            assert int(out.mask(layer.weight).sum()) == sum(p["nonzeros"] for p in mine)
            axis = layer.in_axis
            for p in mine:
                start, stop = p["weight_inputs"]
                part = np.take(out.mask(layer.weight), np.arange(start, stop), axis=axis)
                assert int(part.sum()) == p["nonzeros"] and stop - start == p["source_units"]
    assert record["dense_sequential"] == dense and record["sequential"]["after"] == sequential
    if spread == "proportional":
        sizes = np.array([p["dense_size"] for p in record["pairs"]])
        counts = np.array([p["nonzeros"] for p in record["pairs"]])
        assert np.all(np.abs(counts - skip * sizes / sizes.sum()) <= 1)
    explicit = add_n2nskip(pruned, density=0.15, skip_share=0.3, spread=spread, seed=3)
    sequential, skip = nonzero_total(explicit)
    assert sequential + skip == round(0.15 * dense) and skip == round(0.3 * round(0.15 * dense))


def test_prune_then_skip_at_the_same_density(zoo_models):
    """The prune verb's flow: prune to (1 - share) x density, then add skips at density."""
    model = n2nonnx.load(zoo_models["vgg"])
    dense = sum(layer.parameters for layer in model.layers)
    rng = np.random.default_rng(0)
    new = {}
    for layer in model.layers:  # per-layer rounding leaves a few weights short of the total
        mask = np.zeros(layer.parameters, np.float32)
        mask[rng.choice(layer.parameters, size=int(0.05 * layer.parameters), replace=False)] = 1
        new[layer.weight] = mask.reshape(layer.weight_shape)
    pruned = masks.apply_masks(model, new)
    out = add_n2nskip(pruned, density=0.1, skip_share=0.5, seed=0)
    sequential, skip = nonzero_total(out)
    assert sequential == nonzero_total(pruned)[0]  # nothing removed
    assert sequential + skip == round(0.1 * dense)


def test_dense_model_needs_a_density(zoo_models):
    model = n2nonnx.load(zoo_models["mlp"])
    with pytest.raises(InvalidArgumentError, match="dense"):
        add_n2nskip(model)
    out = add_n2nskip(model, density=0.1, seed=0)
    sequential, skip = nonzero_total(out)
    dense = sum(layer.parameters for layer in model.layers)
    assert sequential + skip == round(0.1 * dense) and skip == round(0.05 * dense)


def test_sampling_modes(zoo_models):
    model = random_masks(n2nonnx.load(zoo_models["vgg"]), 0.3)
    block = {p["weight"]: p for p in skip_record(add_n2nskip(model, sampling="block"))["pairs"]}
    uniform = {p["weight"]: p for p in skip_record(add_n2nskip(model, sampling="uniform"))["pairs"]}
    assert block.keys() == uniform.keys()
    assert sum(p["source_units"] for p in block.values()) < sum(
        p["source_units"] for p in uniform.values()
    )
    for weight, pair in block.items():
        assert pair["nonzeros"] == uniform[weight]["nonzeros"]


# ------------------------------------------------------------------------ the graph itself


@pytest.mark.parametrize("name", ["mlp", "vgg", "resnet", "densenet", "mobilenet"])
@pytest.mark.parametrize(("sampling", "merge"), [("block", "target"), ("uniform", "pair")])
def test_zero_skips_give_the_pruned_model(zoo_models, tmp_path, name, sampling, merge):
    original = n2nonnx.load(zoo_models[name])
    out = add_n2nskip(random_masks(original, 0.3), seed=0, sampling=sampling, merge=merge)
    # The pruned reference: the original model with the sequential masks the skips left.
    skip_weights = {layer.weight for layer in out.layers if layer.is_skip}
    sequential_masks = {w: m for w, m in masks.mask_arrays(out).items() if w not in skip_weights}
    reference = masks.apply_masks(original, sequential_masks)
    skips = [layer for layer in out.layers if layer.is_skip]
    assert skips and all(layer.merges_into for layer in skips)
    zeroed = out.with_initializers(
        {layer.weight: np.zeros(layer.weight_shape, np.float32) for layer in skips}
    )
    x = np.random.default_rng(1).standard_normal(INPUTS[name]).astype(np.float32)
    np.testing.assert_allclose(run(zeroed, x)[0], run(reference, x)[0], rtol=1e-5, atol=1e-6)
    assert np.abs(run(out, x)[0] - run(reference, x)[0]).max() > 0  # the skips do something
    onnx.checker.check_model(out.proto, full_check=True)
    path = n2nonnx.save(out, tmp_path / "skip.onnx")
    loaded = n2nonnx.load(path)
    merges = {layer.name: layer.merges_into for layer in loaded.layers if layer.is_skip}
    assert merges == {layer.name: layer.merges_into for layer in skips}
    np.testing.assert_allclose(run(loaded, x)[0], run(out, x)[0], rtol=1e-5, atol=1e-6)


def test_subgraph_ops_and_names(zoo_models):
    model = random_masks(n2nonnx.load(zoo_models["vgg"]))
    out = add_n2nskip(model, seed=0, merge="pair")
    convs = [layer for layer in model.layers if layer.op == "Conv"]
    base = f"n2nskip/{convs[0].name}->{convs[2].name}"
    nodes = {n.name: n for n in out.proto.graph.node}
    assert [nodes[f"{base}/{part}"].op_type for part in ("gather", "pool", "conv", "act")] == [
        "Gather",
        "MaxPool",
        "Conv",
        "Relu",
    ]
    assert (
        f"{base}/weight" in out.initializer_names and f"{base}/weight/mask" in out.initializer_names
    )
    skip = out.layer(f"{base}/conv")
    assert skip.is_skip and skip.merges_into == convs[2].name and skip.op == "Conv"
    assert skip.kernel_size == (3, 3)
    target = out.layer(convs[2].name)
    assert target.chain == ("BatchNormalization", "Add", "Relu")  # into g's input, after BN
    merged = add_n2nskip(model, seed=0)  # merge="target": one skip layer per target
    fused = merged.layer(f"n2nskip/{convs[2].name}/conv")
    assert fused.merges_into == convs[2].name
    assert nodes[f"{base}/gather"].op_type == "Gather"
    assert {e.source for e in fused.fed_by} == {
        "input:x",
        convs[0].name,
    }  # convs[1] feeds it directly
    edge = next(e for e in fused.fed_by if e.source == convs[0].name)
    record = next(
        p
        for p in skip_record(merged)["pairs"]
        if p["source"] == convs[0].name and p["target"] == convs[2].name
    )
    start, stop = record["weight_inputs"]
    np.testing.assert_array_equal(
        edge.unit_map[start:stop], merged.initializer(f"{base}/source_units")
    )
    assert np.all(np.delete(edge.unit_map, np.arange(start, stop)) == -1)
    before_bn = add_n2nskip(model, seed=0, join="preact", merge="pair")
    assert before_bn.layer(convs[2].name).chain == ("Add", "BatchNormalization", "Relu")
    assert before_bn.layer(f"{base}/conv").merges_into == convs[2].name
    edge = next(e for e in skip.fed_by if e.source == convs[0].name)
    used = out.initializer(f"{base}/source_units")
    np.testing.assert_array_equal(edge.unit_map, used)  # the Gather's unit map
    totals = f"n2nskip/{convs[2].name}/sum"
    assert nodes[totals].op_type == "Sum"


def test_same_seed_same_bytes(zoo_models, tmp_path):
    model = random_masks(n2nonnx.load(zoo_models["resnet"]))
    first = n2nonnx.save(add_n2nskip(model, seed=7), tmp_path / "a.onnx").read_bytes()
    second = n2nonnx.save(add_n2nskip(model, seed=7), tmp_path / "b.onnx").read_bytes()
    third = n2nonnx.save(add_n2nskip(model, seed=8), tmp_path / "c.onnx").read_bytes()
    assert first == second and first != third


def test_metadata_record(zoo_models):
    model = random_masks(n2nonnx.load(zoo_models["mlp"]))
    record = skip_record(add_n2nskip(model, seed=5, skip_share=0.4))
    assert record["method"] == "n2nskip" and record["seed"] == 5 and record["skip_share"] == 0.4
    assert record["sampling"] == "block"
    assert {"source", "target", "k", "nonzeros", "dense_size", "alignment", "activation"} <= set(
        record["pairs"][0]
    )
    assert (
        sum(record["sequential"]["removed"].values())
        == record["sequential"]["before"] - record["sequential"]["after"]
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"skip_share": 1.0}, "skip_share"),
        ({"skip_share": -0.1}, "skip_share"),
        ({"density": 0.0}, "density"),
        ({"density": 1.5}, "density"),
        ({"sampling": "dense"}, "sampling"),
        ({"spread": "x"}, "spread"),
        ({"pairs": "some"}, "pairs"),
        ({"per_target": 0}, "per_target"),
        ({"kernel": "5x5"}, "kernel"),
        ({"pool": "min"}, "pool"),
        ({"join": "x"}, "join"),
        ({"merge": "x"}, "merge"),
        ({"density": 0.9}, "fewer than"),
    ],
)
def test_bad_input(zoo_models, options, message):
    model = random_masks(n2nonnx.load(zoo_models["mlp"]))
    with pytest.raises(InvalidArgumentError, match=message):
        add_n2nskip(model, **options)


def test_refuses_a_model_that_already_has_skips(zoo_models):
    out = add_n2nskip(random_masks(n2nonnx.load(zoo_models["mlp"])))
    with pytest.raises(InvalidArgumentError, match="already has N2NSkip"):
        add_n2nskip(out)


@pytest.mark.parametrize("method", ["random", "snip", "grasp", "synflow"])
def test_after_each_pruning_method(zoo_models, method):
    model = n2nonnx.load(zoo_models["mlp"])
    data = "synthetic:features=40,classes=10,train=64,test=32"
    pruned = n2nonnx.prune(model, method, 0.1, data=data, batch_size=32, seed=0)
    out = add_n2nskip(pruned, seed=0)
    sequential, skip = nonzero_total(out)
    assert sequential + skip == nonzero_total(pruned)[0] and skip == round(
        0.5 * nonzero_total(pruned)[0]
    )
    onnx.checker.check_model(out.proto, full_check=True)
    x = np.random.default_rng(0).standard_normal(INPUTS["mlp"]).astype(np.float32)
    assert np.isfinite(run(out, x)[0]).all()
