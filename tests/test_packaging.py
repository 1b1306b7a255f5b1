"""The distribution installs as `otelite.collector`, `otelite.exporters`, `otelite.api` and nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent
TOPS = ("collector", "exporters", "api")


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {"otelite." + str(p.parent.relative_to(ROOT)).replace("/", ".")
               for top in TOPS for p in (ROOT / top).rglob("__init__.py")}
    assert folders == listed, f"missing from pyproject: {folders - listed}; listed but absent: {listed - folders}"


def test_wheel_installs_only_under_otelite(tmp_path: Path) -> None:
    # Build from a copy: setuptools leaves a build/ folder beside the sources it builds.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for top in TOPS:
        shutil.copytree(ROOT / top, src / top, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("otelite-*.whl"))
    tops = {name.split("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"otelite"}
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # Run from an empty directory with only the installed copy first on the path (not the editable one).
    run = tmp_path / "elsewhere"
    run.mkdir()
    code = ("import sys; sys.path.insert(0, %r); sys.meta_path[:] = [f for f in sys.meta_path "
            "if 'editable' not in getattr(f, '__module__', '')]; " % str(target))
    ok = subprocess.run([sys.executable, "-c", code + "import otelite.api.app, otelite.collector.cli, "
                         "otelite.exporters.prometheus.exposition as e; print(e.__file__)"],
                        capture_output=True, text=True, cwd=run, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().startswith(str(target))
    for bare in TOPS:
        gone = subprocess.run([sys.executable, "-c", code + f"import {bare}"], capture_output=True, text=True,
                              cwd=run, timeout=60)
        assert gone.returncode != 0 and "ModuleNotFoundError" in gone.stderr, bare
