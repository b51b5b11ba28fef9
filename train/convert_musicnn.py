"""Convert musicnn's MSD_musicnn TensorFlow checkpoint to safetensors, and check the port against it.

Run once, in a throwaway virtual environment (TensorFlow is never a GenreWiz dependency)::

    python3 -m venv /tmp/tf && . /tmp/tf/bin/activate
    pip install tensorflow-cpu==2.21.0 tf-keras torch==2.13.0 && pip install -e . && pip download musicnn==0.1.0 --no-deps -d /tmp/whl
    pip install --no-deps /tmp/whl/musicnn-0.1.0-py3-none-any.whl   # its metadata pins numpy<1.17: ignore it
    export TF_USE_LEGACY_KERAS=1                                    # its tf.compat.v1.layers need Keras 2
    python -m train.convert_musicnn convert                          # -> genrewiz/pretrained/msd_musicnn.safetensors
    python -m train.convert_musicnn parity CLIPS... --fixture tests/data/musicnn_parity.npz

``convert`` copies the trainable variables and the batch-norm moving statistics (not the Adam
slots) under the names of :class:`genrewiz.musicnn.MusiCNN`. ``parity`` runs TensorFlow's graph
and the PyTorch port on the same patches of real clips (cut by GenreWiz's own front end), prints
the largest differences, and can save a few patches with TensorFlow's outputs as the test fixture
that checks parity in CI without TensorFlow.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from genrewiz.musicnn import MSD_TAGS, MUSICNN_FEATURES, PATCH_FRAMES, PRETRAINED_WEIGHTS

_CONVS = ["timbral.0", "timbral.1", "temporal.0", "temporal.1", "temporal.2", "midend.0", "midend.1", "midend.2"]
_BATCH_NORMS = [
    "input_bn", "timbral_bn.0", "timbral_bn.1", "temporal_bn.0", "temporal_bn.1", "temporal_bn.2",
    "midend_bn.0", "midend_bn.1", "midend_bn.2", "pool_bn", "penultimate_bn",
]  # fmt: skip
"""Module names in the order musicnn's graph creates its layers (TF names them conv2d, conv2d_1, ...)."""


def _tf_name(kind: str, index: int) -> str:
    return kind if index == 0 else f"{kind}_{index}"


def tf_to_torch(read) -> dict[str, np.ndarray]:
    """``MusiCNN`` state dict from a reader of TF variables (``read(name) -> ndarray``)."""
    state: dict[str, np.ndarray] = {}
    for i, name in enumerate(_CONVS):
        kernel = read(f"{_tf_name('conv2d', i)}/kernel")  # (time, freq, in, out)
        if name.startswith("midend"):
            weight = kernel[:, :, 0, :].transpose(2, 1, 0)  # Conv1d over time: (out, freq-as-channels, time)
        else:
            weight = kernel.transpose(3, 2, 0, 1)  # Conv2d: (out, in, time, freq)
        state[f"{name}.weight"] = weight
        state[f"{name}.bias"] = read(f"{_tf_name('conv2d', i)}/bias")
    for i, name in enumerate(_BATCH_NORMS):
        prefix = _tf_name("batch_normalization", i)
        state[f"{name}.weight"] = read(f"{prefix}/gamma")
        state[f"{name}.bias"] = read(f"{prefix}/beta")
        state[f"{name}.running_mean"] = read(f"{prefix}/moving_mean")
        state[f"{name}.running_var"] = read(f"{prefix}/moving_variance")
        state[f"{name}.num_batches_tracked"] = np.zeros((), dtype=np.int64)
    for i, name in enumerate(["penultimate", "tags"]):
        state[f"{name}.weight"] = read(f"{_tf_name('dense', i)}/kernel").T
        state[f"{name}.bias"] = read(f"{_tf_name('dense', i)}/bias")
    return {k: np.ascontiguousarray(v) for k, v in state.items()}


def checkpoint_prefix() -> str:
    """The MSD_musicnn checkpoint inside the installed ``musicnn`` wheel (its files have no basename)."""
    import musicnn

    return os.path.join(os.path.dirname(musicnn.__file__), "MSD_musicnn") + "/"


def convert(out: Path) -> None:
    """Write the converted weights, strictly loadable into :class:`genrewiz.musicnn.MusiCNN`."""
    from safetensors.numpy import save_file
    from tensorflow.python.training.py_checkpoint_reader import NewCheckpointReader

    reader = NewCheckpointReader(checkpoint_prefix())  # a bare prefix: tf.train.load_checkpoint wants a 'checkpoint' file
    state = tf_to_torch(lambda name: reader.get_tensor(name))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"source": "musicnn==0.1.0 MSD_musicnn (Pons & Serra 2019), ISC licence"})
    print(f"wrote {out}: {sum(v.size for k, v in state.items() if 'num_batches' not in k):,} values")


def tensorflow_outputs(patches: np.ndarray) -> dict[str, np.ndarray]:
    """musicnn's own graph on ``(n, 187, 96)`` patches: penultimate embeddings and tag logits."""
    import tensorflow as tf
    from musicnn import models

    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.reset_default_graph()
    x = tf.compat.v1.placeholder(tf.float32, [None, PATCH_FRAMES, MUSICNN_FEATURES.n_mels])
    outputs = models.define_model(x, False, "MSD_musicnn", len(MSD_TAGS))
    logits, penultimate = outputs[0], outputs[-1]
    with tf.compat.v1.Session() as session:
        tf.compat.v1.train.Saver().restore(session, checkpoint_prefix())
        logits_, penultimate_ = session.run([logits, penultimate], feed_dict={x: patches})
    return {"penultimate": penultimate_, "logits": logits_}


def clip_patches(paths: list[str], per_clip: int) -> np.ndarray:
    """Up to ``per_clip`` evenly spaced patches from each clip, through GenreWiz's own front end."""
    from genrewiz.predict import analyse

    patches = []
    for path in paths:
        mel = analyse(path, MUSICNN_FEATURES).mel
        starts = np.linspace(0, len(mel) - PATCH_FRAMES, per_clip).astype(int)
        patches += [mel[s : s + PATCH_FRAMES] for s in starts]
    return np.stack(patches).astype(np.float32)


def parity(paths: list[str], per_clip: int, fixture: Path | None, fixture_patches: int) -> None:
    """Compare the PyTorch port with TensorFlow on real clips; optionally save a small fixture."""
    import torch
    from safetensors.torch import load_model

    from genrewiz.musicnn import MusiCNN

    patches = clip_patches(paths, per_clip)
    expected = tensorflow_outputs(patches)
    model = MusiCNN().eval()
    load_model(model, str(PRETRAINED_WEIGHTS), strict=True)
    with torch.inference_mode():
        x = torch.from_numpy(patches)
        got = {"penultimate": model.embed(x).numpy(), "logits": model(x).numpy()}
    for key in expected:
        diff = np.abs(got[key] - expected[key])
        print(f"{key}: {len(patches)} patches from {len(paths)} clips, max |torch - tf| = {diff.max():.2e}, "
              f"mean {diff.mean():.2e}, max |tf| = {np.abs(expected[key]).max():.2f}")
    if fixture:
        keep = np.linspace(0, len(patches) - 1, fixture_patches).astype(int)
        fixture.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(fixture, patches=patches[keep], **{k: v[keep] for k, v in expected.items()})
        print(f"wrote {fixture} ({fixture.stat().st_size / 1024:.0f} KB, {len(keep)} patches)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.convert_musicnn", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert", help="TF checkpoint -> safetensors")
    conv.add_argument("--out", type=Path, default=PRETRAINED_WEIGHTS, help=f"(default {PRETRAINED_WEIGHTS})")
    check = commands.add_parser("parity", help="compare the port with TensorFlow on real clips")
    check.add_argument("clips", nargs="+", help="audio files")
    check.add_argument("--per-clip", type=int, default=4, help="patches per clip (default 4)")
    check.add_argument("--fixture", type=Path, help="save patches and TF outputs here (npz)")
    check.add_argument("--fixture-patches", type=int, default=3, help="patches kept in the fixture (default 3)")
    args = parser.parse_args(argv)
    if args.command == "convert":
        convert(args.out)
    else:
        parity(args.clips, args.per_clip, args.fixture, args.fixture_patches)


if __name__ == "__main__":
    main()
