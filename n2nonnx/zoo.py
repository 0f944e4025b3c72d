"""Built-in PyTorch architectures: the default model of the main job and the test models.

Each factory returns a freshly initialised ``nn.Module``; export it with
``converters.pytorch.export`` (which checks the export in onnxruntime) or, for the main
job's built-in models, :func:`export_builtin`. Sizes are small by default (CPU-friendly)
and every width is a parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from n2nonnx.registry import name_registry

ZOO: dict[str, Callable[..., nn.Module]] = {}


register = name_registry(ZOO, "zoo model")  # @register("name") adds a factory to ZOO


@register("mlp")
def mlp(
    in_features: int = 40,
    hidden: Sequence[int] = (256, 256, 256),
    classes: int = 10,
    batchnorm: bool = False,
) -> nn.Module:
    """A fully connected ReLU network (the default model, sized for MNIST-1D)."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers.append(nn.Linear(width, size))
        if batchnorm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(nn.ReLU())
        width = size
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


_CONV_FAMILY = {
    1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d),
}


def _vgg_features(
    dims: int, in_channels: int, size: int, widths: Sequence[int], pool_after: Sequence[int]
) -> tuple[list[nn.Module], int]:
    """Conv-BN-ReLU blocks with 2x max pooling after the listed positions; (layers, flat size)."""
    conv, norm, pool = _CONV_FAMILY[dims]
    layers: list[nn.Module] = []
    channels = in_channels
    for position, width in enumerate(widths):
        layers += [conv(channels, width, 3, padding=1), norm(width), nn.ReLU()]
        if position in pool_after:
            layers.append(pool(2))
            size //= 2
        channels = width
    return [*layers, nn.Flatten()], channels * size**dims


@register("vgg1d")
def vgg1d(
    in_channels: int = 1,
    length: int = 40,
    widths: Sequence[int] = (32, 32, 64, 64),
    pool_after: Sequence[int] = (1, 3),
    classes: int = 10,
) -> nn.Module:
    """A VGG-style 1-D CNN (conv-BN-ReLU blocks, max pooling) for MNIST-1D."""
    layers, flat = _vgg_features(1, in_channels, length, widths, pool_after)
    return nn.Sequential(*layers, nn.Linear(flat, classes))


@register("vgg2d")
def vgg2d(
    in_channels: int = 3,
    size: int = 32,
    widths: Sequence[int] = (16, 16, 32, 32),
    pool_after: Sequence[int] = (1, 3),
    classes: int = 10,
    hidden: int = 64,
) -> nn.Module:
    """A VGG-style 2-D CNN with a two-layer classifier."""
    layers, flat = _vgg_features(2, in_channels, size, widths, pool_after)
    return nn.Sequential(
        *layers, nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, classes)
    )


class BasicBlock(nn.Module):
    """A ResNet basic block; a strided 1x1 conv shortcut when the shape changes."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
                nn.BatchNorm2d(channels_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


@register("resnet")
def resnet(
    in_channels: int = 3, widths: Sequence[int] = (16, 32), blocks: int = 1, classes: int = 10
) -> nn.Module:
    """A small ResNet: stem conv, stages of basic blocks (stride 2 between), GAP, FC."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
    ]
    channels = widths[0]
    for stage, width in enumerate(widths):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(channels, width, stride))
            channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)]
    return nn.Sequential(*layers)


class DenseLayer(nn.Module):
    """BN-ReLU-Conv producing ``growth`` channels, concatenated to its input."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with ``growth`` new channels appended (channel axis 1)."""
        return torch.cat([x, self.conv(torch.relu(self.bn(x)))], dim=1)


@register("densenet")
def densenet(
    in_channels: int = 3, stem: int = 8, growth: int = 4, layers: int = 3, classes: int = 10
) -> nn.Module:
    """A DenseNet-style block: each layer's output is concatenated to all earlier ones."""
    modules: list[nn.Module] = [nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)]
    channels = stem
    for _ in range(layers):
        modules.append(DenseLayer(channels, growth))
        channels += growth
    modules += [
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, classes),
    ]
    return nn.Sequential(*modules)


@register("mobilenet")
def mobilenet(
    in_channels: int = 3, widths: Sequence[int] = (16, 32), classes: int = 10
) -> nn.Module:
    """MobileNet-style: depthwise 3x3 + pointwise 1x1 blocks, one grouped conv, hard-swish."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, widths[0], 3, 2, 1),
        nn.BatchNorm2d(widths[0]),
        nn.Hardswish(),
    ]
    channels = widths[0]
    for width in widths:
        layers += [
            nn.Conv2d(channels, channels, 3, 1, 1, groups=channels),
            nn.BatchNorm2d(channels),
            nn.ReLU6(),
            nn.Conv2d(channels, width, 1),
            nn.BatchNorm2d(width),
            nn.ReLU6(),
        ]
        channels = width
    layers += [
        nn.Conv2d(channels, channels, 3, 1, 1, groups=4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, classes),
    ]
    return nn.Sequential(*layers)


class EncoderClassifier(nn.Module):
    """A transformer encoder layer over a sequence, mean-pooled into a classifier."""

    def __init__(self, features: int, width: int, heads: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Linear(features, width)
        self.encoder = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True
        )
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (batch, classes) of a (batch, tokens, features) input."""
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


@register("transformer")
def transformer(features: int = 8, width: int = 32, heads: int = 4, classes: int = 10) -> nn.Module:
    """A transformer-encoder block (MatMul weights) on inputs of shape (batch, tokens, features)."""
    return EncoderClassifier(features, width, heads, classes)


def build(name: str, **options) -> nn.Module:
    """Build zoo model ``name`` (see :data:`ZOO`)."""
    from n2nonnx.errors import InvalidArgumentError

    if name not in ZOO:
        raise InvalidArgumentError(f"unknown built-in model {name!r}; choose from {sorted(ZOO)}")
    return ZOO[name](**options)


# Example input shapes of the built-in models of the main job (MNIST-1D: 40 features).
BUILTIN_INPUTS = {"mlp": (1, 40), "vgg1d": (1, 1, 40)}


def export_builtin(
    arch: str, path: str | Path, seed: int = 0, options: dict[str, Any] | None = None
) -> Path:
    """Build the built-in ``arch`` (with ``options``) for MNIST-1D and save it as ONNX.

    Args:
        arch: ``mlp`` or ``vgg1d``.
        path: the ``.onnx`` file to write.
        seed: seed of the initial weights.
        options: keyword arguments of the factory (widths ...).

    Returns:
        The path written.

    Raises:
        InvalidArgumentError: an unknown architecture.
    """
    from n2nonnx.errors import InvalidArgumentError
    from n2nonnx.io import save
    from n2nonnx.torch_export import to_onnx

    if arch not in BUILTIN_INPUTS:
        raise InvalidArgumentError(
            f"unknown built-in architecture {arch!r}; choose from {sorted(BUILTIN_INPUTS)}"
        )
    torch.manual_seed(seed)
    module = build(arch, **(options or {})).eval()
    proto = to_onnx(module, (torch.randn(*BUILTIN_INPUTS[arch]),), ["x"], ["y"])
    return save(proto, path)
