"""Unit graphs of models exported from PyTorch, and analyze() / CLI on them."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from n2nonnx import tags
from n2nonnx.connectivity import analyze, build_unit_graph
from n2nonnx.errors import InvalidArgumentError
from n2nonnx.graph.masking import gate


def _export(module: torch.nn.Module, example: torch.Tensor, names=None) -> onnx.ModelProto:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.onnx.export(
        module.eval(),
        (example,),
        buffer,
        dynamo=False,
        do_constant_folding=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
    )
    proto = onnx.load_from_string(buffer.getvalue())
    layers = [n for n in proto.graph.node if n.op_type in ("Gemm", "Conv", "MatMul")]
    for node, name in zip(layers, names or [], strict=False):
        node.name = name
    return proto


def _mask(proto: onnx.ModelProto, weight: str, keep: np.ndarray) -> onnx.ModelProto:
    """Gate initializer ``weight`` with a mask (n2nonnx's in-graph representation)."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    gate(proto.graph, weight, keep)
    return proto


def _mlp() -> onnx.ModelProto:
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(8, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 4),
    )
    return _export(module, torch.randn(1, 8), ["fc1", "fc2", "fc3"])


def _add_skip(proto: onnx.ModelProto, indices: list[int], weight: np.ndarray) -> onnx.ModelProto:
    """N2NSkip fc1 -> fc3 in the MLP: Gather -> MatMul -> Relu -> Add into fc3's output."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    fc1_out = next(n for n in proto.graph.node if n.op_type == "Relu").output[0]
    fc3 = next(n for n in proto.graph.node if n.name == "fc3")
    final = fc3.output[0]
    fc3.output[0] = "fc3_preact"
    prefix = "n2nskip/fc1->fc3"
    proto.graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(indices, dtype=np.int64), f"{prefix}/indices"),
            numpy_helper.from_array(weight.astype(np.float32), f"{prefix}/weight"),
        ]
    )
    proto.graph.node.extend(
        [
            helper.make_node(
                "Gather",
                [fc1_out, f"{prefix}/indices"],
                [f"{prefix}/gathered"],
                axis=1,
                name=f"{prefix}/gather",
            ),
            helper.make_node(
                "MatMul",
                [f"{prefix}/gathered", f"{prefix}/weight"],
                [f"{prefix}/z"],
                name=f"{prefix}/matmul",
            ),
            helper.make_node("Relu", [f"{prefix}/z"], [f"{prefix}/act"], name=f"{prefix}/relu"),
            helper.make_node("Add", ["fc3_preact", f"{prefix}/act"], [final], name=f"{prefix}/add"),
        ]
    )
    for node in proto.graph.node[-4:]:
        tags.tag(node, tags.SKIP_JOIN if node.op_type == "Add" else tags.SKIP)
    onnx.checker.check_model(proto)
    return proto


def test_mlp_counts_by_hand():
    graph = build_unit_graph(_mlp())
    assert [b.size for b in graph.blocks] == [8, 16, 16, 4]
    assert graph.n_nodes == 44
    assert graph.n_edges == 8 * 16 + 16 * 16 + 16 * 4
    assert graph.input_nodes.tolist() == list(range(8))
    assert graph.output_nodes.tolist() == list(range(40, 44))
    assert sum(graph.dead_units().values()) == 0
    adjacency = graph.adjacency
    assert (adjacency != adjacency.T).nnz == 0


def test_cnn_flatten_into_fc_and_groups():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.c2 = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)
            self.fc = torch.nn.Linear(6 * 2 * 2, 5)

        def forward(self, x):
            x = torch.nn.functional.max_pool2d(torch.relu(self.c2(torch.relu(self.c1(x)))), 2)
            return self.fc(x.flatten(1))

    graph = build_unit_graph(_export(Net(), torch.randn(1, 3, 4, 4)))
    assert [b.size for b in graph.blocks] == [3, 4, 6, 5]
    # 3x4 dense + grouped conv (each of 6 outputs sees 2 of 4 channels) + 5 x 6 channels.
    assert graph.n_edges == 12 + 12 + 30
    flow = graph.flow.toarray()
    assert flow[3:5, 7:10].all() and not flow[3:5, 10:13].any()  # group 0 -> outputs 0-2


def test_residual_adds_link_every_producer_of_the_stream():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c0 = torch.nn.Conv2d(2, 4, 1)
            self.c1 = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.c2 = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.c3 = torch.nn.Conv2d(4, 4, 1)
            self.c4 = torch.nn.Conv2d(4, 4, 1)
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            x = torch.relu(self.c0(x))
            x = torch.relu(x + self.c2(torch.relu(self.c1(x))))
            x = torch.relu(x + self.c4(torch.relu(self.c3(x))))
            return self.fc(x.mean((2, 3)))

    graph = build_unit_graph(
        _export(Net(), torch.randn(1, 2, 4, 4), ["c0", "c1", "c2", "c3", "c4", "fc"])
    )
    start = {b.name: b.start for b in graph.blocks}
    # c3 reads c0 + c2; fc reads c0 + c2 + c4 (unit c of each producer feeds channel c).
    assert graph.n_edges == 2 * 4 + 16 + 16 + 2 * 16 + 16 + 3 * 12
    flow = graph.flow.toarray()

    def linked(source, target, size=4, target_size=4):
        return flow[
            start[source] : start[source] + size, start[target] : start[target] + target_size
        ]

    assert linked("c0", "c3").all() and linked("c2", "c3").all() and not linked("c1", "c3").any()
    for producer in ("c0", "c2", "c4"):
        assert linked(producer, "fc", target_size=3).all()


def test_masked_row_makes_units_dead_and_cuts_off():
    proto = _mlp()
    weight = next(i.name for i in proto.graph.initializer if tuple(i.dims) == (16, 16))
    keep = np.ones((16, 16))
    keep[3] = 0.0  # fc2 unit 3 has no input: dead (no path from the inputs)
    keep[:, 5] = 0.0  # fc1 unit 5 feeds nothing: dead (no path to the outputs)
    graph = build_unit_graph(_mask(proto, weight, keep))
    dead = graph.dead_units()
    assert dead == {"fc1": 1, "fc2": 1, "fc3": 0}
    assert graph.n_edges == 8 * 16 + (15 * 15) + 16 * 4
    reference = build_unit_graph(_mask(proto, weight, keep), reference=True)
    assert reference.n_edges == 8 * 16 + 16 * 16 + 16 * 4
    report = analyze(None, _mask(proto, weight, keep), times=[0.01, 1.0])
    model = report.models[0]
    assert model.components == 1  # still connected: fc2 unit 3 hangs on through fc3
    assert model.total_dead == 2
    assert model.delta[1] > 0
    assert model.spectral_gap is not None and model.spectral_gap > 0


def test_n2nskip_edges_merge_into_target_units():
    proto = _mlp()
    weight = np.zeros((3, 4))
    weight[0, 1] = weight[2, 3] = 0.5  # fc1 unit 2 -> fc3 unit 1, fc1 unit 9 -> fc3 unit 3
    skipped = _add_skip(proto, [2, 5, 9], weight)
    graph = build_unit_graph(skipped)
    assert [b.name for b in graph.blocks] == ["input:x", "fc1", "fc2", "fc3"]
    assert graph.n_edges == 8 * 16 + 16 * 16 + 16 * 4 + 2
    flow = graph.flow.toarray()
    fc1, fc3 = 8, 40
    assert flow[fc1 + 2, fc3 + 1] == 1 and flow[fc1 + 9, fc3 + 3] == 1
    reference = build_unit_graph(skipped, reference=True)
    assert reference.n_edges == 8 * 16 + 16 * 16 + 16 * 4
    weighted = build_unit_graph(skipped, weighted=True)
    assert weighted.flow[fc1 + 2, fc3 + 1] == pytest.approx(0.5)


def test_analyze_to_dict_is_json_and_table_reads(tmp_path):
    proto = _mlp()
    weight = next(i.name for i in proto.graph.initializer if tuple(i.dims) == (16, 16))
    keep = (np.random.default_rng(0).random((16, 16)) < 0.2).astype(float)
    pruned = _mask(proto, weight, keep)
    skipped = _add_skip(pruned, [0, 1, 2], np.ones((3, 4)))
    report = analyze(proto, pruned, skipped, names=["pruned", "n2nskip"], weighted=True)
    document = json.loads(json.dumps(report.to_dict()))
    assert [m["name"] for m in document["models"]] == ["pruned", "n2nskip"]
    assert len(document["models"][0]["delta"]) == len(document["times"]) == 20
    table = report.table()
    assert "pruned" in table and "delta(inf)" in table
    with pytest.raises(InvalidArgumentError):
        analyze(proto, build_unit_graph(_export(torch.nn.Linear(3, 2), torch.randn(1, 3))))


def test_cli_table_json_and_plots(tmp_path, capsys):
    from n2nonnx.cli import main

    proto = _mlp()
    weight = next(i.name for i in proto.graph.initializer if tuple(i.dims) == (16, 16))
    keep = (np.random.default_rng(1).random((16, 16)) < 0.15).astype(float)
    files = {name: tmp_path / f"{name}.onnx" for name in ("dense", "pruned", "skipped")}
    pruned = _mask(proto, weight, keep)
    onnx.save(proto, files["dense"])
    onnx.save(pruned, files["pruned"])
    onnx.save(_add_skip(pruned, [0, 4, 8], np.ones((3, 4))), files["skipped"])
    out_json, out_png, out_svg = tmp_path / "r.json", tmp_path / "r.png", tmp_path / "r.svg"
    status = main(
        [
            "connectivity",
            str(files["dense"]),
            str(files["pruned"]),
            str(files["skipped"]),
            "--times",
            "0.1",
            "1",
            "10",
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "pruned" in printed and "skipped" in printed and "lambda_2" in printed
    document = json.loads(out_json.read_text())
    assert document["times"] == [0.1, 1.0, 10.0]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        main(
            [
                "connectivity",
                "--dense-reference",
                str(files["pruned"]),
                "--times",
                "1",
                "--plot",
                str(out_svg),
                "--no-spectrum",
            ]
        )
        == 0
    )
    assert out_svg.read_text().lstrip().startswith("<?xml")
    assert main(["connectivity", str(files["dense"])]) == 2
    assert main(["connectivity", str(files["dense"]), str(files["pruned"]), "--times", "-1"]) == 2
    assert (
        main(
            [
                "connectivity",
                str(files["dense"]),
                str(files["pruned"]),
                "--plot",
                str(tmp_path / "x.nope"),
            ]
        )
        == 2
    )
    assert "error:" in capsys.readouterr().err


def test_benchmark_example_quick():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "benchmark_connectivity.py"
    result = subprocess.run(
        [sys.executable, str(script), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for needle in (
        "wall time (s)",
        "n2nonnx",
        "baseline",
        "ratio",
        "max relative difference",
        "peak RSS",
    ):
        assert needle in result.stdout
    differences = [line for line in result.stdout.splitlines() if "max relative" in line]
    assert len(differences) == 2  # VGG19- and ResNet-50-shaped
    assert all(float(line.split()[-1]) < 1e-6 for line in differences)
    assert result.stdout.count("implicit in n2nonnx") == 2


def test_pruned_and_n2nskip_models_from_the_pipeline():
    import n2nonnx
    from n2nonnx.pruning import prune
    from n2nonnx.skip import add_n2nskip

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = torch.nn.Conv2d(16, 16, 3, padding=1)
            self.c3 = torch.nn.Conv2d(16, 32, 3, padding=1)
            self.fc = torch.nn.Linear(32, 10)

        def forward(self, x):
            x = torch.relu(self.c2(torch.relu(self.c1(x))))
            x = torch.relu(self.c3(torch.nn.functional.max_pool2d(x, 2)))
            return self.fc(x.mean((2, 3)))

    dense = n2nonnx.load(_export(Net(), torch.randn(1, 3, 8, 8)))
    pruned = prune(dense, method="random", density=0.1, seed=0)
    skipped = add_n2nskip(pruned, seed=0)
    assert any(layer.is_skip for layer in skipped.layers)
    graphs = {
        name: build_unit_graph(m)
        for name, m in [("dense", dense), ("pruned", pruned), ("skipped", skipped)]
    }
    reference = build_unit_graph(skipped, reference=True)
    assert all(g.same_nodes(graphs["dense"]) for g in [*graphs.values(), reference])
    assert reference.n_edges == graphs["dense"].n_edges  # masks and skips removed
    assert graphs["pruned"].n_edges < graphs["dense"].n_edges
    # Skip edges join units of non-consecutive layers (the dense graph has none there).
    dense_pairs = graphs["dense"].flow.toarray() > 0
    skip_pairs = (graphs["skipped"].flow.toarray() > 0) & ~dense_pairs
    assert skip_pairs.any()
    report = analyze(None, pruned, skipped, names=["pruned", "n2nskip"])
    assert report.reference.saturation_delta == 0.0 and len(report.models) == 2
