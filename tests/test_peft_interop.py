"""peft's adapter format, out and in (lora_nb.peft_format, `python -m lora_nb.checkpoint`): an
exported run gives the same logits in peft, unmerged and merged; a peft-trained adapter gives the
same logits here; what either side cannot hold is refused."""

from __future__ import annotations

import json
from pathlib import Path
import warnings

import pytest
import torch
import yaml

peft = pytest.importorskip("peft")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402

from conftest import TINY_LABELS, build_tiny, logits, randomize_lora  # noqa: E402
from lora_nb.checkpoint import (  # noqa: E402
    export_peft, import_peft, load_adapter, main, read_adapter, save_adapter)
from lora_nb.lora import LoRAConfig, get_lora_config, lora_layers, merge_lora  # noqa: E402
from lora_nb.methods import HEAD_PREFIXES, is_head_parameter, prepare_model  # noqa: E402
from lora_nb.models import load_model, load_model_config, resolve_model, save_tiny_model  # noqa: E402
from lora_nb.peft_format import (  # noqa: E402
    CARD_FILE, CONFIG_FILE, OFFLINE_HUB_ID, PEFT_HEAD, PEFT_TARGETS, exported_info, load_peft_model,
    read_peft)
from lora_nb.rundir import ADAPTER_FILE, REPO_ROOT, find_adapter, write_record  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = "mnli"  # 3 labels, as TINY_LABELS
HEADS = {"bert": ["classifier", "pooler.dense"], "roberta": ["classifier"]}
TARGET_SETS = [("q",), ("q", "v"), ("q", "k", "v", "o")]
ALPHA = 8.0  # α/r = 2, a power of two like every committed run's (α = 8, r = 1, 2, 4, 8, 64)
COMMITTED_RUN = "t6-mnli-qv-r4-s0"  # a committed §7 adapter: LoRA matrices alone, float16
ARCHIVED_RECORDS = REPO_ROOT / "report" / "archive" / "250-steps" / "records"  # the 250-step run's
DIFFS: dict[float, list[float]] = {}  # tolerance -> the largest |logit difference| of each comparison


@pytest.fixture(scope="module", autouse=True)
def largest_difference():
    yield
    for atol, diffs in sorted(DIFFS.items()):
        print(f"\nlargest logit difference, peft against lora_nb (fp32), tolerance {atol:g}: "
              f"{max(diffs):.3g} over {len(diffs)} comparisons")


def assert_same(theirs: torch.Tensor, ours: torch.Tensor, atol: float = 1e-6) -> None:
    """peft's logits against lora_nb's, for the same computation (both unmerged or both merged)."""
    diff = (theirs - ours).abs().max().item()
    DIFFS.setdefault(atol, []).append(diff)
    assert diff <= atol, f"logits differ by {diff}"


def assert_merge_keeps(merged: torch.Tensor, unmerged: torch.Tensor) -> None:
    """Merging W0 + ΔW changes only float32 rounding (the sums are reordered), not the model."""
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def base_dirs(tmp_path_factory) -> dict:
    """A tiny pretrained-model folder per kind: the base both sides load."""
    root = tmp_path_factory.mktemp("bases")
    torch.manual_seed(0)
    return {kind: save_tiny_model(root / kind, kind, dropout=0.0) for kind in ("bert", "roberta")}


def run_model(base_dir, pooling: str = "cls"):
    """The base model as a run loads it (new head, `pooling`)."""
    model, _ = load_model(str(base_dir), load_model_config(str(base_dir), TINY_LABELS), pooling)
    return model.eval()


def peft_base(base_dir):
    return AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=TINY_LABELS)


def make_run(folder, base_dir, targets=("q", "v"), pooling: str = "cls", method: str = "lora",
             alpha: float = ALPHA):
    """A completed run folder: a trained-looking adapter (nonzero B, a moved head) and its record."""
    torch.manual_seed(7)
    model = run_model(base_dir, pooling)
    lora = LoRAConfig(targets, r=4, alpha=alpha) if method == "lora" else None
    prepare_model(model, method, lora)
    randomize_lora(model, seed=5, std=0.3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_head_parameter(name):
                p.add_(torch.randn_like(p) * 0.2)
    folder.mkdir()
    save_adapter(model, folder / ADAPTER_FILE, task=TASK, epoch=2, step=10, model=str(base_dir))
    config = {"task": TASK, "method": method, "model": str(base_dir), "targets": list(targets),
              "r": 4, "alpha": alpha, "dropout": 0.0, "pooling": pooling, "seed": 3,
              "learning_rate": 1e-3, "batch_size": 16, "epochs": 2, "max_length": 128}
    write_record(folder, {"status": "completed", "config": config, "task": TASK,
                          "primary_metric": "accuracy", "best_metric": 0.625, "best_step": 10,
                          "git_commit": "0123abc"})


def test_peft_names_cover_the_head_and_attention():
    assert set(PEFT_HEAD) == set(HEAD_PREFIXES)
    assert set(PEFT_TARGETS) == {"q", "k", "v", "o"}


@pytest.mark.parametrize("targets", TARGET_SETS, ids=",".join)
@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_export_gives_the_runs_logits_in_peft(tmp_path, base_dirs, batch, kind, targets):
    make_run(tmp_path / "run", base_dirs[kind], targets)
    out = export_peft(tmp_path / "run", tmp_path / "peft")
    config = json.loads((out / CONFIG_FILE).read_text())
    assert (config["peft_type"], config["task_type"]) == ("LORA", "SEQ_CLS")
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, ALPHA, 0.0)
    assert config["target_modules"] == [PEFT_TARGETS[t] for t in targets]
    assert config["modules_to_save"] == HEADS[kind]
    assert config["base_model_name_or_path"] == str(base_dirs[kind])
    assert not config["use_rslora"] and not config["use_dora"]

    ours = load_adapter(run_model(base_dirs[kind]), tmp_path / "run" / ADAPTER_FILE).eval()
    expected = logits(ours, batch)
    assert (expected - logits(run_model(base_dirs[kind]), batch)).abs().max() > 1e-3  # B, head moved
    theirs = PeftModel.from_pretrained(peft_base(base_dirs[kind]), out).eval()
    layers = {n.removeprefix("base_model.model."): m for n, m in theirs.named_modules()
              if isinstance(m, LoraLayer)}
    assert set(layers) == set(lora_layers(ours))
    assert all(layers[n].scaling["default"] == l.scaling for n, l in lora_layers(ours).items())  # α/r
    assert_same(logits(theirs, batch), expected)
    assert_same(logits(load_peft_model(out), batch), expected)

    merged = theirs.merge_and_unload()
    state, _ = read_adapter(tmp_path / "run" / ADAPTER_FILE)
    head = {k: v for k, v in state.items() if is_head_parameter(k)}
    assert head and all(torch.equal(merged.get_parameter(k), v) for k, v in head.items())  # restored
    assert_same(logits(merged, batch), logits(merge_lora(ours), batch))
    assert_merge_keeps(logits(merged, batch), expected)

    back, meta = read_peft(out)  # and back: the same tensors and configuration
    assert meta["lora_config"] == LoRAConfig(targets, 4, ALPHA).to_dict()
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_a_scaling_that_rounds(tmp_path, base_dirs, batch, kind):
    """α/r = 2.5: lora_nb adds s·BAx in one rounding (`Tensor.add_(alpha=s)`), peft rounds BAx·s
    first; float32 then differs by about an ulp per layer, so the tolerance is 1e-5 here."""
    make_run(tmp_path / "run", base_dirs[kind], ("q", "k", "v", "o"), alpha=10.0)
    out = export_peft(tmp_path / "run", tmp_path / "peft")
    ours = load_adapter(run_model(base_dirs[kind]), tmp_path / "run" / ADAPTER_FILE).eval()
    theirs = PeftModel.from_pretrained(peft_base(base_dirs[kind]), out).eval()
    assert_same(logits(theirs, batch), logits(ours, batch), atol=1e-5)
    assert_same(logits(theirs.merge_and_unload(), batch), logits(merge_lora(ours), batch))


def test_model_card(tmp_path, base_dirs):
    make_run(tmp_path / "run", base_dirs["bert"])
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "peft"),
                 "--report-url", "https://example.org/report/index.html"]) == 0
    text = (tmp_path / "peft" / CARD_FILE).read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "peft" and meta["base_model"] == str(base_dirs["bert"])
    assert {"lora", "peft", "glue", TASK} <= set(meta["tags"])
    assert meta["datasets"] == ["nyu-mll/glue"] and meta["metrics"] == ["accuracy"]
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"]["split"] == "validation_matched"
    assert result["metrics"] == [{"type": "accuracy", "value": 0.625}]
    for fact in ("accuracy on `validation_matched`: 0.6250", "seed 3", "`0123abc`", "r = 4",
                 "Wq, Wv", "learning rate = 0.001", "(https://example.org/report/index.html)",
                 "num_labels=3", "classifier, pooler.dense"):
        assert fact in body, fact
    assert exported_info(tmp_path / "peft") == {"run": "run", "task": TASK, "num_labels": 3,
                                                "pooling": "cls", "head": True}


def test_mean_pooling_loads_with_load_peft_model(tmp_path, base_dirs, batch):
    """peft's BertForSequenceClassification reads [CLS]; `load_peft_model` applies mean pooling
    before peft wraps the head, and gives the run's logits."""
    make_run(tmp_path / "run", base_dirs["bert"], ("q", "v"), pooling="mean")
    out = export_peft(tmp_path / "run", tmp_path / "peft")
    assert exported_info(out)["pooling"] == "mean"
    assert "mean over tokens" in (out / CARD_FILE).read_text()
    ours = load_adapter(run_model(base_dirs["bert"], "mean"), tmp_path / "run" / ADAPTER_FILE).eval()
    expected = logits(ours, batch)
    theirs = load_peft_model(out)
    assert_same(logits(theirs, batch), expected)  # the batch's last row is padded: the mask counts
    assert_same(logits(theirs.merge_and_unload(), batch), logits(merge_lora(ours), batch))
    plain = PeftModel.from_pretrained(peft_base(base_dirs["bert"]), out).eval()
    assert (logits(plain, batch) - expected).abs().max() > 1e-4  # why the card says so


@pytest.mark.parametrize("method", ["houlsby", "pfeiffer", "bitfit"])
def test_export_refuses_other_methods(tmp_path, base_dirs, capsys, method):
    make_run(tmp_path / "run", base_dirs["roberta"], method=method)
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "peft")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"method {method!r}" in err and "no peft equivalent" in err
    assert ("bottleneck adapters" in err) == (method != "bitfit")
    assert not (tmp_path / "peft").exists()


def test_export_refuses_feed_forward_targets(tmp_path, base_dirs):
    make_run(tmp_path / "run", base_dirs["roberta"], ("q", "ffn_in"))
    with pytest.raises(ValueError, match="attention projections"):
        export_peft(tmp_path / "run", tmp_path / "peft")


def test_committed_adapter_exports_without_its_head(tmp_path, batch):
    """A committed §7 adapter holds no head: refused unless --lora-only; then peft gives our logits."""
    with pytest.raises(ValueError, match="LoRA matrices alone.*--lora-only"):
        export_peft(ARCHIVED_RECORDS / f"{COMMITTED_RUN}.json", tmp_path / "peft")
    out = export_peft(ARCHIVED_RECORDS / f"{COMMITTED_RUN}.json", tmp_path / "peft", lora_only=True)
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["base_model_name_or_path"] == OFFLINE_HUB_ID
    assert config["modules_to_save"] is None and config["task_type"] is None  # peft then needs no head
    card = (out / CARD_FILE).read_text()
    assert "without the classification head" in card and "model-index" not in card

    theirs = load_peft_model(out)  # the Hub id read from the offline package
    ours = AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm"), num_labels=3)
    for module in ("classifier", "bert.pooler"):  # the same untrained head on both sides
        untrained = theirs.get_base_model().get_submodule(module)
        ours.get_submodule(module).load_state_dict(untrained.state_dict())
    load_adapter(ours, find_adapter(ARCHIVED_RECORDS, COMMITTED_RUN)).eval()
    assert_same(logits(theirs, batch), logits(ours, batch))


def save_peft(folder, kind: str = "bert", **settings) -> None:
    config = dict(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_peft_model(build_tiny(kind), LoraConfig(**{**config, **settings})).save_pretrained(folder)


@pytest.mark.parametrize("settings, message", [
    ({"use_dora": True}, "DoRA"),
    ({"use_rslora": True}, "rsLoRA"),
    ({"rank_pattern": {"value": 2}}, "a rank per module"),
    ({"alpha_pattern": {"value": 16}}, "an α per module"),
    ({"bias": "lora_only"}, "biases"),
    ({"layers_to_transform": [0]}, "subset of layers"),
    ({"target_modules": ["query", "intermediate.dense"]}, "outside the attention projections"),
], ids=["dora", "rslora", "rank_pattern", "alpha_pattern", "bias", "layers", "ffn"])
def test_import_refuses_what_lora_nb_cannot_hold(tmp_path, capsys, settings, message):
    save_peft(tmp_path / "peft", **settings)
    with pytest.raises(ValueError, match=message):
        load_adapter(build_tiny("bert"), tmp_path / "peft")
    assert main(["import", str(tmp_path / "peft"), str(tmp_path / "a.safetensors")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "a.safetensors").exists()


def test_import_refuses_a_folder_without_safetensors(tmp_path):
    save_peft(tmp_path / "peft")
    (tmp_path / "peft" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safe_serialization"):
        read_peft(tmp_path / "peft")


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_a_peft_trained_adapter_gives_the_same_logits_here(tmp_path, base_dirs, batch, kind):
    """Trained by peft for a few steps (peft's own head names: BERT's "pooler"), saved with
    save_pretrained: loaded here, directly and through `import`, it gives peft's logits."""
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=16, lora_dropout=0.1, task_type="SEQ_CLS",
                        target_modules=["query", "key", "value", "attention.output.dense"],
                        modules_to_save=["classifier", "pooler"] if kind == "bert" else ["classifier"])
    theirs = get_peft_model(peft_base(base_dirs[kind]), config)
    optimizer = torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], lr=1e-2)
    theirs.train()
    for _ in range(3):
        ids = torch.randint(3, 100, (8, 9))
        loss = theirs(input_ids=ids, attention_mask=torch.ones_like(ids),
                      labels=torch.randint(0, TINY_LABELS, (8,))).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    theirs.eval()
    theirs.save_pretrained(tmp_path / "peft")
    expected = logits(theirs, batch)

    ours = load_adapter(run_model(base_dirs[kind]), tmp_path / "peft").eval()
    assert get_lora_config(ours) == LoRAConfig(("q", "k", "v", "o"), 4, 16.0, 0.1)
    assert all(layer.lora_B.abs().max() > 0 for layer in lora_layers(ours).values())  # trained
    assert (expected - logits(run_model(base_dirs[kind]), batch)).abs().max() > 1e-3
    assert_same(expected, logits(ours, batch))

    assert main(["import", str(tmp_path / "peft"), str(tmp_path / "imported.safetensors")]) == 0
    _, meta = read_adapter(tmp_path / "imported.safetensors")
    assert meta["method"] == "lora" and meta["imported"] == "peft"
    again = load_adapter(run_model(base_dirs[kind]), tmp_path / "imported.safetensors").eval()
    assert_same(expected, logits(again, batch))
    assert_same(logits(theirs.merge_and_unload(), batch), logits(merge_lora(ours), batch))


def test_the_commands_have_help(capsys):
    for command in ("export", "import"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert f"usage: python -m lora_nb.checkpoint {command}" in capsys.readouterr().out
