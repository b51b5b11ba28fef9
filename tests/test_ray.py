"""``genrewiz predict --ray`` on a real local Ray instance gives the single-machine CLI's rows."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.data", reason="Ray Data is the optional extra genrewiz[ray]")
import pyarrow.parquet as pq  # noqa: E402  (installed with ray[data])
import ray  # noqa: E402

from conftest import make_bad_inputs  # noqa: E402
from genrewiz import distributed  # noqa: E402
from genrewiz.cli import build_parser, main  # noqa: E402
from genrewiz.hub import BUNDLED_DIR  # noqa: E402
from synthetic import STYLES, write_clip  # noqa: E402
from test_cli import run_cli  # noqa: E402


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight short clips in four formats, a nested folder, and three files no analysis accepts."""
    root = tmp_path_factory.mktemp("ray") / "library"
    for i in range(8):
        write_clip(root / ("deep" if i % 2 else "") / f"{i:02d}.{('wav', 'flac', 'ogg', 'mp3')[i % 4]}", STYLES[i % 4], 2.0, seed=i)
    bad = make_bad_inputs(root.parent / "scratch")
    for case in ("not_audio", "silent", "too_short"):
        bad[case].rename(root / f"broken_{case}.wav")
    return root


@pytest.fixture(scope="module")
def cli_rows(library: Path) -> dict[str, dict]:
    """What the single-machine CLI says about the library, by path."""
    done = run_cli("predict", str(library), "--format", "jsonl", "-q")
    assert done.returncode == 1, done.stderr
    return {row["path"]: row for row in map(json.loads, done.stdout.splitlines())}


def assert_same_rows(ray_rows: list[dict], cli_rows: dict[str, dict]) -> None:
    """Same files, verdicts and top genres (scores within 1e-4), errors where the CLI has them."""
    assert sorted(row["path"] for row in ray_rows) == sorted(cli_rows)
    for row in ray_rows:
        expected = cli_rows[row["path"]]
        assert row["ok"] == expected["ok"] and (row["error"] is None) == (expected["error"] is None), row
        assert [t["label"] for t in row["top"]] == [t["label"] for t in expected["top"]], row
        for got, want in zip(row["top"], expected["top"], strict=True):
            assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-4)
        assert (row["size"], row["mtime"]) == (expected["size"], expected["mtime"])


def ray_listeners() -> list[str]:
    """``ss -ltnp`` lines of the TCP ports Ray's processes listen on."""
    done = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True)
    names = ("gcs_server", "raylet", "ray::", "dashboard", "agent", "runtime_env", "log_monitor", "monitor.py")
    return [line for line in done.stdout.splitlines() if any(name in line for name in names)]


@pytest.mark.slow
def test_python_api_on_local_ray_matches_the_cli(library, cli_rows, tmp_path, monkeypatch):
    """``predict_to`` on GenreWiz's own local instance, one input given as a file:// URI read through pyarrow.fs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where Ray would leave ~/.ray/auth_token
    for name in (*distributed.AUTH_VARIABLES, "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    odd_name = tmp_path / "odd" / os.fsdecode(b"caf\xe9.wav")  # a Latin-1 name
    odd_name.parent.mkdir()
    write_clip(tmp_path / "odd" / "clip.wav", "pad", 2.0).rename(odd_name)
    distributed.connect(quiet=True, num_cpus=2)
    try:
        from ray._raylet import AuthenticationMode, get_authentication_mode

        assert get_authentication_mode() == AuthenticationMode.TOKEN and os.environ["RAY_AUTH_TOKEN"]
        listeners = ray_listeners() if shutil.which("ss") else []
        assert not any(":8265 " in line for line in listeners), listeners  # no dashboard
        out = tmp_path / "rows"
        counts = distributed.predict_to(
            [str(library / "deep"), *(str(p) for p in sorted(library.glob("*.*"))), f"file://{library / 'deep' / '01.flac'}",
             str(odd_name)],
            str(out),
            fmt="jsonl",
            model=str(BUNDLED_DIR),
            actors=1,
            quiet=True,
        )
        with pytest.raises(ValueError, match="already exists"):
            distributed.predict_to([str(library)], str(out), model=str(BUNDLED_DIR), quiet=True)
        with pytest.raises(ValueError, match=r"--actors 2 would hold every CPU of this Ray cluster \(2\).*at most 1"):
            distributed.predict_to([str(library)], str(tmp_path / "never"), model=str(BUNDLED_DIR), actors=2, quiet=True)
    finally:
        ray.shutdown()
    assert not (tmp_path / "home" / ".ray" / "auth_token").exists()
    rows = [json.loads(line) for path in sorted(out.glob("*.json")) for line in path.read_text().splitlines()]
    odd = [row for row in rows if row["path"].endswith("caf\\xe9.wav")]
    assert len(odd) == 1 and not odd[0]["ok"] and "not valid UTF-8" in odd[0]["error"]
    via_uri = [row for row in rows if row["path"].startswith("file://")]
    assert len(via_uri) == 1
    uri_row = via_uri[0]
    local_row = cli_rows[str(library / "deep" / "01.flac")]
    assert uri_row["ok"] and [t["label"] for t in uri_row["top"]] == [t["label"] for t in local_row["top"]]
    assert uri_row["size"] == local_row["size"]
    assert_same_rows([row for row in rows if row is not uri_row and row not in odd], cli_rows)
    assert (counts.files, counts.failed, sum(counts.genres.values())) == (13, 4, 9)


def clean_env(home: Path) -> dict[str, str]:
    """This process's environment without Ray's address and token settings, with ``home`` as ``$HOME``."""
    env = {k: v for k, v in os.environ.items() if k not in (*distributed.AUTH_VARIABLES, "RAY_ADDRESS")}
    return env | {"HOME": str(home), "HF_HUB_OFFLINE": "1", "GENREWIZ_MODEL": str(BUNDLED_DIR)}


@pytest.fixture(scope="module")
def local_cli_run(library: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """``genrewiz predict --ray`` on a new local instance, run once: its process, its output folder and its ``$HOME``.

    The parquet test reads its rows; the cluster test connects to a ``ray start`` cluster from
    the same ``$HOME`` after it, as a user would.
    """
    root = tmp_path_factory.mktemp("ray-local")
    home = root / "home"
    home.mkdir()
    out = root / "rows.parquet.d"
    done = subprocess.run(
        [sys.executable, "-m", "genrewiz", "predict", "--ray", str(library), "--output", str(out), "--actors", "1"],
        capture_output=True,
        text=True,
        env=clean_env(home) | {"RAY_ADDRESS": "local"},
        timeout=600,
    )
    return done, out, home


@pytest.mark.slow
@pytest.mark.timeout(900)  # sets up local_cli_run: a CLI run of up to 600 s
def test_cli_ray_writes_parquet_with_the_same_rows(local_cli_run, cli_rows):
    done, out, _ = local_cli_run
    assert done.returncode == 0, done.stderr  # every file has its row: a Ray job that did its work succeeded
    assert_same_rows(pq.read_table(out).to_pylist(), cli_rows)
    assert "genrewiz: 3 of 11 files could not be analysed (rows with ok=false)" in done.stderr
    assert "genrewiz: 11 files in " in done.stderr and "8 analysed, 3 failed" in done.stderr
    notices = [line for line in done.stderr.splitlines() if "listens on this machine's network" in line]
    assert len(notices) == 1 and "token authentication" in notices[0] and "without --ray" in notices[0], done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ray", "LIB"], "--ray needs --output"),
        (["LIB", "--ray", "--format", "table", "--output", "OUT"], "--ray writes --format parquet or jsonl"),
        (["LIB", "--format", "parquet"], "--format parquet needs --ray"),
        (["LIB", "--actors", "2"], "--actors needs --ray"),
        (["--ray", "LIB", "--output", "OUT", "--resume"], "--resume does not apply to --ray"),
    ],
)
def test_ray_usage_errors(tmp_path, capsys, args, message):
    argv = [str(tmp_path) if a == "LIB" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    with pytest.raises(SystemExit) as stopped:
        main(["predict", *argv])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_ray_option_takes_an_address_but_never_a_path():
    parser = build_parser()
    for argv, address, paths in [
        (["--ray", "lib", "x.mp3"], "", ["lib", "x.mp3"]),
        (["--ray", "s3://bucket/music"], "", ["s3://bucket/music"]),
        (["--ray", "auto", "lib"], "auto", ["lib"]),
        (["--ray", "10.0.0.5:6379", "lib"], "10.0.0.5:6379", ["lib"]),
        (["--ray", "ray://head:10001", "lib"], "ray://head:10001", ["lib"]),
        (["lib", "--ray"], "", ["lib"]),
    ]:
        args = parser.parse_args(["predict", *argv])
        assert (args.ray, [*args.ray_paths, *args.paths]) == (address, paths), argv


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a cluster's start and two CLI runs of up to 600 s each
@pytest.mark.skipif(shutil.which("ray") is None and not (Path(sys.executable).parent / "ray").exists(), reason="no `ray` command")
def test_cli_on_a_ray_start_cluster_by_address_and_ray_address(library, cli_rows, local_cli_run, tmp_path):
    """README's cluster steps: `ray start --head`, then `--ray HOST:PORT` or $RAY_ADDRESS, after a local run."""
    local, _, home = local_cli_run
    env = clean_env(home)

    def genrewiz(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "genrewiz", "predict", *args], capture_output=True, text=True, env=env | extra, timeout=600
        )

    assert local.returncode == 0, local.stderr
    assert not (home / ".ray").exists()  # nothing left that would switch later connections to tokens
    ray_command = str(Path(sys.executable).parent / "ray") if (Path(sys.executable).parent / "ray").exists() else "ray"
    log = tmp_path / "ray-start.log"
    with log.open("wb") as output:  # --port=0: Ray binds a free port itself and prints it
        head = subprocess.Popen(
            [ray_command, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--port=0", "--num-cpus=2",
             "--include-dashboard=false", "--disable-usage-stats"],
            env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while not (started := re.search(r"--address='[^']*:(\d+)'", log.read_text(errors="replace"))):
            assert head.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.5)
        address = f"127.0.0.1:{started.group(1)}"
        by_option = genrewiz("--ray", address, str(library), "--output", str(tmp_path / "by-option"), "--format", "jsonl", "-q")
        assert by_option.returncode == 0, by_option.stderr
        by_env = genrewiz("--ray", str(library), "--output", str(tmp_path / "by-env"), "-q", RAY_ADDRESS=address)
        assert by_env.returncode == 0, by_env.stderr
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops the processes it started, and only those
        head.wait(timeout=60)
    rows = [json.loads(line) for path in sorted((tmp_path / "by-option").glob("*.json")) for line in path.read_text().splitlines()]
    assert_same_rows(rows, cli_rows)
    assert_same_rows(pq.read_table(tmp_path / "by-env").to_pylist(), cli_rows)
