"""The ``pairs="blocks"`` rule: one skip per block boundary, as in the N2NSkip authors' VGG code.

A *block* is a maximal run of convolutions (in layer order) at one spatial size: the layers
between two spatial downsamplings (pooling or a strided convolution). For consecutive
blocks ``B_b, B_{b+1}`` the rule asks for a skip from the input of ``B_b`` (the layers or
graph input that feed its first convolution) to the first convolution of ``B_{b+1}``: one
block is jumped, and a VGG16 gets four skips. Fully connected layers form no block, so the
classifier gets no skip; a network without two convolution blocks (an MLP, a transformer,
a DenseNet block at one resolution) is refused, since the rule has nothing to follow there.
"""

from __future__ import annotations

from n2nonnx.errors import InvalidArgumentError
from n2nonnx.graph.layers import Layer


def conv_blocks(layers: list[Layer]) -> list[list[Layer]]:
    """The model's convolution blocks: runs of Conv layers at one spatial size, in layer order.

    Args:
        layers: the sequential layers.

    Returns:
        The blocks, each a list of layers in order.
    """
    blocks: list[list[Layer]] = []
    for layer in sorted(layers, key=lambda la: la.index):
        if layer.op != "Conv" or not layer.spatial_out:
            continue
        if blocks and blocks[-1][-1].spatial_out == layer.spatial_out:
            blocks[-1].append(layer)
        else:
            blocks.append([layer])
    return blocks


def block_pair_names(layers: list[Layer]) -> list[tuple[str, str]]:
    """``(source, target)`` names of the block rule: each block's input -> next block's first conv.

    Args:
        layers: the sequential layers.

    Returns:
        The pairs, sources being layer names or ``input:<name>``.

    Raises:
        InvalidArgumentError: fewer than two convolution blocks.
    """
    blocks = conv_blocks(layers)
    if len(blocks) < 2:
        raise InvalidArgumentError(
            f"pairs='blocks' joins each convolution block's input (blocks are the convs between "
            f"spatial downsamplings) to the next block's first conv, and this model has "
            f"{len(blocks)} such block{'s' if len(blocks) != 1 else ''}: use pairs='all' "
            "(--pairs all) or a maximum k (--max-k)"
        )
    names: list[tuple[str, str]] = []
    for block, following in zip(blocks, blocks[1:], strict=False):
        for edge in block[0].fed_by:
            if (edge.source, following[0].name) not in names:
                names.append((edge.source, following[0].name))
    return names
