"""A notebook's parameters as a run: papermill's namespace → a `RunConfig`, the seeds to run, the
run folder named after the settings.

`notebooks/train.ipynb` takes RunConfig's fields as its parameters (papermill's ``-p``, ``-y``,
JupyterLab's parameters cell), plus a few of its own (`NOTEBOOK_PARAMETERS`). A name that is not
a parameter is refused with the nearest one; list fields may be typed as text.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import json

from .checks import is_int
from .config import RunConfig
from .rundir import repo_path


def default_output_dir(config: RunConfig) -> str:
    """A run folder named by the run's settings, under ``runs/notebook/``: the setting in words
    and a hash of every field that changes what is computed, with ``{seed}`` left to fill in."""
    settings = config.computation(seed=False)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:6]
    method = config.method
    if config.lora:
        method += f"-{''.join(config.targets)}-r{config.r}"
    elif config.adapter:
        method += f"-m{config.adapter_size}" + (f"-drop{config.adapter_drop}" if config.adapter_drop else "")
    return f"runs/notebook/{config.task}-{method}-{digest}-s{{seed}}"


# train.ipynb's parameters that are not RunConfig fields, and the names the notebook itself
# defines after its parameters (with IPython's In and Out): neither is an unknown parameter.
NOTEBOOK_PARAMETERS = ("seeds", "progress", "cuda_visible_devices")
NOTEBOOK_VARIABLES = ("In", "Out", "config", "record", "records")
# Names users type for a field (other libraries' names), suggested before difflib's guess.
PARAMETER_ALIASES = {"lr": "learning_rate", "rate": "learning_rate", "rank": "r",
                     "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
                     "target_modules": "targets", "bs": "batch_size", "batch": "batch_size",
                     "epoch": "epochs", "num_epochs": "epochs", "steps": "max_steps",
                     "output": "output_dir", "out_dir": "output_dir", "model_name": "model",
                     "seq_len": "max_length", "max_seq_length": "max_length", "threads": "num_threads",
                     "fp16": "mixed_precision", "bf16": "mixed_precision", "data_dir": "glue_dir"}
# What papermill can set (-p, -r, -y): literals. Modules, functions and the like are not parameters.
_LITERAL_TYPES = (str, int, float, bool, list, dict, tuple, type(None))


def nearest_parameter(name: str) -> str | None:
    """The parameter a user most likely meant by `name`."""
    names = [*RunConfig.field_names(), *NOTEBOOK_PARAMETERS]
    if name.lower() in PARAMETER_ALIASES:
        return PARAMETER_ALIASES[name.lower()]
    close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_parameters(params: dict) -> list[str]:
    """The names in a notebook's namespace that look like parameters (papermill's literals) but
    are neither RunConfig fields nor the notebook's own: papermill only warns about them."""
    known = {*RunConfig.field_names(), *NOTEBOOK_PARAMETERS, *NOTEBOOK_VARIABLES}
    return sorted(k for k, v in params.items()
                  if not k.startswith("_") and k not in known and isinstance(v, _LITERAL_TYPES))


def _listed(value) -> list:
    """A list parameter as users type it: a list, or text "[0, 1]", "0,1", "0 1", "q,v"."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if not isinstance(value, str):
        return [value]
    text = value.strip()
    if text.startswith(("[", "(")):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):  # [q, v]: unquoted names
            text = text.strip("[]()")
        else:
            return list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]
    return [t for t in text.replace(",", " ").split()]


def notebook_seeds(value, default: int) -> list[int]:
    """The seeds a notebook execution runs, in the forms papermill passes them: None → [default];
    ``-p seeds 3`` (an int) or "3" → [3], one seed; ``-p seeds "[0, 1]"``, "0,1", "0 1" or
    ``-y "seeds: [0, 1]"`` → [0, 1]."""
    if value is None:
        return [default]
    items = _listed(value)
    seeds = []
    for item in items:
        if isinstance(item, str) and item.strip().lstrip("-").isdigit():
            item = int(item)
        if not is_int(item):
            raise ValueError(f"seeds: expected a seed or a list of seeds (3, [0, 1] or 0,1), got {value!r}")
        seeds.append(item)
    if not seeds:
        raise ValueError(f"seeds: give at least one seed, got {value!r}")
    return seeds


def notebook_config(params: dict) -> RunConfig:
    """The `RunConfig` of a notebook's parameters: paths relative to the repository root, and
    the output folder derived from the settings when `output_dir` is None (so that changing a
    parameter and running again runs the new setting). A name that is not a parameter
    (papermill's ``-p lr 0.1``, which papermill only warns about) is refused, with the nearest
    parameter; list fields may be given as text ("q,v", "[q, v]")."""
    unknown = unknown_parameters(params)
    if unknown:
        raise ValueError("; ".join(
            f"{name}: not a run parameter" + (f", did you mean {near}?" if (near := nearest_parameter(name)) else "")
            for name in unknown) + " (parameters: RunConfig's fields and " + ", ".join(NOTEBOOK_PARAMETERS) + ")")
    given = {k: v for k, v in params.items() if k in RunConfig.field_names()}
    for name in ("targets", "tags"):
        if isinstance(given.get(name), str):
            given[name] = [str(t) for t in _listed(given[name])]
    config = RunConfig.from_dict({**given, "output_dir": given.get("output_dir") or "unset"})
    output_dir = given.get("output_dir") or default_output_dir(config)
    return dataclasses.replace(
        config, output_dir=str(repo_path(output_dir)),
        glue_dir=str(repo_path(config.glue_dir)) if config.glue_dir else None,
        init_adapter=str(repo_path(config.init_adapter)) if config.init_adapter else None)


def seed_config(config: RunConfig, seed: int) -> RunConfig:
    """`config` for one seed, with ``{seed}`` filled in its output and init-adapter paths."""
    return dataclasses.replace(
        config, seed=seed, output_dir=config.output_dir.replace("{seed}", str(seed)),
        init_adapter=config.init_adapter.replace("{seed}", str(seed)) if config.init_adapter else None)
