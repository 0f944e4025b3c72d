"""Built-in data sets, generated or bundled locally (nothing is downloaded): a registry by name.

``mnist1d``
    MNIST-1D (Greydanus 2020) generated with the ``mnist1d`` package's own generator and
    its canonical arguments (seed 42); 4000 train / 1000 test samples of 40 features,
    10 classes. Cached as ``.npz`` under :func:`n2nonnx.data.cache.cache_dir`. Features
    are z-scored with the training statistics by default (``standardize=False`` to keep
    the generator's values). Samples are ``(40,)`` for MLPs or ``(1, 40)`` for 1-D CNNs.
``digits``
    scikit-learn's bundled 8x8 digits, scaled to [0, 1], stratified 80/20 split; samples
    are ``(64,)``, ``(1, 8, 8)`` or ``(8, 8)``.
``synthetic``
    ``sklearn.datasets.make_classification`` with a seed: ``features`` (20), ``classes`` (4),
    ``train`` (1000) and ``test`` (250) samples; ``(features,)`` or ``(1, features)``.

Options follow the name after a colon: ``"synthetic:features=32,classes=10,seed=3"``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from n2nonnx.data.cache import load_cached, store_cached
from n2nonnx.data.dataset import TrainTestData, make_data, standardized
from n2nonnx.data.memory import check_fits_memory
from n2nonnx.errors import DataError, InvalidArgumentError

Loader = Callable[..., TrainTestData]


@dataclass(frozen=True)
class BuiltinDataset:
    """A data set n2nonnx can build by name.

    Attributes:
        name: the name users pass (``"mnist1d"``).
        loader: builds the data from keyword options.
        defaults: every option the loader accepts, with its default value.
        summary: one line for help texts.
    """

    name: str
    loader: Loader
    defaults: dict[str, Any]
    summary: str


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {}


def register_dataset(name: str, summary: str, **defaults: Any) -> Callable[[Loader], Loader]:
    """Decorator adding a loader to :data:`BUILTIN_DATASETS` under ``name``.

    Args:
        name: the public name; registering a name twice is an error.
        summary: one line describing the data set.
        **defaults: every option the loader takes, with its default.
    """

    def decorate(loader: Loader) -> Loader:
        if name in BUILTIN_DATASETS:
            raise ValueError(f"data set {name!r} is already registered")
        BUILTIN_DATASETS[name] = BuiltinDataset(name, loader, dict(defaults), summary)
        return loader

    return decorate


def builtin_names() -> list[str]:
    """Names of the built-in data sets."""
    return sorted(BUILTIN_DATASETS)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name:key=value,key=value"`` into the name and typed options.

    Values are read as int, then float, then ``true``/``false``, else kept as text.

    Args:
        spec: the data set specification.

    Returns:
        ``(name, options)``.
    """
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InvalidArgumentError(
                f"data option {item!r} in {spec!r} is not key=value (e.g. 'synthetic:classes=3')"
            )
        options[key.strip()] = _parse_value(text.strip())
    return name.strip().lower(), options


def _parse_value(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def load_builtin(name: str, **options: Any) -> TrainTestData:
    """Build a built-in data set.

    Args:
        name: one of :func:`builtin_names`.
        **options: overrides of the data set's defaults (see the module docstring).

    Returns:
        The data in its flat layout; ``info["layouts"]`` lists the other sample shapes
        the data may be reshaped to for a model's input.

    Raises:
        DataError: unknown name.
        InvalidArgumentError: unknown option or out-of-range value.
    """
    entry = BUILTIN_DATASETS.get(name)
    if entry is None:
        raise DataError(
            f"unknown data set {name!r}; built-in: {', '.join(builtin_names())} "
            f"(or pass a path to an .npz file with x_train, y_train, x_test, y_test)"
        )
    unknown = sorted(set(options) - set(entry.defaults))
    if unknown:
        known = ", ".join(f"{key}={value}" for key, value in entry.defaults.items())
        raise InvalidArgumentError(
            f"data set {name!r} has no option {', '.join(map(repr, unknown))}; options: {known}"
        )
    return entry.loader(**{**entry.defaults, **options})


def _flat_layouts(features: int, *extra: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [(features,), (1, features), *extra]


def _positive(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgumentError(f"data option {name} must be a positive integer, got {value!r}")
    return value


@register_dataset(
    "mnist1d",
    "MNIST-1D generated locally: 40 features, 10 classes, 4000/1000 samples, z-scored",
    train=4000,
    test=1000,
    standardize=True,
    seed=42,
)
def load_mnist1d(*, train: int, test: int, standardize: bool, seed: int) -> TrainTestData:
    """MNIST-1D from the ``mnist1d`` generator, cached on disk (see the module docstring)."""
    total = _positive("train", train) + _positive("test", test)
    if total < 10 * 2:
        raise InvalidArgumentError(f"mnist1d needs train + test >= 20 samples, got {total}")
    # the generator works in float64 on padded 72-point templates before cropping to 40
    check_fits_memory(
        total * 72 * 8 * 4, f"mnist1d with {total} samples", "ask for fewer samples (train=, test=)"
    )
    file_name = f"mnist1d_n{total}_seed{seed}_v1.npz"
    arrays = load_cached(file_name)
    if arrays is None:
        arrays = _generate_mnist1d(total, seed)
        store_cached(file_name, arrays)
    x, y = arrays["x"], arrays["y"]
    n_train = min(train, len(x) - 1)
    data = make_data(
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        name="mnist1d",
        info={"generator": "mnist1d", "seed": seed, "layouts": _flat_layouts(x.shape[1])},
    )
    return standardized(data) if standardize else data


def _generate_mnist1d(total: int, seed: int) -> dict[str, np.ndarray]:
    """Run the mnist1d generator without touching the caller's global random state."""
    from mnist1d.data import get_dataset_args, make_dataset  # slow import: only when needed

    args = get_dataset_args()
    args.num_samples = total
    args.seed = seed
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        generated = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    x = np.concatenate([generated["x"], generated["x_test"]]).astype(np.float32)
    y = np.concatenate([generated["y"], generated["y_test"]]).astype(np.int64)
    return {"x": x, "y": y}


@register_dataset(
    "digits",
    "scikit-learn 8x8 digits (bundled): 64 features in [0, 1], 10 classes, stratified 80/20",
    test_fraction=0.2,
    seed=0,
    standardize=False,
)
def load_digits(*, test_fraction: float, seed: int, standardize: bool) -> TrainTestData:
    """scikit-learn's bundled digits (see the module docstring)."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < float(test_fraction) < 1.0:
        raise InvalidArgumentError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    bunch = sklearn_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, bunch.target, test_size=float(test_fraction), random_state=seed, stratify=bunch.target
    )
    data = make_data(
        x_train,
        y_train,
        x_test,
        y_test,
        name="digits",
        info={"seed": seed, "layouts": _flat_layouts(64, (1, 8, 8), (8, 8))},
    )
    return standardized(data) if standardize else data


@register_dataset(
    "synthetic",
    "sklearn make_classification: features=20, classes=4, train=1000, test=250, seed=0",
    features=20,
    classes=4,
    train=1000,
    test=250,
    informative=0,
    class_sep=1.5,
    seed=0,
    standardize=False,
)
def load_synthetic(
    *,
    features: int,
    classes: int,
    train: int,
    test: int,
    informative: int,
    class_sep: float,
    seed: int,
    standardize: bool,
) -> TrainTestData:
    """A seeded Gaussian-cluster classification problem (see the module docstring).

    ``informative=0`` picks enough informative features for the class count
    (at least half of ``features``).
    """
    from sklearn.datasets import make_classification

    features, classes = _positive("features", features), _positive("classes", classes)
    if classes < 2:
        raise InvalidArgumentError(f"synthetic needs classes >= 2, got {classes}")
    needed = math.ceil(math.log2(classes))
    informative = informative or min(features, max(needed, features // 2))
    if informative > features or 2**informative < classes:
        raise InvalidArgumentError(
            f"synthetic: {informative} informative features cannot separate {classes} classes "
            f"among {features} features; raise features (need 2**informative >= classes)"
        )
    total = _positive("train", train) + _positive("test", test)
    # make_classification draws an informative x informative covariance factor and the
    # samples in float64 (plus a copy each)
    check_fits_memory(
        8 * (informative**2 + 2 * total * features),
        f"synthetic data with {features} features ({informative} informative) and {total} samples",
        "ask for fewer features or samples",
    )
    x, y = make_classification(
        n_samples=total,
        n_features=features,
        n_informative=informative,
        n_redundant=0,
        n_classes=classes,
        n_clusters_per_class=1,
        class_sep=float(class_sep),
        random_state=seed,
    )
    data = make_data(
        x[:train],
        y[:train],
        x[train:],
        y[train:],
        name="synthetic",
        info={"seed": seed, "classes": classes, "layouts": _flat_layouts(features)},
    )
    return standardized(data) if standardize else data
