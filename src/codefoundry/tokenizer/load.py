"""The one tokenizer loader: tokenizer directories and model directories (which carry the same files)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from codefoundry.errors import ArtifactError


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The HF fast tokenizer saved in `path` (a tokenizer/ or model/ directory, or a model's .gguf file)."""
    directory = Path(path)
    if directory.suffix.lower() == ".gguf" and directory.is_file():
        from codefoundry.model import resolve_model_path  # a GGUF file is read through its imported directory

        directory = resolve_model_path(directory)
    if not (directory / "tokenizer.json").is_file():
        what = "does not exist" if not directory.exists() else "has no tokenizer.json"
        raise ArtifactError(f"tokenizer directory {directory} {what}",
                            "train one with: codefoundry tokenizer train DATASET --out DIR")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{directory}: cannot load the tokenizer: {e}") from None
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ArtifactError(f"{directory}: loaded a slow tokenizer ({type(tokenizer).__name__}); "
                            "codefoundry needs tokenizer.json")
    return tokenizer
