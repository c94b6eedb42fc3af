"""Packaging: one import package, typed, with its data; the role folders of a checkout work.

Why: ``agents`` and ``broker`` are common top-level names; a wheel that installed them would
collide with other distributions' packages in site-packages.
"""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("privgrid-*.whl")
    return zipfile.ZipFile(built)


@pytest.mark.slow
def test_the_wheel_installs_only_the_privgrid_package(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"privgrid"}


@pytest.mark.slow
def test_the_wheel_is_typed_and_carries_its_data(wheel):
    names = set(wheel.namelist())
    assert "privgrid/py.typed" in names
    assert "privgrid/broker/mosquitto.conf.template" in names
    assert {"privgrid/grid/data/ieee14.json", "privgrid/grid/data/ieee118.json"} <= names
    page = "privgrid/dashboard/static"  # the dashboard's page and its bundled chart library
    assert {f"{page}/index.html", f"{page}/dashboard.js", f"{page}/dashboard.css"} <= names
    assert {f"{page}/vendor/uPlot.iife.min.js", f"{page}/vendor/uPlot.LICENSE"} <= names


@pytest.mark.slow
def test_test_and_conversion_packages_are_extras_not_dependencies(wheel):
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in wheel.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    core = [r for r in requires if "extra ==" not in r]
    for package in ("docker", "paho-mqtt", "pandapower", "aiohttp", "networkx", "playwright"):
        assert not any(r.startswith(package) for r in core), (package, core)


def test_every_package_folder_has_its_init():
    for folder in (ROOT / "privgrid").rglob("*"):
        if folder.is_dir() and any(folder.glob("*.py")):
            assert (folder / "__init__.py").exists(), folder


@pytest.mark.parametrize(
    ("module", "entry"),
    [
        ("agents", "privgrid.roles.agent"),
        ("line_manager", "privgrid.roles.line_manager"),
        ("market_operator", "privgrid.roles.market_operator"),
    ],
)
def test_the_role_folders_of_a_checkout_run_the_roles(module, entry):
    """``python -m agents`` from a checkout is the installed ``privgrid agent``."""
    for target in (module, entry):
        result = subprocess.run(
            [sys.executable, "-m", target, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "--scenario" in result.stdout
