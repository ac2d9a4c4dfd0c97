"""GLUE tasks: what each one reads, loading (Hub or a local directory), tokenisation, batches.

A local GLUE directory uses the Hub's parquet layout, ``<dir>/<task>/<split>.parquet``; set it
with the ``glue_dir`` run parameter or the ``LORA_NB_GLUE_DIR`` environment variable.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow
import pyarrow.parquet
import torch
from datasets.exceptions import DatasetGenerationError
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler

from .metrics import PRIMARY_METRIC

HUB_DATASET = "nyu-mll/glue"
GLUE_DIR_ENV = "LORA_NB_GLUE_DIR"


@dataclass(frozen=True)
class Task:
    """One GLUE task: input columns, label count (1 = regression) and validation splits."""

    name: str
    text_keys: tuple[str, str | None]
    num_labels: int
    eval_splits: tuple[str, ...] = ("validation",)

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.name]

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("mnli", ("premise", "hypothesis"), 3, ("validation_matched", "validation_mismatched")),
        Task("sst2", ("sentence", None), 2),
        Task("mrpc", ("sentence1", "sentence2"), 2),
        Task("cola", ("sentence", None), 2),
        Task("qnli", ("question", "sentence"), 2),
        Task("qqp", ("question1", "question2"), 2),
        Task("rte", ("sentence1", "sentence2"), 2),
        Task("stsb", ("sentence1", "sentence2"), 1),
    )
}


def get_task(name: str) -> Task:
    """The task called `name`; the one place a task name is looked up."""
    if name not in TASKS:
        raise ValueError(f"task: unknown {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name]


def resolve_glue_dir(glue_dir: str | os.PathLike | None) -> Path | None:
    """The local GLUE directory: the argument, else $LORA_NB_GLUE_DIR, else None (the Hub)."""
    value = glue_dir or os.environ.get(GLUE_DIR_ENV) or None
    return Path(value).expanduser().resolve() if value else None


def local_splits(task: Task, glue_dir: Path) -> dict[str, Path]:
    """The parquet files of `task` in a local directory: train and the first validation split
    are required, later ones (MNLI mismatched) are used when present."""
    if not glue_dir.is_dir():
        raise FileNotFoundError(f"glue_dir: {glue_dir} is not a directory")
    files = {s: glue_dir / task.name / f"{s}.parquet" for s in ("train", *task.eval_splits)}
    required = ["train", task.eval_splits[0]]
    missing = [s for s in required if not files[s].is_file()]
    if missing:
        holds = sorted(
            f"{p.parent.name}/{p.name}" for p in glue_dir.glob("*/*.parquet")
        ) or ["nothing in the <task>/<split>.parquet layout"]
        raise FileNotFoundError(
            f"glue_dir: {glue_dir} has no {task.name}/{{{','.join(missing)}}}.parquet; "
            f"it holds: {', '.join(holds)}"
        )
    return {s: p for s, p in files.items() if p.is_file()}


def load_glue(task: Task, glue_dir: str | os.PathLike | None = None) -> datasets.DatasetDict:
    """Train and validation splits of a GLUE task (`get_task(name)`), from a local directory or
    the Hub."""
    local = resolve_glue_dir(glue_dir)
    if local is not None:
        files = {s: str(p) for s, p in local_splits(task, local).items()}
        for path in files.values():  # the footer only: a truncated or foreign file, named
            _check_parquet(path, footer_only=True)
        try:
            return datasets.load_dataset("parquet", data_files=files)
        except (DatasetGenerationError, pyarrow.ArrowException) as err:  # neither names the file
            for path in files.values():
                _check_parquet(path)
            raise ValueError(f"glue_dir: reading {', '.join(files.values())} failed: "
                             f"{type(err.__cause__ or err).__name__}: {err.__cause__ or err}") from None
    ds = datasets.load_dataset(HUB_DATASET, task.name)
    return datasets.DatasetDict({s: ds[s] for s in ("train", *task.eval_splits)})


def _check_parquet(path: str, footer_only: bool = False) -> None:
    """Refuse a file that pyarrow cannot read as parquet, naming it."""
    try:
        if footer_only:
            pyarrow.parquet.read_metadata(path)
        else:
            pyarrow.parquet.read_table(path)
    except (pyarrow.ArrowException, OSError) as err:
        raise ValueError(f"glue_dir: {path} is not a readable parquet file "
                         f"({type(err).__name__}: {err})") from None


def _tokenizer_key(tokenizer: PreTrainedTokenizerBase) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(repr((type(tokenizer).__name__, vocab)).encode()).hexdigest()[:16]


def tokenize_glue(
    raw: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, task: Task, max_length: int
) -> datasets.DatasetDict:
    """Tokenise every split without padding (batches are padded per batch).

    `datasets.map` caches the result on disk under a fingerprint of (split, tokenizer vocabulary,
    task, max length): a second run of the same task tokenises nothing.
    """
    first, second = task.text_keys
    label_dtype = "float32" if task.is_regression else "int64"

    def encode(batch: dict) -> dict:
        texts = (batch[first],) if second is None else (batch[first], batch[second])
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    key = _tokenizer_key(tokenizer)
    out = {}
    for split, ds in raw.items():
        fingerprint = hashlib.sha256(
            f"{ds._fingerprint}-{key}-{task.name}-{max_length}-v1".encode()
        ).hexdigest()[:32]
        tokenised = ds.map(
            encode,
            batched=True,
            remove_columns=[c for c in ds.column_names if c != "label"],
            new_fingerprint=fingerprint,
            desc=f"tokenising {task.name}/{split}",
        )
        out[split] = tokenised.rename_column("label", "labels").cast_column(
            "labels", datasets.Value(label_dtype)
        )
    return datasets.DatasetDict(out)


def subset(ds: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """A deterministic random subset of `n` rows for a given seed (all rows when n is None)."""
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))


DEV_SHARE = 0.1  # the dev split takes at most this share of the training split


def split_dev(train: datasets.Dataset, n: int, seed: int) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """(training examples, dev split): min(`n`, 10%) examples held out of the training split at
    random with `seed`, for choosing learning rates and budgets; (train, None) when `n` is 0."""
    size = min(n, int(DEV_SHARE * len(train)))
    if size < 1:
        return train, None
    parts = train.train_test_split(test_size=size, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def make_dataloader(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    group_by_length: bool = False,
    pad_to: int | None = None,
) -> DataLoader:
    """Batches padded to their longest example (`DataCollatorWithPadding`).

    Training batches are shuffled, optionally grouped by length (transformers'
    `LengthGroupedSampler`); evaluation batches are sorted by length, which changes no metric
    and wastes the least padding. `pad_to` pads every example to that length instead (the
    fixed padding some reproductions use; for benchmarks).
    """
    lengths = ds["length"]
    ds = ds.remove_columns("length").with_format("torch")
    if pad_to is not None:
        collator = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=pad_to)
    else:
        collator = DataCollatorWithPadding(tokenizer)
    generator = torch.Generator().manual_seed(seed)
    if not train:
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        return DataLoader(ds, batch_size=batch_size, sampler=order, collate_fn=collator)
    if group_by_length:
        sampler = LengthGroupedSampler(batch_size, lengths=list(lengths), generator=generator)
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collator)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=collator)
