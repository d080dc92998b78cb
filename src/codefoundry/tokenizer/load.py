"""The one tokenizer loader: tokenizer directories and model directories (which carry the same files)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from codefoundry.errors import ArtifactError


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The HF fast tokenizer saved in `path` (a tokenizer/ or model/ directory; for a .gguf file, the
    directory `codefoundry.model.resolve_model_path` imports it to)."""
    directory = Path(path)
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
