"""Data sources (built-in, arrays, .npz, torch Datasets), shape fitting and every DataError."""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from n2nonnx.data import (
    TrainTestData,
    builtin_names,
    cache_dir,
    from_arrays,
    model_input,
    resolve_data,
)
from n2nonnx.errors import DataError, InvalidArgumentError, N2NError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test generates into its own cache directory."""
    monkeypatch.setenv("N2NONNX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def arrays(n_train=30, n_test=10, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n_train, features)),
        rng.integers(0, classes, n_train),
        rng.normal(size=(n_test, features)),
        rng.integers(0, classes, n_test),
    )


# ------------------------------------------------------------------------- built-in


def test_builtin_names():
    assert {"mnist1d", "digits", "synthetic"} <= set(builtin_names())


def test_cache_dir_follows_environment(private_cache):
    assert cache_dir() == private_cache


def test_mnist1d_defaults_are_generated_cached_and_standardized(private_cache):
    numpy_state, python_state = np.random.get_state()[1].copy(), random.getstate()
    data = resolve_data("mnist1d")
    assert data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.num_classes == 10
    assert data.x_train.mean(0).abs().max() < 1e-4
    assert (data.x_train.std(0, correction=0) - 1).abs().max() < 1e-3
    assert data.info["standardized"] is True
    # the generator's global seeding did not leak into the caller's random state
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    assert random.getstate() == python_state
    cached = list(private_cache.glob("mnist1d_*.npz"))
    assert len(cached) == 1
    again = resolve_data("mnist1d")
    assert torch.equal(again.x_train, data.x_train)


def test_mnist1d_options_and_cnn_layout(private_cache):
    data = resolve_data("mnist1d:train=300,test=100,standardize=false", input_shape=("N", 1, 40))
    assert data.x_train.shape == (300, 1, 40) and data.x_test.shape == (100, 1, 40)
    assert "standardized" not in data.info


def test_mnist1d_corrupt_cache_is_regenerated(private_cache):
    first = resolve_data("mnist1d:train=100,test=100")
    (cached,) = private_cache.glob("mnist1d_*.npz")
    cached.write_bytes(b"not a zip file")
    second = resolve_data("mnist1d:train=100,test=100")
    assert torch.equal(first.x_train, second.x_train)


def test_digits_flat_and_image_layouts():
    flat = resolve_data("digits", input_shape=(None, 64))
    assert flat.x_train.shape[1:] == (64,)
    assert len(flat.x_train) + len(flat.x_test) == 1797
    assert float(flat.x_train.min()) >= 0.0 and float(flat.x_train.max()) <= 1.0
    image = resolve_data("digits", input_shape=("batch", 1, 8, 8))
    assert image.x_train.shape[1:] == (1, 8, 8)
    assert torch.equal(image.x_train.reshape(len(image.x_train), -1), flat.x_train)


def test_synthetic_options_and_seed():
    data = resolve_data("synthetic:features=12,classes=3,train=90,test=30,seed=4")
    assert data.x_train.shape == (90, 12) and data.x_test.shape == (30, 12)
    assert data.num_classes == 3
    same = resolve_data("synthetic:features=12,classes=3,train=90,test=30,seed=4")
    other = resolve_data("synthetic:features=12,classes=3,train=90,test=30,seed=5")
    assert torch.equal(data.x_train, same.x_train)
    assert not torch.equal(data.x_train, other.x_train)


def test_unknown_name_and_options():
    with pytest.raises(DataError, match="unknown data set 'imagenet'.*mnist1d"):
        resolve_data("imagenet")
    with pytest.raises(InvalidArgumentError, match="no option 'colour'"):
        resolve_data("synthetic:colour=3")
    with pytest.raises(InvalidArgumentError, match="not key=value"):
        resolve_data("synthetic:classes")
    with pytest.raises(InvalidArgumentError, match="classes"):
        resolve_data("synthetic:classes=1")


# ------------------------------------------------------------------------- arrays


def test_arrays_four_tuple_pairs_and_mapping():
    x_train, y_train, x_test, y_test = arrays()
    four = resolve_data((x_train, y_train, x_test, y_test))
    pairs = resolve_data(((x_train, y_train), (x_test, y_test)))
    mapping = resolve_data(dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test))
    tensors = resolve_data(tuple(torch.as_tensor(a) for a in (x_train, y_train, x_test, y_test)))
    for data in (four, pairs, mapping, tensors):
        assert isinstance(data, TrainTestData)
        assert data.x_train.shape == (30, 5) and data.y_test.shape == (10,)
        assert data.train.x is data.x_train and data.test.y is data.y_test
        assert torch.equal(data.x_train, four.x_train)


def test_single_set_is_split_reproducibly():
    x_train, y_train, _, _ = arrays(n_train=50)
    data = resolve_data((x_train, y_train), seed=3)
    assert len(data.x_train) == 40 and len(data.x_test) == 10
    assert torch.equal(data.x_train, resolve_data((x_train, y_train), seed=3).x_train)
    assert data.info["holdout"] == {"test_fraction": 0.2, "seed": 3}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: (a[0], a[1][:, None].repeat(2, 1), a[2], a[3]), "y_train has shape"),
        (lambda a: (a[0], a[1][:-1], a[2], a[3]), "y_train has 29 labels"),
        (lambda a: (a[0], a[1], a[2][:, :4], a[3]), "x_test samples have shape"),
        (lambda a: (a[0], a[1] - 5, a[2], a[3]), "negative labels"),
        (lambda a: (a[0], a[1] + 0.5, a[2], a[3]), "integer class indices"),
        (lambda a: (a[0][:, 0], a[1], a[2], a[3]), "x_train has shape"),
        (lambda a: (a[0][:0], a[1][:0], a[2], a[3]), "empty split"),
        (lambda a: (a[0], a[1], a[2]), "sequence of 3 items"),
    ],
)
def test_malformed_arrays(mutate, message):
    with pytest.raises(DataError, match=message):
        resolve_data(mutate(arrays()))


def test_unreadable_data_object():
    with pytest.raises(DataError, match="cannot read training data from int"):
        resolve_data(42)


def test_mapping_missing_key():
    x_train, y_train, x_test, _ = arrays()
    with pytest.raises(DataError, match="no array 'y_test'"):
        from_arrays(dict(x_train=x_train, y_train=y_train, x_test=x_test))


# ------------------------------------------------------------------------- .npz


def test_npz_file(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, **dict(zip(("x_train", "y_train", "x_test", "y_test"), arrays(), strict=True)))
    data = resolve_data(str(path), input_shape=("N", 5))
    assert data.name == "mine.npz" and data.x_train.shape == (30, 5)
    assert torch.equal(resolve_data(path).x_test, data.x_test)


def test_npz_missing_key_is_named(tmp_path):
    path = tmp_path / "partial.npz"
    x_train, y_train, x_test, _ = arrays()
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test)
    with pytest.raises(
        DataError, match=r"partial.npz has no array 'y_test' \(found: x_test, x_train, y_train\)"
    ):
        resolve_data(path)


def test_npz_misshaped_array_is_named(tmp_path):
    path = tmp_path / "bad.npz"
    x_train, y_train, x_test, y_test = arrays()
    np.savez(path, x_train=x_train, y_train=np.eye(3)[y_train], x_test=x_test, y_test=y_test)
    with pytest.raises(DataError, match=r"y_train has shape \(30, 3\).*argmax"):
        resolve_data(path)


def test_npz_missing_or_corrupt_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        resolve_data(str(tmp_path / "absent.npz"))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read"):
        resolve_data(corrupt)


# ------------------------------------------------------------------------- torch


def test_torch_dataset_single_and_pair():
    x_train, y_train, x_test, y_test = (torch.as_tensor(a) for a in arrays())
    train_set = torch.utils.data.TensorDataset(x_train, y_train)
    test_set = torch.utils.data.TensorDataset(x_test, y_test)
    pair = resolve_data((train_set, test_set))
    assert torch.allclose(pair.x_train, x_train.float()) and torch.equal(pair.y_test, y_test)
    single = resolve_data(train_set, seed=1)
    assert len(single.x_train) == 24 and len(single.x_test) == 6


def test_torch_dataset_with_bad_items():
    class Unlabelled(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return torch.zeros(3)

    with pytest.raises(DataError, match="items must be \\(input, label\\)"):
        resolve_data(Unlabelled())


# ------------------------------------------------------------------------- shapes


def one_input_model(shape):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    return helper.make_model(graph)


def test_model_input_reads_symbolic_batch():
    spec = model_input(one_input_model(["batch", 1, 40]))
    assert spec.name == "x" and spec.shape == ("batch", 1, 40)
    assert spec.elem_type == TensorProto.FLOAT


def test_model_input_requires_one_input():
    proto = one_input_model(["batch", 4])
    proto.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1]))
    with pytest.raises(DataError, match="exactly one data input.*x, z"):
        model_input(proto)
    assert isinstance(proto, onnx.ModelProto)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(DataError) as caught:
        resolve_data("digits", input_shape=("batch", 3, 32, 32), input_name="x")
    message = str(caught.value)
    assert "(64,)" in message and "(batch, 3, 32, 32)" in message and "'x'" in message
    assert "(1, 8, 8)" in message and "pass inputs shaped (N, 3, 32, 32)" in message


def test_user_data_is_not_reshaped_silently():
    with pytest.raises(DataError, match=r"samples of shape \(5,\)"):
        resolve_data(arrays(), input_shape=("N", 1, 5))


def test_every_data_error_is_an_n2n_error():
    assert issubclass(DataError, N2NError) and issubclass(InvalidArgumentError, N2NError)
