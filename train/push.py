"""Upload a finished checkpoint folder, model card included, to the Hugging Face Hub.

    python -m train.push --model genrewiz/weights --repo USER/NAME [--dry-run]

The token comes from the usual places (``HF_TOKEN``, ``hf auth login``). ``--dry-run`` lists
what would go up and checks the card, with no network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from huggingface_hub import HfApi, ModelCard

UPLOADED = (
    "README.md",
    "config.json",
    "model.safetensors",
    "model.onnx",
    "metrics.json",
    "history.json",
    "classification_report.txt",
    "confusion_matrix.png",
    "curves.png",
)
REQUIRED = ("README.md", "config.json", "model.safetensors", "metrics.json")


def plan(model_dir: Path) -> list[Path]:
    """The files to upload; fails when the folder is not a finished checkpoint with a valid card."""
    missing = [name for name in REQUIRED if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{model_dir} is not a finished checkpoint, missing {', '.join(missing)} "
            "(train, evaluate, then write the card with python -m train.card)"
        )
    card = ModelCard.load(model_dir / "README.md")
    absent = [key for key in ("library_name", "tags", "datasets", "metrics") if not getattr(card.data, key, None)]
    if absent:
        raise ValueError(f"model card header lacks {', '.join(absent)}")
    return [model_dir / name for name in UPLOADED if (model_dir / name).is_file()]


def push(model_dir: Path, repo_id: str, private: bool = False, dry_run: bool = False, message: str | None = None) -> str:
    """Create ``repo_id`` if needed and upload the checkpoint; returns the repo URL (or the plan, dry)."""
    files = plan(model_dir)
    if dry_run:
        listing = "\n".join(f"  {p.name:<28} {p.stat().st_size / 1024:8.1f} KiB" for p in files)
        return f"dry run: would upload to https://huggingface.co/{repo_id} ({'private' if private else 'public'}):\n{listing}"
    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=model_dir,
        repo_id=repo_id,
        repo_type="model",
        allow_patterns=[p.name for p in files],
        commit_message=message or "Upload GenreWiz PCRNN checkpoint",
    )
    return f"uploaded {len(files)} files: {commit.commit_url}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m train.push", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="finished checkpoint folder")
    parser.add_argument("--repo", required=True, help="Hub repo id, USER/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--message", help="commit message")
    parser.add_argument("--dry-run", action="store_true", help="show what would be uploaded, upload nothing")
    args = parser.parse_args(argv)
    result = push(args.model, args.repo, args.private, args.dry_run, args.message)
    print(result)
    return result


if __name__ == "__main__":
    main()
