"""Hostile input and faults, through the command line the way a user runs it.

The promise under test (see ``n2nonnx.cli``): bad input gets one ``error:`` line on stderr
and exit status 2; a failure of the work (divergence, a failed check) one ``failed:`` line
and exit status 1; never a traceback, never a half-written output or a scratch folder
left behind, and the input files are never modified.

The commands run in real subprocesses. To keep the module fast on a small machine, most
cases are grouped: this file, run as a script, executes a list of command lines through
``n2nonnx.cli.main`` in one process (stdout and stderr captured at the file-descriptor
level, so anything a C library or a warning prints counts too) and reports the results as
JSON; a few cases run as ``python -m n2nonnx`` one process per command.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": ""}
TINY = "synthetic:features=40,classes=10,train=64,test=32"
FAST = ["--epochs", "1", "--batch-size", "32"]


# --------------------------------------------------------------------------------------
# fixtures: small models and hostile files, built once per module
# --------------------------------------------------------------------------------------


def _with_metadata(source: Path, target: Path, value: str) -> Path:
    import onnx

    proto = onnx.load(str(source))
    del proto.metadata_props[:]
    proto.metadata_props.add(key="n2nonnx", value=value)
    target.write_bytes(proto.SerializeToString())
    return target


def _fp16_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], transB=1, name="fc2"),
    ]
    inits = [
        numpy_helper.from_array(
            rng.standard_normal(shape).astype(np.float16) * np.float16(0.2), name
        )
        for name, shape in (("w1", (16, 40)), ("b1", (16,)), ("w2", (10, 16)), ("b2", (10,)))
    ]
    graph = helper.make_graph(
        nodes,
        "fp16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


def _empty_weight_model(path: Path) -> Path:
    """x (N, 8) -> MatMul with an 8x0 weight -> MatMul 0x4 (a layer with no weight at all)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="empty"),
        helper.make_node("MatMul", ["h", "w2"], ["y"], name="after"),
    ]
    inits = [
        numpy_helper.from_array(np.zeros((8, 0), np.float32), "w1"),
        numpy_helper.from_array(np.zeros((0, 4), np.float32), "w2"),
    ]
    graph = helper.make_graph(
        nodes,
        "empty",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


def _two_layer_model(
    path: Path,
    w1: np.ndarray | None = None,
    *,
    names: tuple[str, str] = ("fc1", "fc2"),
    opset: int = 17,
    ir_version: int = 8,
) -> Path:
    """x (N, 40) -> Gemm 16 -> Relu -> Gemm 10, float32 (NaN, zero, clashing names, opset ...)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name=names[0]),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], transB=1, name=names[1]),
    ]
    arrays = {
        "w1": rng.standard_normal((16, 40)).astype(np.float32) * 0.2 if w1 is None else w1,
        "b1": np.zeros(16, np.float32),
        "w2": rng.standard_normal((10, 16)).astype(np.float32) * 0.2,
        "b2": np.zeros(10, np.float32),
    }
    graph = helper.make_graph(
        nodes,
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(value, name) for name, value in arrays.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version
    )
    onnx.save(model, str(path))
    return path


def _corrupt_storage_model(path: Path) -> Path:
    """A deployed (compactly stored) two-layer model whose gaps of w1 run past the tensor."""
    import onnx
    from onnx import numpy_helper

    from n2nonnx.deployment.storage import compact_storage

    sparse = np.zeros((16, 40), np.float32)
    sparse[:, ::8] = 0.5
    proto, records = compact_storage(onnx.load(str(_two_layer_model(path, sparse))))
    assert [record.name for record in records] == ["w1"]
    gaps = next(t for t in proto.graph.initializer if t.name == "w1/gaps")
    gaps.CopyFrom(numpy_helper.from_array(np.full(gaps.dims, 255, np.uint8), gaps.name))
    onnx.save(proto, str(path))
    return path


def _matmul_model(path: Path, kind: str) -> Path:
    """x (N, 40) -> MatMul 10 in int32 or bfloat16, or float32 behind Quantize/DequantizeLinear."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((40, 10)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    elem = {"int32": TensorProto.INT32, "bf16": TensorProto.BFLOAT16}.get(kind, TensorProto.FLOAT)
    if kind == "int32":
        init = numpy_helper.from_array(np.round(weight).astype(np.int32), "w")
    elif kind == "bf16":
        bits = (weight.view(np.uint32) >> 16).astype(np.uint16)
        init = helper.make_tensor("w", TensorProto.BFLOAT16, (40, 10), bits.tobytes(), raw=True)
    else:  # an already quantized (QDQ) model
        init = numpy_helper.from_array(weight, "w")
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant"),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dequant"),
            helper.make_node("MatMul", ["dq", "w"], ["y"], name="fc"),
        ]
    extra = (
        [
            numpy_helper.from_array(np.array(0.05, np.float32), "s"),
            numpy_helper.from_array(np.array(128, np.uint8), "z"),
        ]
        if kind == "qdq"
        else []
    )
    graph = helper.make_graph(
        nodes,
        kind,
        [helper.make_tensor_value_info("x", elem, ["N", 40])],
        [helper.make_tensor_value_info("y", elem, ["N", 10])],
        [init, *extra],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


def _npz(path: Path, **arrays: Any) -> Path:
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)
    return path


def _data(rng: np.random.Generator, features: int = 40, classes: int = 10) -> dict[str, np.ndarray]:
    return {
        "x_train": rng.standard_normal((64, features)).astype(np.float32),
        "y_train": rng.integers(0, classes, 64),
        "x_test": rng.standard_normal((32, features)).astype(np.float32),
        "y_test": rng.integers(0, classes, 32),
    }


def _huge_header_npz(path: Path, good: dict[str, np.ndarray]) -> Path:
    """An .npz whose x_train header claims 10**12 rows (its data is a few bytes)."""
    import io as bytes_io

    header = bytes_io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 40)}
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", header.getvalue() + b"\0" * 64)
        for key in ("y_train", "x_test", "y_test"):
            member = bytes_io.BytesIO()
            np.save(member, good[key])
            archive.writestr(f"{key}.npy", member.getvalue())
    return path


def _huge_mask_npz(path: Path, weight: str) -> Path:
    """An .npz of masks whose one header claims (10**12, 40) float32 (146 TiB)."""
    import io as bytes_io

    header = bytes_io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 40)}
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{weight}.npy", header.getvalue() + b"\0" * 64)
    return path


def build_fixtures(root: Path) -> dict[str, str]:
    """Every input file the cases read, in ``root/in`` (never modified by any command)."""
    import onnx

    import n2nonnx
    from n2nonnx.zoo import export_builtin

    folder = root / "in"
    folder.mkdir(parents=True)
    files: dict[str, Path] = {}
    files["m"] = export_builtin("mlp", folder / "m.onnx", 0, {"hidden": [16, 16, 16]})
    model = n2nonnx.load(files["m"])
    names = [layer.name for layer in model.layers]
    weights = [layer.weight for layer in model.layers]
    pruned = n2nonnx.prune(model, "random", 0.5, seed=0)
    files["pruned"] = n2nonnx.save(pruned, folder / "pruned.onnx")
    document = next(
        p.value for p in onnx.load(str(files["pruned"])).metadata_props if p.key == "n2nonnx"
    )
    for key, value in {
        "meta_text": "{not json",
        "meta_nul": document[:-1] + "\x00}",
        "meta_deep": "[" * 100_000 + "]" * 100_000,
        "meta_deep_dict": '{"version":1,"stages":' + "[" * 100_000 + "]" * 100_000 + "}",
        "meta_stages_text": '{"version": 1, "stages": "prune"}',
        "meta_stages_junk": '{"version": 1, "stages": [1, "x", null, [], {"stage": 7}]}',
        "meta_list": "[1, 2, 3]",
    }.items():
        files[key] = _with_metadata(files["pruned"], folder / f"{key}.onnx", value)
    files["fp16"] = _fp16_model(folder / "fp16.onnx")
    files["nan_out"] = _two_layer_model(
        folder / "nan_out.onnx", np.full((16, 40), np.nan, np.float32)
    )
    files["constant_out"] = _two_layer_model(
        folder / "constant_out.onnx", np.zeros((16, 40), np.float32)
    )
    files["same_names"] = _two_layer_model(folder / "same_names.onnx", names=("fc", "fc"))
    files["future_opset"] = _two_layer_model(folder / "future_opset.onnx", opset=99, ir_version=11)
    for kind in ("int32", "bf16", "qdq"):
        files[kind] = _matmul_model(folder / f"{kind}.onnx", kind)
    files["corrupt_storage"] = _corrupt_storage_model(folder / "corrupt_storage.onnx")
    files["masks_bomb"] = _huge_mask_npz(folder / "masks_bomb.npz", weights[0])
    files["empty_weight"] = _empty_weight_model(folder / "empty_weight.onnx")
    rng = np.random.default_rng(0)
    good = _data(rng)
    files["good_npz"] = _npz(folder / "good.npz", **good)
    files["labels_oob"] = _npz(
        folder / "labels_oob.npz",
        **{**good, "y_train": good["y_train"] + 50, "y_test": good["y_test"] + 50},
    )
    files["labels_bool"] = _npz(
        folder / "labels_bool.npz",
        **{**good, "y_train": good["y_train"] % 2 == 0, "y_test": good["y_test"] % 2 == 0},
    )
    x_nan = good["x_train"].copy()
    x_nan[3, 5] = np.nan
    files["x_nan"] = _npz(folder / "x_nan.npz", **{**good, "x_train": x_nan})
    files["test_nan"] = _npz(
        folder / "test_nan.npz", **{**good, "x_test": np.full((32, 40), np.nan, np.float32)}
    )
    overflow = good["x_train"].astype(np.float64)
    overflow[0, 0] = 1e300
    files["overflow"] = _npz(folder / "overflow.npz", **{**good, "x_train": overflow})
    files["huge_header"] = _huge_header_npz(folder / "huge_header.npz", good)
    files["one_sample"] = _npz(
        folder / "one_sample.npz",
        **{**good, "x_train": good["x_train"][:1], "y_train": good["y_train"][:1]},
    )
    files["empty_npz"] = folder / "empty.npz"
    files["empty_npz"].write_bytes(b"")
    np.save(folder / "plain.npy", good["x_train"])
    files["npy_as_npz"] = folder / "npy_renamed.npz"
    (folder / "plain.npy").rename(files["npy_as_npz"])
    files["masks_zero"] = _npz(
        folder / "masks_zero.npz",
        **{w: np.zeros(model.initializer(w).shape, np.float32) for w in weights},
    )
    nan_mask = np.full(model.initializer(weights[0]).shape, np.nan, np.float32)
    files["masks_nan"] = _npz(folder / "masks_nan.npz", **{weights[0]: nan_mask})
    files["masks_text"] = _npz(
        folder / "masks_text.npz",
        **{weights[0]: np.full(model.initializer(weights[0]).shape, "yes")},
    )
    files["report_md"] = folder / "report.md"
    files["report_md"].write_bytes(
        files["m"].read_bytes()
    )  # a model that happens to be named report.md
    (folder / "other").mkdir()
    files["results_json"] = folder / "other" / "results.json"
    files["results_json"].write_bytes(files["m"].read_bytes())
    files["read_only"] = root / "read-only"
    files["read_only"].mkdir()
    files["read_only"].chmod(0o555)
    result = {key: str(path) for key, path in files.items()}
    result["layers"] = json.dumps(names)
    return result


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(folder: Path) -> list[str]:
    """Scratch files and folders of n2nonnx's atomic writes anywhere under ``folder``."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name.startswith(".n2nonnx-") or p.name.endswith(".tmp")
    )


# --------------------------------------------------------------------------------------
# the cases: (argv, expected exit status, words the one stderr line must hold)
# --------------------------------------------------------------------------------------

REFUSED = 2
FAILED = 1
ACCEPTED = 0


def cases(f: dict[str, str], out: Path) -> dict[str, dict[str, Any]]:
    """Every case of the grouped run; each writes only under ``out/<case>/``."""
    m, pruned, layers = f["m"], f["pruned"], json.loads(f["layers"])
    ro = f["read_only"]
    table: dict[str, dict[str, Any]] = {}

    def case(name: str, code: int, words: str, *argv: Any, fsize: int | None = None) -> None:
        folder = out / name
        table[name] = {
            "argv": [str(a).replace("{o}", str(folder)) for a in argv],
            "code": code,
            "words": words,
            "fsize": fsize,
        }

    def refused(name: str, words: str, *argv: Any, fsize: int | None = None) -> None:
        case(name, REFUSED, words, *argv, fsize=fsize)

    o = "{o}/o.onnx"
    train = ["train", m, "-o", o, *FAST, "--no-progress"]
    # 1. data loss: an output that is an input
    refused("history_is_input", "is an input", *train, "--data", TINY, "--history", m)
    refused("history_is_output", "is an input", *train, "--data", TINY, "--history", o, "--force")
    # 2. run's report files: an input named like one, a user's file in the folder
    refused(
        "run_report_is_input",
        "is an input",
        "run",
        f["report_md"],
        "--out",
        Path(f["report_md"]).parent,
        "--data",
        TINY,
    )
    refused(
        "run_results_is_input",
        "is an input",
        "run",
        f["results_json"],
        "--out",
        Path(f["results_json"]).parent,
        "--data",
        TINY,
    )
    refused("run_dense_exists", "exists; pass --force", "run", "--out", "{o}", "--data", TINY)
    # options that cannot apply to the method are refused, not ignored
    prune = ["prune", m, "-o", o, "--data", TINY, "--no-progress"]
    refused(
        "snacs_with_n2nskip",
        "drop one of them",
        *prune,
        "--method",
        "snacs",
        "--prune-percent",
        "20",
        "--n2nskip",
    )
    refused(
        "snacs_with_masks",
        "drop --masks",
        *prune,
        "--method",
        "snacs",
        "--prune-percent",
        "20",
        "--masks",
        m,
    )
    refused(
        "structured_negative_align",
        "align must be",
        *prune,
        "--method",
        "l1-filter",
        "--prune-percent",
        "20",
        "--align",
        "-16",
    )
    # 5. unwritable outputs: read-only folder, full disk, too long a name
    refused(
        "ro_prune",
        "not writable",
        "prune",
        m,
        "-o",
        f"{ro}/o.onnx",
        "--method",
        "random",
        "--density",
        0.3,
    )
    refused("ro_skip", "not writable", "skip", pruned, "-o", f"{ro}/o.onnx")
    refused("ro_train", "not writable", "train", m, "-o", f"{ro}/o.onnx", "--data", TINY, *FAST)
    refused("ro_deploy", "not writable", "deploy", m, "-o", f"{ro}/o.onnx")
    refused(
        "ro_connectivity_json",
        "not writable",
        "connectivity",
        "--dense-reference",
        pruned,
        "--json",
        f"{ro}/r.json",
    )
    refused("ro_run", "not writable", "run", m, "--out", f"{ro}/run", "--data", TINY)
    refused("ro_study", "not writable", "study", "--out", f"{ro}/study", "--data", TINY)
    refused(
        "full_disk_json",
        "File too large",
        "connectivity",
        "--dense-reference",
        pruned,
        "--json",
        "{o}/r.json",
        fsize=2000,
    )
    refused(
        "full_disk_model",
        "File too large",
        "prune",
        m,
        "-o",
        o,
        "--method",
        "random",
        "--density",
        0.3,
        fsize=2000,
    )
    refused(
        "full_disk_run",
        "File too large",
        "run",
        m,
        "--out",
        "{o}/run",
        "--data",
        TINY,
        *FAST,
        "--no-baselines",
        "--no-deploy",
        "--no-connectivity",
        "--no-progress",
        fsize=20_000,
    )
    long = "a" * 300
    refused(
        "long_name_model",
        "longer than 255",
        "prune",
        m,
        "-o",
        f"{{o}}/{long}.onnx",
        "--density",
        0.3,
    )
    refused(
        "long_name_json",
        "longer than 255",
        "connectivity",
        "--dense-reference",
        pruned,
        "--json",
        f"{{o}}/{long}.json",
    )
    refused(
        "long_name_history",
        "longer than 255",
        *train,
        "--data",
        TINY,
        "--history",
        f"{{o}}/{long}.json",
    )
    refused(
        "long_name_out", "longer than 255", "run", m, "--out", f"{{o}}/{long}/run", "--data", TINY
    )
    # 6. out-of-range options
    for verb, argv in {
        "prune": ["prune", m, "-o", o, "--density", 0.3],
        "skip": ["skip", pruned, "-o", o],
        "run": ["run", "--out", "{o}/run"],
        "study": ["study", "--out", "{o}/study", "--seeds"],
    }.items():
        refused(
            f"seed_negative_{verb}",
            "outside [0, 2**63)",
            *argv,
            *(["-1"] if verb == "study" else ["--seed", "-1"]),
        )
    refused("seed_huge_train", "outside [0, 2**63)", *train, "--data", TINY, "--seed", 2**70)
    refused("device_meta", "device='meta' cannot train", *train, "--data", TINY, "--device", "meta")
    refused(
        "times_huge", "--times", "connectivity", "--dense-reference", pruned, "--times", "1e308"
    )
    refused("times_nan", "--times", "connectivity", "--dense-reference", pruned, "--times", "nan")
    refused("empty_weight", "empty weight", "connectivity", "--dense-reference", f["empty_weight"])
    refused("fp16_run", "FLOAT16", "run", f["fp16"], "--out", "{o}/run", "--data", TINY, *FAST)
    # 7. labels the model cannot score, impossible sizes, files that are not .npz
    for method in ("snip", "grasp", "scl"):
        refused(
            f"labels_out_of_range_{method}",
            "class scores",
            "prune",
            m,
            "-o",
            o,
            "--method",
            method,
            "--density",
            0.3,
            "--data",
            f["labels_oob"],
        )
    refused(
        "labels_out_of_range_run",
        "class scores",
        "run",
        m,
        "--out",
        "{o}/run",
        "--data",
        f["labels_oob"],
    )
    refused("labels_out_of_range_train", "class scores", *train, "--data", f["labels_oob"])
    refused("npz_header_1e12_rows", "claims shape", *train, "--data", f["huge_header"])
    refused("synthetic_42_gib", "of memory", *train, "--data", "synthetic:features=150528")
    refused("npz_empty_file", "not an .npz archive", *train, "--data", f["empty_npz"])
    refused("npz_is_npy", "not an .npz archive", *train, "--data", f["npy_as_npz"])
    # 9. accepted but wrong before
    for value in ("nan", "inf"):
        refused(f"init_scale_{value}", "init_scale", "skip", pruned, "-o", o, "--init-scale", value)
    refused(
        "density_1e-300",
        "keeps no weight",
        "prune",
        m,
        "-o",
        o,
        "--method",
        "random",
        "--density",
        "1e-300",
    )
    refused("masks_all_zero", "keep no weight", "prune", m, "-o", o, "--masks", f["masks_zero"])
    refused("masks_nan", "NaN", "prune", m, "-o", o, "--masks", f["masks_nan"])
    refused("masks_text", "0/1", "prune", m, "-o", o, "--masks", f["masks_text"])
    refused("labels_bool", "booleans", *train, "--data", f["labels_bool"])
    refused("test_inputs_nan", "x_test holds 1280 NaN", *train, "--data", f["test_nan"])
    refused("train_inputs_nan", "x_train holds 1 NaN", *train, "--data", f["x_nan"])
    refused("train_inputs_overflow", "float32's range", *train, "--data", f["overflow"])
    refused(
        "pair_same_layer",
        "cannot skip to itself",
        "skip",
        pruned,
        "-o",
        o,
        "--pair",
        f"{layers[1]},{layers[1]}",
    )
    refused(
        "pair_consecutive",
        "sequential connection",
        "skip",
        pruned,
        "-o",
        o,
        "--pair",
        f"{layers[0]},{layers[1]}",
    )
    refused(
        "pair_backwards", "cycle", "skip", pruned, "-o", o, "--pair", f"{layers[3]},{layers[0]}"
    )
    refused("masks_header_146_tib", "claims shape", "prune", m, "-o", o, "--masks", f["masks_bomb"])
    refused(
        "scl_lambda_with_density",
        "drop one of them",
        *prune,
        "--method",
        "scl",
        "--scl-lambda",
        "0.1",
        "--density",
        "0.1",
    )
    for method in ("snip", "grasp"):  # as train and scl: fewer than 2 samples are refused
        refused(
            f"one_sample_{method}",
            "need at least 2",
            "prune",
            m,
            "-o",
            o,
            "--method",
            method,
            "--density",
            0.3,
            "--data",
            f["one_sample"],
        )
    snacs = ["prune", "-o", o, "--method", "snacs", "--prune-percent", 20, "--no-progress"]
    # were accepted: a model cut by scores of labels it has no class for, of one sample, of NaN
    refused("labels_out_of_range_snacs", "class scores", *snacs, m, "--data", f["labels_oob"])
    refused("one_sample_snacs", "need at least 2", *snacs, m, "--data", f["one_sample"])
    refused("nan_weights_snacs", "NaN or infinite", *snacs, f["nan_out"], "--data", TINY)
    # a deployed model's compact storage whose gaps run past the tensor: was an IndexError
    # (train) or onnxruntime's raw warnings and then "no prunable layer"
    bad = f["corrupt_storage"]
    for verb, argv in {
        "inspect": ["inspect", bad],
        "prune": ["prune", bad, "-o", o, "--density", 0.3],
        "skip": ["skip", bad, "-o", o, "--density", 0.3],
        "train": ["train", bad, "-o", o, "--data", TINY, *FAST, "--no-progress"],
        "deploy": ["deploy", bad, "-o", o],
    }.items():
        refused(f"corrupt_storage_{verb}", "tensor 'w1' is corrupted", *argv)
    # progress came first (the epoch line, each model's analysis), then the error line
    refused(
        "train_future_opset",
        "opset 99 (it supports",
        *train[:1],
        f["future_opset"],
        *train[2:],
        "--data",
        TINY,
    )
    study = ["study", "--out", "{o}/study", "--data", TINY, "--arch", "mlp", *FAST]
    refused("study_width_inf", "pass --width between", *study, "--width", "inf")
    refused("study_width_1e6", "pass --width between", *study, "--width", "1e6")
    refused(
        "study_density_keeps_nothing",
        "keeps no weight",
        *study,
        "--variants",
        "dense",
        "RP",
        "--seeds",
        0,
        "--densities",
        "1e-12",
        "--no-progress",
    )
    refused(
        "study_summary_of_no_cells", "no finished cell", "study", "--out", "{o}", "--summary-only"
    )
    deploy = ["deploy", m, "-o", o]
    refused("deploy_samples_1e9", "of memory", *deploy, "--samples", "1000000000")
    refused("deploy_empty_weight", "empty weight", "deploy", f["empty_weight"], "-o", o)
    for flag, value in (
        ("--rtol", "-1"),
        ("--rtol", "nan"),
        ("--min-agreement", "2"),
        ("--min-agreement", "nan"),
        ("--min-agreement", "-1"),
    ):
        refused(f"deploy_{flag[2:]}_{value}", flag, *deploy, flag, value)
    for value in ("BogusExecutionProvider", ""):
        refused(
            f"deploy_providers_{value or 'empty'}",
            "CPUExecutionProvider",
            *deploy,
            "--providers",
            value,
        )
    int8 = ["--quantize", "int8", "--data", TINY]
    refused("int8_of_int8", "already quantized", "deploy", f["qdq"], "-o", o, *int8)
    refused("int8_of_int32", "INT32", "deploy", f["int32"], "-o", o, *int8)
    refused("int8_of_bf16", "BFLOAT16", "deploy", f["bf16"], "-o", o, *int8)
    refused("int8_of_same_names", "unique name", "deploy", f["same_names"], "-o", o, *int8)
    refused("int8_of_future_opset", "opset 99", "deploy", f["future_opset"], "-o", o, *int8)
    refused("deploy_bf16", "no kernel", "deploy", f["bf16"], "-o", o)
    # 10. early failures leave nothing
    refused(
        "run_unknown_data",
        "unknown data set",
        "run",
        m,
        "--out",
        "{o}/run",
        "--data",
        "nonexistent",
    )
    refused(
        "study_unknown_data",
        "unknown data set",
        "study",
        "--out",
        "{o}/study",
        "--data",
        "nonexistent",
    )
    refused(
        "plot_bad_extension",
        "must end in",
        "connectivity",
        "--dense-reference",
        pruned,
        "--json",
        "{o}/r.json",
        "--plot",
        "{o}/fig.xyz",
    )
    # 11. a numpy RuntimeWarning (overflow while generating the data) before the error line
    refused("warning_then_error", "NaN or infinite", *train, "--data", TINY + ",class_sep=1e308")
    # the work itself fails: exit status 1, one "failed:" line last, nothing written
    case("training_diverges", FAILED, "training diverged", *train, "--data", TINY, "--lr", "1e30")
    case("deploy_nan_outputs", FAILED, "NaN or infinite", "deploy", f["nan_out"], "-o", o)
    case("deploy_constant_outputs", ACCEPTED, "", "deploy", f["constant_out"], "-o", o)
    case(
        "run_scl",
        ACCEPTED,
        "",
        "run",
        m,
        "--method",
        "scl",
        "--out",
        "{o}/run",
        "--data",
        TINY,
        *FAST,
        "--no-baselines",
        "--no-deploy",
        "--no-connectivity",
        "--no-progress",
    )
    # 4. damaged provenance: read as absent (with a warning), a fresh record is written
    for key in DAMAGED_METADATA:
        case(f"{key}_inspect", ACCEPTED, "", "inspect", f[key], "--json")
        case(f"{key}_skip", ACCEPTED, "", "skip", f[key], "-o", o)
    damaged = f["meta_text"]
    case(
        "meta_text_prune",
        ACCEPTED,
        "",
        "prune",
        damaged,
        "-o",
        o,
        "--method",
        "random",
        "--density",
        0.3,
    )
    case(
        "meta_text_train",
        ACCEPTED,
        "",
        "train",
        damaged,
        "-o",
        o,
        "--data",
        TINY,
        *FAST,
        "--no-progress",
    )
    case("meta_text_deploy", ACCEPTED, "", "deploy", damaged, "-o", o)
    case(
        "meta_text_connectivity",
        ACCEPTED,
        "",
        "connectivity",
        "--dense-reference",
        damaged,
        "--json",
        "{o}/r.json",
    )
    # 8. a study folder with damaged cells: skipped with a warning, the truncated cell redone
    case(
        "study_damaged_cells",
        ACCEPTED,
        "",
        "study",
        "--out",
        "{o}",
        "--arch",
        "mlp",
        "--variants",
        "dense",
        "--seeds",
        0,
        "--data",
        TINY,
        *FAST,
        "--no-progress",
    )
    case(
        "run_ok",
        ACCEPTED,
        "",
        "run",
        m,
        "--out",
        "{o}/run",
        "--data",
        TINY,
        *FAST,
        "--no-baselines",
        "--no-deploy",
        "--no-progress",
    )
    # 3. the command after a save killed with SIGKILL (see test_save_killed_with_sigkill...)
    case(
        "after_killed_save",
        ACCEPTED,
        "",
        "prune",
        m,
        "-o",
        "{o}/next.onnx",
        "--method",
        "random",
        "--density",
        0.3,
    )
    return table


# what a case's folder holds before it runs (and still holds after a refusal)
PRESENT_BEFORE = {"run_dense_exists": ["dense.onnx"], "study_summary_of_no_cells": ["cells"]}
# refused only after the work has started (none: progress shown on a terminal only, so a
# failing command's captured stderr is its one line; full_disk_run fills the disk at the end)
AFTER_THE_WORK: tuple[str, ...] = ()
DAMAGED_METADATA = (
    "meta_text",
    "meta_nul",
    "meta_deep",
    "meta_deep_dict",
    "meta_stages_text",
    "meta_stages_junk",
    "meta_list",
)


# --------------------------------------------------------------------------------------
# the runner: several command lines in one process, results as JSON
# --------------------------------------------------------------------------------------


def _drain(fd: int, chunks: list[bytes]) -> None:
    while block := os.read(fd, 65536):
        chunks.append(block)


def _run_one(argv: list[str], file_size_limit: int | None) -> dict[str, Any]:
    """One command line through ``main``; stdout and stderr go to pipes (no file-size limit on
    pipes, so a case can simulate a full disk with RLIMIT_FSIZE)."""
    import logging
    import resource
    import threading
    import traceback
    import warnings

    from n2nonnx.cli import main

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    pipes = os.pipe(), os.pipe()
    captured: tuple[list[bytes], list[bytes]] = ([], [])
    readers = [
        threading.Thread(target=_drain, args=(pipe[0], chunks))
        for pipe, chunks in zip(pipes, captured, strict=True)
    ]
    for reader in readers:
        reader.start()
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    escaped = None
    os.dup2(pipes[0][1], 1)
    os.dup2(pipes[1][1], 2)
    logging.root.handlers.clear()  # main() binds a handler to this case's stderr
    warnings.resetwarnings()
    warnings.simplefilter("always")  # a warning shown once per process would hide in later cases
    if file_size_limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, limit[1]))
    try:
        code = main(argv)
    except BaseException as error:  # noqa: BLE001 (what the interpreter would print as a traceback)
        traceback.print_exc()
        code, escaped = 1, type(error).__name__
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, pipes[0][1], pipes[1][1]):
            os.close(fd)
        for reader in readers:
            reader.join()
        for pipe in pipes:
            os.close(pipe[0])
    out, err = (b"".join(chunks).decode(errors="replace") for chunks in captured)
    return {"code": code, "out": out, "err": err, "escaped": escaped}


# root ignores folder permissions; without CAP_DAC_OVERRIDE it meets them like a user
AS_USER = (
    ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    if os.geteuid() == 0 and shutil.which("setpriv")
    else []
)
PERMISSIONS_APPLY = os.geteuid() != 0 or bool(AS_USER)


def run_group(cases: dict[str, dict[str, Any]], timeout: float = 600) -> dict[str, dict[str, Any]]:
    """Run ``{name: {"argv": [...], "fsize": bytes or None}}`` in one subprocess."""
    with tempfile.TemporaryDirectory() as scratch:
        request = Path(scratch, "cases.json")
        answer = Path(scratch, "results.json")
        request.write_text(json.dumps(cases))
        subprocess.run(
            [*AS_USER, sys.executable, __file__, str(request), str(answer)],
            cwd=scratch,
            env=ENV,
            timeout=timeout,
            check=True,
        )
        return json.loads(answer.read_text())


def n2nonnx_command(*argv: Any, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m n2nonnx ARGV`` in its own process, as a user runs it."""
    return subprocess.run(
        [*AS_USER, sys.executable, "-m", "n2nonnx", *map(str, argv)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _runner(request: str, answer: str) -> None:
    cases = json.loads(Path(request).read_text())
    results = {}
    for name, case in cases.items():
        started = time.perf_counter()
        results[name] = _run_one(case["argv"], case.get("fsize"))
        results[name]["seconds"] = time.perf_counter() - started
    Path(answer).write_text(json.dumps(results))


# --------------------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------------------


class _Names(dict):
    """Stand-in fixture paths, to list the case names when the tests are collected."""

    def __missing__(self, key: str) -> str:
        return json.dumps(["a", "b", "c", "d"]) if key == "layers" else f"/{key}"


CASES = cases(_Names(), Path("/out"))
REFUSED_CASES = [name for name, spec in CASES.items() if spec["code"] == REFUSED]
ACCEPTED_CASES = [name for name, spec in CASES.items() if spec["code"] == ACCEPTED]
FAILED_CASES = [name for name, spec in CASES.items() if spec["code"] == FAILED]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Every grouped case run once, in one subprocess: (fixture paths, out folder, results, digests)."""
    root = tmp_path_factory.mktemp("hostile")
    files = build_fixtures(root)
    out = root / "out"
    table = cases(files, out)
    for name in table:
        (out / name).mkdir(parents=True)
    (out / "run_dense_exists" / "dense.onnx").write_text("a user's file\n")
    (out / "study_summary_of_no_cells" / "cells").mkdir()
    cells = out / "study_damaged_cells" / "cells" / "mlp"
    cells.mkdir(parents=True)
    (cells / "dense-d1-s0.json").write_text('{"settings": {"recipe": ')  # truncated by a crash
    (cells / "junk.json").write_text("[1, 2]")
    (cells / "half.json").write_text('{"settings": 1}')
    killed = _kill_a_save(out / "after_killed_save")
    before = digests(root / "in")
    results = run_group(table)
    yield {
        "files": files,
        "out": out,
        "root": root,
        "results": results,
        "table": table,
        "before": before,
        "after": digests(root / "in"),
        "killed": killed,
    }
    (root / "read-only").chmod(0o755)


def _stderr_lines(result: dict[str, Any]) -> list[str]:
    return result["err"].strip().splitlines()


@pytest.mark.parametrize("name", REFUSED_CASES)
def test_refused_on_one_line_and_nothing_written(name, hostile):
    if name.startswith("ro_") and not PERMISSIONS_APPLY:
        pytest.skip("running as root without setpriv: folder permissions do not apply")
    spec, result = hostile["table"][name], hostile["results"][name]
    lines = _stderr_lines(result)
    assert result["escaped"] is None and "Traceback" not in result["err"], result["err"]
    assert result["code"] == REFUSED, (result["code"], lines)
    if name not in AFTER_THE_WORK:  # checked before the work: no progress line either
        assert len(lines) == 1, lines
    verb = spec["argv"][0]
    assert lines[-1].startswith(f"n2nonnx {verb}: error: ") and spec["words"] in lines[-1], lines[
        -1
    ]
    left = sorted(p.name for p in (hostile["out"] / name).iterdir())
    assert left == PRESENT_BEFORE.get(name, []), left
    if name == "run_dense_exists":
        assert (hostile["out"] / name / "dense.onnx").read_text() == "a user's file\n"


@pytest.mark.parametrize("name", FAILED_CASES)
def test_failed_work_exits_1_and_writes_nothing(name, hostile):
    spec, result = hostile["table"][name], hostile["results"][name]
    lines = _stderr_lines(result)
    assert result["escaped"] is None and "Traceback" not in result["err"], result["err"]
    assert result["code"] == FAILED, (result["code"], lines)
    assert len(lines) == 1, lines  # progress (the epoch lines) goes to a terminal only
    assert (
        lines[-1].startswith(f"n2nonnx {spec['argv'][0]}: failed: ") and spec["words"] in lines[-1]
    ), lines
    assert list((hostile["out"] / name).iterdir()) == []


@pytest.mark.parametrize("name", ACCEPTED_CASES)
def test_accepted_without_traceback(name, hostile):
    result = hostile["results"][name]
    assert result["escaped"] is None and "Traceback" not in result["err"], result["err"]
    assert result["code"] == ACCEPTED, _stderr_lines(result)
    outputs = [p.name for p in (hostile["out"] / name).iterdir()]
    if hostile["table"][name]["argv"][0] != "inspect":
        assert outputs, "nothing written"


def test_inputs_never_modified(hostile):
    assert hostile["after"] == hostile["before"]


def test_no_scratch_file_left(hostile):
    assert leftovers(hostile["root"]) == []


def test_damaged_provenance_is_replaced_by_a_fresh_record(hostile):
    import onnx

    from n2nonnx.metadata import METADATA_VERSION

    for key in DAMAGED_METADATA:
        proto = onnx.load(str(hostile["out"] / f"{key}_skip" / "o.onnx"))
        document = json.loads(next(p.value for p in proto.metadata_props if p.key == "n2nonnx"))
        assert document["version"] == METADATA_VERSION
        assert [type(r) for r in document["stages"]] == [dict] * len(document["stages"])
        assert document["stages"][-1]["stage"] == "n2nskip", key
    warned = hostile["results"]["meta_text_inspect"]["err"]
    assert "damaged n2nonnx provenance" in warned and "Traceback" not in warned


def test_damaged_study_cells_are_skipped_and_redone(hostile):
    out = hostile["out"] / "study_damaged_cells"
    err = hostile["results"]["study_damaged_cells"]["err"]
    assert "junk.json" in err and "half.json" in err  # named in a warning
    redone = json.loads((out / "cells" / "mlp" / "dense-d1-s0.json").read_text())
    assert redone["variant"] == "dense"
    summary = json.loads((out / "results.json").read_text())
    assert [row["variant"] for row in summary["rows"]] == ["dense"]


def test_deploy_notes_outputs_that_do_not_depend_on_the_input(hostile):
    out = hostile["results"]["deploy_constant_outputs"]["out"]
    assert "do not depend on its input" in out, out


def test_run_writes_a_whole_report_folder(hostile):
    run = hostile["out"] / "run_ok" / "run"
    names = sorted(p.name for p in run.iterdir())
    assert names == sorted(
        ["model.onnx", "results.json", "report.md", "training.png", "connectivity.png"]
    )
    assert (
        run / "report.md"
    ).stat().st_mode & 0o044 == 0o044 & ~_umask()  # readable like any new file
    numbers = json.loads((run / "results.json").read_text())
    assert set(numbers["files"].values()) <= set(names)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_one_process_per_command_warning_then_error(hostile):
    """numpy warns while the data is generated; the user still sees exactly one line."""
    out = hostile["root"] / "real-warning"
    out.mkdir()
    done = n2nonnx_command(
        "train",
        hostile["files"]["m"],
        "-o",
        out / "o.onnx",
        "--epochs",
        "1",
        "--data",
        TINY + ",class_sep=1e308",
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("n2nonnx train: error: x_train holds")
    assert list(out.iterdir()) == []


def test_one_process_per_command_bad_pair(hostile):
    """Was a warning (two lines, with a source line) and an unchanged model saved with exit 0."""
    out = hostile["root"] / "real-skip"
    out.mkdir()
    layer = json.loads(hostile["files"]["layers"])[2]
    done = n2nonnx_command(
        "skip", hostile["files"]["pruned"], "-o", out / "p.onnx", "--pair", f"{layer},{layer}"
    )
    assert (
        done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    ), done.stderr
    assert "cannot skip to itself" in done.stderr
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------------------
# faults: a save killed with SIGKILL
# --------------------------------------------------------------------------------------

_BIG_SAVE = """
import sys
import numpy as np
from onnx import TensorProto, helper, numpy_helper
from n2nonnx.io import save
weight = numpy_helper.from_array(np.ones((4096, 4096), np.float32), "w")
graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4096])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4096])], [weight])
save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), sys.argv[1])
"""


def _kill_a_save(folder: Path) -> dict[str, Any]:
    """Start saving a 64 MiB model into ``folder`` in a child process and SIGKILL it mid-save."""
    child = subprocess.Popen([sys.executable, "-c", _BIG_SAVE, str(folder / "big.onnx")], env=ENV)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if any((scratch / "big.onnx").exists() for scratch in folder.glob(".n2nonnx-*")):
                break
            time.sleep(0.002)
        finished = child.poll() is not None
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    return {
        "finished_first": finished,
        "returncode": child.returncode,
        "left": sorted(p.name for p in folder.iterdir()),
    }


def test_save_killed_with_sigkill_leaves_nothing_after_the_next_command(hostile):
    killed = hostile["killed"]
    assert not killed["finished_first"], "the save finished before it could be killed"
    assert killed["returncode"] == -signal.SIGKILL
    # the final name is never partial; the fault left its scratch folder ...
    assert [name[:9] for name in killed["left"]] == [".n2nonnx-"], killed["left"]
    # ... which the next command removed while saving its own output
    assert hostile["results"]["after_killed_save"]["code"] == 0
    assert [p.name for p in (hostile["out"] / "after_killed_save").iterdir()] == ["next.onnx"]


def test_stale_scratch_rules(tmp_path):
    from n2nonnx import io

    def scratch(name: str, owner: str | None, age: float = 0) -> Path:
        folder = tmp_path / f".n2nonnx-{name}"
        folder.mkdir()
        if owner is not None:
            (folder / io.SCRATCH_MARKER).write_text(owner)
        os.utime(folder, (time.time() - age, time.time() - age))
        return folder

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = scratch("live", io._owner())
    gone = scratch("dead", f"{__import__('socket').gethostname()} {dead.pid} 1")
    fresh = scratch("fresh", None)
    old = scratch("old", None, age=2 * io.STALE_SCRATCH_SECONDS)
    elsewhere = scratch("elsewhere", "another-host 1 1")
    removed = io.remove_stale_scratch(tmp_path)
    assert sorted(removed) == sorted([gone, old])
    assert live.exists() and fresh.exists() and elsewhere.exists()


if __name__ == "__main__":
    _runner(sys.argv[1], sys.argv[2])
