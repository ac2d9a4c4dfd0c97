"""lora-nb: LoRA (Hu et al., 2021) on GLUE, from the layer to the paper's tables.

Data flows one way:

    data: glue (tasks, tokenisation, batches), metrics
      ─► model + LoRA or a baseline: models (loading, RoBERTa-base's shape), lora (the layer),
         bottleneck (adapters), methods (what trains), checkpoint (the trained tensors)
      ─► training loop: config (the run's settings, Table 9), parameters (a notebook's
         parameters as a run), train
      ─► run record: rundir (the run folder's one contract), machine (device, versions)
      ─► sweep: presets (what each preset runs), grid (its runs, rates, resume), runner (one
         setting's execution, the thread pool), sweep (running a grid), notebook_run (the one
         papermill call), ray_executor (settings as Ray tasks), estimate (what a preset costs)
      ─► tables: results (records → Tables 2, 5, 6), claims (verdicts), subspace (§7),
         paper (the published numbers), table1 (the latency benchmark's committed results)
      ─► report: plots (figures), report (executed, rendered pages)

The benchmarks (speed, memory, Table 1's latency, the GPU check) are in benchmarks/, outside the
package: they import lora_nb, never the other way round.

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
