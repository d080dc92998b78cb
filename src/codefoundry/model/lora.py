"""LoRA adapters in PEFT's format, applied per row of a flat batch: many adapters in one forward.

An adapter directory is what `peft`'s `save_pretrained` writes (`adapters/NAME/`):
`adapter_config.json` (`peft_type` LORA, `r`, `lora_alpha`, `use_rslora`, `rank_pattern`,
`alpha_pattern`, …) and `adapter_model.safetensors` with, per target module,

    base_model.model.<module path>.lora_A.weight   [r, in_features]
    base_model.model.<module path>.lora_B.weight   [out_features, r]

Our module trees are HF's (see `gpt_bigcode.py`, `rotary.py`), so `<module path>` names our
module directly: GPTBigCode's fused `c_attn` is one Linear here as in HF, and its `lora_B`
rows follow the same `[Q | K | V]` layout, so no splitting is needed. A module's output
gains `scaling * (x @ A.T) @ B.T`, with `scaling = alpha / r` (`alpha / sqrt(r)` with rsLoRA),
PEFT's inference formula (dropout is off at inference).

`LoraLayers` applies a set of adapters to a model in one forward: forward hooks on the target
modules add each adapter's delta to the rows of the batch that use it (`LoraBatch`: the
adapter of every flat token), one gather, two small matmuls and one scatter-add per
(module, adapter present), never one forward per adapter. With no batch active the hooks
return at once and the base path is unchanged; the hooks work over any module that maps
`[N, in]` to `[N, out]` (a quantized linear too), and the state dict is left untouched.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from codefoundry.errors import ArtifactError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_UNSUPPORTED = {"use_dora": "DoRA", "lora_bias": "LoRA biases"}


@dataclass(frozen=True)
class LoraModule:
    """One target module's low-rank update: delta = scaling * (x @ A.T) @ B.T."""

    lora_a: torch.Tensor        # [r, in_features]
    lora_b: torch.Tensor        # [out_features, r]
    scaling: float

    @property
    def rank(self) -> int:
        return self.lora_a.shape[0]


@dataclass
class LoraAdapter:
    """An adapter read from a PEFT directory, its tensors on the model's device and in its dtype."""

    path: Path
    config: dict
    modules: dict[str, LoraModule]      # our module path → its update
    digest: str                         # of the config and weights: the same bytes give the same digest

    @property
    def rank(self) -> int:
        return int(self.config.get("r", 8))

    @property
    def alpha(self) -> float:
        return float(self.config.get("lora_alpha", 8))

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    def describe(self) -> dict:
        """What a server shows of it (no tensors)."""
        return {"rank": self.rank, "alpha": self.alpha, "base_model": self.base_model,
                "target_modules": sorted({name.rsplit(".", 1)[-1] for name in self.modules})}


def read_adapter_config(path: Path) -> dict:
    """`adapter_config.json` of a PEFT LoRA adapter, checked for what this module can apply."""
    file = path / CONFIG_FILE
    if not path.is_dir():
        raise ArtifactError(f"adapter directory {path} does not exist")
    if not file.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise ArtifactError(f"{path} is not a PEFT adapter: it needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{file}: expected a JSON object")
    if config.get("peft_type", "LORA") != "LORA":
        raise ArtifactError(f"{file}: peft_type {config.get('peft_type')!r} is not LORA")
    for key, what in _UNSUPPORTED.items():
        if config.get(key):
            raise ArtifactError(f"{file}: {what} ({key}) is not supported for serving; merge the adapter instead")
    if config.get("bias", "none") != "none":
        raise ArtifactError(f"{file}: bias={config['bias']!r} trains base biases; only bias='none' can be "
                            "served beside the base model (merge the adapter instead)")
    if config.get("modules_to_save"):
        raise ArtifactError(f"{file}: modules_to_save {config['modules_to_save']} replaces base weights; "
                            "it cannot be served beside the base model (merge the adapter instead)")
    if config.get("fan_in_fan_out"):
        raise ArtifactError(f"{file}: fan_in_fan_out adapters (GPT-2 Conv1D layers) do not fit these models")
    return config


def _scaling(config: dict, module: str, rank: int) -> float:
    """PEFT's scale for one module: alpha / r, or alpha / sqrt(r) with rsLoRA; per-module patterns win."""
    alpha = float(config.get("lora_alpha", 8))
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if module == pattern or module.endswith("." + pattern):
            alpha = float(value)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def load_adapter(path: str | Path, model: nn.Module) -> LoraAdapter:
    """Read a PEFT LoRA adapter for `model`: every key must name one of its modules, every shape must fit."""
    path = Path(path)
    config = read_adapter_config(path)
    weights_file = path / WEIGHTS_FILE
    raw = weights_file.read_bytes()
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode() + raw).hexdigest()[:16]
    try:
        tensors = load_file(str(weights_file))
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise ArtifactError(f"{weights_file}: cannot read ({e})") from None
    param = next(model.parameters())
    modules = dict(model.named_modules())
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name = key.removeprefix(_PREFIX)
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in name:
                module, _, tail = name.partition(marker)
                if tail not in ("weight", "default.weight"):
                    break
                pairs.setdefault(module, {})[part] = tensor
                break
        else:
            raise ArtifactError(f"{weights_file}: tensor {key!r} is not a LoRA A/B weight "
                                "(embedding LoRA, DoRA and saved modules are not supported)")
    if not pairs:
        raise ArtifactError(f"{weights_file}: no LoRA weights in it")
    out: dict[str, LoraModule] = {}
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"lora_A", "lora_B"}:
            raise ArtifactError(f"{weights_file}: {module} has {sorted(ab)} but needs lora_A and lora_B")
        target = modules.get(module)
        if target is None:
            raise ArtifactError(f"{path}: the adapter targets {module}, which this model does not have "
                                f"(an adapter for another architecture?)")
        a, b = ab["lora_A"], ab["lora_B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise ArtifactError(f"{weights_file}: {module} has lora_A {list(a.shape)} and lora_B {list(b.shape)}, "
                                "which do not form a low-rank pair")
        want_in, want_out = getattr(target, "in_features", None), getattr(target, "out_features", None)
        if (want_in is not None and a.shape[1] != want_in) or (want_out is not None and b.shape[0] != want_out):
            raise ArtifactError(f"{path}: {module} maps {want_in} → {want_out} features but the adapter's "
                                f"update maps {a.shape[1]} → {b.shape[0]} (an adapter for another model size?)")
        rank = a.shape[0]
        out[module] = LoraModule(a.to(param.device, param.dtype).contiguous(),
                                 b.to(param.device, param.dtype).contiguous(), _scaling(config, module, rank))
    return LoraAdapter(path, config, out, digest)


@dataclass
class LoraBatch:
    """Which adapter each row of one flat batch uses, as row groups per adapter.

    `groups[rows]` lists (adapter, its row indices, or None when it has every row) for a module
    input of `rows` rows: the step's N flat tokens, and the L rows a model keeps before its head
    (`lm_head` sees only those), when L differs.
    """

    groups: dict[int, list[tuple[LoraAdapter, torch.Tensor | None]]]

    @classmethod
    def build(cls, adapters: Sequence[LoraAdapter], slots: Sequence[int], logits_rows: Sequence[int] | None,
              device: torch.device) -> LoraBatch:
        """`slots[i]` indexes `adapters` for flat token i (-1: the base model); built on the host, no syncs."""
        def grouped(row_slots: Sequence[int]) -> list[tuple[LoraAdapter, torch.Tensor | None]]:
            rows: dict[int, list[int]] = {}
            for i, slot in enumerate(row_slots):
                if slot >= 0:
                    rows.setdefault(slot, []).append(i)
            return [(adapters[slot], None if len(index) == len(row_slots)
                     else torch.tensor(index, dtype=torch.long, device=device))
                    for slot, index in rows.items()]

        groups = {len(slots): grouped(slots)}
        if logits_rows is not None and len(logits_rows) not in groups:
            groups[len(logits_rows)] = grouped([slots[i] for i in logits_rows])
        return cls(groups)

    def rows(self, n: int) -> list[tuple[LoraAdapter, torch.Tensor | None]]:
        if n not in self.groups:
            raise ValueError(f"a LoRA target module got {n} rows; this batch has row groups for {sorted(self.groups)}")
        return self.groups[n]


class LoraLayers:
    """Forward hooks on a model's LoRA target modules that apply the active `LoraBatch`."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.active: LoraBatch | None = None
        self._hooks: dict[str, torch.utils.hooks.RemovableHandle] = {}

    def attach(self, module_names: Sequence[str]) -> None:
        """Hook these modules (once each); called for every adapter loaded."""
        modules = dict(self.model.named_modules())
        for name in module_names:
            if name not in self._hooks:
                self._hooks[name] = modules[name].register_forward_hook(self._hook(name))

    def detach(self) -> None:
        """Remove every hook: the model is exactly the base model again."""
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()

    @property
    def attached(self) -> int:
        return len(self._hooks)

    @contextmanager
    def batch(self, batch: LoraBatch | None) -> Iterator[None]:
        """Apply `batch` to every forward inside (None: the base model)."""
        self.active = batch
        try:
            yield
        finally:
            self.active = None

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
            batch = self.active
            if batch is None:
                return None
            x = inputs[0]
            lead = x.shape[:-1]
            x2, out2 = x.reshape(-1, x.shape[-1]), output.view(-1, output.shape[-1])
            for adapter, rows in batch.rows(x2.shape[0]):
                update = adapter.modules.get(name)
                if update is None:
                    continue
                xs = x2 if rows is None else x2.index_select(0, rows)
                delta = (xs @ update.lora_a.T) @ update.lora_b.T * update.scaling
                if rows is None:
                    out2.add_(delta)
                else:
                    out2.index_add_(0, rows, delta)
            return out2.view(*lead, -1)
        return hook
