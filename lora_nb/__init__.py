"""lora-nb: LoRA (Hu et al., 2021) on GLUE, from the layer to the paper's tables.

Data flows one way:

    GLUE (glue) ─► model + LoRA or a baseline (models, lora, bottleneck, modes)
        ─► training loop (train, config) ─► run record + adapter (rundir, adapter)
        ─► sweep (sweep: papermill over notebooks/train.ipynb) ─► tables and verdicts
        (results, claims, subspace analysis) ─► figures (plots) ─► HTML report (report)

The LoRA core (`lora`, `bottleneck`, `modes`, `adapter`) needs torch alone and is imported
here; the run configuration and the training loop (transformers, datasets, accelerate) load on
first use of `RunConfig`, `paper_config` or `run`.
"""

from .adapter import load_adapter, load_lora_state_dict, lora_state_dict, save_adapter
from .lora import LoRAConfig, LoRALinear, add_lora, merge_lora, unmerge_lora
from .modes import METHODS, count_parameters, prepare_model

__all__ = [
    "LoRAConfig", "LoRALinear", "add_lora", "merge_lora", "unmerge_lora",
    "METHODS", "prepare_model", "count_parameters",
    "lora_state_dict", "load_lora_state_dict", "save_adapter", "load_adapter",
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
