"""The ear fine-tuning study (``train/finetune_ear.py``): it starts from the zero-shot ear and trains only what it says."""

from __future__ import annotations

import numpy as np
import torch

from genrewiz.audioset import AUDIOSET_GENRES
from synthetic import synth_clip
from train.finetune_ear import EAR, GENRES, FineTunedEar, Settings, clip_patches, fine_tune, pretrained_branch

SECONDS = 3.0


def test_starts_as_the_zero_shot_ear() -> None:
    """Before training, the ten-genre layer gives exactly the AudioSet genre logits the library's branch gives."""
    branch = pretrained_branch()
    patches = clip_patches(synth_clip("song", 12.0, EAR.sample_rate, seed=1))
    with torch.inference_mode():
        zero_shot = branch.split(branch.patch_summaries(patches).unsqueeze(0))[1][0]
        model = FineTunedEar(pretrained_branch(), 13).eval()
        torch.testing.assert_close(model(patches).mean(dim=0), zero_shot, rtol=1e-4, atol=1e-4)


def test_training_moves_the_trainable_part_only() -> None:
    """A few steps on two genres lower the loss, change the head and the last blocks, and leave the frozen blocks bit for bit."""
    torch.set_num_threads(1)
    styles = {"classical": "pad", "metal": "hihat"}
    waves = [synth_clip(style, SECONDS, EAR.sample_rate, seed) for style in styles.values() for seed in range(3)]
    labels = np.repeat([GENRES.index(g) for g in styles], 3)
    assert set(styles) <= set(AUDIOSET_GENRES)
    model = FineTunedEar(pretrained_branch(), 13)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    frozen_state = {name: t.clone() for name, t in model.frozen.state_dict().items()}  # batch-norm statistics too
    logs = fine_tune(model, waves, labels, distill=1.0,
                     settings=Settings(epochs=4, batch_size=6, lr=1e-3, head_lr=1e-2, crop_seconds=2.0))
    assert logs[-1].loss < logs[0].loss
    after = dict(model.named_parameters())
    for name, value in before.items():
        changed = not torch.equal(value, after[name])
        assert changed == (not name.startswith("frozen.")), name
    for name, value in model.frozen.state_dict().items():
        assert torch.equal(value, frozen_state[name]), name
