"""The authors'-code N2NSkip variant: block pairs, whole-kernel sampling, the skip path's BatchNorm."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from builders import nonzeros

import n2nonnx
from n2nonnx import backend, masks, metadata
from n2nonnx.cli import main
from n2nonnx.connectivity import build_unit_graph
from n2nonnx.deployment import deploy
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.runtime import run
from n2nonnx.skip import AUTHORS_VARIANT, add_n2nskip, check_options, find_pairs
from n2nonnx.skip.sampling import sample_connections

VGG16_WIDTHS = [8, 8, 8, 8, 16, 16, 16, 16, 16, 16, 16, 16, 16]  # blocks of 2, 2, 3, 3, 3


@pytest.fixture(scope="module")
def vgg16(tmp_path_factory) -> n2nonnx.Model:
    """A VGG16-shaped 2-D CNN (13 convs in five blocks, 32x32 input), narrow."""
    from converters.pytorch import export
    from n2nonnx.zoo import build

    torch.manual_seed(0)
    module = build("vgg2d", widths=VGG16_WIDTHS, pool_after=[1, 3, 6, 9, 12], size=32, hidden=16)
    path = tmp_path_factory.mktemp("vgg16") / "vgg16.onnx"
    return n2nonnx.load(export(module, torch.randn(2, 3, 32, 32), path).path)


@pytest.fixture(scope="module")
def vgg1d(tmp_path_factory) -> n2nonnx.Model:
    from n2nonnx.zoo import export_builtin

    options = {"widths": [8, 8, 16, 16, 16, 16], "pool_after": [1, 3]}
    path = tmp_path_factory.mktemp("vgg1d") / "vgg1d.onnx"
    return n2nonnx.load(export_builtin("vgg1d", path, 0, options))


def record(model: n2nonnx.Model) -> dict:
    return metadata.stages(model.proto, "n2nskip")[-1]


def convs(model: n2nonnx.Model) -> list[str]:
    return [layer.name for layer in model.layers if layer.op == "Conv" and not layer.is_skip]


# ------------------------------------------------------------------------------ block pairs


def test_block_pairs_of_a_vgg16(vgg16, zoo_models):
    names = convs(vgg16)
    pairs, left_out = find_pairs(vgg16, "blocks")
    first = [0, 2, 4, 7, 10]  # the first conv of each block
    expected = [("input:x", names[2], 3)] + [
        (names[first[b] - 1], names[first[b + 1]], first[b + 1] - first[b] + 1) for b in range(1, 4)
    ]
    assert [(p.source.name, p.target.name, p.k) for p in pairs] == expected  # four skips
    assert not left_out and all(p.alignment == "max-pool 2x2" for p in pairs[:1])
    vgg = n2nonnx.load(zoo_models["vgg"])
    assert [(p.source.name, p.target.name) for p in find_pairs(vgg, "blocks")[0]] == [
        ("input:x", convs(vgg)[2])
    ]


@pytest.mark.parametrize("name", ["mlp", "densenet"])
def test_block_pairs_need_two_conv_blocks(zoo_models, name):
    model = n2nonnx.load(zoo_models[name])
    with pytest.raises(InvalidArgumentError, match=r"pairs='blocks'.*(0|1) such block"):
        add_n2nskip(model, density=0.1, pairs="blocks")


# -------------------------------------------------------------------------- channel sampling


def test_channel_sampling_keeps_whole_kernels(vgg16):
    pair = next(p for p in find_pairs(vgg16)[0] if p.kind == "conv" and p.kernel == (3, 3))
    targets, sources = pair.target.units, pair.source.units
    for count in (9 * targets * 2 + 5, 9 * targets * 2, 7, pair.dense_size):
        connections = sample_connections(pair, count, "channel", np.random.default_rng(count))
        mask = np.zeros((targets, sources, 9), dtype=np.float32)
        mask[:, connections.used_sources] = connections.mask.reshape(targets, -1, 9)
        assert int(mask.sum()) == connections.nonzeros == count
        per_kernel = mask.sum(axis=2)
        partial = (per_kernel > 0) & (per_kernel < 9)
        assert partial.sum() <= 1 and per_kernel[partial].sum() == count % 9
        whole = (per_kernel == 9).sum(axis=1)  # int(sources x density) per target, +-1
        assert whole.max() - whole.min() <= 1 and whole.sum() == count // 9


# ------------------------------------------------------------------------ the exact budget


@pytest.mark.parametrize(
    "options",
    [
        {"sampling": "channel"},
        {"pairs": "blocks"},
        {"skip_norm": "batchnorm"},
        {"pool_at": "output"},
        {"pool_at": "output", "merge": "pair"},
        dict(AUTHORS_VARIANT),
        {**AUTHORS_VARIANT, "placement": "connectivity"},
    ],
    ids=["channel", "blocks", "batchnorm", "pool-at-output", "output-per-pair", "authors", "conn"],
)
def test_exact_budget(vgg16, options):
    pruned = n2nonnx.prune(vgg16, "random", 0.05, seed=0)
    out = add_n2nskip(pruned, density=0.1, seed=0, **options)
    dense = sum(layer.parameters for layer in vgg16.layers)
    assert nonzeros(out) == round(0.1 * dense)
    assert nonzeros(out, skip=True) == record(out)["skip_nonzeros"] == round(0.05 * dense)
    assert sum(p["nonzeros"] for p in record(out)["pairs"]) == record(out)["skip_nonzeros"]
    onnx.checker.check_model(out.proto, full_check=True)


# ------------------------------------------------------------------------------ the graph


def test_authors_graph_numerics_and_unit_graph(vgg16):
    pruned = n2nonnx.prune(vgg16, "random", 0.1, seed=1)
    out = add_n2nskip(pruned, seed=2, **AUTHORS_VARIANT)
    names = convs(vgg16)
    nodes = {node.name: node for node in out.proto.graph.node}
    skips = [layer for layer in out.layers if layer.is_skip]
    assert len(skips) == 4
    for pair in record(out)["pairs"]:
        base = f"n2nskip/{pair['source'].removeprefix('input:')}->{pair['target']}"
        skip = out.layer(f"{base}/conv")
        assert skip.chain == ("BatchNormalization", "Relu") and skip.merges_into == pair["target"]
        norm = nodes[f"{base}/bn"]
        assert norm.op_type == "BatchNormalization"
        for name in norm.input[1:]:
            assert out.initializer(name).shape == (skip.units,)
        assert nodes[f"{base}/output_pool"].op_type == "MaxPool"
        block_start = names.index(pair["target"])  # the conv after this block
        # the skip conv reads the block's input: what the block's first conv reads
        first_of_block = {2: 0, 4: 2, 7: 4, 10: 7}[block_start]
        assert nodes[f"{base}/gather"].input[0] == out.layer(names[first_of_block]).input
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    module = backend.OnnxModule(out).eval()
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
    expected = run(out, x)[0]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # Zero skip weights add nothing (BatchNorm starts at mean 0, variance 1, bias 0).
    zeroed = out.with_initializers(
        {layer.weight: np.zeros(layer.weight_shape, np.float32) for layer in skips}
    )
    skip_weights = {layer.weight for layer in skips}
    sequential = {w: m for w, m in masks.mask_arrays(out).items() if w not in skip_weights}
    reference = masks.apply_masks(vgg16, sequential)
    np.testing.assert_allclose(run(zeroed, x)[0], run(reference, x)[0], rtol=1e-5, atol=1e-6)
    # The unit graph has an edge for every skip connection.
    graph = build_unit_graph(out)
    blocks = {block.name: block for block in graph.blocks}
    for pair in record(out)["pairs"]:
        base = f"n2nskip/{pair['source'].removeprefix('input:')}->{pair['target']}"
        used = out.initializer(f"{base}/source_units")
        start, stop = pair["weight_inputs"]
        mask = out.mask(pair["weight"])[:, start:stop]
        targets, columns = np.nonzero(mask.reshape(mask.shape[0], mask.shape[1], -1).any(axis=2))
        rows = blocks[pair["source"]].start + used[columns]
        cols = blocks[pair["target"]].start + targets
        assert np.all(graph.flow[rows, cols] > 0)


def test_same_seed_same_bytes(vgg16, tmp_path):
    pruned = n2nonnx.prune(vgg16, "random", 0.05, seed=0)
    files = []
    for position, seed in enumerate((3, 3, 4)):
        out = add_n2nskip(pruned, density=0.1, seed=seed, **AUTHORS_VARIANT)
        files.append(n2nonnx.save(out, tmp_path / f"{position}.onnx").read_bytes())
    assert files[0] == files[1] and files[0] != files[2]


def test_skip_batchnorm_trains_and_deploys(vgg1d):
    pruned = n2nonnx.prune(vgg1d, "random", 0.075, seed=0)
    model = add_n2nskip(pruned, density=0.15, seed=0, **AUTHORS_VARIANT)
    norms = [n for n in model.proto.graph.node if n.op_type == "BatchNormalization"]
    skip_norms = [n for n in norms if n.name.startswith("n2nskip/")]
    assert len(skip_norms) == 2
    module = backend.OnnxModule(model)
    for node in skip_norms:
        assert module.is_trainable(node.input[1]) and module.is_trainable(node.input[2])
    result = n2nonnx.train(
        model,
        "synthetic:features=40,classes=4,train=512,test=128",
        epochs=4,
        batch_size=64,
        lr=0.01,
        seed=0,
        progress=False,
    )
    losses = result.history.column("train_loss")
    assert losses[-1] < losses[0]
    trained = result.model
    for node in skip_norms:
        for name in node.input[1:]:  # scale, bias, running mean and variance all moved
            assert not np.array_equal(trained.initializer(name), model.initializer(name)), name
    for layer in trained.layers:
        if layer.is_skip:
            weight, mask = trained.initializer(layer.weight), trained.mask(layer.weight)
            assert np.all(weight[mask == 0] == 0)
    deployed = deploy(trained)
    assert deployed.verification.passed and deployed.verification.relative <= 1e-5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"skip_norm": "layernorm"}, "skip_norm"),
        ({"pool_at": "middle"}, "pool_at"),
        ({"sampling": "kernel"}, "sampling"),
        ({"pairs": "block"}, "pairs"),
    ],
)
def test_bad_values(vgg16, options, message):
    with pytest.raises(InvalidArgumentError, match=message):
        add_n2nskip(vgg16, density=0.1, **options)
    with pytest.raises(InvalidArgumentError, match=message):  # before any work, no model
        check_options(**options)
    check_options(**AUTHORS_VARIANT, placement="connectivity", skip_share=0.2)


AUTHORS_FLAGS = [
    "--pairs",
    "blocks",
    "--sampling",
    "channel",
    "--skip-norm",
    "batchnorm",
    "--pool-at",
    "output",
]


def test_cli_flags(zoo_models, tmp_path, capsys):
    vgg = str(zoo_models["vgg"])
    out = tmp_path / "skip.onnx"
    assert main(["skip", vgg, "-o", str(out), "--density", "0.1", *AUTHORS_FLAGS]) == 0
    info = record(n2nonnx.load(out))
    assert (info["sampling"], info["skip_norm"], info["pool_at"]) == (
        "channel",
        "batchnorm",
        "output",
    )
    assert len(info["pairs"]) == 1 and info["pairs"][0]["source"] == "input:x"
    pruned = tmp_path / "pruned.onnx"
    argv = ["prune", vgg, "-o", str(pruned), "--method", "random", "--density", "0.05"]
    assert main([*argv, "--n2nskip", *AUTHORS_FLAGS]) == 0
    model = n2nonnx.load(pruned)
    dense = sum(layer.parameters for layer in model.layers if not layer.is_skip)
    assert nonzeros(model) == round(0.05 * dense) and record(model)["skip_norm"] == "batchnorm"
    capsys.readouterr()
    for bad in (["--skip-norm", "group"], ["--pool-at", "x"], ["--pairs", "some"]):
        assert main(["skip", vgg, "-o", str(out), "--density", "0.1", *bad]) == 2
        assert bad[0] in capsys.readouterr().err
    assert (
        main(["skip", vgg, "-o", str(out), "--density", "0.1", "--pairs", "blocks", "--max-k", "3"])
        == 2
    )
    assert "--pairs blocks" in capsys.readouterr().err
    mlp, fresh = str(zoo_models["mlp"]), str(tmp_path / "mlp.onnx")
    assert main(["skip", mlp, "-o", fresh, "--density", "0.1", "--pairs", "blocks"]) == 2
    assert "pairs='blocks'" in capsys.readouterr().err
    argv = ["prune", mlp, "-o", fresh, "--method", "random", "--density", "0.1", "--n2nskip"]
    assert main([*argv, "--pairs", "blocks"]) == 2
    assert "pairs='blocks'" in capsys.readouterr().err
    assert not (tmp_path / "mlp.onnx").exists()
