"""peft as a test oracle: the same A, B and α on the same base model give the same logits and the
same trainable set as peft's LoRA."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

peft = pytest.importorskip("peft")
from peft import LoraConfig, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402

from conftest import build_tiny, logits, randomize_lora  # noqa: E402
from lora_nb.lora import LoRAConfig, lora_layers, merge_lora  # noqa: E402
from lora_nb.methods import count_parameters, prepare_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# Our weight types as peft target_modules. peft matches a module whose full name equals an entry
# or ends with "." + entry, so "attention.output.dense" selects Wo but not the feed-forward
# output ("...layer.0.output.dense").
PEFT_TARGETS = {"q": "query", "k": "key", "v": "value", "o": "attention.output.dense"}
# Our head: RoBERTa's classifier; BERT's classifier and pooler.
PEFT_HEAD = {"roberta": ["classifier"], "bert": ["classifier", "pooler"]}
PREFIX = "base_model.model."


def build_pair(base, kind: str, targets, r: int, alpha: float):
    ours = copy.deepcopy(base)
    prepare_model(ours, "lora", LoRAConfig(targets, r=r, alpha=alpha))
    randomize_lora(ours, seed=5, std=0.3)
    ours.eval()

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=[PEFT_TARGETS[t] for t in targets],
        lora_dropout=0.0,
        bias="none",
        modules_to_save=PEFT_HEAD[kind],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = get_peft_model(copy.deepcopy(base), config)
    peft_layers = {
        n.removeprefix(PREFIX): m for n, m in theirs.named_modules() if isinstance(m, LoraLayer)
    }
    # peft adapts exactly the modules we do
    assert set(peft_layers) == set(lora_layers(ours))
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            p = peft_layers[name]
            assert p.scaling["default"] == layer.scaling
            p.lora_A["default"].weight.copy_(layer.lora_A)
            p.lora_B["default"].weight.copy_(layer.lora_B)
    theirs.eval()
    return ours, theirs


def peft_counts(theirs) -> tuple[int, int]:
    trainable = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    lora = sum(p.numel() for n, p in theirs.named_parameters() if ".lora_A." in n or ".lora_B." in n)
    return trainable, lora


CASES = [
    (("q", "v"), 8, 8.0),
    (("q", "v"), 4, 16.0),
    (("q", "k", "v", "o"), 2, 4.0),
]


@pytest.mark.parametrize("targets, r, alpha", CASES)
def test_matches_peft_on_tiny_roberta(batch, targets, r, alpha):
    base = build_tiny("roberta")
    ours, theirs = build_pair(base, "roberta", targets, r, alpha)
    ours_logits = logits(ours, batch)
    assert (ours_logits - logits(base, batch)).abs().max() > 1e-3  # B really is nonzero
    torch.testing.assert_close(ours_logits, logits(theirs, batch), atol=1e-5, rtol=0)

    trainable, lora = peft_counts(theirs)
    counts = count_parameters(ours)
    assert counts.lora == lora
    assert counts.trainable == trainable  # LoRA + classifier in both


@pytest.mark.parametrize("targets, r, alpha", [CASES[0], CASES[2]])
def test_matches_peft_on_tiny_bert(batch, targets, r, alpha):
    base = build_tiny("bert")
    ours, theirs = build_pair(base, "bert", targets, r, alpha)
    ours_logits = logits(ours, batch)
    assert (ours_logits - logits(base, batch)).abs().max() > 1e-3
    torch.testing.assert_close(ours_logits, logits(theirs, batch), atol=1e-5, rtol=0)
    trainable, lora = peft_counts(theirs)
    counts = count_parameters(ours)
    assert counts.lora == lora
    assert counts.trainable == trainable  # LoRA + classifier + pooler in both


@pytest.mark.parametrize("targets, r, alpha", [(("q", "v"), 8, 8.0), (("q", "k", "v", "o"), 4, 16.0)])
def test_matches_peft_on_minilm(minilm_template, batch, targets, r, alpha):
    ours, theirs = build_pair(minilm_template, "bert", targets, r, alpha)
    ours_logits = logits(ours, batch)
    assert (ours_logits - logits(minilm_template, batch)).abs().max() > 1e-3
    torch.testing.assert_close(ours_logits, logits(theirs, batch), atol=1e-5, rtol=0)

    trainable, lora = peft_counts(theirs)
    counts = count_parameters(ours)
    # 6 layers, d = 384: 2 · 6 · 384 · r per target
    assert counts.lora == lora == 2 * 6 * 384 * r * len(targets)
    assert counts.trainable == trainable
    # peft's own summary agrees
    assert theirs.get_nb_trainable_parameters()[0] == trainable


def test_merged_weights_match_peft_merge_and_unload():
    base = build_tiny("roberta")
    ours, theirs = build_pair(base, "roberta", ("q", "k", "v", "o"), 4, 8.0)
    merge_lora(ours)
    merged = theirs.merge_and_unload()
    for name, layer in lora_layers(ours).items():
        torch.testing.assert_close(layer.weight, merged.get_submodule(name).weight, atol=1e-6, rtol=0)
        torch.testing.assert_close(layer.bias, merged.get_submodule(name).bias, atol=0, rtol=0)
