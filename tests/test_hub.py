"""Where weights come from: local folders, a Hub cache used offline, and the bundled fallback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from genrewiz import hub
from genrewiz.hub import BUNDLED_DIR, load_model, resolve_source
from genrewiz.model import PCRNN

REPO = "someone/genrewiz-test"


def fake_hub_cache(cache: Path, repo_id: str, model: PCRNN, commit: str = "a" * 40) -> Path:
    """Lay out a Hub cache as ``huggingface_hub`` writes it: refs/main -> snapshots/<commit>/."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    model.save_pretrained(snapshot)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture()
def uncached_default(monkeypatch):
    """The default repo (no source named, no ``$GENREWIZ_MODEL``) is one the Hub cache lacks."""
    monkeypatch.delenv("GENREWIZ_MODEL", raising=False)
    monkeypatch.setattr(hub, "DEFAULT_REPO_ID", "nobody/not-cached")


def test_bundled_weights_load_strictly():
    model, source = load_model(BUNDLED_DIR)
    assert source.kind == "local" and isinstance(model, PCRNN) and len(model.labels) == 10


def test_offline_default_repo_not_in_cache_falls_back_to_bundled_in_one_log_line(offline, uncached_default, tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        model, source = load_model(cache_dir=tmp_path)
    assert source.kind == "bundled" and source.directory == BUNDLED_DIR
    reference = PCRNN.from_pretrained(BUNDLED_DIR)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, atol=0, rtol=0)
    # Offline mode is the user's choice: one line says which weights, without a fallback reason every run.
    assert [r.getMessage() for r in caplog.records if "weights" in r.getMessage()] == ["GenreWiz weights: bundled weights (genrewiz/weights)"]


@pytest.mark.parametrize("named", ["someone/typo", "runs/filtred", "runs/filtred/best", "./runs/filtred"])
def test_a_named_source_that_cannot_load_is_an_error(offline, tmp_path, monkeypatch, named):
    """A mistyped --model or $GENREWIZ_MODEL never silently loads other weights, whether it looks like a path or a repo."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "filtered").mkdir(parents=True)
    expected = "model folder not found" if named.startswith(("runs", "./")) else "could not be fetched from the Hub"
    with pytest.raises(FileNotFoundError, match=expected):
        resolve_source(named, cache_dir=tmp_path / "cache")
    monkeypatch.setenv("GENREWIZ_MODEL", named)
    with pytest.raises(FileNotFoundError, match=expected):
        resolve_source(cache_dir=tmp_path / "cache")


def test_offline_repo_in_cache_loads_from_cache(offline, tmp_path):
    torch.manual_seed(3)
    expected = PCRNN(labels=["x", "y"]).eval()
    fake_hub_cache(tmp_path, REPO, expected, commit="b" * 40)
    model, source = load_model(REPO, cache_dir=tmp_path)
    assert (source.kind, source.location, source.revision) == ("hub", REPO, "b" * 40)
    assert source.describe() == f"Hub {REPO} @ bbbbbbb"
    assert model.labels == ["x", "y"]
    x = torch.randn(1, 1, 640, 128)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), expected(x))


def test_unreachable_hub_without_offline_flag_uses_cache_at_once(monkeypatch, tmp_path):
    """With the network down and HF_HUB_OFFLINE unset, the probe sends us to the cache."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    assert not hub._hub_reachable()
    fake_hub_cache(tmp_path, REPO, PCRNN(), commit="c" * 40)
    assert resolve_source(REPO, cache_dir=tmp_path).revision == "c" * 40
    with pytest.raises(FileNotFoundError, match="unreachable"):
        resolve_source("nobody/else", cache_dir=tmp_path)
    monkeypatch.setattr(hub, "DEFAULT_REPO_ID", "nobody/else")
    monkeypatch.delenv("GENREWIZ_MODEL", raising=False)
    fallback = resolve_source(cache_dir=tmp_path)
    assert fallback.kind == "bundled" and "nobody/else could not be fetched from the Hub" in fallback.describe()  # not chosen: said why


def test_env_var_selects_the_model(monkeypatch, tmp_path):
    PCRNN(labels=["p", "q", "r"]).save_pretrained(tmp_path / "ckpt")
    monkeypatch.setenv("GENREWIZ_MODEL", str(tmp_path / "ckpt"))
    model, source = load_model()
    assert source.kind == "local" and model.labels == ["p", "q", "r"]


def test_missing_local_path_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        resolve_source(str(tmp_path / "no-such-checkpoint"))


def test_metrics_are_read_from_the_checkpoint(tmp_path):
    PCRNN().save_pretrained(tmp_path)
    assert resolve_source(str(tmp_path)).metrics() is None
    (tmp_path / "metrics.json").write_text('{"accuracy": 0.5}')
    assert resolve_source(str(tmp_path)).metrics() == {"accuracy": 0.5}


def test_real_process_with_hf_hub_offline_uses_bundled_weights_and_says_so_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GENREWIZ_MODEL"} | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    code = (
        "import logging; logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from genrewiz import GenreClassifier; print(GenreClassifier.from_pretrained().source.kind)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "bundled"
    lines = [line for line in done.stderr.splitlines() if "weights" in line]
    assert len(lines) == 1 and lines[0].startswith("GenreWiz weights: bundled weights"), done.stderr
    assert "could not be fetched" not in lines[0], "offline mode was chosen: no fallback reason on every run"
