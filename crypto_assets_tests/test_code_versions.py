"""Asset code versions are hashes of the code an asset runs (defs/code_versions.py): they change
when that code changes, not when unrelated code, comments outside it or line numbers change,
and every process computes the same one."""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crypto_assets.defs.code_versions import source_version

# A small package: `entry` reaches helper (a global), CONST, TAGS (a set), lazy.late (imported in
# the body), Spec (a dataclass instance with a lambda) and Base (a base class); `other` is
# reached by nothing.
PROBE = {
    "__init__.py": "",
    "core.py": '''
        from dataclasses import dataclass

        CONST = [1, 2, 3]
        TAGS = {"alpha", "beta", "gamma", "delta"}

        # a comment outside any function
        def helper(x):
            return x + 1

        def other(x):
            return x * 2

        class Base:
            def base_method(self):
                return "base"

        class Thing(Base):
            def method(self):
                return helper(1)

        @dataclass(frozen=True)
        class Spec:
            name: str
            score: object

        SPEC = Spec(name="probe", score=lambda t: t * 3)

        def entry(x):
            from PKG.lazy import late

            return helper(x) + len(CONST) + late() + len(TAGS) + SPEC.score(x) + len(Thing().method())
        ''',
    "lazy.py": '''
        def late():
            return 4
        ''',
}
_counter = iter(range(10**6))


def _version(tmp_path: Path, edits: dict[tuple[str, str], str] | None = None) -> str:
    """The version of `entry` in a fresh copy of PROBE (package `cvprobe`, in a directory of its
    own, so no module or source line is cached between copies), with `edits` {(file, old): new}."""
    pkg = "cvprobe"
    home = tmp_path / f"copy{next(_counter)}"
    root = home / pkg
    root.mkdir(parents=True)
    for name, text in PROBE.items():
        text = textwrap.dedent(text).replace("PKG", pkg)
        for (file, old), new in (edits or {}).items():
            if file == name:
                assert old in text, old
                text = text.replace(old, new)
        (root / name).write_text(text)
    sys.path.insert(0, str(home))
    try:
        module = importlib.import_module(f"{pkg}.core")
        return source_version(module.entry, package=pkg)
    finally:
        sys.path.remove(str(home))
        for m in [m for m in sys.modules if m == pkg or m.startswith(pkg + ".")]:
            del sys.modules[m]


@pytest.mark.parametrize("file,old,new", [
    ("core.py", "return x + 1", "return x + 2"),  # a global function it calls
    ("core.py", "CONST = [1, 2, 3]", "CONST = [1, 2, 4]"),  # a constant it reads
    ("core.py", '"delta"}', '"epsilon"}'),  # a set constant
    ("lazy.py", "return 4", "return 5"),  # a function imported inside its body
    ("core.py", "t * 3", "t * 4"),  # a lambda field of a dataclass instance it reads
    ("core.py", 'name="probe"', 'name="probe2"'),  # a plain field of it
    ("core.py", 'return "base"', 'return "based"'),  # a base class of a class it uses
    ("core.py", "return helper(1)", "return helper(2)"),  # a method of that class
])
def test_the_version_changes_with_the_code_it_runs(tmp_path, file, old, new):
    assert _version(tmp_path, {(file, old): new}) != _version(tmp_path)


@pytest.mark.parametrize("file,old,new", [
    ("core.py", "return x * 2", "return x * 3"),  # a function it never reaches
    ("core.py", "# a comment outside any function", "# another comment\n\n\n"),  # comments, line numbers
    ("core.py", "CONST = [1, 2, 3]", "UNUSED = 0\nCONST = [1, 2, 3]"),  # a new global
])
def test_the_version_ignores_what_it_does_not_run(tmp_path, file, old, new):
    assert _version(tmp_path, {(file, old): new}) == _version(tmp_path)


def test_every_process_computes_the_same_version(tmp_path):
    """String hashing is salted per process (the set constant's order differs): the version is not."""
    probe = tmp_path / "cvfixed"
    probe.mkdir()
    for name, text in PROBE.items():
        (probe / name).write_text(textwrap.dedent(text).replace("PKG", "cvfixed"))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from cvfixed.core import entry; "
            "from crypto_assets.defs.code_versions import source_version; print(source_version(entry, package='cvfixed'))")
    out = set()
    for seed in ("1", "2", "3"):
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60,
                           check=False, env={**os.environ, "PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.stderr
        out.add(r.stdout.strip())
    assert len(out) == 1 and re.fullmatch(r"[0-9a-f]{12}", out.pop())


def test_each_model_has_its_own_version_that_follows_its_spec():
    """The model assets' versions differ from each other and from the hand-kept "1"; changing one
    spec's entry changes that model's version only; the other assets have one too."""
    from crypto_assets.defs import models, predictions, training_data
    from crypto_assets.ml import model_specs

    assets = {s.name: getattr(models, s.name) for s in model_specs.MODEL_SPECS}
    versions = {name: a.code_versions_by_key[a.key] for name, a in assets.items()}
    assert all(re.fullmatch(r"[0-9a-f]{12}", v) for v in versions.values()), versions
    assert len(set(versions.values())) == len(versions)
    for spec in model_specs.MODEL_SPECS:
        assert source_version(models.model_asset, spec) == versions[spec.name]  # computed, not stored
        changed = dataclasses.replace(spec, gate_description=spec.gate_description + ".")
        assert source_version(models.model_asset, changed) != versions[spec.name]
    for a in (training_data.training_set, predictions.predictions):
        version = a.code_versions_by_key[a.key]
        assert version is not None and re.fullmatch(r"[0-9a-f]{12}", version)
