"""The published numbers this reproduction is compared with: the one reader of
``lora_nb/reference/*.csv`` (sources and page numbers in ``reference/SOURCES.md``)."""

from __future__ import annotations

import csv
from pathlib import Path

REFERENCE_DIR = Path(__file__).parent / "reference"
# name -> file: the paper's Tables 1, 2 (with its ± column), 5, 6, 7 and 9, and the course
# reproduction's Table 6 (seed_reproduction_tn292).
TABLES = {
    "table1": "paper_table1_gpt2.csv",
    "table2": "paper_table2_roberta_base.csv",
    "table2_std": "paper_table2_std.csv",
    "table5": "paper_table5_gpt3.csv",
    "table6": "paper_table6_gpt3.csv",
    "table7": "paper_table7_gpt3.csv",
    "table9": "paper_table9_roberta_base_lora.csv",
    "course_table6": "seed_reproduction_tn292.csv",
}


def table_path(name: str) -> Path:
    if name not in TABLES:
        raise ValueError(f"table: unknown {name!r}; choose from {sorted(TABLES)}")
    return REFERENCE_DIR / TABLES[name]


def reference_rows(name: str) -> list[dict[str, str]]:
    """A reference table as rows of strings (for modules that load no pandas)."""
    with open(table_path(name), newline="") as f:
        return list(csv.DictReader(f))


def reference_table(name: str):
    """A reference table as a pandas DataFrame."""
    import pandas as pd

    return pd.read_csv(table_path(name))
