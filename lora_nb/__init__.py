"""lora-nb: LoRA (Hu et al., 2021) on GLUE, from the layer to the paper's tables.

The public surface: the LoRA layer and its injection (`lora`), training modes and parameter
counts (`modes`), adapter checkpoints (`adapter`), and one fine-tuning run (`RunConfig`, `run`).
"""

from .adapter import load_adapter, load_lora_state_dict, lora_state_dict, save_adapter
from .config import RunConfig, paper_config
from .lora import LoRAConfig, LoRALinear, add_lora, merge_lora, unmerge_lora
from .modes import METHODS, count_parameters, prepare_model

__all__ = [
    "LoRAConfig", "LoRALinear", "add_lora", "merge_lora", "unmerge_lora",
    "METHODS", "prepare_model", "count_parameters",
    "lora_state_dict", "load_lora_state_dict", "save_adapter", "load_adapter",
    "RunConfig", "paper_config", "run",
]


def run(config: RunConfig, progress: bool = True) -> dict:
    """Fine-tune as `config` says and return the run record (see `lora_nb.train.run`)."""
    from .train import run as _run

    return _run(config, progress=progress)
