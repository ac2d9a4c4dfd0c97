"""Which parameters train for each method of paper Table 2, and how many there are.

- ``lora``: the LoRA matrices and the classification head (as microsoft/LoRA's run_glue.py);
- ``full``: every parameter (FT);
- ``bitfit``: every bias and the head (BitFit, Ben Zaken et al., 2021);
- ``head``: the head alone (a frozen-encoder baseline);
- ``houlsby``, ``pfeiffer``: bottleneck adapters (AdptH, AdptP; with ``drop``, AdptD; see
  `lora_nb.bottleneck`), every LayerNorm and the head. Houlsby et al. (2019, §2.1) train the layer
  norms with the adapters; the LoRA paper counts them too (§5.1).

The head is the task-specific part a pretrained checkpoint does not hold: RoBERTa's
``classifier`` (dense + out_proj), and for BERT the ``classifier`` plus the ``pooler`` in front
of it, the analogue of RoBERTa's dense layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from .bottleneck import (
    AdapterConfig,
    adapter_parameter_count,
    add_adapters,
    get_adapter_config,
    is_adapter_parameter,
)
from .lora import LoRAConfig, add_lora, get_lora_config, lora_layers, set_lora_dropout

METHODS = ("lora", "full", "bitfit", "head", "houlsby", "pfeiffer")
ADAPTER_METHODS = ("houlsby", "pfeiffer")
HEAD_PREFIXES = ("classifier.", "bert.pooler.")


def is_head_parameter(name: str) -> bool:
    """True for the classification head's parameters (see module docstring)."""
    return name.startswith(HEAD_PREFIXES)


def is_lora_parameter(name: str) -> bool:
    return name.endswith((".lora_A", ".lora_B"))


def is_layer_norm_parameter(name: str) -> bool:
    return "LayerNorm" in name


def is_trained(name: str, method: str) -> bool:
    """Whether parameter `name` trains under `method`."""
    if method == "full":
        return True
    if is_head_parameter(name):
        return True
    if method == "lora":
        return is_lora_parameter(name)
    if method == "bitfit":
        return name.endswith(".bias")
    if method in ADAPTER_METHODS:
        return is_adapter_parameter(name) or is_layer_norm_parameter(name)
    return False


def prepare_model(
    model: nn.Module, method: str, lora: LoRAConfig | None = None, adapter: AdapterConfig | None = None
) -> nn.Module:
    """Set up `model` for a training method, in place; inject LoRA first for ``lora``, adapters
    first for ``houlsby`` and ``pfeiffer``.

    For ``lora``, `lora` gives targets, r, α and dropout (default: r = 8, α = 8 on Wq, Wv,
    paper Table 9). For ``houlsby``/``pfeiffer``, `adapter` gives the bottleneck size and
    AdapterDrop's ``drop`` (default: ``AdapterConfig(kind=method)``); its kind must be the method.
    Other methods take neither.
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}; choose from {METHODS}")
    if method != "lora" and lora is not None:
        raise ValueError(f"method {method!r} takes no LoRA configuration (targets, r, alpha)")
    if method not in ADAPTER_METHODS and adapter is not None:
        raise ValueError(f"method {method!r} takes no adapter configuration (kind, size, drop)")
    if method in ADAPTER_METHODS:
        adapter = adapter or AdapterConfig(kind=method)
        if not isinstance(adapter, AdapterConfig):
            raise TypeError(f"adapter: expected an AdapterConfig, got {type(adapter).__name__}")
        if adapter.kind != method:
            raise ValueError(f"adapter: kind {adapter.kind!r} does not match method {method!r}")
        if lora_layers(model):
            raise ValueError(f"method {method!r}: this model has LoRA layers; the methods are exclusive")
    if method == "lora" and get_adapter_config(model) is not None:
        raise ValueError("method 'lora': this model has bottleneck adapters; the methods are exclusive")
    if not any(is_head_parameter(n) for n, _ in model.named_parameters()):
        raise ValueError(
            f"{type(model).__name__} has no classification head (parameters starting with "
            f"{HEAD_PREFIXES}); load it with AutoModelForSequenceClassification"
        )
    if method == "lora":
        lora = lora or LoRAConfig()
        current = get_lora_config(model)
        if current is None:
            add_lora(model, lora.targets, lora.r, lora.alpha, lora.dropout)
        elif not current.same_update(lora):
            raise ValueError(f"model already has LoRA {current}, not the requested {lora}: "
                             "targets, r and alpha must match")
        elif current.dropout != lora.dropout:
            set_lora_dropout(model, lora.dropout)
    if method in ADAPTER_METHODS:
        current = get_adapter_config(model)
        if current is None:
            add_adapters(model, adapter)
        elif current != adapter:
            raise ValueError(f"model already has adapters {current}, not the requested {adapter}")
    for name, param in model.named_parameters():
        param.requires_grad_(is_trained(name, method))
    model.training_method = method
    return model


@dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts of a model. Table 2's "# Trainable Parameters" excludes the head;
    `trainable_without_head` includes, for the adapter methods, the LayerNorms trained alongside."""

    total: int
    trainable: int
    lora: int
    head: int
    trainable_without_head: int
    adapter: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def count_parameters(model: nn.Module) -> ParameterCounts:
    """Total, trainable, LoRA-only, head-only and adapter-only parameter counts (head:
    trainable or not)."""
    total = trainable = lora = head = body_trainable = adapter = 0
    for name, p in model.named_parameters():
        n = p.numel()
        total += n
        trainable += n if p.requires_grad else 0
        lora += n if is_lora_parameter(name) else 0
        head += n if is_head_parameter(name) else 0
        body_trainable += n if p.requires_grad and not is_head_parameter(name) else 0
        adapter += n if is_adapter_parameter(name) else 0
    return ParameterCounts(total, trainable, lora, head, body_trainable, adapter)


def _roberta_base():
    """A RoBERTa-base-shaped classifier with random weights (no download)."""
    from .models import from_config, roberta_base_config

    return from_config(roberta_base_config())


def roberta_base_lora_counts(ranks=(1, 2, 4, 8, 64),
                             weight_types=(("q",), ("q", "v"), ("q", "k", "v", "o"))) -> str:
    """LoRA parameter counts of RoBERTa-base by weight type and rank, as a Markdown table:
    |Θ| = 2 · L̂ · d · r (§7.1)."""
    lines = ["| weight types | " + " | ".join(f"r={r}" for r in ranks) + " |",
             "|---" * (len(ranks) + 1) + "|"]
    for targets in weight_types:
        cells = [f"{count_parameters(prepare_model(_roberta_base(), 'lora', LoRAConfig(targets, r, 8.0))).lora:,}"
                 for r in ranks]
        lines.append(f"| {','.join('W' + t for t in targets)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def roberta_base_adapter_counts(
    configs=(AdapterConfig("houlsby", 8), AdapterConfig("houlsby", 24),
             AdapterConfig("pfeiffer", 16), AdapterConfig("pfeiffer", 48)),
) -> str:
    """Bottleneck adapter parameter counts of RoBERTa-base, as a Markdown table: the formula
    (`adapter_parameter_count`), the count measured on the model, the LayerNorm parameters that
    train alongside, and Table 2's "# Trainable Parameters" (without the head). Pfeiffer m = 16
    and m = 48 give the paper's AdptD budgets, ≈ 0.3M and ≈ 0.9M."""
    lines = ["| adapter | adapter params (formula) | measured | LayerNorm params | total without head |",
             "|---|---|---|---|---|"]
    for config in configs:
        model = prepare_model(_roberta_base(), config.kind, adapter=config)
        counts = count_parameters(model)
        layer_norm = sum(p.numel() for n, p in model.named_parameters() if is_layer_norm_parameter(n))
        formula = adapter_parameter_count(model.config.hidden_size, model.config.num_hidden_layers, config)
        name = f"{config.kind} m={config.size}" + (f" drop={config.drop}" if config.drop else "")
        lines.append(f"| {name} | {formula:,} | {counts.adapter:,} | {layer_norm:,} | "
                     f"{counts.trainable_without_head:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(roberta_base_lora_counts())
    print()
    print(roberta_base_adapter_counts())
    print(f"r = 8 on Wq, Wv: {count_parameters(prepare_model(_roberta_base(), 'lora', LoRAConfig()))}")
