"""The record of a training run: one :class:`EpochRecord` per epoch, in a :class:`History`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.paths import write_text_atomic


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch did: mean losses and accuracies (fractions in [0, 1]) and its cost."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    lr: float
    seconds: float

    def summary(self, total_epochs: int | None = None) -> str:
        """One printable line, e.g. ``epoch 3/20  loss 0.412  acc 86.1%  test ...``."""
        of = f"/{total_epochs}" if total_epochs else ""
        return (
            f"epoch {self.epoch}{of}  train loss {self.train_loss:.4f} acc {self.train_accuracy:6.2%}"
            f"  test loss {self.test_loss:.4f} acc {self.test_accuracy:6.2%}"
            f"  lr {self.lr:.3g}  {self.seconds:.1f}s"
        )


class History:
    """Per-epoch records of a training run.

    Iterate over it, index it, or read one metric with :meth:`column`.
    """

    METRICS = tuple(item.name for item in fields(EpochRecord))

    def __init__(self, records: list[EpochRecord] | None = None) -> None:
        self.records: list[EpochRecord] = list(records or [])

    def append(self, record: EpochRecord) -> None:
        """Add the record of the next epoch."""
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        if not self.records:
            return "History(0 epochs)"
        best = self.best()
        return (
            f"History({len(self)} epochs, final test accuracy {self.final.test_accuracy:.2%}, "
            f"best {best.test_accuracy:.2%} at epoch {best.epoch})"
        )

    def __iter__(self) -> Iterator[EpochRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> EpochRecord:
        return self.records[index]

    def column(self, metric: str) -> list[float]:
        """The values of one metric (``"test_accuracy"`` ...) over the epochs."""
        if metric not in self.METRICS:
            raise InvalidArgumentError(
                f"unknown metric {metric!r}; metrics: {', '.join(self.METRICS)}"
            )
        return [getattr(record, metric) for record in self.records]

    @property
    def final(self) -> EpochRecord:
        """The record of the last epoch."""
        if not self.records:
            raise InvalidArgumentError("the history is empty")
        return self.records[-1]

    def best(self, metric: str = "test_accuracy") -> EpochRecord:
        """The epoch with the best value of ``metric`` (highest accuracy, lowest loss).

        Args:
            metric: an accuracy or loss column; ties go to the earliest epoch.
        """
        values = self.column(metric)
        if not values:
            raise InvalidArgumentError("the history is empty")
        pick = min if metric.endswith("loss") else max
        return self.records[values.index(pick(values))]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"epochs": [record, ...], "best": record, "final": record}``."""
        epochs = [asdict(record) for record in self.records]
        if not epochs:
            return {"epochs": []}
        return {"epochs": epochs, "best": asdict(self.best()), "final": epochs[-1]}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict`."""
        return cls([EpochRecord(**record) for record in document.get("epochs", [])])

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON atomically (temporary file, then rename)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2))
