"""The suite's own rules: a test that cannot run here is skipped with its reason, and in CI it fails instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import IN_CI, SHARED

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.shared("gtzan-mini")
@pytest.mark.program("sh")
def test_needs_are_met_here_and_ci_requires_the_browser():
    """Runs where its needs are met; the subprocess runs below take them away."""
    assert (SHARED / "gtzan-mini").is_dir()
    assert not IN_CI or os.environ.get("GENREWIZ_REQUIRE_BROWSER") == "1"


@pytest.mark.slow
@pytest.mark.parametrize("missing", [{"GENREWIZ_SHARED": "/nonexistent/shared"}, {"PATH": "/nonexistent/bin"}], ids=["shared", "program"])
@pytest.mark.parametrize("ci", ["", "true"], ids=["local", "ci"])
def test_a_missing_need_skips_with_its_reason_but_fails_in_ci(missing, ci):
    env = os.environ | {"CI": ci, **missing}
    env.pop("GENREWIZ_REQUIRE_BROWSER", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider",
         "tests/test_ci_rules.py::test_needs_are_met_here_and_ci_requires_the_browser"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    what = "../shared/gtzan-mini" if "GENREWIZ_SHARED" in missing else "the sh program"
    if ci:
        assert done.returncode == 1 and "1 error" in done.stdout, done.stdout + done.stderr
        assert f"CI=true and this test cannot run: it needs {what}" in done.stdout, done.stdout
    else:
        assert done.returncode == 0 and "1 skipped" in done.stdout, done.stdout + done.stderr
        assert f"needs {what}, not found on this machine" in done.stdout, done.stdout
