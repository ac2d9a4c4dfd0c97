"""The inference-latency benchmark (`python -m benchmarks.latency`, paper §3 / Table 1) and its
verdicts (`lora_nb.table1`): a quick run on tiny models writes every row, the noise control is
near 1, the verdict rule decides hand-made cases, merged and unmerged LoRA compute the same
logits, and bad flags stop before any model is built."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import latency
from benchmarks.harness import build_model, random_batch, round_orders, rounds
from benchmarks.latency import build_variants, latency_rows, main
from lora_nb.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from lora_nb.table1 import VARIANTS as METHODS
from lora_nb.table1 import QUIET_LOAD, load_results, result_verdicts, verdict_rows

TINY_MODELS = ["tiny-bert", "tiny-roberta"]
QUICK_SHAPES = [(1, 16), (2, 16)]
PASSES = {1: 11, 2: 7}  # by batch


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One --quick run on the tiny models, one thread, with the figure."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tmp = tmp_path_factory.mktemp("latency")
        out = tmp / "latency.json"
        # --quick's shapes and warm-up; more passes than its 5 and 3 (explicit flags win), for a
        # stable median on a shared CPU
        assert main(["--models", ",".join(TINY_MODELS), "--quick", "--threads", "1",
                     "--passes-small", str(PASSES[1]), "--passes-large", str(PASSES[2]),
                     "--out", str(out), "--figure", str(tmp / "latency_overhead"), "--allow-load"]) == 0
        assert torch.get_num_threads() == 1  # restored to what it was
    finally:
        torch.set_num_threads(before)
    return tmp, json.loads(out.read_text())


def test_quick_run_writes_every_row(quick_run):
    tmp, data = quick_run
    assert {"command", "date", "torch", "cpu", "threads", "rows", "verdicts", "note"} <= set(data)
    assert data["command"].startswith("python -m benchmarks.latency --models tiny-bert,tiny-roberta")
    assert data["threads"] == [1] and data["torch"] == torch.__version__ and data["cpu"]
    assert data["settings"]["shapes"] == ["1x16", "2x16"] and data["settings"]["warmup"] == 1
    rows = data["rows"]
    keys = [(r["model"], r["method"], r["batch"], r["length"], r["threads"]) for r in rows]
    expected = {(m, method, b, n, 1) for m in TINY_MODELS for method in METHODS
                for b, n in QUICK_SHAPES}
    assert sorted(keys) == sorted(expected)  # every combination, once
    base_min = {(r["model"], r["batch"]): r["min_ms"] for r in rows if r["method"] == "base"}
    for r in rows:
        assert {"median_ms", "min_ms", "max_ms", "ratio_median", "ratio_min", "ratio_max",
                "passes"} <= set(r)
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["passes"] >= PASSES[r["batch"]]
        assert len(r["times_ms"]) == r["passes"]
        assert 0 < r["ratio_min"] <= r["ratio_median"] <= r["ratio_max"]
        assert r["ratio_of_mins"] == pytest.approx(r["min_ms"] / base_min[r["model"], r["batch"]])
        if r["method"] == "base":
            assert r["ratio_min"] == r["ratio_max"] == 1.0
    # three claims (merged, AdapterH, AdapterL) per setting, each with a verdict
    assert len(data["verdicts"]) == 3 * len(TINY_MODELS) * len(QUICK_SHAPES)
    assert {v["verdict"] for v in data["verdicts"]} <= {REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE}
    assert load_results(tmp) == [data]  # what the analysis reads
    assert result_verdicts([data]) == data["verdicts"]
    assert (tmp / "latency.md").stat().st_size > 0
    for suffix in (".png", ".svg"):
        assert (tmp / f"latency_overhead{suffix}").stat().st_size > 0


def test_ratios_are_paired_per_round():
    """The ratio is taken per round (a_i / b_i): its median, not median(a) / median(b)."""
    times = {"base": [1.0, 2.0, 4.0], "houlsby": [1.1, 2.6, 4.4]}
    rows = {r["method"]: r for r in latency_rows(times, "m", 1, 8, 1)}
    assert rows["houlsby"]["ratio_median"] == pytest.approx(1.1)
    assert rows["houlsby"]["ratio_min"] == pytest.approx(1.1)
    assert rows["houlsby"]["ratio_max"] == pytest.approx(1.3)
    assert rows["houlsby"]["median_ms"] == pytest.approx(2600.0)
    assert rows["base"]["ratio_median"] == 1.0 and rows["base"]["passes"] == 3
    assert rows["houlsby"]["ratio_of_mins"] == pytest.approx(1.1)


def test_rounds_run_each_callable_once_per_round():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "ABCD"}
    times = rounds(fns, warmup=2, measured=30)
    assert {k: len(v.times) for k, v in times.items()} == {k: 30 for k in "ABCD"}
    orders = [calls[i:i + 4] for i in range(0, len(calls), 4)]
    assert len(orders) == 32 and all(sorted(r) == list("ABCD") for r in orders)
    assert orders == round_orders(list("ABCD"), 32)  # seeded: the same order run after run
    # the order changes: "A" does not always run right after the same method
    before_a = {(r[-1] if r[0] == "A" else r[r.index("A") - 1]) for r in orders}
    assert len(before_a) > 1


def _rows(model="m", batch=1, length=128, threads=1, **ratios) -> list[dict]:
    """Hand-made rows: method -> (ratio_min, ratio_median, ratio_max)."""
    ratios = {"base": (1.0, 1.0, 1.0), **ratios}
    return [{"model": model, "method": m, "batch": batch, "length": length, "threads": threads,
             "median_ms": 10 * med, "min_ms": 10 * lo, "max_ms": 10 * hi, "ratio_min": lo,
             "ratio_median": med, "ratio_max": hi, "passes": 20}
            for m, (lo, med, hi) in ratios.items()]


def _by_method(verdicts):
    return {v["method"]: v for v in verdicts}


def test_verdicts_reproduced():
    """Merged ≈ base, adapters 20% slower in every round: both claims reproduced."""
    v = _by_method(verdict_rows(_rows(base_copy=(0.97, 1.0, 1.03), lora_merged=(0.96, 1.01, 1.05),
                                      houlsby=(1.15, 1.2, 1.25), pfeiffer=(1.1, 1.2, 1.3))))
    assert {m: x["verdict"] for m, x in v.items()} == {
        "lora_merged": REPRODUCED, "houlsby": REPRODUCED, "pfeiffer": REPRODUCED}
    assert v["houlsby"]["overhead_pct"] == pytest.approx(20.0)
    assert v["houlsby"]["noise_max"] == 1.03
    # the tolerance for "no latency" is the noise range widened by 1 point
    near = _by_method(verdict_rows(_rows(base_copy=(0.97, 1.0, 1.03),
                                         lora_merged=(1.0, 1.035, 1.08))))
    assert near["lora_merged"]["verdict"] == REPRODUCED


def test_verdicts_inconclusive_when_ranges_overlap():
    v = _by_method(verdict_rows(_rows(base_copy=(0.9, 1.0, 1.15), lora_merged=(1.0, 1.2, 1.4),
                                      houlsby=(1.1, 1.2, 1.3), pfeiffer=(0.95, 1.05, 1.2))))
    assert {m: x["verdict"] for m, x in v.items()} == {
        "lora_merged": INCONCLUSIVE, "houlsby": INCONCLUSIVE, "pfeiffer": INCONCLUSIVE}


def test_no_latency_needs_a_quiet_measurement():
    """A noise range wider than ±10% (preempted passes) cannot show "no latency"."""
    v = _by_method(verdict_rows(_rows(base_copy=(0.05, 1.0, 40.0), lora_merged=(0.04, 1.3, 50.0))))
    assert v["lora_merged"]["verdict"] == INCONCLUSIVE and "noise" in v["lora_merged"]["note"]


def test_verdicts_not_reproduced_when_clearly_opposite():
    """Merged slower than any noise round, adapters faster than base in every round."""
    v = _by_method(verdict_rows(_rows(base_copy=(0.98, 1.0, 1.02), lora_merged=(1.1, 1.2, 1.3),
                                      houlsby=(0.8, 0.85, 0.9))))
    assert v["lora_merged"]["verdict"] == NOT_REPRODUCED
    assert v["houlsby"]["verdict"] == NOT_REPRODUCED
    assert "pfeiffer" not in v  # absent methods are skipped


def test_verdicts_need_the_noise_control():
    with pytest.raises(ValueError, match="base_copy"):
        verdict_rows(_rows(lora_merged=(1.0, 1.0, 1.0)))


def test_largest_overhead_is_marked_per_model_and_method():
    rows = (_rows(batch=1, base_copy=(0.99, 1.0, 1.01), houlsby=(1.2, 1.3, 1.4))
            + _rows(batch=16, base_copy=(0.99, 1.0, 1.01), houlsby=(1.01, 1.03, 1.05))
            + _rows(model="other", batch=16, base_copy=(0.99, 1.0, 1.01), houlsby=(1.0, 1.1, 1.2)))
    marked = [(v["model"], v["batch"]) for v in verdict_rows(rows) if v["largest_overhead"]]
    assert sorted(marked) == [("m", 1), ("other", 16)]


@pytest.mark.parametrize("name", TINY_MODELS)
def test_benchmark_models_compute_what_they_should(name, one_thread):
    """In the benchmark's setup merged LoRA computes unmerged LoRA's logits (a fair comparison),
    B is nonzero (not the base model), the adapters are not the identity, base_copy is base."""
    models = build_variants(build_model(name).eval())
    assert set(models) == set(METHODS)
    assert all(not m.training for m in models.values())
    inputs = random_batch(models["base"].config, 2, 16, labels=False)
    with torch.inference_mode():
        outputs = {k: m(**inputs, output_hidden_states=True) for k, m in models.items()}
    out = {k: o.logits for k, o in outputs.items()}
    torch.testing.assert_close(out["lora_merged"], out["lora_unmerged"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["base_copy"], out["base"], rtol=0, atol=0)
    # the tiny random models' logits are ~1e-3: compare the encoder's output instead
    last = {k: o.hidden_states[-1] for k, o in outputs.items()}
    torch.testing.assert_close(last["lora_merged"], last["lora_unmerged"], rtol=1e-5, atol=1e-5)
    for method in ("lora_merged", "houlsby", "pfeiffer"):
        assert (last[method] - last["base"]).abs().max() > 1e-5, method  # exactly 0 if a no-op
    assert inputs["input_ids"].shape == (2, 16) and bool(inputs["attention_mask"].all())


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "0x128"], "batch and length must be >= 1"),
    (["--shapes", "1by128"], "BATCHxLENGTH"),
    (["--threads", "0"], "must be >= 1"),
    (["--models", "gpt2"], "unknown"),
    (["--passes-small", "0"], "must be >= 1"),
    (["--models", "tiny-bert", "--shapes", "1x600"], "longer than the models' 512"),
    (["--out", "latency.md"], "--out"),
])
def test_bad_flags_exit_2_before_building(argv, message, monkeypatch, capsys, tmp_path):
    def no_build(*_args, **_kw):
        raise AssertionError("a model was built")

    monkeypatch.setattr(latency, "build_model", no_build)
    monkeypatch.setattr(latency, "measure", no_build)
    with pytest.raises(SystemExit) as exc:
        main([*argv] if "--out" in argv else [*argv, "--out", str(tmp_path / "x.json")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_refuses_to_measure_under_load_before_building(monkeypatch, capsys, tmp_path):
    def no_build(*_args, **_kw):
        raise AssertionError("a model was built")

    monkeypatch.setattr(latency, "measure", no_build)
    monkeypatch.setattr(latency.os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    monkeypatch.setattr(latency.os, "cpu_count", lambda: 2)
    out = tmp_path / "x.json"
    assert main(["--models", "tiny-bert", "--quick", "--out", str(out)]) == 2
    assert "under load: load average 3.0 on 2 cores" in capsys.readouterr().err
    assert not out.exists()


def test_a_result_measured_under_load_decides_nothing():
    rows = [{"model": "m", "batch": 1, "length": 8, "threads": 1, "method": method,
             "ratio_median": med, "ratio_min": lo, "ratio_max": hi}
            for method, med, lo, hi in (("base_copy", 1.0, 0.99, 1.01), ("lora_merged", 1.0, 0.99, 1.01),
                                        ("houlsby", 1.3, 1.2, 1.4), ("pfeiffer", 0.8, 0.7, 0.9))]
    quiet = {"rows": rows, "loadavg_start": [QUIET_LOAD * 2, 0, 0], "cpu_count": 2}
    assert [v["verdict"] for v in result_verdicts([quiet])] == [REPRODUCED, REPRODUCED, NOT_REPRODUCED]
    loaded = {**quiet, "loadavg_start": [QUIET_LOAD * 2 + 0.1, 0, 0]}
    flagged = result_verdicts([loaded])
    assert [v["verdict"] for v in flagged] == [INCONCLUSIVE] * 3
    assert all(v["note"].endswith("measured under load: load average 0.6 on 2 cores") for v in flagged)
    assert [v["ratio_median"] for v in flagged] == [v["ratio_median"] for v in verdict_rows(rows)]


def test_real_model_builders(monkeypatch, one_thread):
    """all-MiniLM-L6-v2 loads offline with a 2-label head, in eval mode; the RoBERTa-base shape is
    roberta-base's config (checked without building its 125M random weights)."""
    minilm = build_model("minilm")
    assert minilm.config.model_type == "bert" and minilm.config.num_labels == 2
    assert (minilm.config.num_hidden_layers, minilm.config.hidden_size) == (6, 384)

    from transformers import AutoModelForSequenceClassification

    seen = {}

    def fake_from_config(config):
        seen["config"] = config
        return torch.nn.Linear(1, 1)

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_config", fake_from_config)
    build_model("roberta-base-shape")
    config = seen["config"]
    assert config.model_type == "roberta" and config.num_labels == 2
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (12, 768, 3072)
    assert (config.max_position_embeddings, config.type_vocab_size) == (514, 1)
