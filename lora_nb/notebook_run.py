"""The one papermill call: how lora_nb executes a notebook, for sweep settings and report pages.

Every execution runs from the repository root (so notebook paths resolve the same wherever the
command was started), with no progress bar, and with the kernel's own log at ERROR level (its
"running over TCP without encryption" line would otherwise fill every sweep log).
"""

from __future__ import annotations

from pathlib import Path

from .rundir import REPO_ROOT


def execute_notebook(notebook: Path, output: Path, parameters: dict | None = None,
                     setup: str | None = None) -> Path:
    """Execute `notebook` into `output` with `parameters`; `setup`: Python lines the kernel runs
    before the first cell. Raises papermill's `PapermillExecutionError` when a cell fails."""
    import papermill

    extra = ["--IPKernelApp.log_level=ERROR"] + ([f"--IPKernelApp.exec_lines={setup}"] if setup else [])
    papermill.execute_notebook(str(notebook), str(output), parameters=parameters or {},
                               cwd=str(REPO_ROOT), progress_bar=False, kernel_name="python3",
                               extra_arguments=extra)
    return Path(output)
