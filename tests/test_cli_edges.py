"""The CLI's edges: unreadable folder entries, usage errors, -q, and a stop signal as a run ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genrewiz.hub import BUNDLED_DIR
from synthetic import write_clip
from test_cli import cli_env, run_cli

def run_cli_unprivileged(*args: str) -> subprocess.CompletedProcess:
    """The CLI where file permissions apply: as root, without the capabilities that bypass them."""
    if os.geteuid() != 0:
        return run_cli(*args)
    if shutil.which("setpriv") is None:
        pytest.skip("running as root, and setpriv (util-linux) is missing to drop CAP_DAC_OVERRIDE")
    env = cli_env()
    drop = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run([*drop, sys.executable, "-m", "genrewiz", *args], capture_output=True, text=True, env=env, timeout=300)


def test_unreadable_entries_are_error_rows_and_the_run_goes_on(tmp_path):
    root = tmp_path / "library"
    good = write_clip(root / "good.wav", "pad", 3.0)
    write_clip(root / "locked" / "inside.wav", "pad", 3.0)  # a folder with mode 000
    write_clip(root / "unsearchable" / "inside.wav", "pad", 3.0)  # readable, not searchable
    secret = write_clip(root / "locked" / "secret.wav", "pad", 3.0)
    (root / "link.wav").symlink_to(secret)  # a link to a file the user may not reach
    unreadable = write_clip(root / "private.flac", "pad", 3.0)
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    unreadable.chmod(0o000)
    (root / "locked").chmod(0o000)
    (root / "unsearchable").chmod(0o644)

    done = run_cli_unprivileged("predict", str(root), "--format", "jsonl", "--jobs", "1")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    rows = {Path(r["path"]).relative_to(root).as_posix(): r for r in map(json.loads, done.stdout.splitlines())}
    assert rows[good.name]["ok"]
    for name in ("locked", "unsearchable/inside.wav", "link.wav", "private.flac"):
        assert not rows[name]["ok"] and "Permission denied" in rows[name]["error"], rows[name]


def test_usage_errors_name_the_full_path_and_come_from_the_subcommand(tmp_path):
    missing = tmp_path / "nonexistent" / "dir"
    done = run_cli("predict", str(missing))
    assert done.returncode == 2 and done.stdout == ""
    assert f"genrewiz predict: error: no such file or folder: {missing}" in done.stderr
    top = run_cli("predict", str(tmp_path), "--top", "0")
    assert top.returncode == 2 and top.stderr.startswith("usage: genrewiz predict")
    assert "argument --top: must be at least 1, not 0" in top.stderr
    jobs = run_cli("tag", str(tmp_path), "--jobs", "x")
    assert jobs.returncode == 2 and jobs.stderr.startswith("usage: genrewiz tag") and "not a whole number" in jobs.stderr
    output = run_cli("predict", str(tmp_path), "--output", str(tmp_path / "results.mp3"))
    assert output.returncode == 2 and "names an audio file" in output.stderr


def test_help_of_every_command_renders():
    for command in ("predict", "tag"):
        shown = run_cli(command, "--help")
        assert shown.returncode == 0 and "'option_strings'" not in shown.stdout, shown.stdout
    assert "top genre at least 50% and 15 points ahead" in " ".join(run_cli("tag", "--help").stdout.split())


def test_quiet_prints_nothing_on_stderr_even_when_files_fail(tmp_path):
    write_clip(tmp_path / "good.wav", "pad", 2.0)
    (tmp_path / "bad.wav").write_bytes(b"not audio" * 40)
    done = run_cli("predict", str(tmp_path), "--format", "csv", "-q")
    assert done.returncode == 1 and done.stderr == ""


def test_sigint_as_a_run_ends_is_one_line_never_a_traceback(tmp_path):
    clip = write_clip(tmp_path / "clip.wav", "pad", 2.0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GENREWIZ_MODEL": str(BUNDLED_DIR)}
    command = [sys.executable, "-m", "genrewiz", "predict", str(clip), "--format", "jsonl", "-q"]
    start = time.monotonic()
    subprocess.run(command, env=env, capture_output=True, timeout=120, check=True)
    whole = time.monotonic() - start
    for i in range(8):  # stops spread over the run's last part, where output is closed and handlers restored
        cli = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(whole * (0.6 + 0.07 * i))
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=120)
        assert "Traceback" not in err, err
        assert cli.returncode in (0, 128 + signal.SIGINT, -signal.SIGINT), (cli.returncode, err)
        if cli.returncode == 128 + signal.SIGINT:
            assert err.strip().endswith("interrupted; the results so far were written")
