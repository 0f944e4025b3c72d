"""Each op converter as a one-node model against onnxruntime, across attribute-vs-input
forms and opset versions (the version registry), float32 and float16."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from n2nonnx.backend import OnnxModule
from n2nonnx.runtime import run

RNG = np.random.default_rng(0)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def ints(*values):
    return np.array(values, dtype=np.int64)


class Const:
    """An input stored as an initializer (a shape, axes, pads or a weight)."""

    def __init__(self, value):
        self.value = np.asarray(value)


def one_node(op, inputs, attrs=None, opset=17, outputs=1, domain=""):
    """Build a one-node model; ``inputs`` maps name -> array (graph input), Const, or None (omitted)."""
    graph_inputs, inits, names, feeds = [], [], [], {}
    for name, value in inputs.items():
        if value is None:
            names.append("")
            continue
        names.append(name)
        if isinstance(value, Const):
            inits.append(numpy_helper.from_array(value.value, name))
        else:
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, elem, list(value.shape)))
            feeds[name] = value
    out_names = [f"out{i}" for i in range(outputs)]
    node = helper.make_node(op, names, out_names, name=f"{op.lower()}_node", **(attrs or {}))
    graph = helper.make_graph(
        [node],
        "one",
        graph_inputs,
        [helper.make_empty_tensor_value_info(n) for n in out_names],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, opset)])
    model.ir_version = 10
    inferred = onnx.shape_inference.infer_shapes(model)
    del model.graph.output[:]
    for name in out_names:
        info = next(
            (
                v
                for v in list(inferred.graph.value_info) + list(inferred.graph.output)
                if v.name == name
            ),
            None,
        )
        if (
            info is None
            or not info.type.tensor_type.elem_type
            or not info.type.tensor_type.HasField("shape")
        ):
            first = next(iter(feeds.values()), None)
            elem = (
                helper.np_dtype_to_tensor_dtype(first.dtype)
                if first is not None
                else onnx.TensorProto.FLOAT
            )
            info = helper.make_tensor_value_info(name, elem, None)
            info.type.tensor_type.shape.SetInParent()  # unknown rank is fine for the checker
        model.graph.output.append(info)
    return model, feeds


def check(model, feeds, tolerance=1e-5):
    onnx.checker.check_model(model, full_check=True)
    expected = run(model, feeds)
    module = OnnxModule(model).eval()
    with torch.no_grad():
        actual = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    actual = actual if isinstance(actual, tuple) else (actual,)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        got = got.numpy()
        assert got.shape == want.shape, (got.shape, want.shape)
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        if want.dtype.kind in "fc":
            scale = max(float(np.abs(want).max()) if want.size else 0.0, 1e-6)
            error = (
                float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) / scale
                if want.size
                else 0.0
            )
            assert error <= tolerance, error
        else:
            np.testing.assert_array_equal(got, want)


x4 = rand(2, 4, 9, 7)
CASES = {
    # convolutions
    "conv2d_pads_strides": (
        "Conv",
        {"x": x4, "w": Const(rand(6, 4, 3, 3)), "b": Const(rand(6))},
        {"pads": [1, 1, 1, 1], "strides": [2, 1]},
        17,
        1,
    ),
    "conv2d_asymmetric_pads": (
        "Conv",
        {"x": x4, "w": Const(rand(6, 4, 3, 2))},
        {"pads": [0, 1, 2, 0]},
        17,
        1,
    ),
    "conv2d_groups_dilations": (
        "Conv",
        {"x": x4, "w": Const(rand(8, 2, 3, 3))},
        {"group": 2, "dilations": [2, 1], "pads": [2, 1, 2, 1]},
        17,
        1,
    ),
    "conv2d_depthwise": ("Conv", {"x": x4, "w": Const(rand(4, 1, 3, 3))}, {"group": 4}, 11, 1),
    "conv2d_same_upper": (
        "Conv",
        {"x": x4, "w": Const(rand(3, 4, 4, 3))},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
        17,
        1,
    ),
    "conv2d_same_lower": (
        "Conv",
        {"x": x4, "w": Const(rand(3, 4, 4, 3))},
        {"auto_pad": "SAME_LOWER"},
        17,
        1,
    ),
    "conv2d_valid": ("Conv", {"x": x4, "w": Const(rand(3, 4, 3, 3))}, {"auto_pad": "VALID"}, 17, 1),
    "conv1d": (
        "Conv",
        {"x": rand(2, 3, 11), "w": Const(rand(5, 3, 3)), "b": Const(rand(5))},
        {"pads": [1, 1], "strides": [2]},
        17,
        1,
    ),
    "conv3d": (
        "Conv",
        {"x": rand(1, 2, 5, 6, 4), "w": Const(rand(3, 2, 3, 3, 3))},
        {"pads": [1] * 6},
        17,
        1,
    ),
    "conv_transpose_stride_outpad": (
        "ConvTranspose",
        {"x": rand(2, 4, 5, 5), "w": Const(rand(4, 3, 3, 3)), "b": Const(rand(3))},
        {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
        17,
        1,
    ),
    "conv_transpose_group_asym": (
        "ConvTranspose",
        {"x": rand(1, 4, 4, 5), "w": Const(rand(4, 2, 3, 2))},
        {"group": 2, "pads": [0, 1, 1, 0], "strides": [2, 1]},
        17,
        1,
    ),
    "conv_transpose_same_upper": (
        "ConvTranspose",
        {"x": rand(1, 2, 4, 4), "w": Const(rand(2, 3, 3, 3))},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
        17,
        1,
    ),
    "conv_transpose_1d_dilated": (
        "ConvTranspose",
        {"x": rand(2, 3, 6), "w": Const(rand(3, 2, 3))},
        {"dilations": [2]},
        17,
        1,
    ),
    # linear algebra
    "gemm_transB_bias": (
        "Gemm",
        {"a": rand(5, 6), "b": Const(rand(4, 6)), "c": Const(rand(4))},
        {"transB": 1},
        13,
        1,
    ),
    "gemm_alpha_beta_transA": (
        "Gemm",
        {"a": rand(6, 5), "b": Const(rand(6, 4)), "c": Const(rand(5, 4))},
        {"transA": 1, "alpha": 0.5, "beta": 2.0},
        13,
        1,
    ),
    "gemm_scalar_c": (
        "Gemm",
        {"a": rand(3, 6), "b": Const(rand(6, 4)), "c": Const(rand(1))},
        {},
        13,
        1,
    ),
    "gemm_no_c": ("Gemm", {"a": rand(3, 6), "b": Const(rand(4, 6))}, {"transB": 1}, 13, 1),
    "matmul_batched_broadcast": (
        "MatMul",
        {"a": rand(2, 3, 5, 6), "b": Const(rand(6, 4))},
        {},
        13,
        1,
    ),
    "matmul_vector": ("MatMul", {"a": rand(6), "b": rand(3, 6, 2)}, {}, 13, 1),
    "einsum_attention": (
        "Einsum",
        {"q": rand(2, 3, 5, 4), "k": rand(2, 3, 6, 4)},
        {"equation": "bhqd,bhkd->bhqk"},
        12,
        1,
    ),
    # pooling
    "maxpool_ceil": (
        "MaxPool",
        {"x": x4},
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
        12,
        1,
    ),
    "maxpool_asym_pads_indices": (
        "MaxPool",
        {"x": x4},
        {"kernel_shape": [3, 2], "pads": [1, 0, 0, 1]},
        12,
        2,
    ),
    "maxpool_dilated_indices": (
        "MaxPool",
        {"x": x4},
        {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1]},
        12,
        2,
    ),
    "maxpool_same_upper": (
        "MaxPool",
        {"x": x4},
        {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
        12,
        1,
    ),
    "avgpool_include_pad": (
        "AveragePool",
        {"x": x4},
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
        19,
        1,
    ),
    "avgpool_exclude_pad_asym": (
        "AveragePool",
        {"x": x4},
        {"kernel_shape": [3, 3], "pads": [0, 1, 2, 1]},
        19,
        1,
    ),
    "avgpool_ceil": (
        "AveragePool",
        {"x": x4},
        {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
        19,
        1,
    ),
    "avgpool_1d": (
        "AveragePool",
        {"x": rand(2, 3, 10)},
        {"kernel_shape": [3], "strides": [2]},
        11,
        1,
    ),
    "global_avgpool": ("GlobalAveragePool", {"x": x4}, {}, 1, 1),
    "global_maxpool": ("GlobalMaxPool", {"x": x4}, {}, 1, 1),
    # normalisation
    "batchnorm_eval": (
        "BatchNormalization",
        {
            "x": x4,
            "s": Const(rand(4)),
            "b": Const(rand(4)),
            "m": Const(rand(4)),
            "v": Const(np.abs(rand(4)) + 0.5),
        },
        {"epsilon": 1e-3},
        15,
        1,
    ),
    "layernorm_last": (
        "LayerNormalization",
        {"x": rand(2, 5, 8), "s": Const(rand(8)), "b": Const(rand(8))},
        {},
        17,
        1,
    ),
    "layernorm_axis1_outputs": (
        "LayerNormalization",
        {"x": rand(2, 5, 8), "s": Const(rand(5, 8)), "b": Const(rand(5, 8))},
        {"axis": 1},
        17,
        3,
    ),
    "instancenorm": (
        "InstanceNormalization",
        {"x": x4, "s": Const(rand(4)), "b": Const(rand(4))},
        {},
        6,
        1,
    ),
    "groupnorm_21": (
        "GroupNormalization",
        {"x": x4, "s": Const(rand(4)), "b": Const(rand(4))},
        {"num_groups": 2},
        21,
        1,
    ),
    # activations, old and new forms
    "clip_6_attrs": ("Clip", {"x": rand(3, 4)}, {"min": -0.5, "max": 0.5}, 6, 1),
    "clip_13_min_only": (
        "Clip",
        {"x": rand(3, 4), "lo": Const(np.array(-0.2, np.float32)), "hi": None},
        {},
        13,
        1,
    ),
    "clip_13_runtime": (
        "Clip",
        {"x": rand(3, 4), "lo": np.array(-0.2, np.float32), "hi": np.array(0.3, np.float32)},
        {},
        13,
        1,
    ),
    "softmax_11_coerced": ("Softmax", {"x": rand(2, 3, 4)}, {"axis": 1}, 11, 1),
    "softmax_13": ("Softmax", {"x": rand(2, 3, 4)}, {"axis": 1}, 13, 1),
    "logsoftmax_13": ("LogSoftmax", {"x": rand(2, 3, 4)}, {}, 13, 1),
    "prelu_channel": ("PRelu", {"x": x4, "slope": Const(rand(4, 1, 1))}, {}, 16, 1),
    "gelu_tanh": ("Gelu", {"x": rand(3, 4)}, {"approximate": "tanh"}, 20, 1),
    "hardswish": ("HardSwish", {"x": rand(3, 4) * 4}, {}, 14, 1),
    "leakyrelu": ("LeakyRelu", {"x": rand(3, 4)}, {"alpha": 0.2}, 16, 1),
    "dropout_12_ratio_input": (
        "Dropout",
        {"x": rand(3, 4), "r": Const(np.array(0.3, np.float32))},
        {},
        13,
        1,
    ),
    "dropout_7_attr": ("Dropout", {"x": rand(3, 4)}, {"ratio": 0.3}, 7, 1),
    # shape ops, attribute vs input forms
    "split_11_attr": ("Split", {"x": rand(6, 4)}, {"split": [2, 4]}, 11, 2),
    "split_13_input": ("Split", {"x": rand(6, 4), "s": Const(ints(1, 2, 1))}, {"axis": 1}, 13, 3),
    "split_13_equal": ("Split", {"x": rand(6, 4)}, {}, 13, 3),
    "split_18_num_outputs": ("Split", {"x": rand(7, 4)}, {"num_outputs": 3}, 18, 3),
    "squeeze_11_attr": ("Squeeze", {"x": rand(1, 3, 1, 4)}, {"axes": [0, -2]}, 11, 1),
    "squeeze_13_input": ("Squeeze", {"x": rand(1, 3, 1, 4), "a": Const(ints(2))}, {}, 13, 1),
    "unsqueeze_11_attr": ("Unsqueeze", {"x": rand(3, 4)}, {"axes": [0, 3]}, 11, 1),
    "unsqueeze_13_input": ("Unsqueeze", {"x": rand(3, 4), "a": Const(ints(-1, 0))}, {}, 13, 1),
    "reshape_zero_minus_one": ("Reshape", {"x": rand(2, 3, 4), "s": Const(ints(0, -1))}, {}, 14, 1),
    "reshape_runtime_shape": ("Reshape", {"x": rand(2, 3, 4), "s": ints(4, 6)}, {}, 14, 1),
    "flatten_axis2": ("Flatten", {"x": x4}, {"axis": 2}, 13, 1),
    "transpose": ("Transpose", {"x": x4}, {"perm": [0, 2, 3, 1]}, 13, 1),
    "concat_neg_axis": ("Concat", {"a": rand(2, 3), "b": rand(2, 5)}, {"axis": -1}, 13, 1),
    "slice_10_steps": (
        "Slice",
        {
            "x": rand(6, 8),
            "st": Const(ints(5, 1)),
            "en": Const(ints(-10, 100)),
            "ax": Const(ints(0, 1)),
            "sp": Const(ints(-2, 3)),
        },
        {},
        13,
        1,
    ),
    "slice_1_attr": ("Slice", {"x": rand(6, 8)}, {"starts": [1], "ends": [-1], "axes": [1]}, 9, 1),
    "gather_negative": ("Gather", {"x": rand(5, 4), "i": ints(-1, 0, 3)}, {"axis": 0}, 13, 1),
    "gather_axis1": (
        "Gather",
        {"x": rand(3, 5, 2), "i": ints(4, 1).reshape(2, 1)},
        {"axis": 1},
        13,
        1,
    ),
    "gather_elements": (
        "GatherElements",
        {"x": rand(3, 4), "i": ints(0, 3, -1, 2, 1, 1).reshape(3, 2)},
        {"axis": 1},
        13,
        1,
    ),
    "scatter_elements_add": (
        "ScatterElements",
        {"x": rand(3, 4), "i": ints(0, 0, 1, 1, 2, 2).reshape(3, 2), "u": rand(3, 2)},
        {"axis": 1, "reduction": "add"},
        16,
        1,
    ),
    "scatter_nd": (
        "ScatterND",
        {"x": rand(4, 3), "i": ints(1, 3).reshape(2, 1), "u": rand(2, 3)},
        {},
        13,
        1,
    ),
    "expand": ("Expand", {"x": rand(3, 1), "s": Const(ints(2, 1, 4))}, {}, 13, 1),
    "tile": ("Tile", {"x": rand(2, 3), "r": Const(ints(2, 1))}, {}, 13, 1),
    "pad_11_reflect": (
        "Pad",
        {"x": x4, "p": Const(ints(0, 0, 2, 1, 0, 0, 1, 2))},
        {"mode": "reflect"},
        13,
        1,
    ),
    "pad_11_edge": (
        "Pad",
        {"x": x4, "p": Const(ints(0, 1, 2, 0, 0, 0, 1, 2))},
        {"mode": "edge"},
        13,
        1,
    ),
    "pad_11_constant_value": (
        "Pad",
        {"x": x4, "p": Const(ints(0, 0, 1, 1, 0, 0, 2, 0)), "v": Const(np.array(1.5, np.float32))},
        {},
        13,
        1,
    ),
    "pad_18_axes_wrap": (
        "Pad",
        {"x": x4, "p": Const(ints(1, 2, 2, 1)), "v": None, "a": Const(ints(2, 3))},
        {"mode": "wrap"},
        19,
        1,
    ),
    "pad_2_attrs": ("Pad", {"x": x4}, {"pads": [0, 0, 1, 1, 0, 0, 1, 1], "value": 2.0}, 10, 1),
    "resize_nearest_scales": (
        "Resize",
        {"x": x4, "roi": None, "sc": Const(np.array([1, 1, 2, 2], np.float32))},
        {"mode": "nearest"},
        13,
        1,
    ),
    "resize_linear_sizes": (
        "Resize",
        {"x": x4, "roi": None, "sc": None, "sz": Const(ints(2, 4, 5, 12))},
        {"mode": "linear"},
        13,
        1,
    ),
    "resize_linear_align_corners": (
        "Resize",
        {"x": x4, "roi": None, "sc": Const(np.array([1, 1, 1.5, 0.5], np.float32))},
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        13,
        1,
    ),
    "resize_cubic_pytorch": (
        "Resize",
        {"x": x4, "roi": None, "sc": Const(np.array([1, 1, 2, 2], np.float32))},
        {"mode": "cubic", "coordinate_transformation_mode": "pytorch_half_pixel"},
        13,
        1,
    ),
    "resize_10": (
        "Resize",
        {"x": x4, "sc": Const(np.array([1, 1, 2, 3], np.float32))},
        {"mode": "nearest"},
        10,
        1,
    ),
    "depth_to_space_crd": (
        "DepthToSpace",
        {"x": rand(1, 8, 2, 3)},
        {"blocksize": 2, "mode": "CRD"},
        13,
        1,
    ),
    "space_to_depth": ("SpaceToDepth", {"x": rand(1, 2, 4, 6)}, {"blocksize": 2}, 13, 1),
    "shape_15_slice": ("Shape", {"x": x4}, {"start": 1, "end": -1}, 15, 1),
    "constant_of_shape": (
        "ConstantOfShape",
        {"s": ints(2, 3)},
        {"value": numpy_helper.from_array(np.array([7], np.int32))},
        13,
        1,
    ),
    "range_float": (
        "Range",
        {
            "a": np.array(1.0, np.float32),
            "b": np.array(3.2, np.float32),
            "c": np.array(0.4, np.float32),
        },
        {},
        13,
        1,
    ),
    "where": ("Where", {"c": rand(3, 4) > 0, "a": rand(3, 4), "b": rand(4)}, {}, 16, 1),
    "cast_to_int": ("Cast", {"x": rand(3, 4) * 5}, {"to": onnx.TensorProto.INT32}, 13, 1),
    # reductions, attribute vs input axes
    "reduce_mean_13_attr": ("ReduceMean", {"x": x4}, {"axes": [2, 3], "keepdims": 0}, 13, 1),
    "reduce_mean_18_input": ("ReduceMean", {"x": x4, "a": Const(ints(-1))}, {}, 18, 1),
    "reduce_sum_11_attr": ("ReduceSum", {"x": x4}, {"axes": [1]}, 11, 1),
    "reduce_sum_13_input_all": ("ReduceSum", {"x": x4}, {"keepdims": 0}, 13, 1),
    "reduce_max_18": ("ReduceMax", {"x": x4, "a": Const(ints(1, 3))}, {}, 18, 1),
    "reduce_l2_18": ("ReduceL2", {"x": x4, "a": Const(ints(0))}, {}, 18, 1),
    "argmax_last": (
        "ArgMax",
        {"x": np.array([[1, 3, 3], [2, 2, 0]], np.float32)},
        {"axis": 1, "select_last_index": 1},
        13,
        1,
    ),
    "topk": ("TopK", {"x": rand(3, 6), "k": Const(ints(2))}, {"axis": 1}, 13, 2),
    "cumsum_exclusive_reverse": (
        "CumSum",
        {"x": rand(3, 4), "a": Const(np.array(1, np.int64))},
        {"exclusive": 1, "reverse": 1},
        14,
        1,
    ),
    # float16
    "fp16_gemm": (
        "Gemm",
        {
            "a": rand(5, 6, dtype=np.float16),
            "b": Const(rand(4, 6, dtype=np.float16)),
            "c": Const(rand(4, dtype=np.float16)),
        },
        {"transB": 1},
        13,
        1,
    ),
    "fp16_conv": (
        "Conv",
        {"x": rand(1, 3, 6, 6, dtype=np.float16), "w": Const(rand(4, 3, 3, 3, dtype=np.float16))},
        {"pads": [1, 1, 1, 1]},
        13,
        1,
    ),
    "fp16_softmax": ("Softmax", {"x": rand(2, 5, dtype=np.float16)}, {}, 13, 1),
    "fp16_layernorm": (
        "LayerNormalization",
        {
            "x": rand(2, 8, dtype=np.float16),
            "s": Const(rand(8, dtype=np.float16)),
            "b": Const(rand(8, dtype=np.float16)),
        },
        {},
        17,
        1,
    ),
    "fp16_maxpool": (
        "MaxPool",
        {"x": rand(1, 2, 6, 6, dtype=np.float16)},
        {"kernel_shape": [2, 2], "strides": [2, 2]},
        12,
        1,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_onnxruntime(case):
    op, inputs, attrs, opset, outputs = CASES[case]
    model, feeds = one_node(op, inputs, attrs, opset, outputs)
    is_half = any(getattr(v, "dtype", None) == np.float16 for v in feeds.values())
    check(model, feeds, tolerance=2e-3 if is_half else 1e-5)


def test_dynamic_batch_conv_same_upper_recomputes_pads():
    model, _ = one_node(
        "Conv",
        {"x": rand(1, 2, 5, 5), "w": Const(rand(3, 2, 3, 3))},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    )
    for axis, name in enumerate(("n", "c", "h", "w")):
        model.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = name
    model.graph.output[0].type.tensor_type.ClearField("shape")
    module = OnnxModule(model).eval()
    for size in (5, 8, 11):
        x = rand(2, 2, size, size)
        with torch.no_grad():
            ours = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(ours, run(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_constant_subgraphs_are_folded_once():
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(ints(3, 4))),
        helper.make_node(
            "ConstantOfShape",
            ["c"],
            ["z"],
            value=numpy_helper.from_array(np.array([2.0], np.float32)),
        ),
        helper.make_node("Add", ["x", "z"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fold",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, 4])],
    )
    module = OnnxModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert len(module._steps) == 1  # only the Add runs per forward
    assert torch.equal(module(torch.zeros(3, 4)), torch.full((3, 4), 2.0))
