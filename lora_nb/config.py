"""The run configuration and the paper's hyperparameters (Appendix D, Table 9).

One run = one `RunConfig` = one call to `lora_nb.train.run`. The notebook's parameters cell, the
command line (`python -m lora_nb.train`) and the sweep all use these field names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

from .checks import is_int
from .glue import TASKS, Task, get_task, local_splits, resolve_glue_dir
from .lora import TARGET_PATTERNS, LoRAConfig
from .checkpoint import read_metadata
from .methods import ADAPTER_METHODS, METHODS
from .paper import reference_rows

POOLINGS = ("cls", "mean")
# What may start from another run's trained tensors (the paper's MRPC, RTE and STS-B protocol).
INIT_METHODS = ("lora", "full")
# Settings that say where or how a run executes, or label it, not what it computes: two runs that
# differ only in these are the same run (`RunConfig.computation`).
EXECUTION_FIELDS = ("output_dir", "glue_dir", "num_threads", "overwrite", "eval_batch_size", "tags")


def _paper_lora_hparams() -> dict[str, tuple[int, int, float]]:
    """Table 9, RoBERTa-base LoRA: (batch size, epochs, learning rate) per task. All tasks share
    AdamW, a linear schedule with warmup ratio 0.06, r = 8, α = 8 on Wq and Wv, max length 512."""
    return {row["task"]: (int(row["batch_size"]), int(row["epochs"]), float(row["learning_rate"]))
            for row in reference_rows("table9")}


PAPER_LORA_HPARAMS = _paper_lora_hparams()
# Baselines, which Table 9 does not cover. Full fine-tuning follows RoBERTa's GLUE recipe
# (Liu et al., 2019, Appendix C: lr ∈ {1e-5, 2e-5, 3e-5}, batch 16/32, 10 epochs, warmup 6%);
# BitFit takes a rate from its paper's grid (Ben Zaken et al., 2021: 1e-4 … 1e-3); a frozen
# encoder's head alone, a linear probe, trains best at a high rate.
# Adapters train at 1e-4 … 1e-3 in Houlsby et al. (2019) and Pfeiffer et al. (2021): 3e-4.
BASELINE_LR: dict[str, float] = {"full": 2e-5, "bitfit": 5e-4, "head": 1e-3,
                                 "houlsby": 3e-4, "pfeiffer": 3e-4}
FULL_FT_EPOCHS = 10


def _field(default, help: str, choices: tuple | None = None, factory=None):
    """A `RunConfig` field with its documentation: the command line's --help, the notebook's
    parameters and the docs all read it from here."""
    meta = {"help": help, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Every setting of one fine-tuning run. Defaults: the paper's LoRA setting on MRPC."""

    task: str = _field("mrpc", "GLUE task", tuple(TASKS))
    method: str = _field("lora", "what trains (paper Table 2's rows)", METHODS)
    model: str = _field("roberta-base", "Hub id, local folder, or the offline alias all-MiniLM-L6-v2")
    # LoRA (method "lora" only): weight types, rank, α, dropout on the LoRA path (§4, Table 9).
    targets: list[str] = _field(None, "LoRA: weight types, comma-separated (e.g. q,v)",
                                tuple(TARGET_PATTERNS), factory=lambda: ["q", "v"])
    r: int = _field(8, "LoRA: rank r")
    alpha: float = _field(8.0, "LoRA: α; the update is scaled by α/r")
    dropout: float = _field(0.0, "LoRA: dropout on the LoRA path")
    # Bottleneck adapters (methods "houlsby", "pfeiffer" only).
    adapter_size: int = _field(8, "adapters: bottleneck size m")
    adapter_drop: int = _field(0, "adapters: lowest layers left without adapters (AdapterDrop)")
    pooling: str = _field("cls", "what the head reads: the first token, or the mean over tokens", POOLINGS)
    # Optimisation (Table 9).
    learning_rate: float = _field(4e-4, "peak learning rate (AdamW, linear schedule)")
    batch_size: int = _field(16, "training batch size per process")
    global_batch_size: int | None = _field(
        None, "examples per optimizer step over all processes, reached by gradient accumulation "
              "(None: batch_size × processes); the authors' scripts: 8 GPUs × batch_size")
    epochs: int = _field(30, "training epochs (when max_steps is None)")
    max_steps: int | None = _field(
        None, "optimizer steps in all, the data cycled epoch after epoch (None: epochs × an epoch's steps)")
    warmup_ratio: float = _field(0.06, "share of the steps with a linear warm-up")
    weight_decay: float = _field(0.0, "AdamW weight decay (not on biases and LayerNorm)")
    max_grad_norm: float = _field(1.0, "gradient clipping norm")
    max_length: int = _field(512, "longest input in tokens (longer ones are truncated)")
    seed: int = _field(0, "random seed: head initialisation, LoRA's A, adapters, dropout, data order")
    # Data: every seed trains on the same examples (data_seed), so runs pair by seed.
    data_seed: int = _field(0, "seed of the dev split and the training subset, the same for every seed")
    dev_examples: int = _field(
        0, "hold out min(this, 10% of the training split) as a dev split, evaluated beside "
           "validation, for choosing learning rates and budgets (0: none)")
    max_train_samples: int | None = _field(None, "train on a random subset of this size (None: all)")
    max_eval_samples: int | None = _field(None, "evaluate on a fixed subset of this size (None: all)")
    group_by_length: bool = _field(False, "batch training examples of similar length together "
                                          "(a speed option; default: random batches)")
    eval_every: int = _field(0, "also evaluate every this many optimizer steps (0: at epoch ends only)")
    glue_dir: str | None = _field(None, "local GLUE folder <dir>/<task>/<split>.parquet "
                                        "(None: $LORA_NB_GLUE_DIR, else the Hub)")
    init_adapter: str | None = _field(
        None, "adapter file to start from, without its head: LoRA from the MNLI LoRA adapter "
              "(paper App. D.1), full FT from the MNLI fine-tuned model (Liu et al., 2019)")
    # Output and execution.
    output_dir: str = _field("runs/default", "the run folder (record, adapter)")
    overwrite: bool = _field(False, "replace a completed run in output_dir")
    eval_batch_size: int = _field(64, "evaluation batch size")
    num_threads: int = _field(0, "CPU threads for torch (0: torch's default)")
    mixed_precision: str = _field("auto", "auto: bf16 autocast where the device has bf16 arithmetic "
                                  "(GPUs; CPUs with AVX512-BF16 or AMX), else fp32",
                                  ("auto", "no", "bf16", "fp16"))
    tags: list[str] = _field(None, "free labels, comma-separated (e.g. the table a run is for)",
                             factory=list)

    def __post_init__(self) -> None:
        for name in ("targets", "tags"):  # "q,v", ["q", "v"] or ["q,v"] (the command line)
            value = getattr(self, name)
            items = [value] if isinstance(value, str) else value
            setattr(self, name, [t.strip() for item in items for t in str(item).split(",") if t.strip()])

    @property
    def adapter(self):
        """The `AdapterConfig` of an adapter method, else None."""
        if self.method not in ADAPTER_METHODS:
            return None
        from .bottleneck import AdapterConfig

        return AdapterConfig(self.method, self.adapter_size, self.adapter_drop)

    @property
    def lora(self) -> LoRAConfig | None:
        if self.method != "lora":
            return None
        return LoRAConfig(tuple(self.targets), self.r, self.alpha, self.dropout)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown run parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    @property
    def glue_task(self) -> Task:
        """The GLUE task this run trains on."""
        return get_task(self.task)

    def computation(self, seed: bool = True) -> dict:
        """What this run computes: every setting but `EXECUTION_FIELDS` (and the seed, with
        ``seed=False``). The one rule for "the same run": resuming, "already completed", a
        grid's runs shared between tables, restoring committed records, ``results --same-as``.
        The adapter a run starts from counts by its run folder and file name, not by where
        the runs folder lies, so that a run restored into another runs folder is the same run."""
        settings = {k: v for k, v in self.to_dict().items()
                    if k not in EXECUTION_FIELDS and (seed or k != "seed")}
        if self.init_adapter:
            settings["init_adapter"] = "/".join(Path(self.init_adapter).parts[-2:])
        return settings

    def differs_from(self, config: dict, seed: bool = True) -> list[str]:
        """The settings (`computation`) in which a recorded config differs from this one."""
        try:
            theirs = RunConfig.from_dict(config).computation(seed)
        except (TypeError, ValueError):  # not a run configuration: compare what it holds
            theirs = config
        return sorted(k for k, v in self.computation(seed).items() if theirs.get(k) != v)

    def validate(self, adapter: bool = True) -> "RunConfig":
        """Refuse bad input with a message naming the parameter, before anything is loaded: the
        settings, then the files they name (`check_files`; ``adapter=False`` leaves out the init
        adapter, which an earlier run of the same sweep writes)."""
        self.glue_task
        if self.method not in METHODS:
            raise ValueError(f"method: unknown {self.method!r}; choose from {METHODS}")
        defaults = RunConfig()
        for settings, applies, kind in (
            (("targets", "r", "alpha", "dropout"), self.method == "lora", "LoRA"),
            (("adapter_size", "adapter_drop"), self.method in ADAPTER_METHODS, "adapter"),
        ):
            changed = [n for n in settings if getattr(self, n) != getattr(defaults, n)]
            if changed and not applies:
                raise ValueError(
                    f"{', '.join(changed)}: {kind} settings do not apply to method {self.method!r}"
                )
        self.lora, self.adapter  # LoRAConfig / AdapterConfig validate their own fields
        if self.init_adapter and self.method not in INIT_METHODS:
            raise ValueError(f"init_adapter: only methods {INIT_METHODS} start from another run")
        if self.global_batch_size is not None and (
                not is_int(self.global_batch_size) or self.global_batch_size < 1
                or self.global_batch_size % self.batch_size):
            raise ValueError(f"global_batch_size: must be None or a positive multiple of batch_size "
                             f"({self.batch_size}), got {self.global_batch_size!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling: one of {POOLINGS}, got {self.pooling!r}")
        for name in ("eval_every", "dev_examples", "data_seed"):
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                raise ValueError(f"{name}: must be an integer >= 0, got {value!r}")
        for name in ("learning_rate", "batch_size", "epochs", "max_length", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name}: must be a positive number, got {value!r}")
        for name in ("batch_size", "epochs", "max_length", "eval_batch_size", "seed", "num_threads"):
            if not is_int(getattr(self, name)):
                raise ValueError(f"{name}: must be an integer, got {getattr(self, name)!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio: must lie in [0, 1), got {self.warmup_ratio!r}")
        if self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise ValueError("weight_decay must be >= 0 and max_grad_norm > 0")
        for name in ("max_train_samples", "max_eval_samples", "max_steps"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                raise ValueError(f"{name}: must be a positive integer or None, got {value!r}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision: one of auto, no, bf16, fp16; got {self.mixed_precision!r}")
        return self.check_files(adapter)

    def check_files(self, adapter: bool = True) -> "RunConfig":
        """The one place a configuration reads the disk, before anything loads: the local GLUE
        folder holds the task's splits, and the init adapter is an adapter file trained with
        this run's method."""
        glue_dir = resolve_glue_dir(self.glue_dir)
        if glue_dir is not None:
            local_splits(self.glue_task, glue_dir)
        if adapter and self.init_adapter:
            if not Path(self.init_adapter).is_file():
                raise FileNotFoundError(f"init_adapter: no adapter file at {self.init_adapter}")
            try:
                stored = read_metadata(self.init_adapter).get("method")
            except ValueError as err:  # not a safetensors file: named, not safetensors' own error
                raise ValueError(f"init_adapter: {err}") from None
            if stored != self.method:
                raise ValueError(f"init_adapter: {self.init_adapter} was trained with method "
                                 f"{stored!r}, this run is {self.method!r}")
        return self


def paper_config(task: str, method: str = "lora", **overrides) -> RunConfig:
    """The paper's setting for `task` and `method` (Table 9; baselines per `BASELINE_LR`), with
    any field overridden. LoRA uses α = 8 as Table 9 states; microsoft/LoRA's scripts use α = 16
    and weight decay 0.1 (set ``alpha=16, weight_decay=0.1`` to follow them)."""
    batch, epochs, lr = PAPER_LORA_HPARAMS[get_task(task).name]
    base: dict = {"task": task, "method": method, "model": "roberta-base", "batch_size": batch,
                  "max_length": 512, "warmup_ratio": 0.06}
    if method == "lora":
        base.update(epochs=epochs, learning_rate=lr, targets=["q", "v"], r=8, alpha=8.0)
    elif method in BASELINE_LR:
        base.update(epochs=FULL_FT_EPOCHS if method == "full" else epochs,
                    learning_rate=BASELINE_LR[method])
    else:
        raise ValueError(f"method: unknown {method!r}; choose from {METHODS}")
    base.update(overrides)
    return RunConfig.from_dict(base)

