"""LoRA on a whole model (every chapter): add, list, merge, unmerge and remove adapters, count parameters.

:func:`add_lora` wraps the chosen ``nn.Linear`` submodules of a model in :class:`lrkit.lora.LoRALinear`
(the layer, with PEFT's semantics) and freezes everything else; targets are matched as PEFT
matches a list of names (exact name or dotted suffix). :func:`merge_lora`, :func:`unmerge_lora` and
:func:`remove_lora` act on every adapter of a model. ``from lrkit.lora import add_lora`` (and
``lrkit.add_lora``) keep working: :mod:`lrkit.lora` re-exports these names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

from ._validate import as_int, positive_int
from .init import check_init_name
from .lora import LoRALinear, check_alpha, check_dropout, check_rank

__all__ = ["add_lora", "count_parameters", "lora_layers", "lora_parameter_count", "merge_lora", "remove_lora",
           "trainable_parameters", "unmerge_lora"]


def _matches(name: str, target: str) -> bool:
    # PEFT's rule for a list of target names: exact name or a dotted suffix.
    return name == target or name.endswith("." + target)


def add_lora(model: nn.Module, rank: int, alpha: float | None = None, targets: Sequence[str] | str | None = None,
             init: str = "A", dropout: float = 0.0, rslora: bool = False, dora: bool = False) -> nn.Module:
    """Wrap the chosen ``nn.Linear`` submodules of ``model`` in :class:`LoRALinear`, in place.

    Every parameter of ``model`` is frozen except the new adapters' ``A`` and ``B``
    (and DoRA's ``magnitude`` when ``dora=True``).
    ``targets``: ``None`` (every ``nn.Linear``), or module names matched as PEFT does
    (exact name or dotted suffix, e.g. ``["q", "fc2"]``). A target that matches no
    ``nn.Linear`` is an error. A bare ``nn.Linear`` model is not supported: wrap it
    directly with ``LoRALinear(layer, rank)``. Returns ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, nn.Linear):
        raise TypeError("model is a bare nn.Linear: use LoRALinear(model, rank) instead of add_lora")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("model already carries LoRA adapters; call remove_lora(model) first")
    check_init_name(init)
    if not isinstance(dora, bool):
        raise TypeError(f"dora must be True or False, got {dora!r}")
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    aliases: dict[int, list[str]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, nn.Linear):
            aliases.setdefault(id(m), []).append(n)
    if targets is None:
        chosen = list(linears)
    else:
        names = [targets] if isinstance(targets, str) else list(targets)
        if not names or not all(isinstance(t, str) for t in names):
            raise TypeError("targets must be None, a module name, or a non-empty list of module names")
        missing = [t for t in names if not any(_matches(n, t) for n in linears)]
        if missing:
            raise ValueError(f"targets {missing} match no nn.Linear in the model; "
                             f"the model's nn.Linear modules are {sorted(linears)}")
        chosen = [n for n in linears if any(_matches(n, t) for t in names)]
    if not chosen:
        raise ValueError("model has no nn.Linear modules to adapt")
    for name in chosen:  # validate everything before changing anything
        try:
            check_rank(rank, linears[name].in_features, linears[name].out_features)
        except ValueError as e:
            raise ValueError(f"{e} (layer {name!r})") from None
        if len(aliases[id(linears[name])]) > 1:
            raise ValueError(f"the nn.Linear {name!r} is used at several places {aliases[id(linears[name])]} "
                             "(tied weights); an adapter would be added to one of them only: untie them first")
    check_alpha(alpha, as_int(rank, "rank"))
    check_dropout(dropout)
    rank = as_int(rank, "rank")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(linears[name], rank, alpha=alpha, init=init, dropout=dropout,
                                          rslora=rslora, dora=dora))
    return model


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """The ``(name, layer)`` pairs of every :class:`LoRALinear` in ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every adapter of ``model`` (see :meth:`LoRALinear.merge`)."""
    for _, layer in lora_layers(model):
        if not layer.merged:
            layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Unmerge every adapter of ``model``."""
    for _, layer in lora_layers(model):
        if layer.merged:
            layer.unmerge()
    return model


def remove_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace every :class:`LoRALinear` by its base ``nn.Linear`` (merged first if ``merge``)."""
    for name, layer in lora_layers(model):
        if merge and not layer.merged:
            layer.merge()
        elif not merge and layer.merged:
            layer.unmerge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.base)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) scalar parameters of ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def lora_parameter_count(in_features: int, out_features: int, rank: int) -> int:
    """Parameters of one adapter: ``r (in + out)``, against ``in * out`` for the full matrix."""
    in_features = positive_int(in_features, "in_features")
    out_features = positive_int(out_features, "out_features")
    rank = check_rank(rank, in_features, out_features)
    return rank * (in_features + out_features)


def trainable_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    """The parameters an optimiser should see (those with ``requires_grad``)."""
    return (p for p in model.parameters() if p.requires_grad)
