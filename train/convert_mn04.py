"""Convert EfficientAT's mn04_as release (a PyTorch state dict) to safetensors, and check the port against its reference outputs.

Run once, from the repository root::

    python -m train.convert_mn04 ../shared/pretrained/efficientat-mn04/mn04_as_mAP_432.pt --fixture tests/data/mn04_chirp_reference.npz

The ``.pt`` must be the authors' release v0.0.1 (its sha256 is checked). Every tensor is kept
under its own name (float32, batch-norm statistics included) and the result must load strictly
into :class:`genrewiz.mn04.MN04`. When ``reference.npz`` lies beside the ``.pt``, the port
(GenreWiz's own front end and network, on the converted weights) is compared with the
reference implementation's log-mel, feature map, hidden layer and logits, and ``--fixture`` saves
those of its first input (a chirp the tests regenerate) for the tests to check without the shared data.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from genrewiz.features import audioset_log_mel
from genrewiz.mn04 import MN04, PRETRAINED_WEIGHTS

RELEASE = Path(__file__).resolve().parents[2] / "shared" / "pretrained" / "efficientat-mn04" / "mn04_as_mAP_432.pt"
"""Where the shared data keeps the release (``../shared`` beside the repository)."""
RELEASE_SHA256 = "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c"
"""sha256 of ``mn04_as_mAP_432.pt`` in EfficientAT's release v0.0.1."""


def convert(source: Path, out: Path) -> None:
    """Write the release's tensors as safetensors, after checking the file is the release and loads strictly."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != RELEASE_SHA256:
        raise SystemExit(f"{source}: sha256 {digest} is not EfficientAT release v0.0.1's mn04_as ({RELEASE_SHA256})")
    state = torch.load(source, map_location="cpu", weights_only=True)
    state = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    MN04().load_state_dict(state, strict=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={
        "source": "EfficientAT release v0.0.1 mn04_as_mAP_432.pt (Schmid, Koutini & Widmer, ICASSP 2023), MIT licence",
        "sha256": RELEASE_SHA256,
    })  # fmt: skip
    model = MN04.pretrained(out)
    values = sum(v.numel() for k, v in state.items() if "num_batches" not in k)
    print(f"wrote {out}: {len(state)} tensors, {values:,} values, loads strictly into MN04 ({sum(p.numel() for p in model.parameters()):,} parameters)")


def parity(weights: Path, reference: Path) -> None:
    """Print the port's largest differences from the reference implementation's outputs."""
    expected = np.load(reference)
    mel = np.stack([audioset_log_mel(w.astype(np.float32) / 32768) for w in expected["waveforms_int16"]])
    model = MN04.pretrained(weights)
    with torch.inference_mode():
        x = torch.from_numpy(mel)
        feature_map = model.feature_map(x)
        got = {
            "mel": mel.transpose(0, 2, 1),
            "features_mean_over_frequency": feature_map.mean(dim=2).numpy(),
            "hidden": model.embed_feature_map(feature_map).numpy(),
            "logits": model(x).numpy(),
        }
    for key, value in got.items():
        print(f"{key} {value.shape}: max |port - reference| = {np.abs(value - expected[key]).max():.2e}")


def save_fixture(reference: Path, fixture: Path) -> None:
    """Keep the reference outputs of the chirp (input 0): 0.4 MB instead of the reference's 3 MB."""
    expected = np.load(reference)
    keys = ("mel", "features_mean_over_frequency", "hidden", "logits")
    fixture.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(fixture, **{k: expected[k][:1] for k in keys})
    print(f"wrote {fixture} ({fixture.stat().st_size / 1024:.0f} KB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.convert_mn04", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=RELEASE, help=f"the release's .pt (default {RELEASE})")
    parser.add_argument("--out", type=Path, default=PRETRAINED_WEIGHTS, help=f"(default {PRETRAINED_WEIGHTS})")
    parser.add_argument("--fixture", type=Path, help="save the chirp's reference outputs here (npz) for the tests")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        parser.error(f"{args.source}: not found (pass the path of mn04_as_mAP_432.pt)")
    convert(args.source, args.out)
    reference = args.source.with_name("reference.npz")
    if reference.is_file():
        parity(args.out, reference)
        if args.fixture:
            save_fixture(reference, args.fixture)
    elif args.fixture:
        parser.error(f"--fixture needs {reference}")


if __name__ == "__main__":
    main()
