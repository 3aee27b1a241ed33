"""The four code folders install as glocal.* in normal (non-editable) installs too."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
CODE = ("zoo", "benchmarks", "datasets", "leaderboard")


def test_every_code_package_is_declared():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(cfg["packages"])
    found = {"glocal"}
    for top in CODE:
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).as_posix().replace("/", ".")
            found.add(f"glocal.{rel}")
    assert found == declared, f"undeclared: {found - declared}, stale: {declared - found}"
    assert cfg["package-dir"] == {"glocal": "."}


def test_console_script_and_module_entry():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert proj["scripts"]["bench"] == "glocal.benchmarks.cli:main"
    assert (ROOT / "__main__.py").read_text().count("main()") == 1
