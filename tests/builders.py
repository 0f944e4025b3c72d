"""Models built by hand with onnx.helper, whose layers are known by construction."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_model(
    nodes, inputs, outputs, initializers, opset: int, name: str = "g"
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)
    )
    onnx.checker.check_model(model)
    return model


def tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32) * 0.3


def value(name: str, *shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def gemm_mlp(opset: int, seed: int = 0) -> onnx.ModelProto:
    """An MLP with BatchNorm, Dropout and a Sum join.

    fc1 (Gemm transB=1, 12->16) -BN-Relu-Dropout-> fc2 (Gemm transB=0, 16->8) -Relu-\
                                              `-> proj (Gemm transB=1, 16->8) ---- Sum -> fc3 (MatMul 8->4) + bias Add
    """
    rng = np.random.default_rng(seed)
    dropout = (
        helper.make_node("Dropout", ["a1"], ["d1"], ratio=0.5)
        if opset < 12
        else helper.make_node("Dropout", ["a1"], ["d1"])
    )
    bn_attrs = {"epsilon": 1e-5}
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["z1"], transB=1, name="fc1"),
        helper.make_node(
            "BatchNormalization", ["z1", "s1", "t1", "m1", "v1"], ["n1"], name="bn1", **bn_attrs
        ),
        helper.make_node("Relu", ["n1"], ["a1"], name="relu1"),
        dropout,
        helper.make_node("Gemm", ["d1", "w2", "b2"], ["z2"], name="fc2"),
        helper.make_node("Relu", ["z2"], ["a2"], name="relu2"),
        helper.make_node("Gemm", ["d1", "wp", "bp"], ["d1s"], transB=1, name="proj"),
        helper.make_node("Sum", ["a2", "d1s"], ["s2"], name="sum"),
        helper.make_node("MatMul", ["s2", "w3"], ["m3"], name="fc3"),
        helper.make_node("Add", ["m3", "b3"], ["y"], name="fc3_bias"),
    ]
    initializers = [
        tensor("w1", rand(rng, 16, 12)),
        tensor("b1", rand(rng, 16)),
        tensor("s1", 1 + rand(rng, 16)),
        tensor("t1", rand(rng, 16)),
        tensor("m1", rand(rng, 16)),
        tensor("v1", 1 + np.abs(rand(rng, 16))),
        tensor("w2", rand(rng, 16, 8)),
        tensor("b2", rand(rng, 8)),
        tensor("wp", rand(rng, 8, 16)),
        tensor("bp", rand(rng, 8)),
        tensor("w3", rand(rng, 8, 4)),
        tensor("b3", rand(rng, 4)),
    ]
    return make_model(nodes, [value("x", "N", 12)], [value("y", "N", 4)], initializers, opset)


def conv_net(opset: int, seed: int = 0) -> onnx.ModelProto:
    """x(N,2,8,8) -conv3x3(4)-BN-Relu- MaxPool -Flatten- Gemm(transA=0, transB=1, no C) 5."""
    rng = np.random.default_rng(seed)
    bn_attrs = {"epsilon": 1e-5}
    nodes = [
        helper.make_node(
            "Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"
        ),
        helper.make_node(
            "BatchNormalization", ["c", "s", "t", "m", "v"], ["n"], name="bn", **bn_attrs
        ),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc"),
    ]
    initializers = [
        tensor("fb", rand(rng, 5)),
        tensor("cw", rand(rng, 4, 2, 3, 3)),
        tensor("cb", rand(rng, 4)),
        tensor("s", 1 + rand(rng, 4)),
        tensor("t", rand(rng, 4)),
        tensor("m", rand(rng, 4)),
        tensor("v", 1 + np.abs(rand(rng, 4))),
        tensor("fw", rand(rng, 5, 64)),
    ]
    return make_model(nodes, [value("x", "N", 2, 8, 8)], [value("y", "N", 5)], initializers, opset)


def left_weight_gemm(opset: int = 11, seed: int = 0) -> onnx.ModelProto:
    """Column-major layers: y = W2 @ relu(W1^T' @ x) with x of shape (6, N) (features first)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Gemm", ["w1", "x"], ["z"], transA=1, name="colfc1"),  # W1 stored (6, 10)
        helper.make_node("Relu", ["z"], ["a"], name="relu"),
        helper.make_node("MatMul", ["w2", "a"], ["y"], name="colfc2"),  # W2 (3, 10)
    ]
    initializers = [tensor("w1", rand(rng, 6, 10)), tensor("w2", rand(rng, 3, 10))]
    return make_model(nodes, [value("x", 6, "N")], [value("y", 3, "N")], initializers, opset)


def constant_node_weights(seed: int = 0) -> onnx.ModelProto:
    """Weights in Constant nodes and constant subgraphs (Transpose / Cast / Reshape of constants)."""
    rng = np.random.default_rng(seed)
    w1 = rand(rng, 3, 2, 3, 3)
    w2_transposed = rand(rng, 8, 3 * 4 * 4)
    nodes = [
        helper.make_node("Constant", [], ["w1"], value=tensor("w1_value", w1), name="const_w1"),
        helper.make_node("Conv", ["x", "w1"], ["c"], kernel_shape=[3, 3], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node(
            "Constant",
            [],
            ["w2t64"],
            value=tensor("w2_value", w2_transposed.astype(np.float64)),
            name="const_w2",
        ),
        helper.make_node("Cast", ["w2t64"], ["w2t"], to=TensorProto.FLOAT, name="cast_w2"),
        helper.make_node("Transpose", ["w2t"], ["w2"], perm=[1, 0], name="transpose_w2"),
        helper.make_node("MatMul", ["f", "w2"], ["y"], name="fc"),
    ]
    return make_model(nodes, [value("x", "N", 2, 6, 6)], [value("y", "N", 8)], [], 13)


def symbolic_spatial() -> onnx.ModelProto:
    """A conv whose input height and width are symbolic."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node(
            "Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"
        ),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fw"], ["y"], transB=1, name="fc"),
    ]
    inits = [tensor("w", rand(rng, 4, 3, 3, 3)), tensor("fw", rand(rng, 2, 4))]
    return make_model(nodes, [value("x", "N", 3, "H", "W")], [value("y", "N", 2)], inits, 13)


def no_layers() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    return make_model(nodes, [value("x", "N", 4)], [value("y", "N", 4)], [], 13)


def custom_domain_before_layer() -> onnx.ModelProto:
    """A custom-domain op whose output shape onnx cannot infer, feeding a conv."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Mystery", ["x"], ["m"], domain="com.example", name="mystery"),
        helper.make_node("Conv", ["m", "w"], ["y"], kernel_shape=[3, 3], name="conv"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [value("x", "N", 3, 8, 8)],
        [value("y", "N", 4, 6, 6)],
        initializer=[tensor("w", rand(rng, 4, 3, 3, 3))],
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def dangling_input() -> onnx.ModelProto:
    """A node reads a tensor nothing produces (an inconsistent graph)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["nowhere", "w"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(
        nodes,
        "g",
        [value("x", "N", 4)],
        [value("y", "N", 2)],
        initializer=[tensor("w", rand(rng, 2, 4))],
    )
    opsets = [helper.make_opsetid("", 13)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def reordered_blocks(graph, order: list[int]):
    """A unit graph's blocks laid out in ``order``: (blocks, permutation, inverse).

    ``permutation[new] = old`` node index; ``inverse[old] = new``.
    """
    from n2nonnx.connectivity import Block

    blocks, start, pieces = [], 0, []
    for i in order:
        b = graph.blocks[i]
        blocks.append(Block(b.name, start, b.size, b.depth, b.weight))
        pieces.append(np.arange(b.start, b.stop))
        start += b.size
    permutation = np.concatenate(pieces)
    inverse = np.empty_like(permutation)
    inverse[permutation] = np.arange(len(permutation))
    return tuple(blocks), permutation, inverse


def random_masks(model, density: float = 0.2, seed: int = 0):
    """A test's own preliminary pruning: a random mask per layer (at least one kept)."""
    from n2nonnx import masks

    rng = np.random.default_rng(seed)
    new = {}
    for layer in model.layers:
        mask = (rng.random(layer.weight_shape) < density).astype(np.float32)
        mask.reshape(-1)[0] = 1.0
        new[layer.weight] = mask
    return masks.apply_masks(model, new)


def nonzeros(model, skip: bool | None = None) -> int:
    """Non-zero effective weights of a model's layers (only skip or sequential ones if asked)."""
    return sum(
        int(np.count_nonzero(model.effective_weight(layer)))
        for layer in model.layers
        if skip is None or layer.is_skip == skip
    )
