"""StarCoder's special tokens, in StarCoder's order: their ids are 0-18 in every tokenizer we train.

Order and spelling from bigcode-tokenizer `starcoder/train_bpe_tokenizer.py` and the
`added_tokens_decoder` of bigcode/starcoder's tokenizer_config.json (reference/model.md §2).
"""

from __future__ import annotations

EOS = "<|endoftext|>"
FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD = "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"

SPECIAL_TOKENS: tuple[str, ...] = (
    EOS,                # 0: end of document; also bos and unk
    FIM_PREFIX,         # 1
    FIM_MIDDLE,         # 2
    FIM_SUFFIX,         # 3
    FIM_PAD,            # 4
    "<filename>",       # 5
    "<gh_stars>",       # 6
    "<issue_start>",    # 7
    "<issue_comment>",  # 8
    "<issue_closed>",   # 9
    "<jupyter_start>",  # 10
    "<jupyter_text>",   # 11
    "<jupyter_code>",   # 12
    "<jupyter_output>",  # 13
    "<empty_output>",   # 14
    "<commit_before>",  # 15
    "<commit_msg>",     # 16
    "<commit_after>",   # 17
    "<reponame>",       # 18
)
