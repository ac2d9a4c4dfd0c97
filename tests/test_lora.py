"""The LoRA layer and its injection (lora_nb.lora): paper §4.1 (Eq. 3, init, merge) and §4.2."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY_D, TINY_FF, TINY_LAYERS, build_tiny, logits, randomize_lora
from lora_nb.lora import (
    TARGET_PATTERNS,
    LoRAConfig,
    LoRALinear,
    add_lora,
    get_lora_config,
    lora_layers,
    merge_lora,
    set_lora_dropout,
    unmerge_lora,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_TARGETS = ("q", "k", "v", "o", "ffn_in", "ffn_out")
# The module name each weight type must select in BERT/RoBERTa layer i.
EXPECTED_SUFFIX = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "o": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}


def _expected_names(model: nn.Module, targets) -> set[str]:
    prefix = model.base_model_prefix  # "roberta" / "bert"
    return {
        f"{prefix}.encoder.layer.{i}.{EXPECTED_SUFFIX[t]}"
        for t in targets
        for i in range(model.config.num_hidden_layers)
    }


# --- a fresh injection changes nothing (B = 0) -------------------------------------------------


@pytest.mark.parametrize("targets", [("q", "v"), ALL_TARGETS])
def test_fresh_injection_gives_identical_logits_tiny(tiny_model, batch, targets):
    base = copy.deepcopy(tiny_model)
    add_lora(tiny_model, targets, r=4, alpha=16)
    assert len(lora_layers(tiny_model)) == TINY_LAYERS * len(targets)
    assert torch.equal(logits(tiny_model, batch), logits(base, batch))


def test_fresh_injection_gives_identical_logits_minilm(minilm, minilm_template, batch):
    add_lora(minilm, ALL_TARGETS, r=8, alpha=8)
    assert len(lora_layers(minilm)) == 6 * len(ALL_TARGETS)
    assert torch.equal(logits(minilm, batch), logits(minilm_template, batch))


# --- merge / unmerge ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["roberta", "bert", "minilm"])
def test_merged_and_unmerged_logits_agree(kind, batch, request):
    model = request.getfixturevalue("minilm") if kind == "minilm" else build_tiny(kind)
    base_logits = logits(model, batch)
    add_lora(model, ALL_TARGETS, r=4, alpha=8)
    randomize_lora(model)
    unmerged = logits(model, batch)
    # the random B really changes the model, so the comparison below means something
    assert (unmerged - base_logits).abs().max() > 1e-3
    merge_lora(model)
    merged = logits(model, batch)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    unmerge_lora(model)
    torch.testing.assert_close(logits(model, batch), unmerged, atol=1e-5, rtol=0)


def test_merge_unmerge_weights_flag_and_idempotence(tiny_roberta):
    add_lora(tiny_roberta, ALL_TARGETS, r=4, alpha=8)
    randomize_lora(tiny_roberta)
    layers = lora_layers(tiny_roberta)
    w0 = {n: layer.weight.detach().clone() for n, layer in layers.items()}
    assert not any(layer.merged for layer in layers.values())

    merge_lora(tiny_roberta)
    merged_once = {n: layer.weight.detach().clone() for n, layer in layers.items()}
    for n, layer in layers.items():
        assert layer.merged
        expected = w0[n] + (layer.lora_B @ layer.lora_A) * layer.scaling
        torch.testing.assert_close(layer.weight, expected, atol=1e-6, rtol=0)
        assert not torch.allclose(layer.weight, w0[n])
    merge_lora(tiny_roberta)  # idempotent: ΔW is not added twice
    for n, layer in layers.items():
        assert layer.merged
        assert torch.equal(layer.weight, merged_once[n])

    unmerge_lora(tiny_roberta)
    restored = {n: layer.weight.detach().clone() for n, layer in layers.items()}
    for n, layer in layers.items():
        assert not layer.merged
        torch.testing.assert_close(layer.weight, w0[n], atol=1e-6, rtol=0)
    unmerge_lora(tiny_roberta)  # idempotent: ΔW is not subtracted twice
    for n, layer in layers.items():
        assert not layer.merged
        assert torch.equal(layer.weight, restored[n])


def test_merge_happens_in_float32_for_bf16_weights():
    torch.manual_seed(0)
    base = nn.Linear(24, 16).to(torch.bfloat16)
    w0 = base.weight.detach().clone()
    layer = LoRALinear(base, r=4, alpha=8)
    assert layer.lora_A.dtype == layer.lora_B.dtype == torch.bfloat16
    with torch.no_grad():
        layer.lora_B.normal_(0, 0.05)
    delta = (layer.lora_B.float() @ layer.lora_A.float()) * layer.scaling
    expected = (w0.float() + delta).bfloat16()
    layer.merge()
    assert layer.weight.dtype == torch.bfloat16
    assert torch.equal(layer.weight, expected)
    assert not torch.equal(layer.weight, w0)
    # ΔW itself is computed in float32
    assert layer.delta_weight().dtype == torch.float32


def test_merged_forward_is_the_base_linear_alone():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(12, 10), r=2, alpha=4).eval()
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(5, 12)
    unmerged = layer(x)
    layer.merge()
    with torch.no_grad():
        out = layer(x)
        assert torch.equal(out, F.linear(x, layer.weight, layer.bias))
        torch.testing.assert_close(out, unmerged, atol=1e-5, rtol=0)
        # the LoRA path is not evaluated at all: changing B no longer changes the output
        layer.lora_B.mul_(1000.0)
        assert torch.equal(layer(x), out)


def test_merged_layer_in_training_mode_raises(tiny_bert, batch):
    add_lora(tiny_bert, ("q", "v"))
    merge_lora(tiny_bert)
    tiny_bert.train()
    with pytest.raises(RuntimeError, match="merged but in training mode.*unmerge_lora"):
        tiny_bert(**batch)
    # eval mode is fine, and unmerging makes training possible again
    tiny_bert.eval()
    tiny_bert(**batch)
    unmerge_lora(tiny_bert)
    tiny_bert.train()
    assert tiny_bert(**batch).logits.shape == (4, 3)


# --- state dict --------------------------------------------------------------------------------


def test_state_dict_keeps_base_names(tiny_roberta):
    base_keys = set(tiny_roberta.state_dict())
    add_lora(tiny_roberta, ("q", "v"), r=4)
    keys = set(tiny_roberta.state_dict())
    q = "roberta.encoder.layer.0.attention.self.query"
    assert {f"{q}.weight", f"{q}.bias", f"{q}.lora_A", f"{q}.lora_B"} <= keys
    assert base_keys <= keys
    added = keys - base_keys
    assert added and all(k.endswith((".lora_A", ".lora_B")) for k in added)
    assert len(added) == 2 * TINY_LAYERS * 2
    assert not any("base_layer" in k or "original" in k for k in keys)


def test_base_state_dict_loads_into_injected_model(batch):
    base = build_tiny("roberta", seed=0)
    other = build_tiny("roberta", seed=7)  # different base weights
    add_lora(other, ("q", "k", "v", "o"), r=4)
    result = other.load_state_dict(base.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert set(result.missing_keys) == {
        k for k in other.state_dict() if k.endswith((".lora_A", ".lora_B"))
    }
    assert len(result.missing_keys) == 2 * TINY_LAYERS * 4
    # the injected model (B = 0) now computes exactly what `base` does
    assert torch.equal(logits(other, batch), logits(base, batch))


# --- initialisation and hyperparameters ---------------------------------------------------------


def test_init_A_kaiming_uniform_bounded_and_B_zero(tiny_roberta):
    add_lora(tiny_roberta, ALL_TARGETS, r=8)
    layers = lora_layers(tiny_roberta)
    in_features = {layer.in_features for layer in layers.values()}
    assert in_features == {TINY_D, TINY_FF}  # ffn_out has a non-square input
    for layer in layers.values():
        bound = 1 / math.sqrt(layer.in_features)
        assert layer.lora_A.shape == (8, layer.in_features)
        assert layer.lora_B.shape == (layer.out_features, 8)
        assert layer.lora_A.abs().max() <= bound
        # a real uniform draw, not zeros or a constant
        assert layer.lora_A.abs().max() > bound / 2
        assert layer.lora_A.std() > bound / 4
        assert torch.count_nonzero(layer.lora_B) == 0
        assert layer.lora_A.requires_grad and layer.lora_B.requires_grad
        assert not layer.weight.requires_grad and not layer.bias.requires_grad


@pytest.mark.parametrize("r, alpha", [(8, 8.0), (4, 16.0), (16, 8.0), (1, 1.0)])
def test_scaling_is_alpha_over_r(tiny_roberta, r, alpha):
    add_lora(tiny_roberta, ("q",), r=r, alpha=alpha)
    for layer in lora_layers(tiny_roberta).values():
        assert layer.r == r and layer.alpha == alpha
        assert layer.scaling == alpha / r
    assert get_lora_config(tiny_roberta) == LoRAConfig(("q",), r=r, alpha=alpha)


def test_scaling_applies_to_the_update():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = LoRALinear(copy.deepcopy(base), r=2, alpha=6)  # scaling 3
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 6)
    with torch.no_grad():
        expected = base(x) + 3.0 * (x @ layer.lora_A.T @ layer.lora_B.T)
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=0)


def test_dropout_zero_uses_no_dropout_module(tiny_roberta):
    add_lora(tiny_roberta, ("q", "v"), dropout=0.0)
    for layer in lora_layers(tiny_roberta).values():
        assert isinstance(layer.lora_dropout, nn.Identity)
        assert not any(isinstance(m, nn.Dropout) for m in layer.modules())


def test_dropout_positive_uses_dropout_module(tiny_bert):
    add_lora(tiny_bert, ("q", "v"), dropout=0.1)
    for layer in lora_layers(tiny_bert).values():
        assert isinstance(layer.lora_dropout, nn.Dropout)
        assert layer.lora_dropout.p == 0.1


# --- target selection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "targets",
    [("q",), ("k",), ("v",), ("o",), ("ffn_in",), ("ffn_out",), ("q", "v"), ("q", "k", "v", "o"),
     ("o", "ffn_out"), ALL_TARGETS],
)
def test_every_target_subset_selects_exactly_its_modules(tiny_model, targets):
    add_lora(tiny_model, targets, r=2)
    assert set(lora_layers(tiny_model)) == _expected_names(tiny_model, targets)
    assert get_lora_config(tiny_model).targets == tuple(targets)
    for name, layer in lora_layers(tiny_model).items():
        if name.endswith("intermediate.dense"):
            assert (layer.in_features, layer.out_features) == (TINY_D, TINY_FF)
        elif name.endswith("attention.output.dense") or "attention.self" in name:
            assert (layer.in_features, layer.out_features) == (TINY_D, TINY_D)
        else:  # the feed-forward output
            assert (layer.in_features, layer.out_features) == (TINY_FF, TINY_D)


def test_targets_accept_a_single_string(tiny_roberta):
    add_lora(tiny_roberta, "v")
    assert set(lora_layers(tiny_roberta)) == _expected_names(tiny_roberta, ("v",))


def test_ffn_out_pattern_does_not_match_attention_output():
    import re

    pattern = TARGET_PATTERNS["ffn_out"]
    assert re.search(pattern, "roberta.encoder.layer.3.output.dense")
    assert re.search(pattern, "bert.encoder.layer.11.output.dense")
    assert not re.search(pattern, "roberta.encoder.layer.3.attention.output.dense")
    assert re.search(TARGET_PATTERNS["o"], "roberta.encoder.layer.3.attention.output.dense")
    assert not re.search(TARGET_PATTERNS["o"], "roberta.encoder.layer.3.output.dense")
    # nor the classifier's or the pooler's dense layers
    for name in ("classifier.dense", "classifier.out_proj", "bert.pooler.dense"):
        assert not any(re.search(p, name) for p in TARGET_PATTERNS.values())


def test_ffn_out_on_a_model_leaves_attention_output_alone(tiny_bert):
    add_lora(tiny_bert, ("ffn_out",))
    for i in range(TINY_LAYERS):
        layer = tiny_bert.bert.encoder.layer[i]
        assert isinstance(layer.output.dense, LoRALinear)
        assert not isinstance(layer.attention.output.dense, LoRALinear)
        assert type(layer.attention.output.dense) is nn.Linear


# --- errors ------------------------------------------------------------------------------------


def test_unknown_target_raises(tiny_roberta):
    with pytest.raises(ValueError, match=r"unknown weight type\(s\) \['w'\].*choose from"):
        add_lora(tiny_roberta, ("q", "w"))
    assert lora_layers(tiny_roberta) == {}


def test_empty_or_repeated_targets_raise(tiny_roberta):
    with pytest.raises(ValueError, match="unknown weight type"):
        add_lora(tiny_roberta, ())
    with pytest.raises(ValueError, match="repeated weight type"):
        add_lora(tiny_roberta, ("q", "q"))
    assert lora_layers(tiny_roberta) == {}


def test_target_matching_no_module_lists_module_names():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(
        ValueError,
        match=r"target 'q' .*matches no nn.Linear in Sequential; its linear modules include: 0, 2",
    ):
        add_lora(model, ("q",))
    assert lora_layers(model) == {}
    assert type(model[0]) is nn.Linear


def test_partially_matching_targets_change_nothing():
    # "q" matches, "k" does not: the model must be left untouched.
    model = nn.Module()
    model.attention = nn.Module()
    model.attention.self = nn.Module()
    model.attention.self.query = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="target 'k'"):
        add_lora(model, ("q", "k"))
    assert lora_layers(model) == {}
    assert get_lora_config(model) is None


@pytest.mark.parametrize("r", [0, -1])
def test_nonpositive_rank_raises(tiny_roberta, r):
    with pytest.raises(ValueError, match=r"r: the rank must be an integer >= 1"):
        add_lora(tiny_roberta, r=r)
    assert lora_layers(tiny_roberta) == {}


@pytest.mark.parametrize("r", [2.0, 8.5, "8", True, None])
def test_non_integer_rank_raises(r):
    with pytest.raises(ValueError, match=r"r: the rank must be an integer >= 1, got"):
        LoRAConfig(r=r)


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan")])
def test_nonpositive_alpha_raises(tiny_roberta, alpha):
    with pytest.raises(ValueError, match=r"alpha: must be > 0"):
        add_lora(tiny_roberta, alpha=alpha)
    assert lora_layers(tiny_roberta) == {}


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_dropout_outside_unit_interval_raises(tiny_roberta, dropout):
    with pytest.raises(ValueError, match=r"dropout: must lie in \[0, 1\)"):
        add_lora(tiny_roberta, dropout=dropout)
    assert lora_layers(tiny_roberta) == {}


def test_injecting_twice_raises(tiny_roberta):
    add_lora(tiny_roberta, ("q", "v"), r=4)
    before = set(lora_layers(tiny_roberta))
    with pytest.raises(ValueError, match="already has LoRA layers; inject only once"):
        add_lora(tiny_roberta, ("q", "v"), r=4)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        add_lora(tiny_roberta, ("k",), r=2)
    # no nesting, and the first configuration stays
    assert set(lora_layers(tiny_roberta)) == before
    assert get_lora_config(tiny_roberta).r == 4


def test_lora_config_round_trips_through_dict():
    config = LoRAConfig(targets=["q", "k"], r=16, alpha=32, dropout=0.05)
    assert config.targets == ("q", "k")
    d = config.to_dict()
    assert d == {"targets": ["q", "k"], "r": 16, "alpha": 32, "dropout": 0.05}
    assert LoRAConfig(**d) == config


def test_injected_layers_keep_the_model_mode(batch):
    model = build_tiny("roberta")  # eval mode
    add_lora(model, ("q", "v"), dropout=0.5)
    randomize_lora(model)
    assert not any(layer.training for layer in lora_layers(model).values())
    # LoRA dropout is off in eval mode: inference is deterministic
    assert torch.equal(logits(model, batch), logits(model, batch))
    model.train()
    assert all(layer.training for layer in lora_layers(model).values())

    in_training = build_tiny("bert").train()
    add_lora(in_training, ("q", "v"))
    assert all(layer.training for layer in lora_layers(in_training).values())


def test_set_lora_dropout_needs_lora_layers_and_a_valid_p():
    model = build_tiny("roberta")
    with pytest.raises(ValueError, match="no LoRA layers"):
        set_lora_dropout(model, 0.1)
    add_lora(model, ("q",), r=2)
    with pytest.raises(ValueError, match=r"dropout: must lie in \[0, 1\)"):
        set_lora_dropout(model, 1.5)
    set_lora_dropout(model, 0.1)
    assert all(layer.lora_dropout.p == 0.1 for layer in lora_layers(model).values())
