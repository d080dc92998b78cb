"""codefoundry.tokenizer: byte-level BPE with StarCoder's special tokens, and the one tokenizer loader.

    from codefoundry.tokenizer import train_tokenizer, TokenizerTrainConfig, load_tokenizer
    train_tokenizer("dataset/", "tokenizer/", TokenizerTrainConfig(vocab_size=8192))
    tok = load_tokenizer("tokenizer/")     # or a model/ directory
"""

from codefoundry.tokenizer.load import load_tokenizer
from codefoundry.tokenizer.special import EOS, FIM_MIDDLE, FIM_PAD, FIM_PREFIX, FIM_SUFFIX, SPECIAL_TOKENS
from codefoundry.tokenizer.train import TokenizerTrainConfig, train_tokenizer

__all__ = [
    "EOS",
    "FIM_MIDDLE",
    "FIM_PAD",
    "FIM_PREFIX",
    "FIM_SUFFIX",
    "SPECIAL_TOKENS",
    "TokenizerTrainConfig",
    "load_tokenizer",
    "train_tokenizer",
]
