"""The import graph (spt/codegraph.py): no cycle, no upward import, and DVC stage deps that
cover exactly the code each stage's command runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from spt import codegraph
from spt.harness import method as method_module

ROOT = codegraph.repository_root()


def test_the_suite_has_no_import_cycle():
    assert codegraph.cycles() == []


def test_no_module_imports_one_from_a_higher_layer():
    assert codegraph.upward_imports() == []


def test_the_config_layer_and_the_engine_stay_small():
    """spt.config is a base layer (nothing of the suite but spt.errors and the package); the training
    engine does not pull in the method registry; no params file is parsed outside spt.config."""
    config = {m for m in codegraph.closure(["spt.config"]) if not m.startswith("spt.config")}
    assert config <= {"spt", "spt.errors", "spt.numerics"}, config  # the package imports numerics
    assert "spt.harness.method" not in codegraph.closure(["spt.training.engine"])
    root = ROOT
    readers = sorted(
        str(path.relative_to(root))
        for path in [*root.glob("spt/**/*.py"), *root.glob("baselines/*.py")]
        if "yaml.load" in path.read_text() or "yaml.safe_load" in path.read_text()
    )
    assert readers == ["spt/config/loader.py"], readers


def test_keyed_randomness_and_the_box_fallback_live_in_one_place():
    """Seeds derived from a hash, and the "prompt, else box" fallback, are written once: a
    second copy with its own bit cut or its own wording would drift (issue #12 found five
    sha256 seed derivations cut to 63 bits two ways, and three fallbacks)."""
    keyed = re.compile(r"hashlib\.sha256\(f\"\{seed\}|from_bytes\(|2\s*\*\*\s*63|>>\s*1\b")
    fallback = re.compile(r"except PromptUnavailable[^\n]*:\n\s+[^\n]*build_prompt\(")
    seeds, fallbacks = [], []
    for path in [*ROOT.glob("spt/**/*.py"), *ROOT.glob("baselines/*.py")]:
        text = path.read_text()
        name = str(path.relative_to(ROOT))
        if keyed.search(text):
            seeds.append(name)
        if fallback.search(text):
            fallbacks.append(name)
    assert seeds == ["spt/data/stable_random.py"], seeds
    assert fallbacks == ["spt/harness/prompts.py"], fallbacks


def test_every_module_is_in_a_layer():
    for module in codegraph.module_files():
        codegraph.layer_of(module)  # raises for a package missing from LAYERS


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checks_find_a_cycle_and_an_upward_import(tmp_path):
    # A tree with both defects, so the two checks above are not vacuous.
    root = _write(
        tmp_path,
        {
            "spt/__init__.py": "",
            "spt/errors.py": "def f():\n    from spt.harness.a import x\n",  # 0 -> 2, in a function
            "spt/harness/__init__.py": "",
            "spt/harness/a.py": "from . import b\n",
            "spt/harness/b.py": "from spt.harness.a import x\n",
            "spt/sam/__init__.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from spt.harness import a\n"  # for annotations only
            ),
            "baselines/__init__.py": "",
        },
    )
    assert codegraph.cycles(root) == [["spt.harness.a", "spt.harness.b"]]
    assert codegraph.upward_imports(root) == [("spt.errors", "spt.harness.a")]
    assert codegraph.import_graph(root)["spt.sam"] == frozenset()


def test_source_digest_follows_the_code_it_covers(tmp_path):
    files = {
        "spt/__init__.py": "",
        "spt/harness/__init__.py": "",
        "spt/harness/a.py": "import spt.harness.b\n",
        "spt/harness/b.py": "X = 1\n",
        "spt/reports/__init__.py": "",
        "spt/reports/c.py": "Y = 1\n",
        "baselines/__init__.py": "",
    }
    first = codegraph.source_digest(["spt.harness.a"], _write(tmp_path / "one", files))
    same = codegraph.source_digest(["spt.harness.a"], _write(tmp_path / "two", files))
    assert first == same  # content, not location
    other = _write(tmp_path / "three", {**files, "spt/reports/c.py": "Y = 2\n"})
    assert codegraph.source_digest(["spt.harness.a"], other) == first  # not imported
    changed = _write(tmp_path / "four", {**files, "spt/harness/b.py": "X = 2\n"})
    assert codegraph.source_digest(["spt.harness.a"], changed) != first


# --- DVC stage deps -----------------------------------------------------------------------------

PIPELINES = [ROOT / "dvc.yaml", ROOT / "models" / "dvc.yaml"]
REGISTRY_CALLS = {"build_method", "method_class", "available_methods"}


def _plugin_modules() -> set[str]:
    modules = codegraph.module_files()
    package = method_module.METHOD_PACKAGE
    found = {m for m in modules if m == package or m.startswith(package + ".")}
    return found | {m for m in method_module.EXTRA_METHOD_MODULES if m in modules}


def _calls_the_registry(modules: set[str]) -> bool:
    """Whether code outside the registry looks a method up by name (then the registry imports
    every plug-in module)."""
    files = codegraph.module_files()
    for module in modules - {"spt.harness.method"}:
        text = files[module].read_text()
        if any(re.search(rf"\b{name}\(", text) for name in REGISTRY_CALLS):
            return True
    return False


def stage_code(command: str) -> set[Path]:
    """Source files a `spt <command>` stage runs: the command module's import closure, plus
    every method plug-in when it builds methods by name. spt/cli.py and the other commands'
    parsers only dispatch and are left out."""
    modules = codegraph.closure([f"spt.commands.{command}"])
    if _calls_the_registry(modules):
        modules = codegraph.closure(modules | _plugin_modules())
    files = codegraph.module_files()
    return {files[m].relative_to(ROOT) for m in modules}


def _stages():
    for pipeline in PIPELINES:
        spec = yaml.safe_load(pipeline.read_text())
        for name, stage in spec["stages"].items():
            stage = stage.get("do", stage)  # foreach stages keep theirs under do:
            commands = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
            spt_commands = [c.split()[1] for c in commands if c.split()[0] == "spt"]
            if spt_commands:
                yield pytest.param(
                    pipeline, stage, spt_commands, id=f"{pipeline.parent.name}:{name}"
                )


def _covers(dep: str, path: Path) -> bool:
    return path == Path(dep) or Path(dep) in path.parents


@pytest.mark.parametrize(("pipeline", "stage", "commands"), list(_stages()))
def test_stage_deps_are_the_code_the_stage_runs(pipeline, stage, commands):
    code = set().union(*(stage_code(command) for command in commands))
    deps = [d for d in stage["deps"] if "${" not in d]
    missing = sorted(str(p) for p in code if not any(_covers(d, p) for d in deps))
    assert not missing, f"{pipeline.name}: add to deps: {missing}"
    code_deps = [d for d in deps if Path(d).parts[0] in codegraph.PACKAGES]
    unused = [d for d in code_deps if not any(_covers(d, p) for p in code)]
    assert not unused, f"{pipeline.name}: deps the stage never runs: {unused}"


def test_the_deps_check_sees_what_a_stage_runs():
    # Guards the check itself: evaluation builds methods by name, so it runs every plug-in.
    evaluate = stage_code("evaluate")
    assert Path("baselines/wesam.py") in evaluate
    assert Path("spt/model/method.py") in evaluate
    assert Path("spt/harness/metrics.py") in evaluate
    assert Path("spt/reports/tables.py") not in evaluate
    assert Path("baselines/wesam.py") not in stage_code("prepare")
