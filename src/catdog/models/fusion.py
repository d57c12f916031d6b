"""Fold inference-mode BatchNorm into the convolution before it: the same function, fewer passes over memory.

In eval mode ``BatchNorm2d(conv(x))`` is an affine map per output channel, so it can be folded into the
convolution's weight and bias (``torch.nn.utils.fusion.fuse_conv_bn_weights``) and the BatchNorm replaced by
``nn.Identity``. The network computes the same function up to float rounding, and each BatchNorm's read and
write of the whole activation tensor disappears, so forwards are faster (bench/RESULTS.md). Explain folds its
(freshly loaded, inference-only) network in fp32 only: under bf16 autocast the folded weights round differently
and the maps moved further from fp32. Training never folds.

Pairs are found by tracing the network with ``torch.fx``, so any architecture works whose forward fx can
trace (all torchvision classifiers here); a network fx cannot trace is left as it is.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

log = logging.getLogger(__name__)

__all__ = ["conv_bn_pairs", "fold_batchnorm"]


def conv_bn_pairs(net: nn.Module) -> list[tuple[str, str]]:
    """``(conv, batchnorm)`` module names where a ``Conv2d``'s output goes only into a ``BatchNorm2d``.

    Each module of a pair must be called exactly once in the forward pass (a shared module cannot be folded
    for one of its uses only).

    Args:
        net: the network (traced with ``torch.fx.symbolic_trace``; not changed).

    Returns:
        The pairs in forward order; empty when fx cannot trace the network.
    """
    try:
        graph = torch.fx.symbolic_trace(net).graph
    except Exception as err:  # noqa: BLE001 (fx fails in many ways, e.g. data-dependent control flow)
        log.info("BatchNorm not folded: torch.fx cannot trace %s (%s)", type(net).__name__, err)
        return []
    modules = dict(net.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and isinstance(modules.get(source.target), nn.Conv2d)
            and len(source.users) == 1
            and calls[source.target] == 1
            and calls[node.target] == 1
        ):
            pairs.append((str(source.target), str(node.target)))
    return pairs


def fold_batchnorm(net: nn.Module, keep: Iterable[nn.Module] = ()) -> int:
    """Fold every foldable ``BatchNorm2d`` into the ``Conv2d`` before it, in place (inference only).

    The convolution keeps its identity (hooks on enclosing blocks such as ``layer4`` see the same outputs);
    the BatchNorm becomes ``nn.Identity``.

    Args:
        net: a network in eval mode.
        keep: modules whose own output must stay as it is, e.g. a layer an explainer hooks: a pair with
            either module in ``keep`` is not folded (folding would change what a hooked convolution outputs).

    Returns:
        How many BatchNorms were folded.

    Raises:
        ValueError: ``net`` is in training mode (BatchNorm then uses batch statistics and cannot be folded).
    """
    if net.training:
        raise ValueError(
            "fold_batchnorm is for inference: call net.eval() first (training BatchNorm uses batch statistics)"
        )
    kept = {id(module) for module in keep}
    folded = 0
    for conv_name, bn_name in conv_bn_pairs(net):
        conv, bn = net.get_submodule(conv_name), net.get_submodule(bn_name)
        hooked = any(
            getattr(module, hooks) for module in (conv, bn) for hooks in ("_forward_hooks", "_forward_pre_hooks")
        )
        if id(conv) in kept or id(bn) in kept or hooked or bn.running_mean is None or bn.running_var is None:
            continue
        with torch.no_grad():
            conv.weight, conv.bias = fuse_conv_bn_weights(
                conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
        net.set_submodule(bn_name, nn.Identity())
        folded += 1
    return folded
