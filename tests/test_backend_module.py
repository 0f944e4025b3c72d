"""OnnxModule end to end: exported PyTorch models against onnxruntime, training behaviour,
trainability, masks, write-back, errors and the registry's version fallback."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from n2nonnx.backend import OnnxModule, register_op, resolve, supported_ops
from n2nonnx.errors import InvalidArgumentError, UnsupportedOpError
from n2nonnx.graph.masking import find_mask_sites, gate
from n2nonnx.runtime import run

torch.manual_seed(0)


def export(module: nn.Module, example: torch.Tensor, opset: int = 17) -> onnx.ModelProto:
    """Legacy-export ``module`` with a dynamic batch axis, BatchNorm left unfused."""
    buffer = io.BytesIO()
    torch.onnx.export(
        module.eval(),
        (example,),
        buffer,
        dynamo=False,
        do_constant_folding=False,
        input_names=["x"],
        output_names=["y"],
        opset_version=opset,
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
    )
    return onnx.load_from_string(buffer.getvalue())


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|."""
    scale = max(float(np.abs(expected).max()), 1e-12)
    return float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max()) / scale


def assert_matches_onnxruntime(
    proto: onnx.ModelProto,
    shape_after_batch: tuple[int, ...],
    dtype=np.float32,
    tolerance: float = 1e-5,
) -> OnnxModule:
    module = OnnxModule(proto).eval()
    rng = np.random.default_rng(0)
    for batch in (1, 7):
        x = rng.standard_normal((batch,) + shape_after_batch).astype(dtype)
        expected = run(proto, x)[0]
        with torch.no_grad():
            actual = module(torch.from_numpy(x)).numpy()
        assert actual.shape == expected.shape
        assert actual.dtype == expected.dtype
        assert relative_error(actual, expected) <= tolerance, relative_error(actual, expected)
    return module


# ---------------------------------------------------------------- models


class VGGish(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class ResidualBlock(nn.Module):
    def __init__(self, cin=8, cout=16):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout)
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cout, 5))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.head(torch.relu(out + self.shortcut(x)))


class DenseBlock(nn.Module):
    def __init__(self, cin=4, growth=4, layers=3):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(cin + i * growth),
                nn.ReLU(),
                nn.Conv2d(cin + i * growth, growth, 3, padding=1),
            )
            for i in range(layers)
        )
        total = cin + layers * growth
        self.transition = nn.Sequential(
            nn.BatchNorm2d(total), nn.Conv2d(total, 8, 1), nn.AvgPool2d(2)
        )

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.transition(torch.cat(features, 1))


class MobileNetish(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU6(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8),
            nn.BatchNorm2d(8),
            nn.Hardswish(),
            nn.Conv2d(8, 16, 1),
            nn.BatchNorm2d(16),
            nn.ReLU6(),
            nn.Conv2d(16, 16, 3, padding=1, groups=4),
            nn.Hardsigmoid(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 10),
        )

    def forward(self, x):
        return self.body(x)


class AttentionBlock(nn.Module):
    """A hand-written transformer encoder layer (multi-head attention, LayerNorm, GELU MLP)."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(0.1), nn.Linear(2 * dim, dim)
        )

    def forward(self, x):
        batch, tokens, _ = x.shape
        q, k, v = (
            self.qkv(x)
            .reshape(batch, tokens, 3, self.heads, self.dim // self.heads)
            .permute(2, 0, 3, 1, 4)
            .unbind(0)
        )
        weights = torch.softmax(q @ k.transpose(-2, -1) / (self.dim // self.heads) ** 0.5, dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(batch, tokens, self.dim)
        x = self.norm1(x + self.proj(mixed))
        return self.norm2(x + self.mlp(x))


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 4)
    )


EQUIVALENCE = {
    "mlp": (mlp, (12,)),
    "vgg": (VGGish, (3, 16, 16)),
    "resnet_block": (ResidualBlock, (8, 8, 8)),
    "densenet_block": (DenseBlock, (4, 8, 8)),
    "mobilenet": (MobileNetish, (3, 16, 16)),
    "attention": (AttentionBlock, (5, 16)),
}


def _randomise_bn(module: nn.Module) -> nn.Module:
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(layer.weight, 0.5, 1.5)
            nn.init.uniform_(layer.bias, -0.2, 0.2)
    return module


@pytest.mark.parametrize("name", sorted(EQUIVALENCE))
def test_exported_model_matches_onnxruntime(name):
    factory, shape = EQUIVALENCE[name]
    torch_model = _randomise_bn(factory()).eval()
    proto = export(torch_model, torch.randn((2,) + shape))
    module = assert_matches_onnxruntime(proto, shape)
    # and the torch model itself
    x = torch.randn((3,) + shape)
    with torch.no_grad():
        assert relative_error(module(x).numpy(), torch_model(x).numpy()) <= 1e-5


@pytest.mark.parametrize("name", ["mlp", "vgg", "attention"])
def test_float16_model_matches_onnxruntime(name):
    factory, shape = EQUIVALENCE[name]
    proto = export(_randomise_bn(factory()).half(), torch.randn((2,) + shape).half())
    module = assert_matches_onnxruntime(proto, shape, dtype=np.float16, tolerance=5e-3)
    weight = next(n for n in module.initializer_names if module.is_trainable(n))
    assert module.tensor(weight).dtype == torch.float16
    assert module.initializer_values()[weight].dtype == np.float16
    module.train()
    module(torch.randn((4,) + shape).half()).float().sum().backward()
    assert module.tensor(weight).grad is not None


def add_mask(
    proto: onnx.ModelProto, weight: str, density: float = 0.5, seed: int = 0
) -> onnx.ModelProto:
    """Gate initializer ``weight`` by a random mask (n2nonnx's in-graph mask representation)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    init = next(t for t in model.graph.initializer if t.name == weight)
    mask = np.random.default_rng(seed).random(tuple(init.dims)) < density
    gate(model.graph, weight, mask)
    return model


def _first_weight(proto: onnx.ModelProto, op_type: str) -> str:
    node = next(n for n in proto.graph.node if n.op_type == op_type)
    return node.input[1]


def test_masked_model_matches_onnxruntime_and_keeps_zeros():
    proto = export(mlp(), torch.randn(2, 12))
    weight = _first_weight(proto, "Gemm")
    masked = add_mask(proto, weight)
    module = assert_matches_onnxruntime(masked, (12,))
    assert module.is_trainable(weight)
    assert not module.is_trainable(find_mask_sites(masked.graph)[weight].mask)
    assert set(module.masks()) == {weight}
    # a training step moves masked-out weights; apply_masks_ zeroes them again
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module.train()
    module(torch.randn(8, 12)).pow(2).sum().backward()
    optimizer.step()
    module.apply_masks_()
    mask = module.masks()[weight]
    assert torch.all(module.tensor(weight)[mask == 0] == 0)


# ---------------------------------------------------------------- training behaviour


def test_train_mode_batchnorm_matches_torch_exactly():
    torch_model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6, momentum=0.2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 8 * 8, 3),
    )
    proto = export(torch_model, torch.randn(2, 3, 8, 8))
    module = OnnxModule(proto)
    torch_model.train()
    module.train()
    bn_node = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    mean_name, var_name = bn_node.input[3], bn_node.input[4]
    assert not module.is_trainable(mean_name) and not module.is_trainable(var_name)
    theirs = torch.optim.SGD(torch_model.parameters(), lr=0.05)
    ours = torch.optim.SGD(module.parameters(), lr=0.05)
    for step in range(3):
        x = torch.randn(5, 3, 8, 8) * (step + 1)
        expected, actual = torch_model(x), module(x)
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
        for optimizer, out in ((theirs, expected), (ours, actual)):
            optimizer.zero_grad()
            out.pow(2).mean().backward()
            optimizer.step()
        torch.testing.assert_close(
            module.tensor(mean_name), torch_model[1].running_mean, rtol=1e-6, atol=1e-6
        )
        torch.testing.assert_close(
            module.tensor(var_name), torch_model[1].running_var, rtol=1e-6, atol=1e-6
        )
    module.eval()
    torch_model.eval()
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(module(x), torch_model(x), rtol=1e-5, atol=1e-5)
    # the trained running stats survive write-back (aliased ones become initializers)
    written = module.write_back(proto)
    onnx.checker.check_model(written, full_check=True)
    with torch.no_grad():
        assert relative_error(module(x).numpy(), run(written, x.numpy())[0]) <= 1e-5


def test_dropout_identity_in_eval_and_active_in_train():
    torch_model = nn.Sequential(nn.Linear(10, 200), nn.Dropout(0.5))
    buffer = io.BytesIO()
    torch.onnx.export(
        torch_model.train(),
        (torch.randn(2, 10),),
        buffer,
        dynamo=False,
        do_constant_folding=False,
        input_names=["x"],
        training=torch.onnx.TrainingMode.TRAINING,
        dynamic_axes={"x": {0: "batch"}},
    )
    proto = onnx.load_from_string(buffer.getvalue())
    assert any(n.op_type == "Dropout" for n in proto.graph.node)
    module = OnnxModule(proto)
    x = torch.randn(4, 10)
    with torch.no_grad():
        expected = torch_model.eval()(x)
        torch.testing.assert_close(module.eval()(x), expected)  # training-mode graph, eval module
        dropped = module.train()(x)
    assert 0.3 < (dropped == 0).float().mean().item() < 0.7
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], 2 * expected[kept])


def test_dropout_node_trains_with_ratio_input():
    graph = helper.make_graph(
        [helper.make_node("Dropout", ["x", "ratio"], ["y"])],
        "dropout",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1000])],
        [numpy_helper.from_array(np.array(0.25, dtype=np.float32), "ratio")],
    )
    module = OnnxModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    x = torch.ones(4, 1000)
    module.eval()
    assert torch.equal(module(x), x)
    module.train()
    y = module(x)
    dropped = (y == 0).float().mean().item()
    assert 0.2 < dropped < 0.3
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / 0.75))


def keras_style_mlp() -> onnx.ModelProto:
    """MatMul + Add layers, as Keras / tf2onnx export them."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
        for name, shape in (
            ("dense/kernel", (6, 8)),
            ("dense/bias", (8,)),
            ("dense_1/kernel", (8, 3)),
            ("dense_1/bias", (3,)),
        )
    ]
    inits.append(numpy_helper.from_array(np.array([-1, 8], dtype=np.int64), "shape"))
    nodes = [
        helper.make_node("Reshape", ["x", "shape_in"], ["x2"]),
        helper.make_node("MatMul", ["x2", "dense/kernel"], ["h0"], name="dense/MatMul"),
        helper.make_node("Add", ["h0", "dense/bias"], ["h1"], name="dense/BiasAdd"),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "dense_1/kernel"], ["h3"], name="dense_1/MatMul"),
        helper.make_node("Add", ["dense_1/bias", "h3"], ["y"], name="dense_1/BiasAdd"),
    ]
    inits.append(numpy_helper.from_array(np.array([-1, 6], dtype=np.int64), "shape_in"))
    graph = helper.make_graph(
        nodes,
        "keras",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_gradients_flow_to_matmul_weights_and_biases():
    proto = keras_style_mlp()
    module = OnnxModule(proto)
    trainable = {n for n in module.initializer_names if module.is_trainable(n)}
    assert trainable == {"dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"}
    assert not module.is_trainable("shape") and module.tensor("shape").dtype == torch.int64
    module(torch.randn(5, 6)).sum().backward()
    for name in trainable:
        assert module.tensor(name).grad is not None and module.tensor(name).grad.abs().sum() > 0
    names = [n for n, _ in module.named_parameters()]
    assert len(names) == 4 and all("." not in n for n in names)
    assert [n for n, _ in module.named_onnx_parameters()] == [
        "dense/kernel",
        "dense/bias",
        "dense_1/kernel",
        "dense_1/bias",
    ]
    assert all(p is module.tensor(n) for n, p in module.named_onnx_parameters())


def test_attention_mask_and_scalar_constants_stay_buffers():
    rng = np.random.default_rng(0)
    mask = np.triu(np.full((4, 4), -1e4, np.float32), 1)
    inits = [
        numpy_helper.from_array(mask, "causal_mask"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "gamma"),
    ]
    nodes = [
        helper.make_node("Add", ["scores", "causal_mask"], ["masked"]),
        helper.make_node("Mul", ["masked", "half"], ["scaled"]),
        helper.make_node("Mul", ["scaled", "gamma"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 4])],
        inits,
    )
    module = OnnxModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert not module.is_trainable("causal_mask") and not module.is_trainable("half")
    assert module.is_trainable("gamma")


def test_trainable_rule_can_narrow_and_widen():
    proto = keras_style_mlp()
    narrow = OnnxModule(proto, trainable={"exclude": ["dense_1/*"]})
    assert narrow.is_trainable("dense/kernel") and not narrow.is_trainable("dense_1/kernel")
    by_regex = OnnxModule(proto, trainable={"exclude": [r".*bias"]})
    assert not by_regex.is_trainable("dense/bias") and by_regex.is_trainable("dense/kernel")
    only = OnnxModule(proto, trainable=lambda name: name == "dense/bias")
    assert [n for n in only.initializer_names if only.is_trainable(n)] == ["dense/bias"]
    with pytest.raises(InvalidArgumentError):
        OnnxModule(proto, trainable={"nope": []})


def test_default_rule_on_exported_cnn():
    proto = export(_randomise_bn(VGGish()), torch.randn(2, 3, 16, 16))
    module = OnnxModule(proto)
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert all(module.is_trainable(n) for n in node.input[1:])
        if node.op_type == "BatchNormalization":
            assert module.is_trainable(node.input[1]) and module.is_trainable(node.input[2])
            assert not module.is_trainable(node.input[3]) and not module.is_trainable(node.input[4])


def test_write_back_round_trip():
    proto = export(_randomise_bn(ResidualBlock()), torch.randn(2, 8, 8, 8))
    module = OnnxModule(proto)
    weight = _first_weight(proto, "Conv")
    with torch.no_grad():
        module.tensor(weight).mul_(-2.0).add_(0.1)
    written = module.write_back(proto)
    assert [t.name for t in written.graph.initializer] == [t.name for t in proto.graph.initializer]
    assert [t.data_type for t in written.graph.initializer] == [
        t.data_type for t in proto.graph.initializer
    ]
    assert [n.name for n in written.graph.node] == [n.name for n in proto.graph.node]
    np.testing.assert_array_equal(
        numpy_helper.to_array(next(t for t in written.graph.initializer if t.name == weight)),
        module.tensor(weight).detach().numpy(),
    )
    onnx.checker.check_model(written, full_check=True)
    x = np.random.default_rng(3).standard_normal((7, 8, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ours = module.eval()(torch.from_numpy(x)).numpy()
    assert relative_error(ours, run(written, x)[0]) <= 1e-5

    class Wrapper:
        pass

    wrapped = Wrapper()
    wrapped.proto = proto
    assert isinstance(module.write_back(wrapped), onnx.ModelProto)
    assert isinstance(OnnxModule(wrapped), OnnxModule)


def test_initializer_values_cover_everything():
    proto = keras_style_mlp()
    module = OnnxModule(proto)
    values = module.initializer_values()
    assert list(values) == module.initializer_names == [t.name for t in proto.graph.initializer]
    assert values["shape"].dtype == np.int64


def test_keyword_inputs_and_multiple_outputs():
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Mul", ["a", "b"], ["p"])],
        "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("s", "p")],
    )
    module = OnnxModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    total, product = module(b=torch.tensor([1.0, 2.0]), a=torch.tensor([3.0, 4.0]))
    assert total.tolist() == [4.0, 6.0] and product.tolist() == [3.0, 8.0]


# ---------------------------------------------------------------- errors and registry


def test_unknown_op_raises_unsupported_with_a_useful_message():
    graph = helper.make_graph(
        [helper.make_node("FrobnicateXYZ", ["x"], ["y"], name="frob7")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(UnsupportedOpError) as info:
        OnnxModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    message = str(info.value)
    for part in ("frob7", "FrobnicateXYZ", "ai.onnx", "17", "n2nonnx.backend.supported_ops()"):
        assert part in message


_TEST_DOMAIN = "test.n2nonnx.backend"


@register_op("Twice", since=13, domain=_TEST_DOMAIN)
def _twice(spec):
    return lambda x: x * 2


@register_op("Twice", since=19, domain=_TEST_DOMAIN)
def _twice_v19(spec):
    return lambda x: x * 3


def test_registry_falls_back_to_highest_version_at_or_below_the_opset():
    graph = helper.make_graph(
        [helper.make_node("Twice", ["x"], ["y"], domain=_TEST_DOMAIN)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(_TEST_DOMAIN, 17)]
    )
    assert resolve("Twice", _TEST_DOMAIN, 17) is _twice
    assert OnnxModule(model)(torch.ones(2)).tolist() == [2.0, 2.0]
    assert resolve("Twice", _TEST_DOMAIN, 21) is _twice_v19
    with pytest.raises(UnsupportedOpError, match="converters exist only for opsets"):
        resolve("Twice", _TEST_DOMAIN, 12)
    assert supported_ops()[f"{_TEST_DOMAIN}::Twice"] == [13, 19]


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="duplicate"):
        register_op("Twice", since=13, domain=_TEST_DOMAIN)(lambda spec: None)


def test_supported_ops_lists_the_core():
    table = supported_ops()
    for op in ("Conv", "Gemm", "MatMul", "BatchNormalization", "Softmax", "Resize", "Split"):
        assert op in table
    assert table["Split"] == [1, 13, 18]


def test_copies_follow_their_own_train_eval_mode():
    import copy

    proto = export(nn.Sequential(nn.Linear(10, 50), nn.Dropout(0.5)), torch.randn(2, 10))
    module = OnnxModule(proto).train()
    frozen = copy.deepcopy(module).eval()
    x = torch.ones(3, 10)
    with torch.no_grad():
        assert torch.equal(frozen(x), frozen(x))
        module(x)
        assert torch.equal(frozen(x), frozen(x))


def test_decomposed_layernorm_scale_and_shift_are_trainable():
    proto = export(AttentionBlock(), torch.randn(2, 5, 16), opset=13)
    assert not any(n.op_type == "LayerNormalization" for n in proto.graph.node)
    module = OnnxModule(proto)
    assert all(module.is_trainable(n) for n in module.initializer_names if n.startswith("norm"))
    assert_matches_onnxruntime(proto, (5, 16))


def test_inputs_are_cast_to_the_declared_float_type():
    proto = export(mlp(), torch.randn(2, 12))
    module = OnnxModule(proto).eval()
    x = np.random.default_rng(0).standard_normal((3, 12))
    with torch.no_grad():
        ours = module(x)
    assert ours.dtype == torch.float32
    assert relative_error(ours.numpy(), run(proto, x.astype(np.float32))[0]) <= 1e-5


def test_module_double_after_construction_follows_the_new_dtype():
    proto = export(mlp(), torch.randn(2, 12))
    module = OnnxModule(proto).double().eval()
    out = module(np.random.default_rng(0).standard_normal((3, 12)))
    assert out.dtype == torch.float64
    assert module.initializer_values()[_first_weight(proto, "Gemm")].dtype == np.float32


def test_float64_execution_keeps_onnx_dtypes_on_the_way_out():
    proto = export(mlp(), torch.randn(2, 12))
    module = OnnxModule(proto, dtype=torch.float64).eval()
    weight = _first_weight(proto, "Gemm")
    assert module.tensor(weight).dtype == torch.float64
    assert module(torch.randn(2, 12)).dtype == torch.float64
    assert module.initializer_values()[weight].dtype == np.float32
    assert (
        module.write_back(proto).graph.initializer[0].data_type
        == proto.graph.initializer[0].data_type
    )


def test_batchnorm_stats_aliased_by_the_exporter_get_private_buffers():
    torch_model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    proto = export(torch_model, torch.randn(2, 3, 6, 6))
    module = OnnxModule(proto)
    bn = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    scale, mean = bn.input[1], bn.input[3]
    module.train()
    module(torch.randn(8, 3, 6, 6) + 3)
    assert torch.all(module.tensor(scale) == 1)  # the scale Parameter was not overwritten
    assert not torch.allclose(module.tensor(mean), torch.zeros(4))
    assert mean in module.initializer_values()


def test_batchnorm_stat_sharing_an_initializer_with_its_scale_is_split():
    """Tools that dedup initializers can point a BN's scale and running var at one tensor."""
    rng = np.random.default_rng(2)
    ones = numpy_helper.from_array(np.ones(3, np.float32), "ones")
    zeros = numpy_helper.from_array(np.zeros(3, np.float32), "zeros")
    node = helper.make_node(
        "BatchNormalization", ["x", "ones", "zeros", "zeros", "ones"], ["y"], name="bn"
    )
    graph = helper.make_graph(
        [node],
        "bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 4])],
        [ones, zeros],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=10)
    module = OnnxModule(proto).train()
    module(torch.from_numpy(rng.standard_normal((6, 3, 4)).astype(np.float32) * 3 + 1))
    assert torch.all(module.tensor("ones") == 1) and torch.all(module.tensor("zeros") == 0)
    written = module.write_back(proto)
    onnx.checker.check_model(written, full_check=True)
    assert list(written.graph.node[0].input[3:]) == ["bn/running_mean", "bn/running_var"]
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    with torch.no_grad():
        assert (
            relative_error(module.eval()(torch.from_numpy(x)).numpy(), run(written, x)[0]) <= 1e-5
        )


def test_training_step_speed_is_close_to_hand_written_torch():
    """Interleaved min-of-blocks timing; the bound is loose so a busy machine does not flake it."""
    import time

    torch.manual_seed(0)
    reference = VGGish()
    module = OnnxModule(export(reference, torch.randn(2, 3, 16, 16)))
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))

    def stepper(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        model.train()

        def step():
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

        return step

    steps = {"torch": stepper(reference), "onnx": stepper(module)}
    best = dict.fromkeys(steps, float("inf"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: less exposed to other processes on a shared machine
    try:
        for _ in range(25):  # many short alternating samples; the minimum ignores bursts of load
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                best[name] = min(best[name], time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    assert best["onnx"] <= 1.5 * best["torch"], best


def test_a_deep_copy_runs_in_its_own_mode():
    """Copies share kernels; each forward must still follow the copy's own train/eval mode."""
    import copy

    proto = export(
        nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)),
        torch.randn(4, 6),
    )
    original = OnnxModule(proto).eval()
    twin = copy.deepcopy(original).train()
    x = torch.randn(16, 6) * 3 + 1
    with torch.no_grad():
        eval_out, train_out = original(x), twin(x)
    assert not torch.allclose(
        eval_out, train_out, atol=1e-3
    )  # batch statistics differ from running ones
    with torch.no_grad():
        assert torch.allclose(original(x), eval_out)  # the original still runs in eval mode
