"""The package's shape: a light LoRA core, no import cycles, one home for the run folder."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lora_nb"
HEAVY = ("transformers", "datasets", "evaluate", "accelerate", "papermill")


def _imports(path: Path) -> set[str]:
    """The lora_nb modules that `path` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y / from . import x
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("lora_nb."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lora_nb."))
    return found


def test_no_import_cycles_among_modules():
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path) & set(modules) - {name} for name, path in modules.items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            assert state.get(dep) != "open", f"import cycle: {' -> '.join(trail + [node, dep])}"
            if dep not in state:
                visit(dep, trail + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_lora_core_imports_with_torch_alone():
    code = ("import sys, lora_nb, lora_nb.lora, lora_nb.methods, lora_nb.checkpoint, lora_nb.bottleneck, lora_nb.paper, "
            "lora_nb.rundir; print(','.join(m for m in %r if m in sys.modules))" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the LoRA core loaded {out.stdout.strip()}"


def test_no_module_exceeds_500_lines():
    """A thin package: a module that outgrows this is split by what it holds."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert not {n: s for n, s in sizes.items() if s > 500}, sorted(sizes.items(), key=lambda x: -x[1])[:3]


def test_the_analysis_flows_one_way():
    """Records → tables → findings → the README block; §7's geometry → claim C5. Nothing reads
    back up the chain."""
    for name, above in {"tables": {"findings", "results"}, "findings": {"results"},
                        "claims": {"tables", "findings", "results", "subspace_claims"},
                        "subspace": {"subspace_claims", "claims"}}.items():
        assert not _imports(PACKAGE / f"{name}.py") & above, f"{name} imports {_imports(PACKAGE / f'{name}.py') & above}"


def test_run_folder_file_names_live_in_one_module():
    literals = ('"record.json"', '"adapter.safetensors"')
    holders = {p.name for p in PACKAGE.glob("*.py") for lit in literals if lit in p.read_text()}
    assert holders == {"rundir.py"}, f"run-folder file names written outside rundir.py: {holders}"


def test_nothing_in_the_package_imports_the_benchmarks():
    """benchmarks/ imports lora_nb, never the other way round."""
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0]
        assert not [n for n in names if n.split(".")[0] == "benchmarks"], path.name


@pytest.mark.slow
def test_the_benchmark_command_needs_no_test_extra():
    """peft is the `bench` extra: `python -m benchmarks.bench --help` works where it is missing."""
    code = ("import sys, runpy; sys.modules['peft'] = None; sys.argv = ['benchmarks.bench', '--help']; "
            "runpy.run_module('benchmarks.bench', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage" in out.stdout


def test_training_and_the_sweep_import_no_analysis():
    """Layers: the run (config, parameters, train), the sweep (presets, grid, runner, sweep) and
    the run folder read no tables, claims, figures or pages; only `--report` renders them."""
    analysis = {"tables", "findings", "results", "claims", "subspace", "subspace_claims", "plots", "report",
                "table1"}
    allowed = {("sweep", "report")}  # python -m lora_nb.sweep --report, imported there
    for name in ("config", "parameters", "train", "presets", "grid", "runner", "sweep", "rundir",
                 "estimate", "tuning", "convergence", "metrics", "glue", "models", "machine"):
        found = {(name, dep) for dep in _imports(PACKAGE / f"{name}.py") & analysis}
        assert found <= allowed, f"{name} imports {sorted(d for _, d in found - allowed)}"
