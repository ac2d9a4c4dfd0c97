"""Run configuration: the paper's presets (Table 9) and bad input refused before any loading."""

import pytest

from conftest import GLUE_DIR
from lora_nb.config import BASELINE_LR, RunConfig, paper_config
from lora_nb.train import main, run


def test_paper_config_follows_table9():
    cfg = paper_config("cola")
    assert (cfg.model, cfg.batch_size, cfg.epochs, cfg.learning_rate) == ("roberta-base", 32, 80, 4e-4)
    assert (cfg.targets, cfg.r, cfg.alpha, cfg.warmup_ratio, cfg.max_length) == (["q", "v"], 8, 8.0, 0.06, 512)
    assert paper_config("mnli").learning_rate == 5e-4 and paper_config("sst2").epochs == 60


def test_baselines_get_their_own_learning_rate_and_overrides_win():
    full = paper_config("mrpc", "full")
    assert full.learning_rate == BASELINE_LR["full"] == 2e-5 and full.epochs == 10
    assert paper_config("mrpc", "lora", alpha=16, weight_decay=0.1).alpha == 16


def test_config_round_trip_and_string_lists():
    cfg = RunConfig(targets="q,k,v,o", tags="table6")
    assert cfg.targets == ["q", "k", "v", "o"] and cfg.tags == ["table6"]
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown run parameter\(s\) \['rank'\]"):
        RunConfig.from_dict({"rank": 4})


@pytest.mark.parametrize("changes, message", [
    ({"task": "wnli"}, "task: unknown 'wnli'"),
    ({"method": "adapter"}, "method: unknown 'adapter'"),
    ({"targets": ["q", "x"]}, "targets: unknown weight type"),
    ({"r": 0}, "r: the rank must be an integer >= 1"),
    ({"alpha": 0.0}, "alpha: must be > 0"),
    ({"dropout": 1.0}, r"dropout: must lie in \[0, 1\)"),
    ({"method": "full", "r": 4}, "r: LoRA settings do not apply to method 'full'"),
    ({"method": "bitfit", "alpha": 16.0}, "alpha: LoRA settings do not apply"),
    ({"learning_rate": 0.0}, "learning_rate: must be a positive number"),
    ({"learning_rate": -1e-4}, "learning_rate: must be a positive number"),
    ({"batch_size": 0}, "batch_size: must be a positive number"),
    ({"epochs": 0}, "epochs: must be a positive number"),
    ({"epochs": 1.5}, "epochs: must be an integer"),
    ({"max_train_samples": 0}, "max_train_samples: must be a positive integer"),
    ({"warmup_ratio": 1.0}, r"warmup_ratio: must lie in \[0, 1\)"),
    ({"mixed_precision": "fp8"}, "mixed_precision: one of"),
])
def test_bad_input_is_refused_naming_the_parameter(changes, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**changes).validate()


def test_local_directory_without_the_task_is_refused():
    with pytest.raises(FileNotFoundError, match=r"glue_dir: .* has no qnli/.*it holds: .*sst2/train.parquet"):
        RunConfig(task="qnli", glue_dir=str(GLUE_DIR)).validate()


def test_missing_init_adapter_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="init_adapter: no adapter file"):
        RunConfig(init_adapter=str(tmp_path / "none.safetensors")).validate()


def test_run_refuses_max_length_above_the_model_limit_before_loading(tmp_path):
    cfg = RunConfig(model="all-MiniLM-L6-v2", glue_dir=str(GLUE_DIR), max_length=1024,
                    output_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="max_length: 1024 exceeds all-MiniLM-L6-v2's limit 512"):
        run(cfg)
    assert not (tmp_path / "run").exists()


def test_unknown_model_names_what_was_tried(tmp_path):
    cfg = RunConfig(model=str(tmp_path / "no-such-model"), glue_dir=str(GLUE_DIR),
                    output_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="model: could not load .*no-such-model.*offline aliases"):
        run(cfg)


def test_cli_refuses_bad_input_with_exit_code_2(capsys, tmp_path):
    assert main(["--task", "mrpc", "--method", "full", "--r", "4", "--output-dir", str(tmp_path)]) == 2
    assert "r: LoRA settings do not apply to method 'full'" in capsys.readouterr().err
    assert main(["--paper", "--task", "nope"]) == 2


def test_mixed_precision_auto_takes_bf16_where_the_cpu_has_it(monkeypatch):
    from lora_nb import train
    from lora_nb.machine import cpu_has_bf16

    assert cpu_has_bf16("flags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_bf16("Features\t: fp asimd bf16 i8mm\n")  # Arm
    assert not cpu_has_bf16("flags\t\t: fpu sse avx2 avx512f\n")
    monkeypatch.setattr(train.torch.cuda, "is_available", lambda: False)
    for has, expected in ((True, "bf16"), (False, "no")):
        monkeypatch.setattr(train, "cpu_has_bf16", lambda has=has: has)
        assert train._mixed_precision("auto") == expected
    assert train._mixed_precision("no") == "no"


@pytest.mark.parametrize("name, value", [("max_steps", 0), ("max_steps", 1.5), ("dev_examples", -1),
                                         ("data_seed", True), ("dev_examples", "100")])
def test_budget_and_dev_split_settings_are_checked(name, value):
    with pytest.raises(ValueError, match=name):
        RunConfig(**{name: value}).validate()
