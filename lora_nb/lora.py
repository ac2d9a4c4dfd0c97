"""The LoRA layer and its injection into a model (Hu et al., 2021, §4).

h = W0 x + (α / r) · B A x   (paper Eq. 3), with W0 frozen, A ∈ R^{r×k} Kaiming-uniform and
B ∈ R^{d×r} zero, so that a freshly injected model computes exactly what the base model does.

This module depends on torch alone. Which module of a transformers model is Wq, Wk, Wv or Wo
is written down once, in ``TARGET_PATTERNS``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .checks import is_int

# Weight type -> regular expression over a module's full name. BERT and RoBERTa (transformers)
# share these names; the feed-forward pair is optional (paper §4.2 adapts attention only).
TARGET_PATTERNS: dict[str, str] = {
    "q": r"attention\.self\.query$",
    "k": r"attention\.self\.key$",
    "v": r"attention\.self\.value$",
    "o": r"attention\.output\.dense$",
    "ffn_in": r"intermediate\.dense$",
    "ffn_out": r"(?<!attention)\.output\.dense$",
}


@dataclass(frozen=True)
class LoRAConfig:
    """What `add_lora` was called with; stored in adapter checkpoints."""

    targets: tuple[str, ...] = ("q", "v")
    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        object.__setattr__(self, "targets", targets)
        unknown = [t for t in targets if t not in TARGET_PATTERNS]
        if unknown or not targets:
            raise ValueError(
                f"targets: unknown weight type(s) {unknown or targets!r}; "
                f"choose from {sorted(TARGET_PATTERNS)}"
            )
        if len(set(targets)) != len(targets):
            raise ValueError(f"targets: repeated weight type in {targets!r}")
        if not is_int(self.r) or self.r < 1:
            raise ValueError(f"r: the rank must be an integer >= 1, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha: must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must lie in [0, 1), got {self.dropout!r}")

    def same_update(self, other: LoRAConfig) -> bool:
        """Whether `other` describes the same ΔW = B A · α/r: the same targets, r and α. The one
        rule for "is this the same adapter" (checkpoints, `prepare_model`); dropout acts only
        while training, so it may differ (`set_lora_dropout` changes it)."""
        return (self.targets, self.r, self.alpha) == (other.targets, other.r, other.alpha)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d


class LoRALinear(nn.Linear):
    """A frozen `nn.Linear` W0 plus the low-rank update ΔW = B A · α/r (paper §4.1, Eq. 3).

    It subclasses `nn.Linear` and reuses the wrapped layer's `weight` and `bias`, so the state
    dict keeps the base model's parameter names (`...query.weight`) and only adds `lora_A`,
    `lora_B`.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **factory))
        # p = 0 costs nothing: no dropout mask is drawn on the LoRA path.
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_lora_parameters()
        self.train(base.training)  # keep the wrapped layer's train/eval mode

    def reset_lora_parameters(self) -> None:
        """A Kaiming-uniform (a = √5, as microsoft/LoRA), B zeros: ΔW = 0 at the start (§4.1)."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = B A · α/r, computed in float32."""
        return (self.lora_B.float() @ self.lora_A.float()) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            if self.training and self.lora_A.requires_grad:
                raise RuntimeError(
                    "LoRALinear is merged but in training mode: call unmerge_lora(model) "
                    "before training, or model.eval() for inference."
                )
            return out
        lora = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return out.add_(lora, alpha=self.scaling)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into W0 (in float32): inference then costs exactly the base layer (§4.1)."""
        if not self.merged:
            self.weight.copy_(self.weight.float() + self.delta_weight())
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ΔW again, restoring W0."""
        if self.merged:
            self.weight.copy_(self.weight.float() - self.delta_weight())
            self.merged = False

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"r={self.r}, alpha={self.alpha}, merged={self.merged}"
        )


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every `LoRALinear` in `model`, by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def add_lora(
    model: nn.Module,
    targets: tuple[str, ...] | list[str] | str = ("q", "v"),
    r: int = 8,
    alpha: float = 8.0,
    dropout: float = 0.0,
) -> nn.Module:
    """Replace the target projections of `model` by `LoRALinear` layers, in place (§4.2).

    `targets` names weight types ("q", "k", "v", "o", optionally "ffn_in", "ffn_out"). The model's
    other parameters are left as they are: `prepare_model` decides what trains.
    """
    config = LoRAConfig(targets=targets, r=r, alpha=alpha, dropout=dropout)
    if lora_layers(model):
        raise ValueError("add_lora: this model already has LoRA layers; inject only once")
    linear_names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen: dict[str, str] = {}
    for target in config.targets:
        matches = [n for n in linear_names if re.search(TARGET_PATTERNS[target], n)]
        if not matches:
            sample = ", ".join(linear_names[:8]) or "none"
            raise ValueError(
                f"add_lora: target {target!r} (pattern {TARGET_PATTERNS[target]!r}) matches no "
                f"nn.Linear in {type(model).__name__}; its linear modules include: {sample}"
            )
        chosen.update({n: target for n in matches})
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), config.r, config.alpha, config.dropout))
    model.lora_config = config
    return model


def get_lora_config(model: nn.Module) -> LoRAConfig | None:
    """The `LoRAConfig` that `add_lora` injected into `model`, or None."""
    return getattr(model, "lora_config", None)


def set_lora_dropout(model: nn.Module, p: float) -> nn.Module:
    """Set the dropout on every LoRA layer's input to `p` (a training setting; ΔW is unchanged)."""
    config = get_lora_config(model)
    if config is None:
        raise ValueError("set_lora_dropout: this model has no LoRA layers")
    model.lora_config = replace(config, dropout=p)  # validates p
    for layer in lora_layers(model).values():
        layer.lora_dropout = nn.Dropout(p) if p > 0 else nn.Identity()
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA layer (idempotent)."""
    for layer in lora_layers(model).values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Unmerge every LoRA layer (idempotent)."""
    for layer in lora_layers(model).values():
        layer.unmerge()
    return model
