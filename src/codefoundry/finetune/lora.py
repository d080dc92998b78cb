"""LoRA through `peft` on codefoundry's own models (GPTBigCode, Llama, StarCoder2).

Our modules carry HF's names (`transformer.h.0.attn.c_attn`, `model.layers.0.self_attn.q_proj`),
so the adapter PEFT saves from our model is the adapter of transformers' model too:

    adapter_model.safetensors   base_model.model.<HF module path>.lora_A.weight   [r, in]
                                base_model.model.<HF module path>.lora_B.weight   [out, r]
    adapter_config.json         peft.LoraConfig (r, lora_alpha, target_modules, task_type CAUSAL_LM,
                                base_model_name_or_path)

    W x + (alpha / r) · B A dropout(x)                     (B starts at zero: step 0 is the base model)

Training wraps our model with `task_type=None` (a plain `PeftModel`, whose forward is our model's);
the saved config says CAUSAL_LM, so `AutoPeftModelForCausalLM` and `PeftModel.from_pretrained` on a
transformers model open it as a causal LM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from codefoundry.errors import ArtifactError, UserError
from codefoundry.finetune.config import LoraSettings

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# bigcode-project/starcoder finetune/finetune.py adapts c_proj and c_attn (and SantaCoder's q_attn);
# PEFT's default for Llama and StarCoder2 is q_proj and v_proj. A model gets those of them it has.
DEFAULT_TARGETS = ("c_attn", "c_proj", "q_proj", "v_proj")


def linear_names(model: nn.Module) -> list[str]:
    """Leaf names of the model's nn.Linear layers (not the LM head): what LoRA can target."""
    return sorted({name.rpartition(".")[2] for name, m in model.named_modules()
                   if isinstance(m, nn.Linear) and name != "lm_head"})


def target_modules(model: nn.Module, requested: list[str] | None) -> list[str]:
    """The module names to adapt: `requested` (checked against the model), or the defaults it has."""
    have = linear_names(model)
    if requested is None:
        chosen = [n for n in DEFAULT_TARGETS if n in have]
        if not chosen:
            raise UserError(f"none of the default LoRA targets ({', '.join(DEFAULT_TARGETS)}) is in this model",
                            hint=f"choose with --target-modules from: {', '.join(have)}")
        return chosen
    unknown = [n for n in requested if n not in have]
    if unknown or not requested:
        raise UserError(f"--target-modules: {', '.join(unknown) or '(none)'} not in this model's linear layers "
                        f"({', '.join(have)})")
    return list(requested)


def input_embedding_name(model: nn.Module) -> str:
    """Leaf name of the model's token embedding (`embed_tokens`, GPTBigCode's `wte`)."""
    vocab = model.config.vocab_size
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Embedding) and m.num_embeddings == vocab]
    if len(names) != 1:
        raise UserError(f"cannot tell this model's token embedding among {names or 'no embeddings'}")
    return names[0].rpartition(".")[2]


def _with_input_embeddings(model: nn.Module) -> nn.Module:
    """`model` answering what PEFT asks a transformers model when it trains token rows (our models have HF's module
    tree, not its PreTrainedModel methods): `get_input_embeddings()`, the embedding whose rows
    `trainable_token_indices` trains, and `_tied_weights_keys`, the LM head that shares them (PEFT then applies
    the rows there too, as on SmolLM2 in transformers)."""
    if not hasattr(model, "get_input_embeddings"):
        path = next(n for n, m in model.named_modules() if n.rpartition(".")[2] == input_embedding_name(model))
        model.get_input_embeddings = lambda: model.get_submodule(path)     # looked up: PEFT replaces the module
    if not hasattr(model, "_tied_weights_keys"):
        model._tied_weights_keys = dict(getattr(model, "tied_weights", {}))
    return model


def token_ids(tokenizer: Any, tokens: list[str]) -> list[int]:
    """The ids of `tokens` in `tokenizer`, each a single token of its vocabulary."""
    vocab = tokenizer.get_vocab()
    unknown = [t for t in tokens if t not in vocab]
    if unknown:
        raise UserError(f"trainable tokens {', '.join(unknown)} are not in the model's tokenizer",
                        hint="name tokens of its vocabulary (the demo's base has StarCoder's FIM tokens)")
    return sorted({vocab[t] for t in tokens})


def add_lora(model: nn.Module, settings: LoraSettings, trainable_token_ids: list[int] | None = None) -> Any:
    """`model` wrapped in a PeftModel with fresh LoRA weights (and, when given, trainable copies of those token
    ids' embedding rows); only those are trainable."""
    from peft import LoraConfig, get_peft_model

    alpha = int(settings.alpha) if float(settings.alpha).is_integer() else settings.alpha   # PEFT's own type: int
    tokens = {input_embedding_name(model): list(trainable_token_ids)} if trainable_token_ids else None
    config = LoraConfig(r=settings.r, lora_alpha=alpha, lora_dropout=settings.dropout,
                        target_modules=target_modules(model, settings.target_modules), bias="none",
                        trainable_token_indices=tokens)
    return get_peft_model(_with_input_embeddings(model) if tokens else model, config)


def trainable_parameters(peft_model: Any) -> tuple[int, int]:
    """(trainable, all) parameter counts."""
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    return trainable, total


def adapter_state(peft_model: Any) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) tensors by parameter name, for checkpoints."""
    return {name: p.detach().clone() for name, p in peft_model.named_parameters() if p.requires_grad}


def load_adapter_state(peft_model: Any, state: dict[str, torch.Tensor]) -> None:
    params = {name: p for name, p in peft_model.named_parameters() if p.requires_grad}
    if set(params) != set(state) or any(p.shape != state[name].shape for name, p in params.items()):
        raise UserError("the checkpoint's LoRA weights do not match this run's adapter (another --lora-r or "
                        "--target-modules?)", hint="resume with the settings of the original run")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])


def save_adapter(peft_model: Any, out: Path, base_model: Path) -> None:
    """PEFT's own files: adapter_config.json (CAUSAL_LM, the base's path) + adapter_model.safetensors (the LoRA
    weights, and the trained token rows when there are any: never the whole embedding)."""
    config = peft_model.peft_config["default"]
    config.task_type = "CAUSAL_LM"
    config.base_model_name_or_path = str(base_model.resolve())
    config.inference_mode = True
    peft_model.save_pretrained(str(out), safe_serialization=True, save_embedding_layers=False)


def open_adapter(model: nn.Module, adapter: Path, trainable: bool = False) -> Any:
    """Our `model` with the PEFT adapter in directory `adapter` applied (a PeftModel)."""
    from peft import LoraConfig, PeftModel

    if not (adapter / ADAPTER_CONFIG).is_file() or not (adapter / ADAPTER_WEIGHTS).is_file():
        raise ArtifactError(f"{adapter} is not a PEFT adapter directory: it needs {ADAPTER_CONFIG} and "
                            f"{ADAPTER_WEIGHTS}", hint="make one with: codefoundry finetune --out DIR")
    try:
        config = LoraConfig.from_pretrained(str(adapter))
    except (ValueError, TypeError, OSError) as e:
        raise ArtifactError(f"{adapter / ADAPTER_CONFIG} is not a LoRA config: {e}") from None
    config.task_type = None   # a plain PeftModel around our model (PeftModelForCausalLM expects HF's forward)
    have = linear_names(model)
    targets = config.target_modules if isinstance(config.target_modules, (set, list)) else [config.target_modules]
    missing = sorted(t for t in targets if t.rpartition(".")[2] not in have)
    if missing:
        raise ArtifactError(f"adapter {adapter} targets {', '.join(missing)}, which this model does not have "
                            f"({', '.join(have)}): was it trained on another architecture?")
    try:
        if config.trainable_token_indices:
            model = _with_input_embeddings(model)
        return PeftModel.from_pretrained(model, str(adapter), config=config, is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"adapter {adapter} does not fit this model: {first}",
                            hint="merge into the base model it was trained on (see its README.md)") from None
