"""Training methods and parameter counts (lora_nb.methods): which parameters train for each method of
paper Table 2, and the "# Trainable Parameters" column."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from conftest import (
    ROBERTA_BASE_D,
    ROBERTA_BASE_LAYERS,
    TINY_D,
    TINY_FF,
    TINY_LABELS,
    TINY_LAYERS,
    build_tiny,
)
from lora_nb.models import from_config, roberta_base_config, tiny_config
from lora_nb.lora import LoRAConfig, get_lora_config, lora_layers
from lora_nb.methods import METHODS, count_parameters, prepare_model

pytestmark = pytest.mark.usefixtures("one_thread")

# The head, written out independently of lora_nb.methods.
HEAD = {"roberta": ("classifier.",), "bert": ("classifier.", "bert.pooler.")}


def expected_trainable(name: str, method: str, kind: str) -> bool:
    head = name.startswith(HEAD[kind])
    if method == "full":
        return True
    if method == "head":
        return head
    if method == "bitfit":
        return head or name.endswith(".bias")
    if method == "lora":
        return head or name.endswith((".lora_A", ".lora_B"))
    if method in ("houlsby", "pfeiffer"):
        return head or ".adapter." in name or "LayerNorm" in name
    raise AssertionError(method)


def head_size(kind: str, d: int, labels: int) -> int:
    if kind == "roberta":  # classifier.dense (d×d) + classifier.out_proj (labels×d), with biases
        return d * d + d + labels * d + labels
    # bert.pooler.dense (d×d) + classifier (labels×d), with biases
    return d * d + d + labels * d + labels


def lora_size(n_layers: int, d: int, r: int, n_targets: int) -> int:
    """2 · L · d · r per square (d×d) target: A is r×d, B is d×r."""
    return 2 * n_layers * d * r * n_targets


def test_methods_are_the_six_of_table_2():
    assert METHODS == ("lora", "full", "bitfit", "head", "houlsby", "pfeiffer")


@pytest.mark.parametrize("method", METHODS)
def test_exactly_the_right_parameters_get_gradients(tiny_model, batch, method):
    kind = tiny_model.kind
    config = LoRAConfig(("q", "v"), r=4, alpha=8) if method == "lora" else None
    prepare_model(tiny_model, method, config)
    assert tiny_model.training_method == method
    tiny_model.train()
    labels = torch.tensor([0, 1, 2, 1])
    loss = tiny_model(**batch, labels=labels).loss
    loss.backward()

    trainable, frozen = [], []
    for name, p in tiny_model.named_parameters():
        if expected_trainable(name, method, kind):
            trainable.append(name)
            assert p.requires_grad, name
            assert p.grad is not None, name
        else:
            frozen.append(name)
            assert not p.requires_grad, name
            assert p.grad is None, name

    assert trainable
    assert any(tiny_model.get_parameter(n).grad.abs().sum() > 0 for n in trainable)
    if method == "full":
        assert frozen == []
    if method == "lora":
        assert len(lora_layers(tiny_model)) == 2 * TINY_LAYERS
        lora_names = [n for n in trainable if n.endswith((".lora_A", ".lora_B"))]
        assert len(lora_names) == 2 * 2 * TINY_LAYERS
        # B starts at zero, so B gets the first nonzero gradient (and A's is zero)
        assert all(
            tiny_model.get_parameter(n).grad.abs().sum() > 0 for n in lora_names if n.endswith("lora_B")
        )
        assert not any(n.endswith(("query.weight", "query.bias")) for n in trainable)
    if method == "bitfit":
        assert any("LayerNorm.bias" in n for n in trainable)
        assert any(n.endswith("query.bias") for n in trainable)
        assert not any(n.endswith("query.weight") for n in trainable)
    if method in ("houlsby", "pfeiffer"):
        adapter_names = [n for n in trainable if ".adapter." in n]
        assert len(adapter_names) == 4 * TINY_LAYERS * (2 if method == "houlsby" else 1)
        # up starts at zero, so up gets the first nonzero gradient
        assert all(tiny_model.get_parameter(n).grad.abs().sum() > 0 for n in adapter_names if ".up." in n)
        assert not any(n.endswith(("dense.weight", "query.weight")) for n in trainable if not n.startswith(HEAD[kind]))
    if method in ("head", "bitfit", "lora"):
        assert all(
            n.startswith(HEAD[kind]) for n in trainable if n.endswith(".weight")
        )
    if kind == "bert" and method != "full":
        assert "bert.pooler.dense.weight" in trainable
        assert "classifier.weight" in trainable


def test_prepare_model_switches_method_cleanly(tiny_bert):
    prepare_model(tiny_bert, "full")
    prepare_model(tiny_bert, "head")
    trainable = {n for n, p in tiny_bert.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in tiny_bert.named_parameters() if n.startswith(HEAD["bert"])}


@pytest.mark.parametrize(
    "r, targets",
    [(1, ("q",)), (4, ("q", "v")), (8, ("q", "v")), (2, ("v", "o")), (8, ("q", "k", "v", "o"))],
)
def test_lora_counts_follow_the_formula_tiny(tiny_model, r, targets):
    kind = tiny_model.kind
    base_total = sum(p.numel() for p in tiny_model.parameters())
    prepare_model(tiny_model, "lora", LoRAConfig(targets, r=r, alpha=8))
    counts = count_parameters(tiny_model)
    lora = lora_size(TINY_LAYERS, TINY_D, r, len(targets))
    head = head_size(kind, TINY_D, TINY_LABELS)
    assert counts.lora == lora
    assert counts.trainable_without_head == lora
    assert counts.head == head
    assert counts.trainable == lora + head
    assert counts.total == base_total + lora
    assert counts.to_dict() == {
        "total": base_total + lora, "trainable": lora + head, "lora": lora, "head": head,
        "trainable_without_head": lora, "adapter": 0,
    }


def test_lora_counts_for_non_square_feed_forward(tiny_roberta):
    r = 3
    prepare_model(tiny_roberta, "lora", LoRAConfig(("ffn_in", "ffn_out"), r=r))
    # each feed-forward matrix is d×d_ff or d_ff×d: A and B hold r·(d + d_ff)
    assert count_parameters(tiny_roberta).lora == TINY_LAYERS * 2 * r * (TINY_D + TINY_FF)


@pytest.mark.parametrize("method", ["full", "bitfit", "head"])
def test_counts_of_the_other_methods(tiny_model, method):
    kind = tiny_model.kind
    prepare_model(tiny_model, method)
    counts = count_parameters(tiny_model)
    params = dict(tiny_model.named_parameters())
    total = sum(p.numel() for p in params.values())
    head = head_size(kind, TINY_D, TINY_LABELS)
    biases = sum(p.numel() for n, p in params.items() if n.endswith(".bias") and not n.startswith(HEAD[kind]))
    assert counts.total == total and counts.head == head and counts.lora == 0
    expected = {"full": total, "bitfit": head + biases, "head": head}[method]
    assert counts.trainable == expected
    assert counts.trainable_without_head == expected - head
    if method == "bitfit":
        # per layer: q, k, v, o, LayerNorm, ffn_in, ffn_out, LayerNorm biases; plus the embeddings' LayerNorm
        assert biases == TINY_LAYERS * (7 * TINY_D + TINY_FF) + TINY_D


# --- RoBERTa-base (paper Table 2: LoRA 0.3M) --------------------------------------------------


def test_roberta_base_lora_count_is_294912(roberta_base_lora):
    counts = count_parameters(roberta_base_lora)
    head = head_size("roberta", ROBERTA_BASE_D, 2)
    assert counts.lora == 294_912 == lora_size(ROBERTA_BASE_LAYERS, ROBERTA_BASE_D, 8, 2)
    assert counts.trainable_without_head == 294_912
    assert counts.head == head == 592_130
    assert counts.trainable == 294_912 + 592_130
    # roberta-base with a 2-label head has 124,647,170 parameters
    assert counts.total - counts.lora == 124_647_170
    assert len(lora_layers(roberta_base_lora)) == 2 * ROBERTA_BASE_LAYERS


def _meta_roberta_base():
    """RoBERTa-base on the meta device: shapes only, built in milliseconds."""
    with torch.device("meta"):
        return from_config(roberta_base_config())


@pytest.mark.parametrize(
    "r, targets, expected",
    [
        (8, ("q", "v"), 294_912),
        (1, ("q",), 18_432),
        (4, ("q", "k", "v", "o"), 294_912),
        (2, ("q", "v"), 73_728),
        (64, ("q", "k", "v", "o"), 4_718_592),
    ],
)
def test_roberta_base_lora_counts_for_other_ranks_and_targets(r, targets, expected):
    model = prepare_model(_meta_roberta_base(), "lora", LoRAConfig(targets, r=r))
    counts = count_parameters(model)
    assert counts.lora == expected == lora_size(ROBERTA_BASE_LAYERS, ROBERTA_BASE_D, r, len(targets))
    assert counts.trainable_without_head == expected
    assert counts.head == 592_130
    assert counts.trainable == expected + 592_130


@pytest.mark.parametrize("method, without_head", [("head", 0), ("full", 124_055_040)])
def test_roberta_base_counts_for_head_and_full(method, without_head):
    counts = count_parameters(prepare_model(_meta_roberta_base(), method))
    assert counts.head == 592_130
    assert counts.trainable == without_head + 592_130
    assert counts.trainable_without_head == without_head
    assert counts.total == 124_647_170


# --- errors ------------------------------------------------------------------------------------


def test_unknown_method_raises(tiny_roberta):
    with pytest.raises(ValueError, match=r"method: unknown 'adapter'; choose from \('lora', 'full'"):
        prepare_model(tiny_roberta, "adapter")
    assert all(p.requires_grad for p in tiny_roberta.parameters())  # untouched


@pytest.mark.parametrize("method", ["full", "bitfit", "head"])
def test_lora_config_with_another_method_raises(tiny_roberta, method):
    with pytest.raises(ValueError, match=rf"method '{method}' takes no LoRA configuration"):
        prepare_model(tiny_roberta, method, LoRAConfig())
    assert lora_layers(tiny_roberta) == {}


@pytest.mark.parametrize("kind", ["roberta", "bert"])
@pytest.mark.parametrize("method", METHODS)
def test_model_without_a_head_raises(kind, method):
    torch.manual_seed(0)
    encoder = AutoModel.from_config(tiny_config(kind, num_labels=TINY_LABELS))  # bare encoder: pooler, no classifier
    assert any(n.startswith("pooler.") for n, _ in encoder.named_parameters())
    with pytest.raises(ValueError, match="has no classification head.*AutoModelForSequenceClassification"):
        prepare_model(encoder, method)


def test_default_lora_config_is_r8_alpha8_on_q_v(tiny_roberta):
    prepare_model(tiny_roberta, "lora")
    layers = lora_layers(tiny_roberta)
    assert {n.rsplit(".", 1)[-1] for n in layers} == {"query", "value"}
    assert all(layer.r == 8 and layer.scaling == 1.0 for layer in layers.values())


def test_one_rule_for_the_same_lora_targets_r_and_alpha_not_dropout(tiny_roberta):
    """`LoRAConfig.same_update` is the rule `prepare_model` and `load_adapter` share: a model
    with LoRA at dropout 0.1 prepared again at dropout 0 keeps its matrices and changes only
    the dropout; another r is refused."""
    prepare_model(tiny_roberta, "lora", LoRAConfig(("q", "v"), r=4, dropout=0.1))
    layer = next(iter(lora_layers(tiny_roberta).values()))
    a = layer.lora_A.detach().clone()
    assert isinstance(layer.lora_dropout, torch.nn.Dropout)
    prepare_model(tiny_roberta, "lora", LoRAConfig(("q", "v"), r=4, dropout=0.0))
    assert isinstance(layer.lora_dropout, torch.nn.Identity)
    assert torch.equal(layer.lora_A, a)
    assert get_lora_config(tiny_roberta) == LoRAConfig(("q", "v"), r=4, dropout=0.0)
    with pytest.raises(ValueError, match="targets, r and alpha must match"):
        prepare_model(tiny_roberta, "lora", LoRAConfig(("q", "v"), r=8))
    assert LoRAConfig(("q", "v"), 4, 8.0, 0.1).same_update(LoRAConfig(("q", "v"), 4, 8.0, 0.0))
    assert not LoRAConfig(("q", "v"), 4, 8.0).same_update(LoRAConfig(("q", "v"), 4, 16.0))


def test_a_deep_copy_of_a_mean_pooled_model_pools_with_its_own_mask():
    import copy

    from lora_nb.models import from_config, tiny_config, use_mean_pooling

    torch.manual_seed(0)
    model = use_mean_pooling(from_config(tiny_config("bert", hidden_dropout_prob=0.0,
                                                     attention_probs_dropout_prob=0.0))).eval()
    twin = copy.deepcopy(model)
    ids = torch.randint(5, 100, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        model(input_ids=ids, attention_mask=torch.ones_like(mask))  # the original's mask changes
        got = twin(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(got, expected)
    assert twin.bert.pooler.mask is not model.bert.pooler.mask
