"""lora-nb: LoRA (Hu et al., 2021) on GLUE, from the layer to the paper's tables.

Data flows one way:

    data: glue (tasks, tokenisation, batches), metrics
      ─► model + LoRA or a baseline: models (loading, RoBERTa-base's shape), lora (the layer),
         bottleneck (adapters), methods (what trains), checkpoint (the trained tensors)
      ─► training loop: config (the run's settings, Table 9), train
      ─► run record: rundir (the run folder's one contract), machine (device, versions)
      ─► sweep: sweep (presets, grids, resume), notebook_run (the one papermill call),
         ray_executor (settings as Ray tasks), estimate (what a preset costs)
      ─► tables: results (records → Tables 2, 5, 6), claims (verdicts), subspace (§7),
         paper (the published numbers), latency (Table 1), bench (speed and memory)
      ─► report: plots (figures), report (executed, rendered pages)

The LoRA core (`lora`, `bottleneck`, `methods`, `checkpoint`, `paper`, `rundir`) needs torch
alone and is imported here; the run configuration and the training loop (transformers, datasets,
accelerate) load on first use of `RunConfig`, `paper_config` or `run`.
"""

from .checkpoint import load_adapter, load_trained_state_dict, trained_state_dict, save_adapter
from .lora import LoRAConfig, LoRALinear, add_lora, merge_lora, unmerge_lora
from .methods import METHODS, count_parameters, prepare_model

__all__ = [
    "LoRAConfig", "LoRALinear", "add_lora", "merge_lora", "unmerge_lora",
    "METHODS", "prepare_model", "count_parameters",
    "trained_state_dict", "load_trained_state_dict", "save_adapter", "load_adapter",
    "RunConfig", "paper_config", "run",
]


def __getattr__(name: str):
    """`RunConfig` and `paper_config` import transformers and datasets: load them on first use."""
    if name in ("RunConfig", "paper_config"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'lora_nb' has no attribute {name!r}")


def run(config, progress: bool = True) -> dict:
    """Fine-tune as `config` (a `RunConfig`) says and return the run record (`lora_nb.train.run`)."""
    from .train import run as _run

    return _run(config, progress=progress)
