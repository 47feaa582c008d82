"""The import structure as a contract (.importlinter, checked by import-linter) and the code's hygiene
(ruff, ruff.toml): both run here, so the README's test command (and CI) keeps them.

import-linter reads a package from its directory, and `kernels/` and `export/` install inside the
package (setup.py's package_dir) from directories of their own: the check runs on the package laid out
as it installs, copied to a temporary directory."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# where setup.py's package_dir puts each directory of the checkout in the installed package
INSTALLED = {"ssmp_infer": "ssmp_infer", "kernels": "ssmp_infer/kernels", "export": "ssmp_infer/export"}


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("importlinter", reason="the test extra: pip install -e '.[test]'")
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; "
                           "sys.exit(c())", str(REPO / ".importlinter")], capture_output=True, text=True, cwd=tree,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


@pytest.fixture
def installed_tree(tmp_path):
    for source, target in INSTALLED.items():
        shutil.copytree(REPO / source, tmp_path / target, ignore=shutil.ignore_patterns("assets", "__pycache__"))
    return tmp_path


def test_every_module_imports_only_from_the_layers_below_it(installed_tree):
    result = lint_imports(installed_tree)
    assert result.returncode == 0 and "1 kept, 0 broken" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]


def test_the_contract_catches_an_import_against_the_layers(installed_tree):
    """The kernels reaching up into the decoder (the circle there was before): the contract says so."""
    kernel = installed_tree / "ssmp_infer" / "kernels" / "select_remask.py"
    kernel.write_text(kernel.read_text() + "\nfrom ssmp_infer import decode  # noqa: E402,F401\n")
    result = lint_imports(installed_tree)
    assert result.returncode != 0 and "ssmp_infer.kernels is not allowed to import ssmp_infer.decode" in result.stdout


def test_ruff_finds_nothing():
    pytest.importorskip("ruff", reason="the test extra: pip install -e '.[test]'")
    from ruff.__main__ import find_ruff_bin

    result = subprocess.run([find_ruff_bin(), "check", "--no-cache", str(REPO)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:]
