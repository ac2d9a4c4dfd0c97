"""`python -m lora_nb.results`: the README's results block from a folder of run records (the
claims table, Table 2 and which runs did not converge), or, with ``--same-as``, which runs
reproduce a reference run exactly.

Records → `lora_nb.tables` → `lora_nb.findings` (the tables as a page shows them, and the prose)
→ this block.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import claims
from .findings import claims_summary, convergence_text, table2_display, to_markdown
from .rundir import RecordError, find_records, is_completed
from .tables import completed, load_records, table2


def headline(runs_dir: str | os.PathLike) -> str:
    """The README's results block, as Markdown, from the records under `runs_dir`: the claims
    table and Table 2 (``python -m lora_nb.results report/records``)."""
    df = load_records(runs_dir)
    comparisons = claims.decide(df)
    summary = claims_summary(comparisons, df)
    main = df[df["tags"].map(lambda t: "budget" not in t)]
    t2 = table2_display(table2(df), main["model"].mode()[0])
    cols = ["claim", "statement", "ours: difference [95% interval], points", "verdict"]
    return "\n\n".join([to_markdown(summary[cols]), to_markdown(t2), convergence_text(main)])


def reproduced(runs_dir: str | os.PathLike, reference_dir: str | os.PathLike) -> str:
    """Whether the completed runs under `runs_dir` reproduce the runs of `reference_dir` made with
    the same settings (matched by configuration and seed, whatever their names): the same best
    score and every validation prediction the same. One line per run that differs, then a count."""
    from .config import RunConfig

    def key(record: dict) -> str:  # every setting with its default filled in, where runs go aside
        try:
            config = RunConfig.from_dict(record["config"]).computation()
        except (TypeError, ValueError) as err:
            raise RecordError(f"the record of {record['config'].get('output_dir') or 'a run'}: "
                              f"its config is not a run configuration ({err})") from None
        return json.dumps(config, sort_keys=True, default=str)

    reference = {key(r): r for r in load_records(reference_dir)["record"] if is_completed(r)}
    lines, same, compared = [], 0, 0
    for run_id, record in zip(*(load_records(runs_dir)[c] for c in ("run_id", "record"))):
        if not is_completed(record) or key(record) not in reference:
            continue
        ref = reference[key(record)]
        compared += 1
        if (record.get("best_metric"), record.get("best_outputs")) == (ref.get("best_metric"), ref.get("best_outputs")):
            same += 1
        else:
            lines.append(f"{run_id}: best {record.get('best_metric')} against {ref.get('best_metric')}")
    return "\n".join(lines + [f"{same} of {compared} runs made with the reference's settings reproduce "
                               "its best score and every validation prediction"])


def check_records_folder(runs_dir: str | os.PathLike) -> Path:
    """Refuse a folder that does not exist, is a file, or holds no run records."""
    folder = Path(runs_dir)
    if not folder.exists():
        raise FileNotFoundError(f"{runs_dir}: no such folder")
    if not folder.is_dir():
        raise NotADirectoryError(f"{runs_dir}: a file, not a folder of run records")
    if not any(True for _ in find_records(folder)):
        raise FileNotFoundError(f"{runs_dir}: holds no run records (<run-id>/record.json or <run-id>.json)")
    return folder


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m lora_nb.results",
                                     description="the README's results block, or a check against a reference run")
    parser.add_argument("runs_dir", nargs="?", default="report/records",
                        help="run folders or published records (default report/records)")
    parser.add_argument("--same-as", metavar="REFERENCE_DIR",
                        help="instead: which runs reproduce this reference run exactly, e.g. report/records")
    args = parser.parse_args(argv)
    try:
        for folder in (args.runs_dir, args.same_as):
            if folder is not None:
                check_records_folder(folder)
        if args.same_as:
            text = reproduced(args.runs_dir, args.same_as)
        else:
            df = load_records(args.runs_dir)
            done = df[completed(df) & df["tags"].map(lambda t: "budget" not in t)]
            if done.empty:
                raise ValueError(f"{args.runs_dir}: holds no completed Table 2, 5 or 6 runs ({len(df)} "
                                 f"record(s), status {', '.join(sorted(set(map(str, df['status']))))})")
            try:
                text = headline(args.runs_dir)
            except (KeyError, IndexError) as err:  # records too few or too odd for the tables
                raise ValueError(f"{args.runs_dir}: its records do not make the results block "
                                 f"({type(err).__name__}: {err})") from None
    except (OSError, ValueError) as err:  # RecordError names the file
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
