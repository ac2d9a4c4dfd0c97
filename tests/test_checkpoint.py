"""Adapter checkpoints (lora_nb.checkpoint): only what was trained, plus the LoRA configuration."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors import safe_open

from conftest import TINY_D, TINY_LAYERS, build_tiny, logits, randomize_lora
from lora_nb.checkpoint import (
    load_adapter,
    load_trained_state_dict,
    trained_state_dict,
    read_adapter,
    save_adapter,
)
from lora_nb.lora import LoRAConfig, add_lora, get_lora_config, lora_layers
from lora_nb.methods import count_parameters, prepare_model

pytestmark = pytest.mark.usefixtures("one_thread")

HEAD = {"roberta": ("classifier.",), "bert": ("classifier.", "bert.pooler.")}


def simulate_training(model: torch.nn.Module, seed: int = 3) -> None:
    """Change what training would change: LoRA matrices (B nonzero), head and, for BitFit, biases."""
    randomize_lora(model, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.dim() >= 1:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def trained_copy(base, method="lora", config=None):
    model = copy.deepcopy(base)
    prepare_model(model, method, config)
    simulate_training(model)
    return model.eval()


def file_keys(path) -> set[str]:
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("kind", ["roberta", "bert"])
@pytest.mark.parametrize(
    "config", [LoRAConfig(("q", "v"), r=4, alpha=16), LoRAConfig(("q", "k", "v", "o", "ffn_out"), r=2, alpha=2)]
)
def test_lora_round_trip_reproduces_logits(kind, config, batch, tmp_path):
    base = build_tiny(kind)
    fresh = copy.deepcopy(base)  # the untouched pretrained weights
    trained = trained_copy(base, "lora", config)
    expected = logits(trained, batch)
    assert not torch.allclose(expected, logits(base, batch), atol=1e-3)

    path = save_adapter(trained, tmp_path / "adapter.safetensors")
    assert path.is_file() and not (tmp_path / "adapter.safetensors.tmp").exists()
    load_adapter(fresh, path)  # no other input: the LoRA config comes from the file
    assert torch.equal(logits(fresh.eval(), batch), expected)
    assert fresh.training_method == "lora"
    # the restored configuration
    assert get_lora_config(fresh) == config
    assert set(lora_layers(fresh)) == set(lora_layers(trained))
    for layer in lora_layers(fresh).values():
        assert (layer.r, layer.alpha, layer.scaling) == (config.r, config.alpha, config.alpha / config.r)


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_lora_file_holds_only_lora_tensors_and_head(kind, tmp_path):
    trained = trained_copy(build_tiny(kind), "lora", LoRAConfig(("q", "v"), r=4))
    path = save_adapter(trained, tmp_path / "a.safetensors")
    keys = file_keys(path)
    lora_keys = {n for n, _ in trained.named_parameters() if n.endswith((".lora_A", ".lora_B"))}
    head_keys = {n for n, _ in trained.named_parameters() if n.startswith(HEAD[kind])}
    assert len(lora_keys) == 2 * 2 * TINY_LAYERS
    assert keys == lora_keys | head_keys
    n_stored = 0
    with safe_open(str(path), framework="pt") as f:
        for k in keys:
            n_stored += f.get_tensor(k).numel()
    assert n_stored == count_parameters(trained).trainable


def test_metadata_holds_config_method_and_extras(tmp_path):
    trained = trained_copy(build_tiny("roberta"), "lora", LoRAConfig(("q", "v"), r=4, alpha=8, dropout=0.1))
    path = save_adapter(trained, tmp_path / "a.safetensors", task="mrpc", seed=3, scores=[0.5, 0.75])
    state, meta = read_adapter(path)
    assert meta["lora_config"] == {"targets": ["q", "v"], "r": 4, "alpha": 8, "dropout": 0.1}
    assert meta["method"] == "lora"
    assert (meta["task"], meta["seed"], meta["scores"]) == ("mrpc", 3, [0.5, 0.75])
    for k, v in trained_state_dict(trained).items():
        assert torch.equal(state[k], v)


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_bitfit_round_trip_holds_biases_and_head(kind, batch, tmp_path):
    base = build_tiny(kind)
    fresh = copy.deepcopy(base)
    trained = trained_copy(base, "bitfit")
    path = save_adapter(trained, tmp_path / "bitfit.safetensors")
    keys = file_keys(path)
    names = [n for n, _ in trained.named_parameters()]
    assert keys == {n for n in names if n.endswith(".bias") or n.startswith(HEAD[kind])}
    assert all(k.endswith(".bias") for k in keys if not k.startswith(HEAD[kind]))
    _, meta = read_adapter(path)
    assert meta["lora_config"] is None and meta["method"] == "bitfit"

    load_adapter(fresh, path)
    assert lora_layers(fresh) == {}
    assert torch.equal(logits(fresh.eval(), batch), logits(trained, batch))
    # the loaded model remembers its method: saving it again writes the same tensors
    assert fresh.training_method == "bitfit"
    again = save_adapter(fresh, tmp_path / "again.safetensors")
    assert file_keys(again) == keys


def test_head_only_round_trip(batch, tmp_path):
    base = build_tiny("bert")
    fresh = copy.deepcopy(base)
    trained = trained_copy(base, "head")
    path = save_adapter(trained, tmp_path / "head.safetensors")
    assert file_keys(path) == {n for n, _ in trained.named_parameters() if n.startswith(HEAD["bert"])}
    load_adapter(fresh, path)
    assert torch.equal(logits(fresh.eval(), batch), logits(trained, batch))


@pytest.mark.parametrize(
    "other", [LoRAConfig(("q", "v"), r=2, alpha=8), LoRAConfig(("q", "k"), r=4, alpha=8),
              LoRAConfig(("q", "v"), r=4, alpha=16)],
)
def test_mismatched_lora_config_raises(other, tmp_path):
    base = build_tiny("roberta")
    trained = trained_copy(base, "lora", LoRAConfig(("q", "v"), r=4, alpha=8))
    path = save_adapter(trained, tmp_path / "a.safetensors")
    model = copy.deepcopy(base)
    add_lora(model, other.targets, other.r, other.alpha)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="targets, r and alpha must match"):
        load_adapter(model, path)
    # nothing was loaded
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_matching_config_on_an_injected_model_loads(batch, tmp_path):
    base = build_tiny("roberta")
    trained = trained_copy(base, "lora", LoRAConfig(("q", "v"), r=4, alpha=8))
    path = save_adapter(trained, tmp_path / "a.safetensors")
    model = copy.deepcopy(base)
    prepare_model(model, "lora", LoRAConfig(("q", "v"), r=4, alpha=8))
    load_adapter(model, path)
    assert torch.equal(logits(model.eval(), batch), logits(trained, batch))


def test_an_adapter_loads_into_a_model_with_another_lora_dropout(batch, tmp_path):
    """Dropout is not part of the rule (`LoRAConfig.same_update`): a model set up to train on
    with dropout 0.1 loads an adapter trained without it, and the model keeps its dropout."""
    base = build_tiny("roberta")
    trained = trained_copy(base, "lora", LoRAConfig(("q", "v"), r=4, alpha=8))
    path = save_adapter(trained, tmp_path / "a.safetensors")
    model = prepare_model(copy.deepcopy(base), "lora", LoRAConfig(("q", "v"), r=4, alpha=8, dropout=0.1))
    load_adapter(model, path)
    assert get_lora_config(model).dropout == 0.1
    assert torch.equal(logits(model.eval(), batch), logits(trained, batch))


def test_a_full_fine_tuning_checkpoint_starts_another_task_without_its_head(tmp_path):
    """RoBERTa's protocol (the paper preset's FT baseline): MRPC starts from the MNLI model, a
    3-label head left behind; the encoder is MNLI's, the new 2-label head untouched."""
    source = prepare_model(build_tiny("roberta"), "full")
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.5)
    path = save_adapter(source, tmp_path / "mnli.safetensors")
    target = prepare_model(build_tiny("roberta", seed=1), "full")
    target.classifier.out_proj = torch.nn.Linear(TINY_D, 2)  # another task's head
    head = {k: v.clone() for k, v in target.named_parameters() if k.startswith("classifier.")}
    load_adapter(target, path, include_head=False)
    mine, theirs = dict(target.named_parameters()), dict(source.named_parameters())
    assert all(torch.equal(mine[k], theirs[k]) for k in mine if not k.startswith("classifier."))
    assert all(torch.equal(mine[k], v) for k, v in head.items())


def test_state_dict_with_unknown_key_raises():
    model = build_tiny("roberta")
    add_lora(model, ("q",), r=2)
    state = {"roberta.encoder.layer.0.attention.self.key.lora_A": torch.zeros(2, 32)}
    with pytest.raises(ValueError, match=r"adapter holds 1 tensor\(s\) this model lacks, e\.g\. "
                                         r"\['roberta\.encoder\.layer\.0\.attention\.self\.key\.lora_A'\]"):
        load_trained_state_dict(model, state)


def test_adapter_of_another_model_raises(tmp_path):
    trained = trained_copy(build_tiny("roberta"), "lora", LoRAConfig(("q", "v"), r=4))
    path = save_adapter(trained, tmp_path / "roberta.safetensors")
    with pytest.raises(ValueError, match="this model lacks.*another model"):
        load_adapter(build_tiny("bert"), path)


def test_shape_mismatch_raises_and_loads_nothing():
    model = build_tiny("roberta")
    add_lora(model, ("q",), r=2)
    good = "roberta.encoder.layer.0.attention.self.query.lora_B"
    before = model.get_parameter(good).detach().clone()
    state = {good: torch.ones(32, 2), "classifier.out_proj.weight": torch.zeros(5, 32)}
    with pytest.raises(ValueError, match=r"'classifier\.out_proj\.weight' has shape \(5, 32\), the model \(3, 32\)"):
        load_trained_state_dict(model, state)
    assert torch.equal(model.get_parameter(good), before)


def test_include_head_false_loads_only_lora_matrices(tmp_path):
    base = build_tiny("bert")
    trained = trained_copy(base, "lora", LoRAConfig(("q", "v"), r=4))
    path = save_adapter(trained, tmp_path / "mnli.safetensors")
    torch.manual_seed(11)
    target = copy.deepcopy(base)
    with torch.no_grad():  # a new task's own head
        for n, p in target.named_parameters():
            if n.startswith(HEAD["bert"]):
                p.normal_()
    own = {n: p.detach().clone() for n, p in target.named_parameters()}

    load_adapter(target, path, include_head=False)
    trained_params = dict(trained.named_parameters())
    for n, p in target.named_parameters():
        if n.endswith((".lora_A", ".lora_B")):
            assert torch.equal(p, trained_params[n]), n
        else:  # head and base weights untouched
            assert torch.equal(p, own[n]), n
    assert not hasattr(target, "training_method")
    assert set(trained_state_dict(trained, include_head=False)) == {
        n for n in trained_params if n.endswith((".lora_A", ".lora_B"))
    }


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter file not found"):
        load_adapter(build_tiny("roberta"), tmp_path / "nope.safetensors")


def test_roberta_base_adapter_is_a_few_megabytes(roberta_base_lora, tmp_path):
    path = save_adapter(roberta_base_lora, tmp_path / "roberta_base.safetensors")
    size = path.stat().st_size
    # 294,912 LoRA + 592,130 head float32 values ≈ 3.5 MB, against ≈ 500 MB for the whole model
    assert (294_912 + 592_130) * 4 < size < 10 * 1024 * 1024
    with safe_open(str(path), framework="pt") as f:
        lora = sum(f.get_tensor(k).numel() for k in f.keys() if k.endswith((".lora_A", ".lora_B")))
    assert lora == 294_912


def test_same_adapter_compares_content_not_bytes(tmp_path):
    """Publishing twice gives files whose metadata order may differ: `same_adapter` says they hold
    the same thing (the report then keeps the committed bytes), and tells other content apart."""
    from lora_nb.checkpoint import publish_lora_tensors, same_adapter

    trained = trained_copy(build_tiny("roberta"), "lora", LoRAConfig(("q", "v"), r=4))
    src = save_adapter(trained, tmp_path / "a.safetensors")
    first = publish_lora_tensors(src, tmp_path / "p1.safetensors")
    second = publish_lora_tensors(src, tmp_path / "p2.safetensors")
    assert same_adapter(first, second)
    other = save_adapter(trained_copy(build_tiny("roberta"), "lora", LoRAConfig(("q", "v"), r=4)),
                         tmp_path / "b.safetensors", step=7)
    assert not same_adapter(first, publish_lora_tensors(other, tmp_path / "p3.safetensors"))
