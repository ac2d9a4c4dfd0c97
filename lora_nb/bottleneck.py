"""Bottleneck adapters, the baselines AdptH, AdptP and AdptD of paper Table 2 (§5.1).

An adapter is a residual bottleneck h ← h + W_up f(W_down h), W_down ∈ R^{m×d}, W_up ∈ R^{d×m}
(Houlsby et al., 2019, §2.1). Where it sits in each transformer layer:

- ``houlsby`` (AdapterH, Houlsby et al., 2019): after the attention output projection and after
  the feed-forward output projection, before each residual add + LayerNorm;
- ``pfeiffer`` (AdapterP, Pfeiffer et al., 2021): one adapter per layer, after the feed-forward
  output projection only. Pfeiffer et al. place it after the feed-forward LayerNorm with their
  own residual; here it takes Houlsby's feed-forward position, which has the same parameter
  count (the LoRA paper's AdapterL/AdapterP are "applied only after the MLP module");
- AdapterDrop (AdapterD, Rücklé et al., 2020): ``drop = n`` removes the adapters of the n lowest
  layers.

Written by hand, small and tested: the AdapterHub library does not run with transformers 5.x and
peft has no Houlsby/Pfeiffer adapters. Adapters are added without renaming any base parameter
(a base checkpoint still loads; LoRA's ``TARGET_PATTERNS`` still match): each `Bottleneck` is a
submodule ``adapter`` of the projection's parent (``...attention.output.adapter.down.weight``)
and is applied to the projection's output by a forward hook.

This module depends on torch alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .checks import is_int

KINDS = ("houlsby", "pfeiffer")

# transformers' BERT/RoBERTa names: the projections an adapter follows, by position.
ATTENTION_OUTPUT = r"encoder\.layer\.(\d+)\.attention\.output\.dense$"
FFN_OUTPUT = r"encoder\.layer\.(\d+)\.output\.dense$"
POSITIONS = {"houlsby": (ATTENTION_OUTPUT, FFN_OUTPUT), "pfeiffer": (FFN_OUTPUT,)}


@dataclass(frozen=True)
class AdapterConfig:
    """What `add_adapters` was called with; stored in adapter checkpoints.

    `kind` "houlsby" or "pfeiffer"; `size` the bottleneck width m; `drop` the number of lowest
    layers left without adapters (AdapterDrop).
    """

    kind: str = "houlsby"
    size: int = 8
    drop: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: unknown adapter kind {self.kind!r}; choose from {KINDS}")
        if not is_int(self.size) or self.size < 1:
            raise ValueError(f"size: the bottleneck width must be an integer >= 1, got {self.size!r}")
        if not is_int(self.drop) or self.drop < 0:
            raise ValueError(f"drop: the number of dropped layers must be an integer >= 0, got {self.drop!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class Bottleneck(nn.Module):
    """h + up(GELU(down(h))), down: d → m, up: m → d (Houlsby et al., 2019, §2.1).

    `up` starts at zero (weight and bias), so the module is exactly the identity at
    initialisation: Houlsby et al.'s near-identity initialisation, as LoRA's B = 0.
    """

    def __init__(self, d: int, m: int, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.down = nn.Linear(d, m, **factory)
        # Houlsby et al. put a nonlinearity between the projections; GELU, as BERT's feed-forward.
        self.act = nn.GELU()
        self.up = nn.Linear(m, d, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """down Kaiming-uniform (a = √5, as nn.Linear and LoRA's A), bias zero; up all zeros."""
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook on the projection: replaces its output y by y + adapter(y). BertSelfOutput
        and BertOutput then apply dropout (so after the adapter, where Houlsby et al. apply it
        before), the residual add and the LayerNorm. A bound method, so `copy.deepcopy` of the
        model hooks the copied adapter."""
        return self(output)

    def extra_repr(self) -> str:
        return f"d={self.down.in_features}, m={self.down.out_features}"


def adapter_modules(model: nn.Module) -> dict[str, Bottleneck]:
    """Every `Bottleneck` in `model`, by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, Bottleneck)}


def _projections(model: nn.Module, patterns: tuple[str, ...]) -> dict[str, int]:
    """Linear modules matching `patterns`, with their layer index."""
    found = {}
    for name, module in model.named_modules():
        for pattern in patterns:
            match = re.search(pattern, name)
            if match and isinstance(module, nn.Linear):
                found[name] = int(match.group(1))
    return found


def add_adapters(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Insert bottleneck adapters into a BERT/RoBERTa model, in place (see module docstring).

    No parameter is frozen or unfrozen here: `prepare_model` decides what trains.
    """
    if not isinstance(config, AdapterConfig):
        raise TypeError(f"config: expected an AdapterConfig, got {type(config).__name__}")
    if get_adapter_config(model) is not None or adapter_modules(model):
        raise ValueError("add_adapters: this model already has adapters; add them only once")
    every = _projections(model, (ATTENTION_OUTPUT, FFN_OUTPUT))
    layers = len(set(every.values()))
    if not layers:
        raise ValueError(
            f"add_adapters: no encoder layers found in {type(model).__name__} (no module named "
            f"like '...{ATTENTION_OUTPUT}' or '...{FFN_OUTPUT}'): BERT/RoBERTa only"
        )
    if config.drop >= layers:
        raise ValueError(
            f"drop: {config.drop} would remove every adapter; the model has {layers} layers "
            f"(drop must be < {layers})"
        )
    handles = {}
    for name, layer in _projections(model, POSITIONS[config.kind]).items():
        if layer < config.drop:
            continue
        dense = model.get_submodule(name)
        parent = model.get_submodule(name.rpartition(".")[0])
        if hasattr(parent, "adapter"):
            raise ValueError(f"add_adapters: {name.rpartition('.')[0]} already has an 'adapter' attribute")
        adapter = Bottleneck(dense.out_features, config.size, dense.weight.device, dense.weight.dtype)
        adapter.train(dense.training)
        parent.adapter = adapter
        handles[name] = dense.register_forward_hook(adapter.hook)
    model.adapter_config = config
    model.adapter_hooks = handles  # projection name -> RemovableHandle, see `remove_adapters`
    return model


def remove_adapters(model: nn.Module) -> nn.Module:
    """Undo `add_adapters`: remove the hooks, the adapter modules and the stored configuration."""
    for handle in getattr(model, "adapter_hooks", {}).values():
        handle.remove()
    for name in adapter_modules(model):
        delattr(model.get_submodule(name.rpartition(".")[0]), "adapter")
    for attr in ("adapter_config", "adapter_hooks"):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


def get_adapter_config(model: nn.Module) -> AdapterConfig | None:
    """The `AdapterConfig` that `add_adapters` used on `model`, or None."""
    return getattr(model, "adapter_config", None)


def is_adapter_parameter(name: str) -> bool:
    """True for a bottleneck adapter's parameters (``...output.adapter.down.weight``)."""
    return ".adapter." in name


def adapter_parameter_count(d: int, layers: int, config: AdapterConfig) -> int:
    """Adapter parameters of a model with `layers` layers of width `d`: (2·d·m + m + d) per
    bottleneck (two matrices with biases), two per adapted layer for Houlsby, one for Pfeiffer,
    over layers − drop adapted layers (the LoRA paper's |Θ| for adapters, §5.1, less LayerNorm)."""
    if config.drop >= layers:
        raise ValueError(f"drop: {config.drop} would remove every adapter; the model has {layers} layers")
    per_layer = len(POSITIONS[config.kind])
    m = config.size
    return (layers - config.drop) * per_layer * (2 * d * m + m + d)
