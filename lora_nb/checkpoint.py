"""Adapter checkpoints: only what was trained, plus the configuration that made it.

For RoBERTa-base with r = 8 on Wq, Wv that is 294,912 LoRA weights and the head: a few MB
instead of the 500 MB a full checkpoint takes (paper §4.2, "Practical benefits"). For the
bottleneck adapter methods (``houlsby``, ``pfeiffer``) it is the adapters, the LayerNorms and the
head, with the `AdapterConfig`.

A LoRA run also goes out as a peft adapter folder, and a peft LoRA folder comes in
(`lora_nb.peft_format`; `load_adapter` takes such a folder as it takes a file):

    python -m lora_nb.checkpoint export RUN OUT_DIR        a run (folder, record or id) -> peft folder
    python -m lora_nb.checkpoint import PEFT_DIR OUT_FILE  a peft LoRA folder -> an adapter file
    python -m lora_nb.checkpoint                           the size of a RoBERTa-base adapter file
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from contextlib import contextmanager, suppress
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .bottleneck import AdapterConfig, add_adapters, get_adapter_config
from .lora import LoRAConfig, add_lora, get_lora_config
from .methods import ADAPTER_METHODS, is_head_parameter, is_lora_parameter, is_trained
from .peft_format import read_peft, write_peft
from .rundir import (ADAPTER_FILE, COMMITTED_RECORDS, RECORD_FILE, display_path, find_adapter,
                     is_completed, load_record)


def trained_state_dict(model: nn.Module, include_head: bool = True) -> dict[str, torch.Tensor]:
    """The trained tensors of a model prepared by `prepare_model`: LoRA matrices, the head and,
    for BitFit, the biases; for the adapter methods, adapters, LayerNorms and the head. With
    ``include_head=False``, the LoRA matrices alone, or the adapters and LayerNorms alone."""
    method = getattr(model, "training_method", "lora")
    state = {}
    for name, p in model.named_parameters():
        trained = is_trained(name, method)
        body = is_lora_parameter(name) or (
            method in ADAPTER_METHODS and trained and not is_head_parameter(name)
        )
        keep = body or (include_head and trained)
        if keep:
            state[name] = p.detach().clone()
    return state


def load_trained_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into `model`'s parameters. Every key must exist with the same shape."""
    params = dict(model.named_parameters())
    missing = [k for k in state if k not in params]
    if missing:
        raise ValueError(
            f"adapter holds {len(missing)} tensor(s) this model lacks, e.g. {missing[:3]}: "
            "was it trained with other targets, another method or another model?"
        )
    for key, tensor in state.items():
        if params[key].shape != tensor.shape:
            raise ValueError(
                f"adapter tensor {key!r} has shape {tuple(tensor.shape)}, the model "
                f"{tuple(params[key].shape)}: rank, model or number of labels differ"
            )
    with torch.no_grad():
        for key, tensor in state.items():
            params[key].copy_(tensor)


def save_adapter(model: nn.Module, path: str | os.PathLike, /, **metadata: object) -> Path:
    """Write the trained tensors and the LoRA or adapter configuration to ``path`` (a
    safetensors file), atomically. Extra keyword arguments are stored as JSON metadata."""
    path = Path(path)
    config = get_lora_config(model)
    adapter = get_adapter_config(model)
    meta = {
        "lora_config": json.dumps(config.to_dict() if config else None),
        "adapter_config": json.dumps(adapter.to_dict() if adapter else None),
        "method": getattr(model, "training_method", "lora"),
        **{k: json.dumps(v) for k, v in metadata.items()},
    }
    state = {k: v.contiguous() for k, v in trained_state_dict(model).items()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(state, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except BaseException as err:  # a full disk, SIGTERM mid-write: no temporary file is left
        with suppress(OSError):
            tmp.unlink()
        if isinstance(err, (OSError, SafetensorError)):  # safetensors reports I/O errors as its own
            from .rundir import StorageError, storage_error

            code = re.search(r"os error (\d+)", str(err))
            if isinstance(err, SafetensorError) and code:  # "I/O error: ... (os error 28)"
                err = OSError(int(code[1]), os.strerror(int(code[1])))
            raise (storage_error(err, tmp) if isinstance(err, OSError)
                   else StorageError(None, f"cannot write {tmp}: {err}")) from None
        raise
    return path


def _decoded(meta: dict | None) -> dict:
    return {k: (json.loads(v) if k != "method" else v) for k, v in (meta or {}).items()}


def _encoded(meta: dict) -> dict[str, str]:
    return {k: (v if k == "method" else json.dumps(v)) for k, v in meta.items()}


@contextmanager
def _unreadable_names(path: str | os.PathLike):
    """A file that is not a safetensors adapter (garbage, truncated, another format) raises a
    ValueError that names it, instead of safetensors' error, which does not."""
    try:
        yield
    except (SafetensorError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable safetensors adapter file "
                         f"({type(err).__name__}: {err})") from None


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of an adapter file (method, configurations), without reading its tensors."""
    with _unreadable_names(path), safe_open(str(path), framework="pt") as f:
        return _decoded(f.metadata())


def read_adapter(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of an adapter file (metadata values JSON-decoded)."""
    with _unreadable_names(path), safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, _decoded(f.metadata())


def same_adapter(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two adapter files hold the same tensors and metadata (safetensors writes the
    metadata in no fixed order, so equal files may differ byte for byte)."""
    (sa, ma), (sb, mb) = read_adapter(a), read_adapter(b)
    return ma == mb and sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def publish_lora_tensors(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy the LoRA matrices of adapter file `src` to `dst` in half precision, with its metadata:
    what §7's subspace analysis reads, at a fraction of the size (no head, no biases)."""
    state, meta = read_adapter(src)
    lora = {k: v.to(torch.float16).contiguous() for k, v in state.items() if is_lora_parameter(k)}
    dst = Path(dst)
    save_file(lora, str(dst), metadata=_encoded({**meta, "published": "LoRA matrices only, float16"}))
    return dst


def load_adapter(
    model: nn.Module, path: str | os.PathLike, include_head: bool = True
) -> nn.Module:
    """Load an adapter file, or a peft LoRA folder (`peft_format.read_peft`), into `model`. A base
    model gets LoRA (or bottleneck adapters) injected with the stored configuration; a model that
    already has them must have the same one.

    ``include_head=False`` loads everything but the head (the LoRA matrices; the adapters and
    LayerNorms; for full fine-tuning the whole encoder): the paper's protocol for MRPC, RTE and
    STS-B, which start from the MNLI checkpoint with a new head (Appendix D.1; for full
    fine-tuning Liu et al., 2019).
    """
    if Path(path).is_dir():
        state, meta = read_peft(path)
    elif Path(path).is_file():
        state, meta = read_adapter(path)
    else:
        raise FileNotFoundError(f"adapter file not found: {path} (nor a peft LoRA folder)")
    stored_adapter = meta.get("adapter_config")
    if stored_adapter is not None:
        stored_adapter = AdapterConfig(**stored_adapter)
        current = get_adapter_config(model)
        if current is not None and current != stored_adapter:
            raise ValueError(
                f"adapter {path} was trained with {stored_adapter}, the model has {current}: "
                "kind, size and drop must match"
            )
    stored = meta.get("lora_config")
    if stored is not None:
        stored = LoRAConfig(**stored)
        current = get_lora_config(model)
        if current is None:
            add_lora(model, stored.targets, stored.r, stored.alpha, stored.dropout)
        elif not current.same_update(stored):
            raise ValueError(
                f"adapter {path} was trained with {stored}, the model has {current}: "
                "targets, r and alpha must match"
            )
    if stored_adapter is not None and get_adapter_config(model) is None:
        add_adapters(model, stored_adapter)
    if not include_head:
        state = {k: v for k, v in state.items() if not is_head_parameter(k)}
    elif meta.get("method") and not hasattr(model, "training_method"):
        model.training_method = meta["method"]
    load_trained_state_dict(model, state)
    return model


def export_peft(run: str | os.PathLike, out_dir: str | os.PathLike, lora_only: bool = False,
                report_url: str | None = None) -> Path:
    """Write a completed LoRA run as a peft adapter folder with a model card (`peft_format`).
    `run` is a run folder, a flat record (``report/records/<id>.json``) or a committed run's id.
    The committed §7 adapters hold the LoRA matrices alone (`publish_lora_tensors`): they export
    only with ``lora_only``, which leaves the head out of any run."""
    run = Path(run)
    if not run.exists() and (COMMITTED_RECORDS / f"{run}.json").is_file():
        run = COMMITTED_RECORDS / f"{run}.json"
    run = run.resolve()
    record_path, run_id = (run / RECORD_FILE, run.name) if run.is_dir() else (run, run.stem)
    if not record_path.is_file():
        raise FileNotFoundError(f"no run record at {record_path}: give a run folder, a record "
                                "(report/records/<id>.json) or a committed run's id")
    record = load_record(record_path)
    method = record["config"]["method"]
    if method != "lora":
        kind = " (bottleneck adapters)" if method in ADAPTER_METHODS else ""
        raise ValueError(f"run {run_id}: method {method!r}{kind} has no peft equivalent; only LoRA "
                         "runs export (peft's LoRA format holds LoRA matrices and a head)")
    if not is_completed(record) or "best_metric" not in record:
        raise ValueError(f"run {run_id} is {record.get('status')!r} with no best evaluation: "
                         "only a completed run exports")
    adapter = find_adapter(run.parent, run_id)
    if adapter is None:
        raise FileNotFoundError(
            f"run {run_id}: no adapter file beside {display_path(record_path)} (a run folder holds "
            f"{ADAPTER_FILE}; the committed report keeps the §7 runs' alone, in report/adapters)")
    state, meta = read_adapter(adapter)
    if lora_only:
        state = {k: v for k, v in state.items() if is_lora_parameter(k)}
    elif not any(is_head_parameter(k) for k in state):
        raise ValueError(
            f"{display_path(adapter)} holds the LoRA matrices alone (a committed §7 adapter keeps no "
            "head), so the model would classify with an untrained head: pass --lora-only to export "
            "the matrices anyway, or train the run again and export its folder (docs/peft.md)")
    return write_peft(out_dir, state, LoRAConfig(**meta["lora_config"]), run_id, record, report_url)


def import_peft(peft_dir: str | os.PathLike, out_file: str | os.PathLike) -> Path:
    """Write a peft LoRA folder as an adapter file (`load_adapter`, ``init_adapter``, §7)."""
    state, meta = read_peft(peft_dir)
    out_file = Path(out_file)
    tmp = out_file.with_name(out_file.name + ".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=_encoded(meta))
    os.replace(tmp, out_file)
    return out_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lora_nb.checkpoint",
        description="Adapter files in peft's LoRA format, out and in (docs/peft.md). Without a "
        "command: the size of a RoBERTa-base adapter file, r = 8 on Wq, Wv (README).")
    commands = parser.add_subparsers(dest="command", metavar="{export,import}")
    export = commands.add_parser(
        "export", help="a LoRA run as a peft adapter folder with a model card",
        description="Write a completed LoRA run as a peft adapter folder: adapter_config.json, "
        "adapter_model.safetensors (LoRA matrices and head under peft's names) and README.md, a "
        "model card for the Hub. PeftModel.from_pretrained(base, OUT_DIR) then gives the run's "
        "logits. LoRA runs only: the other methods have no peft equivalent.")
    export.add_argument("run", metavar="RUN", help=f"a run folder ({RECORD_FILE} and its adapter), "
                        "a committed record (report/records/<id>.json) or a committed run's id")
    export.add_argument("out_dir", metavar="OUT_DIR", help="the peft adapter folder to write")
    export.add_argument("--lora-only", action="store_true",
                        help="leave the head out: the LoRA matrices alone, which is all a committed "
                        "§7 adapter (report/adapters) holds")
    export.add_argument("--report-url", metavar="URL",
                        help="the model card's link to the results (default: it names "
                        "report/index.html in the repository)")
    importer = commands.add_parser(
        "import", help="a peft LoRA folder as an adapter file",
        description="Write a peft LoRA adapter folder as a lora_nb adapter file. Refuses what "
        "lora_nb's LoRA cannot hold: DoRA, rsLoRA, rank or alpha patterns, trained biases, a "
        "subset of layers, modules outside Wq, Wk, Wv, Wo.")
    importer.add_argument("peft_dir", metavar="PEFT_DIR", help="a folder peft's save_pretrained wrote")
    importer.add_argument("out_file", metavar="OUT_FILE", help="the adapter file to write (.safetensors)")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            print(export_peft(args.run, args.out_dir, args.lora_only, args.report_url))
        elif args.command == "import":
            print(import_peft(args.peft_dir, args.out_file))
        else:
            print(f"r = 8 on Wq, Wv: adapter file of {_roberta_base_adapter_size():,} bytes")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _roberta_base_adapter_size() -> int:
    """The bytes of a RoBERTa-base LoRA adapter file, r = 8 on Wq, Wv (README)."""
    import tempfile

    from .methods import _roberta_base, prepare_model

    with tempfile.TemporaryDirectory() as tmp:
        model = prepare_model(_roberta_base(), "lora", LoRAConfig(("q", "v"), 8, 8.0))
        return save_adapter(model, Path(tmp) / ADAPTER_FILE).stat().st_size


if __name__ == "__main__":
    sys.exit(main())
