"""Bottleneck adapters (lora_nb.bottleneck) and the adapter methods ``houlsby``/``pfeiffer`` of
lora_nb.methods: identity at initialisation, placement, parameter counts (the paper's AdptD
budgets), what trains, checkpoints, and the refusals."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from safetensors import safe_open
from torch import nn

from conftest import TINY_D, TINY_LAYERS, build_tiny, logits
from lora_nb import methods
from lora_nb.checkpoint import load_adapter, trained_state_dict, read_adapter, save_adapter
from lora_nb.bottleneck import (
    AdapterConfig,
    Bottleneck,
    adapter_modules,
    adapter_parameter_count,
    add_adapters,
    get_adapter_config,
    is_adapter_parameter,
    remove_adapters,
)
from lora_nb.models import from_config, roberta_base_config
from lora_nb.lora import TARGET_PATTERNS, LoRAConfig
from lora_nb.methods import count_parameters, prepare_model

pytestmark = pytest.mark.usefixtures("one_thread")

HEAD = {"roberta": ("classifier.",), "bert": ("classifier.", "bert.pooler.")}
CONFIGS = [AdapterConfig("houlsby", 4), AdapterConfig("pfeiffer", 4),
           AdapterConfig("houlsby", 3, drop=1), AdapterConfig("pfeiffer", 5, drop=1)]


def bottleneck_size(d: int, m: int) -> int:
    """One bottleneck written out: down (m×d + m) and up (d×m + d)."""
    return m * d + m + d * m + d


def randomize_adapters(model: nn.Module, seed: int = 1, std: float = 0.1) -> None:
    """Give every adapter a nonzero `up`, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in adapter_modules(model).values():
            for p in adapter.up.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def simulate_training(model: nn.Module, seed: int = 3) -> None:
    """Change every trainable parameter (adapters, LayerNorms, head)."""
    randomize_adapters(model, seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def meta_roberta_base() -> nn.Module:
    """RoBERTa-base on the meta device: shapes only, built in milliseconds."""
    with torch.device("meta"):
        return from_config(roberta_base_config())


# --- the module ----------------------------------------------------------------------------------


def test_bottleneck_is_the_identity_at_initialisation_and_learns():
    torch.manual_seed(0)
    block = Bottleneck(16, 4)
    h = torch.randn(3, 5, 16)
    assert torch.equal(block(h), h)
    assert torch.count_nonzero(block.up.weight) == 0 and torch.count_nonzero(block.up.bias) == 0
    assert torch.count_nonzero(block.down.weight) > 0
    assert isinstance(block.act, nn.GELU)
    with torch.no_grad():
        block.up.weight.normal_()
    expected = h + block.up(nn.functional.gelu(block.down(h)))
    assert torch.allclose(block(h), expected) and not torch.allclose(block(h), h)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_injected_model_computes_the_base_model_exactly(tiny_model, batch, config):
    expected = logits(tiny_model, batch)
    add_adapters(tiny_model, config)
    assert adapter_modules(tiny_model)
    assert torch.equal(logits(tiny_model, batch), expected)
    randomize_adapters(tiny_model)
    assert not torch.allclose(logits(tiny_model, batch), expected, atol=1e-4)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_placement(tiny_model, config):
    prefix = "roberta" if tiny_model.kind == "roberta" else "bert"
    add_adapters(tiny_model, config)
    expected = set()
    for i in range(config.drop, TINY_LAYERS):
        expected.add(f"{prefix}.encoder.layer.{i}.output.adapter")
        if config.kind == "houlsby":
            expected.add(f"{prefix}.encoder.layer.{i}.attention.output.adapter")
    assert set(adapter_modules(tiny_model)) == expected
    assert all(m.down.out_features == config.size and m.up.out_features == TINY_D
               for m in adapter_modules(tiny_model).values())
    assert set(tiny_model.adapter_hooks) == {n.replace(".adapter", ".dense") for n in expected}
    assert get_adapter_config(tiny_model) == config


def test_each_adapter_acts_on_its_own_projection(tiny_roberta, batch):
    """Changing only the layer-1 attention adapter changes what layer 1's attention output
    LayerNorm sees, and nothing in layer 0."""
    add_adapters(tiny_roberta, AdapterConfig("houlsby", 4))
    layer0, layer1 = tiny_roberta.roberta.encoder.layer[:2]
    seen = {}
    hooks = [layer0.output.LayerNorm.register_forward_hook(lambda m, a, o: seen.__setitem__(0, a[0])),
             layer1.attention.output.LayerNorm.register_forward_hook(lambda m, a, o: seen.__setitem__(1, a[0]))]
    logits(tiny_roberta, batch)
    before = dict(seen)
    with torch.no_grad():
        layer1.attention.output.adapter.up.bias.fill_(1.0)
    logits(tiny_roberta, batch)
    for h in hooks:
        h.remove()
    assert torch.equal(seen[0], before[0])
    assert torch.allclose(seen[1] - before[1], torch.ones_like(seen[1]))  # eval: no dropout


def test_base_names_are_unchanged_and_a_base_checkpoint_loads(tiny_model):
    base_state = tiny_model.state_dict()
    base_modules = {n for n, _ in tiny_model.named_modules()}
    add_adapters(tiny_model, AdapterConfig("houlsby", 4))
    keys = set(tiny_model.state_dict())
    assert set(base_state) < keys
    assert all(is_adapter_parameter(k) for k in keys - set(base_state))
    assert not any(is_adapter_parameter(k) for k in base_state)
    assert any(k.endswith("attention.output.adapter.down.weight") for k in keys)
    result = tiny_model.load_state_dict(base_state, strict=False)
    assert result.unexpected_keys == [] and set(result.missing_keys) == keys - set(base_state)
    # LoRA's weight-type patterns still pick the same projections
    after = {n for n, _ in tiny_model.named_modules()}
    for pattern in TARGET_PATTERNS.values():
        assert {n for n in after if re.search(pattern, n)} == {n for n in base_modules if re.search(pattern, n)}


def test_deepcopy_hooks_the_copied_adapters(tiny_bert, batch):
    add_adapters(tiny_bert, AdapterConfig("pfeiffer", 4))
    expected = logits(tiny_bert, batch)
    clone = copy.deepcopy(tiny_bert)
    randomize_adapters(clone)
    assert torch.equal(logits(tiny_bert, batch), expected)
    assert not torch.allclose(logits(clone, batch), expected, atol=1e-4)


def test_remove_adapters_restores_the_base_model(tiny_roberta, batch):
    expected = logits(tiny_roberta, batch)
    keys = set(tiny_roberta.state_dict())
    add_adapters(tiny_roberta, AdapterConfig("houlsby", 4))
    randomize_adapters(tiny_roberta)
    remove_adapters(tiny_roberta)
    assert adapter_modules(tiny_roberta) == {} and get_adapter_config(tiny_roberta) is None
    assert set(tiny_roberta.state_dict()) == keys
    assert torch.equal(logits(tiny_roberta, batch), expected)
    add_adapters(tiny_roberta, AdapterConfig("pfeiffer", 2))  # and can be added again


# --- parameter counts -----------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_counts_follow_the_formula_tiny(tiny_model, config):
    base_total = sum(p.numel() for p in tiny_model.parameters())
    prepare_model(tiny_model, config.kind, adapter=config)
    counts = count_parameters(tiny_model)
    per_layer = 2 if config.kind == "houlsby" else 1
    adapters = (TINY_LAYERS - config.drop) * per_layer * bottleneck_size(TINY_D, config.size)
    # two LayerNorms per layer and the embeddings', each weight + bias
    layer_norm = (2 * TINY_LAYERS + 1) * 2 * TINY_D
    assert counts.adapter == adapters == adapter_parameter_count(TINY_D, TINY_LAYERS, config)
    assert counts.trainable_without_head == adapters + layer_norm
    assert counts.trainable == adapters + layer_norm + counts.head
    assert counts.total == base_total + adapters
    assert counts.lora == 0


@pytest.mark.parametrize(
    "config, expected",
    [
        (AdapterConfig("pfeiffer", 16), 304_320),  # AdptD 0.3M: 12 · (2·768·16 + 16 + 768)
        (AdapterConfig("pfeiffer", 48), 894_528),  # AdptD 0.9M
        (AdapterConfig("houlsby", 8), 313_536),  # 24 · (2·768·8 + 8 + 768)
        (AdapterConfig("houlsby", 24), 903_744),
        (AdapterConfig("houlsby", 16, drop=6), 6 * 2 * 25_360),
        (AdapterConfig("pfeiffer", 16, drop=11), 25_360),
    ],
    ids=str,
)
def test_roberta_base_counts(config, expected):
    counts = count_parameters(prepare_model(meta_roberta_base(), config.kind, adapter=config))
    assert counts.adapter == expected == adapter_parameter_count(768, 12, config)
    # LayerNorms: 12 layers × 2 + the embeddings', 2 · 768 each
    assert counts.trainable_without_head == expected + 38_400
    assert counts.head == 592_130 and counts.trainable == expected + 38_400 + 592_130
    assert counts.total == 124_647_170 + expected


def test_roberta_base_adapter_counts_table(monkeypatch):
    monkeypatch.setattr(methods, "_roberta_base", meta_roberta_base)
    lines = methods.roberta_base_adapter_counts().splitlines()
    assert lines[0].startswith("| adapter | adapter params (formula) | measured |")
    assert lines[2:] == [
        "| houlsby m=8 | 313,536 | 313,536 | 38,400 | 351,936 |",
        "| houlsby m=24 | 903,744 | 903,744 | 38,400 | 942,144 |",
        "| pfeiffer m=16 | 304,320 | 304,320 | 38,400 | 342,720 |",
        "| pfeiffer m=48 | 894,528 | 894,528 | 38,400 | 932,928 |",
    ]


# --- what trains ----------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_only_adapters_layer_norms_and_head_get_gradients(tiny_model, batch, config):
    prepare_model(tiny_model, config.kind, adapter=config)
    assert tiny_model.training_method == config.kind
    tiny_model.train()
    tiny_model(**batch, labels=torch.tensor([0, 1, 2, 1])).loss.backward()
    trained = set()
    for name, p in tiny_model.named_parameters():
        expected = ".adapter." in name or "LayerNorm" in name or name.startswith(HEAD[tiny_model.kind])
        assert p.requires_grad == expected, name
        assert (p.grad is not None) == expected, name
        if expected:
            trained.add(name)
    ups = [n for n in trained if ".adapter.up." in n]
    assert len(ups) == 2 * len(adapter_modules(tiny_model))
    assert all(tiny_model.get_parameter(n).grad.abs().sum() > 0 for n in ups)
    assert any(n.endswith("LayerNorm.weight") for n in trained)


def test_default_adapter_config_and_repeat_prepare(tiny_roberta):
    prepare_model(tiny_roberta, "pfeiffer")
    assert get_adapter_config(tiny_roberta) == AdapterConfig("pfeiffer", 8, 0)
    prepare_model(tiny_roberta, "pfeiffer", adapter=AdapterConfig("pfeiffer"))  # same: fine
    assert len(adapter_modules(tiny_roberta)) == TINY_LAYERS
    with pytest.raises(ValueError, match="already has adapters"):
        prepare_model(tiny_roberta, "pfeiffer", adapter=AdapterConfig("pfeiffer", 4))


# --- checkpoints ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["roberta", "bert"])
@pytest.mark.parametrize("config", [AdapterConfig("houlsby", 4), AdapterConfig("pfeiffer", 3, drop=1)], ids=str)
def test_checkpoint_round_trip(kind, config, batch, tmp_path):
    base = build_tiny(kind)
    fresh = copy.deepcopy(base)
    trained = prepare_model(copy.deepcopy(base), config.kind, adapter=config)
    simulate_training(trained)
    trained.eval()
    expected = logits(trained, batch)
    assert not torch.allclose(expected, logits(base, batch), atol=1e-3)

    path = save_adapter(trained, tmp_path / "adapter.safetensors")
    _, meta = read_adapter(path)
    assert meta["adapter_config"] == config.to_dict() and meta["lora_config"] is None
    assert meta["method"] == config.kind
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    names = [n for n, _ in trained.named_parameters()]
    assert keys == {n for n in names if ".adapter." in n or "LayerNorm" in n or n.startswith(HEAD[kind])}
    assert keys == set(trained_state_dict(trained))

    load_adapter(fresh, path)
    assert get_adapter_config(fresh) == config
    assert set(adapter_modules(fresh)) == set(adapter_modules(trained))
    assert fresh.training_method == config.kind
    assert torch.equal(logits(fresh.eval(), batch), expected)


def test_include_head_false_loads_adapters_and_layer_norms(tmp_path):
    base = build_tiny("bert")
    trained = prepare_model(copy.deepcopy(base), "houlsby", adapter=AdapterConfig("houlsby", 4))
    simulate_training(trained)
    path = save_adapter(trained, tmp_path / "mnli.safetensors")
    body = set(trained_state_dict(trained, include_head=False))
    assert body and all(".adapter." in k or "LayerNorm" in k for k in body)
    target = copy.deepcopy(base)
    own_head = {n: p.detach().clone() for n, p in target.named_parameters() if n.startswith(HEAD["bert"])}
    load_adapter(target, path, include_head=False)
    params = dict(trained.named_parameters())
    for n, p in target.named_parameters():
        if n in own_head:
            assert torch.equal(p, own_head[n]), n
        elif n in body:
            assert torch.equal(p, params[n]), n


def test_checkpoint_with_other_adapter_config_raises_and_loads_nothing(tmp_path):
    base = build_tiny("roberta")
    trained = prepare_model(copy.deepcopy(base), "houlsby", adapter=AdapterConfig("houlsby", 4))
    simulate_training(trained)
    path = save_adapter(trained, tmp_path / "a.safetensors")
    model = prepare_model(copy.deepcopy(base), "houlsby", adapter=AdapterConfig("houlsby", 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="kind, size and drop must match"):
        load_adapter(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(size=0), r"size: the bottleneck width must be an integer >= 1, got 0"),
        (dict(size=-1), r"size: .* got -1"),
        (dict(size=True), r"size: .* got True"),
        (dict(size=8.0), r"size: .* got 8\.0"),
        (dict(kind="lora"), r"kind: unknown adapter kind 'lora'; choose from \('houlsby', 'pfeiffer'\)"),
        (dict(drop=-1), r"drop: .* got -1"),
        (dict(drop=False), r"drop: .* got False"),
    ],
)
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(**kwargs)


@pytest.mark.parametrize("drop", [2, 5])
def test_drop_of_every_layer_raises(tiny_roberta, drop):
    config = AdapterConfig("houlsby", 4, drop=drop)
    with pytest.raises(ValueError, match=rf"drop: {drop} would remove every adapter; the model has 2 layers"):
        add_adapters(tiny_roberta, config)
    assert adapter_modules(tiny_roberta) == {} and get_adapter_config(tiny_roberta) is None
    with pytest.raises(ValueError, match="drop: .* the model has 12 layers"):
        adapter_parameter_count(768, 12, AdapterConfig(drop=12))


def test_adding_twice_and_models_without_layers_raise(tiny_bert):
    add_adapters(tiny_bert, AdapterConfig("pfeiffer", 4))
    with pytest.raises(ValueError, match="already has adapters"):
        add_adapters(tiny_bert, AdapterConfig("houlsby", 4))
    assert len(adapter_modules(tiny_bert)) == TINY_LAYERS
    with pytest.raises(ValueError, match="no encoder layers found in Sequential"):
        add_adapters(nn.Sequential(nn.Linear(4, 4)), AdapterConfig())


def test_prepare_model_refusals(tiny_roberta):
    with pytest.raises(ValueError, match="adapter: kind 'pfeiffer' does not match method 'houlsby'"):
        prepare_model(tiny_roberta, "houlsby", adapter=AdapterConfig("pfeiffer"))
    with pytest.raises(ValueError, match="method 'houlsby' takes no LoRA configuration"):
        prepare_model(tiny_roberta, "houlsby", LoRAConfig())
    for method in ("lora", "full", "bitfit", "head"):
        with pytest.raises(ValueError, match=f"method '{method}' takes no adapter configuration"):
            prepare_model(tiny_roberta, method, adapter=AdapterConfig())
    with pytest.raises(TypeError, match="adapter: expected an AdapterConfig"):
        prepare_model(tiny_roberta, "houlsby", adapter={"size": 4})
    assert adapter_modules(tiny_roberta) == {}  # nothing was injected
    prepare_model(tiny_roberta, "lora")
    with pytest.raises(ValueError, match="has LoRA layers; the methods are exclusive"):
        prepare_model(tiny_roberta, "pfeiffer")
    other = prepare_model(build_tiny("bert"), "houlsby")
    with pytest.raises(ValueError, match="has bottleneck adapters; the methods are exclusive"):
        prepare_model(other, "lora")
