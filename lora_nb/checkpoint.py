"""Adapter checkpoints: only what was trained, plus the configuration that made it.

For RoBERTa-base with r = 8 on Wq, Wv that is 294,912 LoRA weights and the head: a few MB
instead of the 500 MB a full checkpoint takes (paper §4.2, "Practical benefits"). For the
bottleneck adapter methods (``houlsby``, ``pfeiffer``) it is the adapters, the LayerNorms and the
head, with the `AdapterConfig`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .bottleneck import AdapterConfig, add_adapters, get_adapter_config
from .lora import LoRAConfig, add_lora, get_lora_config
from .methods import ADAPTER_METHODS, is_head_parameter, is_lora_parameter, is_trained



def trained_state_dict(model: nn.Module, include_head: bool = True) -> dict[str, torch.Tensor]:
    """The trained tensors of a model prepared by `prepare_model`: LoRA matrices, the head and,
    for BitFit, the biases; for the adapter methods, adapters, LayerNorms and the head. With
    ``include_head=False``, the LoRA matrices alone, or the adapters and LayerNorms alone."""
    method = getattr(model, "training_method", "lora")
    state = {}
    for name, p in model.named_parameters():
        trained = is_trained(name, method)
        body = is_lora_parameter(name) or (
            method in ADAPTER_METHODS and trained and not is_head_parameter(name)
        )
        keep = body or (include_head and trained)
        if keep:
            state[name] = p.detach().clone()
    return state


def load_trained_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into `model`'s parameters. Every key must exist with the same shape."""
    params = dict(model.named_parameters())
    missing = [k for k in state if k not in params]
    if missing:
        raise ValueError(
            f"adapter holds {len(missing)} tensor(s) this model lacks, e.g. {missing[:3]}: "
            "was it trained with other targets, another method or another model?"
        )
    for key, tensor in state.items():
        if params[key].shape != tensor.shape:
            raise ValueError(
                f"adapter tensor {key!r} has shape {tuple(tensor.shape)}, the model "
                f"{tuple(params[key].shape)}: rank, model or number of labels differ"
            )
    with torch.no_grad():
        for key, tensor in state.items():
            params[key].copy_(tensor)


def save_adapter(model: nn.Module, path: str | os.PathLike, /, **metadata: object) -> Path:
    """Write the trained tensors and the LoRA or adapter configuration to ``path`` (a
    safetensors file), atomically. Extra keyword arguments are stored as JSON metadata."""
    path = Path(path)
    config = get_lora_config(model)
    adapter = get_adapter_config(model)
    meta = {
        "lora_config": json.dumps(config.to_dict() if config else None),
        "adapter_config": json.dumps(adapter.to_dict() if adapter else None),
        "method": getattr(model, "training_method", "lora"),
        **{k: json.dumps(v) for k, v in metadata.items()},
    }
    state = {k: v.contiguous() for k, v in trained_state_dict(model).items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def _decoded(meta: dict | None) -> dict:
    return {k: (json.loads(v) if k != "method" else v) for k, v in (meta or {}).items()}


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of an adapter file (method, configurations), without reading its tensors."""
    with safe_open(str(path), framework="pt") as f:
        return _decoded(f.metadata())


def read_adapter(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of an adapter file (metadata values JSON-decoded)."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, _decoded(f.metadata())


def same_adapter(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two adapter files hold the same tensors and metadata (safetensors writes the
    metadata in no fixed order, so equal files may differ byte for byte)."""
    (sa, ma), (sb, mb) = read_adapter(a), read_adapter(b)
    return ma == mb and sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def publish_lora_tensors(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy the LoRA matrices of adapter file `src` to `dst` in half precision, with its metadata:
    what §7's subspace analysis reads, at a fraction of the size (no head, no biases)."""
    state, meta = read_adapter(src)
    lora = {k: v.to(torch.float16).contiguous() for k, v in state.items() if is_lora_parameter(k)}
    meta = {k: (v if k == "method" else json.dumps(v)) for k, v in meta.items()}
    meta["published"] = json.dumps("LoRA matrices only, float16")
    dst = Path(dst)
    save_file(lora, str(dst), metadata=meta)
    return dst


def load_adapter(
    model: nn.Module, path: str | os.PathLike, include_head: bool = True
) -> nn.Module:
    """Load an adapter file into `model`. A base model gets LoRA (or bottleneck adapters)
    injected with the stored configuration; a model that already has them must have the same one.

    ``include_head=False`` loads everything but the head (the LoRA matrices; the adapters and
    LayerNorms; for full fine-tuning the whole encoder): the paper's protocol for MRPC, RTE and
    STS-B, which start from the MNLI checkpoint with a new head (Appendix D.1; for full
    fine-tuning Liu et al., 2019).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"adapter file not found: {path}")
    state, meta = read_adapter(path)
    stored_adapter = meta.get("adapter_config")
    if stored_adapter is not None:
        stored_adapter = AdapterConfig(**stored_adapter)
        current = get_adapter_config(model)
        if current is not None and current != stored_adapter:
            raise ValueError(
                f"adapter {path} was trained with {stored_adapter}, the model has {current}: "
                "kind, size and drop must match"
            )
    stored = meta.get("lora_config")
    if stored is not None:
        stored = LoRAConfig(**stored)
        current = get_lora_config(model)
        if current is None:
            add_lora(model, stored.targets, stored.r, stored.alpha, stored.dropout)
        elif not current.same_update(stored):
            raise ValueError(
                f"adapter {path} was trained with {stored}, the model has {current}: "
                "targets, r and alpha must match"
            )
    if stored_adapter is not None and get_adapter_config(model) is None:
        add_adapters(model, stored_adapter)
    if not include_head:
        state = {k: v for k, v in state.items() if not is_head_parameter(k)}
    elif meta.get("method") and not hasattr(model, "training_method"):
        model.training_method = meta["method"]
    load_trained_state_dict(model, state)
    return model


if __name__ == "__main__":  # the size of a RoBERTa-base adapter file (README)
    import tempfile

    from .methods import _roberta_base, prepare_model
    from .rundir import ADAPTER_FILE

    with tempfile.TemporaryDirectory() as tmp:
        path = save_adapter(prepare_model(_roberta_base(), "lora", LoRAConfig(("q", "v"), 8, 8.0)),
                            Path(tmp) / ADAPTER_FILE)
        print(f"r = 8 on Wq, Wv: adapter file of {path.stat().st_size:,} bytes")
