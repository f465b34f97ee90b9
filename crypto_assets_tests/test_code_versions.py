"""Asset code versions are hashes of the code an asset runs (defs/code_versions.py): they change
when that code changes, not when unrelated code, comments outside it or line numbers change,
and every process computes the same one."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import shutil
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


def _version(tmp_path: Path, edits: dict[tuple[str, str], str] | None = None, unimported: tuple[str, ...] = ()) -> str:
    """The version of `entry` in a fresh copy of PROBE (package `cvprobe`, in a directory of its
    own, so no module or source line is cached between copies), with `edits` {(file, old): new}
    and the modules `unimported` ("lazy" for cvprobe.lazy) read as files."""
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
        version = source_version(module.entry, package=pkg, unimported=tuple(f"{pkg}.{m}" for m in unimported))
        for m in unimported:
            assert f"{pkg}.{m}" not in sys.modules, m  # read, not imported
        return version
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


def test_unimported_modules_count_as_their_whole_file(tmp_path):
    """A module the roots import only when they run (named `unimported`) is never imported, and
    its file counts whole: its code, comments too; the other modules keep counting as usual."""
    base = _version(tmp_path, unimported=("lazy",))
    assert base != _version(tmp_path)  # the file, not the function reached: another text
    assert _version(tmp_path, {("lazy.py", "return 4"): "return 5"}, unimported=("lazy",)) != base
    assert _version(tmp_path, {("lazy.py", "def late"): "# a note\ndef late"}, unimported=("lazy",)) != base
    assert _version(tmp_path, {("core.py", "return x + 1"): "return x + 2"}, unimported=("lazy",)) != base
    assert _version(tmp_path, {("core.py", "return x * 2"): "return x * 3"}, unimported=("lazy",)) == base


# The code each layer asset runs, as the asset modules pass it to source_version.
LAYER_VERSIONS = """
import json, sys
from crypto_assets.defs import bronze, gold, report, silver
specs = [bronze.RAW_TICKS, silver.CLEAN_TICKS, *gold.GOLD_SPECS]
out = {s.key.to_user_string(): s.code_version for s in specs}
out["market_report"] = report.market_report.code_versions_by_key[report.market_report.key]
out["matplotlib_imported"] = "matplotlib" in sys.modules
print(json.dumps(out))
"""
# One logic edit in the code of each of four assets: (file under crypto_assets/, old, new).
LAYER_EDITS = {
    "raw_ticks": ("ingest/pull.py", 'add_time(timings, "metadata", t)', 'add_time(timings, "metadata_", t)'),
    "clean_ticks": ("transforms/clean.py", "THEN 'invalid_volume'", "THEN 'bad_volume'"),
    "market_features": ("transforms/features.py", 'prev_volume=pl.col("volume_24h_usd").shift(1)',
                        'prev_volume=pl.col("volume_24h_usd").shift(2)'),
    "market_report": ("report/plots.py", "width = 0.7 / 1440.0", "width = 0.6 / 1440.0"),
}


def _layer_versions(roots: dict[str, Path]) -> dict[str, dict]:
    """LAYER_VERSIONS run on each copy of the package, in processes started together."""
    procs = {label: subprocess.Popen([sys.executable, "-c", LAYER_VERSIONS], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)},
                                     cwd=root) for label, root in roots.items()}
    out = {}
    for label, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        out[label] = json.loads(stdout.strip().splitlines()[-1])
    return out


def test_layer_assets_have_source_versions_that_follow_their_logic(tmp_path):
    """bronze, silver, gold and the report carry a hash of the code they run, computed the same in
    another process; a copy of the package with one logic edit in the code of raw_ticks,
    clean_ticks, market_features and market_report changes exactly those four versions. Defining
    the report imports no matplotlib (its code is read as files)."""
    from crypto_assets.defs import bronze, gold, report, silver

    here = {s.key.to_user_string(): s.code_version for s in [bronze.RAW_TICKS, silver.CLEAN_TICKS, *gold.GOLD_SPECS]}
    here["market_report"] = report.market_report.code_versions_by_key[report.market_report.key]
    assert all(v is not None and re.fullmatch(r"[0-9a-f]{12}", v) for v in here.values()), here
    package = Path(bronze.__file__).parents[1]
    roots = {}
    for label, edits in (("same", {}), ("edited", LAYER_EDITS)):
        root = tmp_path / label
        shutil.copytree(package, root / "crypto_assets", ignore=shutil.ignore_patterns("__pycache__"))
        for file, old, new in edits.values():
            path = root / "crypto_assets" / file
            text = path.read_text()
            assert text.count(old) == 1, (file, old)
            path.write_text(text.replace(old, new))
        roots[label] = root
    copies = _layer_versions(roots)
    same, edited = copies["same"], copies["edited"]
    assert same.pop("matplotlib_imported") is False and edited.pop("matplotlib_imported") is False
    assert same == here
    assert {k for k in here if edited[k] != here[k]} == set(LAYER_EDITS)
