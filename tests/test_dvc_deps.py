"""dvc.yaml is complete: every module a stage runs is a dep, and params are declared per key where a key
cannot change the outputs.

DVC reruns a stage only when a declared dep or param changed. A module imported by a stage but not listed
(e.g. ``schemes.py`` under ``download``) can change the outputs while ``dvc repro`` reruns nothing. The
imports are found statically (``ast``, nothing is executed), transitively within the ``facelandmarks``
package, starting from the stage's entry point ``pipelines/<stage>.py``; imports inside functions count
(they run when the stage calls them), imports under ``if TYPE_CHECKING:`` do not, and a package's lazy
``__getattr__`` imports count only where a module asks that package for such a name.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PKG = "facelandmarks"

#: per stage, params that cannot change its outputs, so the stage lists the other keys of their section
#: instead of the whole section (a change to these reruns nothing). pretrain and finetune store the ``crop``
#: section in the checkpoint without its speed-only keys (``facelandmarks.train.runner.CROP_SPEED_KEYS``).
_CROP_NEUTRAL = {
    "crop.read_workers": "threads decoding photos ahead of the detector; results are keyed by face",
    "crop.num_threads": "torch CPU threads of MTCNN",
    "crop.cluster": "where photos are cropped (this process, a process pool or a Dask cluster); identical outputs",
}
_TRAIN_NEUTRAL = {
    **{k: v + "; not stored in the checkpoint" for k, v in _CROP_NEUTRAL.items()},
    "train.progress": "a tqdm bar",
    "train.resume": "continuing an interrupted run from last.pt gives the same model (deterministic in epochs)",
    "train.state_dir": "where last.pt lives (outside models/)",
    "train.log_model": "whether the model is also logged to MLflow (not a DVC output)",
}
NEUTRAL: dict[str, dict[str, str]] = {
    "download": {"download.cache_dir": "where URL archives are cached; the archive's sha256 pins its content"},
    "crop": _CROP_NEUTRAL,
    "pretrain": _TRAIN_NEUTRAL,
    "finetune": _TRAIN_NEUTRAL,
    "evaluate": {"evaluate.num_threads": "torch CPU threads",
                 "evaluate.workers": "processes that predict, on chunks that keep every batch; identical outputs"},
    "register": {"register.num_threads": "torch CPU threads"},
}


def test_speed_only_crop_keys_are_the_ones_left_out_of_the_checkpoint():
    from facelandmarks.train.runner import CROP_SPEED_KEYS, model_config

    assert {f"crop.{k}" for k in CROP_SPEED_KEYS} == set(_CROP_NEUTRAL)
    crop = model_config(_params()).crop
    assert not set(CROP_SPEED_KEYS) & set(crop) and {"size", "scale", "detector", "fallback"} <= set(crop)


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def module_file(name: str) -> Path | None:
    """The file of module ``name`` under src/ (``pkg/__init__.py`` for a package), or None."""
    base = SRC.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """``facelandmarks`` imports of one file: ``modules`` (names), ``names`` (``(package, name)`` pairs of
    ``from package import name`` where ``name`` is not a module) and, in a package ``__init__``, ``lazy``
    (the imports of a module-level ``__getattr__``, PEP 562)."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.modules: set[str] = set()
        self.names: set[tuple[str, str]] = set()
        self.lazy: set[str] = set()
        self._target = self.modules
        self._depth = 0

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        lazy = self._depth == 0 and node.name == "__getattr__"
        saved, self._target = self._target, (self.lazy if lazy else self._target)
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1
        self._target = saved

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name == PKG or a.name.startswith(PKG + "."):
                self._target.add(a.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if not (base == PKG or base.startswith(PKG + ".")):
            return
        self._target.add(base)
        for a in node.names:
            sub = f"{base}.{a.name}"
            if module_file(sub) is not None:
                self._target.add(sub)
            elif self._target is self.modules:
                self.names.add((base, a.name))
            else:
                self._target.add(base)


def _parse(path: Path, module: str) -> _Imports:
    v = _Imports(module, path.name == "__init__.py")
    v.visit(ast.parse(path.read_text(), str(path)))
    return v


def stage_modules(entry: Path) -> set[Path]:
    """Files of every ``facelandmarks`` module the entry point imports, transitively (with the ``__init__.py``
    of every package on the way, which Python runs too)."""
    todo = sorted(_parse(entry, "__main__").modules | {n for n, _ in _parse(entry, "__main__").names})
    seen: set[str] = set()
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        f = module_file(name)
        assert f is not None, f"{entry}: imports {name}, which has no file under {SRC}"
        files.add(f)
        imp = _parse(f, name)
        todo.extend(imp.modules)
        for package, attr in imp.names:  # `from package import Name`: the package's lazy imports may serve it
            pf = module_file(package)
            lazy = _parse(pf, package).lazy if pf is not None and pf.name == "__init__.py" else set()
            todo.extend(lazy)
    return files


def _entry(stage: dict) -> Path:
    scripts = [t for t in shlex.split(stage["cmd"]) if t.startswith("pipelines/") and t.endswith(".py")]
    assert len(scripts) == 1, f"cmd {stage['cmd']!r}: expected one pipelines/<stage>.py entry point"
    return ROOT / scripts[0]


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_deps_cover_its_imports(name):
    stage = _stages()[name]
    entry = _entry(stage)
    deps = [str(d) for d in stage.get("deps", [])]
    assert str(entry.relative_to(ROOT)) in deps, f"stage {name}: its entry point {entry} is not a dep"
    modules = stage_modules(entry)
    assert len(modules) > 3  # the analysis really followed the imports
    missing = sorted(str(p.relative_to(ROOT)) for p in modules if not _covered(p, deps))
    assert not missing, f"dvc.yaml stage {name!r} imports modules that are not deps (add them): {missing}"


def test_the_analysis_follows_lazy_imports():
    """The register stage imports FaceLandmarker inside a function; the crop stage never imports the registry."""
    register = {str(p.relative_to(SRC)) for p in stage_modules(ROOT / "pipelines" / "register.py")}
    assert {"facelandmarks/__init__.py", "facelandmarks/inference/landmarker.py", "facelandmarks/fsutil.py",
            "facelandmarks/schemes.py", "facelandmarks/evaluate/protocols.py"} <= register
    crop = {str(p.relative_to(SRC)) for p in stage_modules(ROOT / "pipelines" / "crop.py")}
    assert not any(p.startswith("facelandmarks/registry") for p in crop)


def _leaves(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.extend(_leaves(v, key + ".") if isinstance(v, dict) and v else [key])
    return out


def _declared(stage: dict) -> list[str]:
    keys = []
    for p in stage.get("params", []):
        if isinstance(p, str):
            keys.append(p)
        else:  # {file: [keys]}
            for file, ks in p.items():
                assert file == "params.yaml", f"params from {file}: only params.yaml is expected"
                keys.extend(ks)
    return keys


def _has(params: dict, key: str) -> bool:
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_params_per_key(name):
    """Each declared key exists; within a section a stage uses, every key is declared unless it is one of
    its :data:`NEUTRAL` keys (so a new knob that changes outputs cannot be forgotten)."""
    params = _params()
    neutral = list(NEUTRAL.get(name, {}))
    declared = _declared(_stages()[name])
    assert declared, f"stage {name} declares no params"
    for key in declared:
        assert _has(params, key), f"dvc.yaml stage {name!r}: param {key!r} is not in params.yaml"
    covered = lambda k, keys: any(k == d or k.startswith(d + ".") for d in keys)
    for section in sorted({k.split(".")[0] for k in declared}):
        if not isinstance(params.get(section), dict):
            continue
        for leaf in _leaves(params[section], section + "."):
            if covered(leaf, declared):
                assert not covered(leaf, neutral), (
                    f"stage {name!r} declares {leaf!r}, which cannot change its outputs (NEUTRAL): list the "
                    f"other keys of {section!r} instead")
            else:
                assert covered(leaf, neutral), (
                    f"dvc.yaml stage {name!r} declares part of {section!r} but not {leaf!r}: declare it (or add it "
                    "to NEUTRAL in tests/test_dvc_deps.py with the reason it cannot change the outputs)")
