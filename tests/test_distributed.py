"""Distributed training: 2 CPU processes (gloo) against one process with the global batch.

The workers are real processes joined by the environment ``torchrun`` sets (RANK,
WORLD_SIZE, MASTER_ADDR ...), so :func:`train` joins the process group by itself.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.multiprocessing as mp
from onnx import TensorProto, helper, numpy_helper

from n2nonnx import io, masks, metadata
from n2nonnx.data import make_data
from n2nonnx.errors import DataError, InvalidArgumentError
from n2nonnx.graph.masking import gate
from n2nonnx.runtime import run
from n2nonnx.training import distributed as parallel
from n2nonnx.training import train

FEATURES, HIDDEN, CLASSES = 6, 12, 3
PER_RANK_BATCH = 8
SGD = dict(
    optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-3, schedule="cosine", epochs=2, seed=3
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------- models and data


def _value(name: str, *shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def masked_mlp() -> onnx.ModelProto:
    """x -> fc1 (masked, half its weights) -> Relu -> fc2 -> Reshape -> y, where the Reshape's
    target shape is read from a ``probe`` layer: its weight ``w_probe`` reaches the output only
    through Shape, so it gets no gradient (a parameter DDP must be told about)."""
    rng = np.random.default_rng(0)
    init = {
        "w1": rng.normal(0, 0.5, (HIDDEN, FEATURES)),
        "b1": rng.normal(0, 0.1, HIDDEN),
        "w2": rng.normal(0, 0.5, (CLASSES, HIDDEN)),
        "b2": np.zeros(CLASSES),
        "w_probe": rng.normal(0, 0.5, (CLASSES, HIDDEN)),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["z1"], transB=1, name="fc1"),
        helper.make_node("Relu", ["z1"], ["a1"], name="relu"),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["z2"], transB=1, name="fc2"),
        helper.make_node("Gemm", ["a1", "w_probe"], ["p"], transB=1, name="probe"),
        helper.make_node("Shape", ["p"], ["p_shape"], name="probe_shape"),
        helper.make_node("Reshape", ["z2", "p_shape"], ["y"], name="reshape"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [_value("x", "N", FEATURES)],
        [_value("y", "N", CLASSES)],
        [numpy_helper.from_array(value.astype(np.float32), name) for name, value in init.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    mask = np.random.default_rng(1).random((HIDDEN, FEATURES)) < 0.5
    gate(model.graph, "w1", mask)
    onnx.checker.check_model(model, full_check=True)
    return model


def batchnorm_mlp() -> onnx.ModelProto:
    """x -> fc1 -> BatchNormalization -> Relu -> fc2 -> y."""
    rng = np.random.default_rng(2)
    init = {
        "w1": rng.normal(0, 0.5, (HIDDEN, FEATURES)),
        "b1": rng.normal(0, 0.1, HIDDEN),
        "scale": 1 + rng.normal(0, 0.1, HIDDEN),
        "shift": rng.normal(0, 0.1, HIDDEN),
        "mean": rng.normal(0, 0.1, HIDDEN),
        "var": 1 + rng.random(HIDDEN),
        "w2": rng.normal(0, 0.5, (CLASSES, HIDDEN)),
        "b2": np.zeros(CLASSES),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["z1"], transB=1, name="fc1"),
        helper.make_node(
            "BatchNormalization", ["z1", "scale", "shift", "mean", "var"], ["n1"], name="bn"
        ),
        helper.make_node("Relu", ["n1"], ["a1"], name="relu"),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["y"], transB=1, name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "bn_mlp",
        [_value("x", "N", FEATURES)],
        [_value("y", "N", CLASSES)],
        [numpy_helper.from_array(value.astype(np.float32), name) for name, value in init.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def dataset(features: int = FEATURES):
    """64 training samples (4 global batches of 16), 21 held-out ones (split 10 / 11 over 2 ranks)."""
    rng = np.random.default_rng(5)
    centres = rng.normal(0, 2, (CLASSES, features))
    labels = rng.integers(0, CLASSES, 85)
    x = centres[labels] + rng.normal(0, 1, (85, features))
    return make_data(x[:64], labels[:64], x[64:], labels[64:], name="blobs")


def initializers(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


# ------------------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(worker, world: int, *args, deadline_s: float = 60.0) -> None:
    """Run ``worker(rank, *args)`` in ``world`` processes set up as torchrun would.

    Forked, as torch's own distributed tests do: the workers inherit the imports (seconds
    each on a small machine); they set one thread before any torch op.
    """
    torch.optim.SGD(
        [torch.zeros(1, requires_grad=True)]
    )  # imports torch._dynamo once, before the fork
    torch.nn.parallel.DistributedDataParallel  # noqa: B018 - imported before the fork too
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1")
    try:
        context = mp.start_processes(
            worker, args=(world, *args), nprocs=world, join=False, start_method="fork"
        )
        started = time.monotonic()
        while not context.join(timeout=1):
            if time.monotonic() - started > deadline_s:
                for process in context.processes:
                    process.kill()
                pytest.fail(f"distributed workers still running after {deadline_s} s")
    finally:
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(name, None)


def _as_rank(rank: int, world: int) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)


def _worker(rank: int, world: int, out: str) -> None:
    """Three runs in one launch: the masked MLP (SGD), the BatchNorm MLP with sync_bn, and a run
    whose rank 1 reads data with the wrong feature count, saved on rank 0 only as the CLI does."""
    _as_rank(rank, world)
    folder = Path(out)
    seen: list[int] = []
    result = train(
        masked_mlp(),
        dataset(),
        batch_size=PER_RANK_BATCH * world,
        on_epoch=lambda r: seen.append(r.epoch),
        **SGD,
    )
    assert parallel.context() == parallel.DistContext(rank, world, rank)
    synced = train(
        batchnorm_mlp(), dataset(), batch_size=PER_RANK_BATCH * world, sync_bn=True, **SGD
    )
    np.savez(
        folder / f"rank{rank}.npz",
        **{f"mlp/{k}": v for k, v in initializers(result.model.proto).items()},
        **{f"bn/{k}": v for k, v in initializers(synced.model.proto).items()},
    )
    history = [result.history.to_dict(), synced.history.to_dict()]
    (folder / f"history{rank}.json").write_text(json.dumps({"history": history, "on_epoch": seen}))
    if parallel.context().is_main:
        io.save(result.model, folder / "trained.onnx")
    try:
        with parallel.session() as ctx:
            failed = train(
                masked_mlp(),
                dataset(FEATURES + 1 if rank == 1 else FEATURES),
                batch_size=PER_RANK_BATCH * world,
                **SGD,
            )
            if ctx.is_main:
                io.save(failed.model, folder / "failed.onnx")
    except Exception as error:  # noqa: BLE001 - recorded for the test to compare
        report = {"type": type(error).__name__, "message": str(error)}
        (folder / f"error{rank}.json").write_text(json.dumps(report))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    _launch(_worker, 2, str(folder))
    return folder


@pytest.fixture(scope="module")
def one_process():
    """The masked MLP trained by one process with the global batch."""
    return train(masked_mlp(), dataset(), batch_size=2 * PER_RANK_BATCH, distributed=False, **SGD)


def test_two_ranks_train_the_weights_of_one_process_with_the_global_batch(two_ranks, one_process):
    reference = one_process
    expected = initializers(reference.model.proto)
    got = np.load(two_ranks / "rank0.npz")
    for name, value in expected.items():
        np.testing.assert_allclose(got[f"mlp/{name}"], value, rtol=1e-5, atol=1e-6, err_msg=name)
    start = initializers(masked_mlp())
    assert not np.allclose(expected["w2"], start["w2"])  # it trained
    np.testing.assert_array_equal(expected["w_probe"], start["w_probe"])  # no gradient, no update
    # metrics summed over ranks (held-out split 10 + 11 samples) equal the one-process ones
    history = json.loads((two_ranks / "history0.json").read_text())
    for mine, theirs in zip(
        history["history"][0]["epochs"], reference.history.to_dict()["epochs"], strict=True
    ):
        for metric in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr"):
            assert mine[metric] == pytest.approx(theirs[metric], rel=1e-5), metric


def test_every_rank_ends_with_the_same_values(two_ranks):
    first, second = np.load(two_ranks / "rank0.npz"), np.load(two_ranks / "rank1.npz")
    assert sorted(first.files) == sorted(second.files)
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_only_rank_zero_reports_epochs(two_ranks):
    assert json.loads((two_ranks / "history0.json").read_text())["on_epoch"] == [1, 2]
    assert json.loads((two_ranks / "history1.json").read_text())["on_epoch"] == []


def test_masks_hold_and_saved_model_runs_in_onnxruntime(two_ranks, one_process):
    saved = io.load(two_ranks / "trained.onnx")
    weights = initializers(saved.proto)
    (mask,) = masks.mask_arrays(saved).values()
    assert not mask.all() and mask.any()
    assert np.all(weights["w1"][~mask.astype(bool)] == 0)
    assert np.count_nonzero(weights["w1"][mask.astype(bool)]) > 0
    x = dataset().x_test.numpy()
    np.testing.assert_allclose(
        run(saved.proto, x)[0], run(one_process.model.proto, x)[0], rtol=1e-4, atol=1e-5
    )
    (record,) = metadata.stages(saved.proto, "train")
    assert record["processes"] == 2 and record["batch_size"] == 2 * PER_RANK_BATCH


def test_sync_bn_two_ranks_normalise_like_one_process(two_ranks):
    reference = train(
        batchnorm_mlp(), dataset(), batch_size=2 * PER_RANK_BATCH, distributed=False, **SGD
    )
    got = np.load(two_ranks / "rank0.npz")
    for name, value in initializers(
        reference.model.proto
    ).items():  # weights and running statistics
        np.testing.assert_allclose(got[f"bn/{name}"], value, rtol=1e-5, atol=1e-6, err_msg=name)
    start = initializers(batchnorm_mlp())
    assert not np.allclose(got["bn/mean"], start["mean"])


def test_a_failing_rank_stops_every_rank_with_one_error_and_nothing_is_written(two_ranks):
    reports = [json.loads((two_ranks / f"error{rank}.json").read_text()) for rank in (0, 1)]
    assert reports[0] == reports[1]
    assert reports[0]["type"] == DataError.__name__
    assert reports[0]["message"].startswith("rank 1 of 2: ")
    assert str(FEATURES + 1) in reports[0]["message"]
    assert not (two_ranks / "failed.onnx").exists()


# ------------------------------------------------------------------------- one process


def test_shards_of_two_ranks_make_the_global_batches_of_one():
    one = parallel.Shards(50, 10, seed=4, ctx=parallel.DistContext())
    two = [parallel.Shards(50, 5, seed=4, ctx=parallel.DistContext(rank, 2)) for rank in (0, 1)]
    assert one.steps == two[0].steps == two[1].steps == 5
    for epoch in (0, 1):
        whole = one.epoch(epoch)
        halves = [shards.epoch(epoch) for shards in two]
        for batch, first, second in zip(whole, *halves, strict=True):
            assert sorted(batch.tolist()) == sorted(first.tolist() + second.tolist())
    assert one.epoch(0)[0].tolist() != one.epoch(1)[0].tolist()  # reshuffled per epoch


def test_uneven_data_pads_so_every_rank_takes_the_same_steps():
    shards = [parallel.Shards(21, 4, seed=0, ctx=parallel.DistContext(rank, 2)) for rank in (0, 1)]
    assert shards[0].steps == shards[1].steps == 3  # 11 samples each: 4 + 4 + 3
    taken = [index for ranks in shards for batch in ranks.epoch(0) for index in batch.tolist()]
    assert len(taken) == 22 and set(taken) == set(range(21))  # one sample repeated, none left out


def test_global_batch_must_split_evenly():
    with pytest.raises(InvalidArgumentError, match="multiple of 4; use 128 or 132"):
        parallel.per_rank_batch(130, parallel.DistContext(0, 4))
    assert parallel.per_rank_batch(128, parallel.DistContext(1, 4)) == 32


def test_context_reads_torchrun_environment(monkeypatch):
    assert parallel.context() == parallel.DistContext(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = parallel.context()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main, ctx.active) == (
        3,
        4,
        1,
        False,
        True,
    )


def test_distributed_true_outside_torchrun_is_refused():
    with pytest.raises(InvalidArgumentError, match="torchrun"):
        train(masked_mlp(), dataset(), distributed=True, epochs=1)


def test_benchmark_script_quick():
    script = Path(__file__).resolve().parents[1] / "examples" / "benchmark_distributed.py"
    result = subprocess.run(
        [sys.executable, str(script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    rates = dict(re.findall(r"^(\d procs? x \d threads?)\s+(\d+)\s", result.stdout, re.MULTILINE))
    assert set(rates) == {"1 proc x 1 thread", "1 proc x 2 threads", "2 procs x 1 thread"}
    assert all(int(rate) > 0 for rate in rates.values())
    assert re.search(r"communication share \d+%", result.stdout)


# ------------------------------------------------- the CLI: ranks that disagree on options


def _cli_worker(rank: int, world: int, out: str, argvs: list[list[str]]) -> None:
    """``n2nonnx.cli.main`` as torchrun runs it, rank ``r`` with ``argvs[r]``; the exit status
    and stderr recorded."""
    import contextlib
    import io as text_io

    from n2nonnx.cli import main

    _as_rank(rank, world)
    err = text_io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argvs[rank])
    (Path(out) / f"cli{rank}.json").write_text(json.dumps({"code": code, "err": err.getvalue()}))


@pytest.mark.parametrize(
    ("rank1", "words"),
    [
        (["--lr", "nan"], "rank 1 of 2: "),  # exited before the group formed: torchrun's exitcode 2
        (["--device", "bogus"], "rank 1 of 2: "),
        (["--epochs", "3"], "--epochs 3 (rank 0: 1)"),  # rank 0 wrote its output, rank 1 crashed
    ],
)
def test_an_option_one_rank_gets_wrong_stops_every_rank_with_one_error(tmp_path, rank1, words):
    model = tmp_path / "in.onnx"
    onnx.save(masked_mlp(), str(model))
    argv = [
        "train",
        str(model),
        "-o",
        str(tmp_path / "out.onnx"),
        "--data",
        f"synthetic:features={FEATURES},classes={CLASSES},train=32,test=16",
        "--epochs",
        "1",
        "--no-progress",
    ]
    _launch(_cli_worker, 2, str(tmp_path), [argv, argv + rank1])
    results = [json.loads((tmp_path / f"cli{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["code"] for r in results] == [2, 2], results
    lines = results[0]["err"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("n2nonnx train: error: ") and words in lines[0]
    assert results[1]["err"] == ""  # only rank 0 reports
    assert not (tmp_path / "out.onnx").exists()
