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

An adapter may also carry trained rows of the token embedding (PEFT's `trainable_token_indices`,
for tokens added to the base model's tokenizer, such as StarCoder's FIM tokens):

    base_model.model.<embedding path>.token_adapter.trainable_tokens_delta   [k, hidden]
    adapter_config.json  trainable_token_indices: [ids…] or {"<embedding name>": [ids…]}

The rows replace the base rows of those k token ids (PEFT stores values, not differences), and
where the model ties its LM head to the embedding they replace that head's rows too, as PEFT does
on a tied transformers model and as merging into the shared weight does.

`LoraLayers` applies a set of adapters to a model in one forward: forward hooks on the target
modules add each adapter's delta to the rows of the batch that use it (`LoraBatch`: the
adapter of every flat token), with the adapters present stacked side by side: two small
matmuls per module whatever the number of adapters, never one forward per adapter. With no batch active the hooks
return at once and the base path is unchanged; the hooks work over any module that maps
`[N, in]` to `[N, out]` (a quantized linear too), and the state dict is left untouched. Token rows
work the same way: a hook on the embedding puts an adapter's rows at the rows of its requests that
hold those ids, and a hook on a tied LM head recomputes those ids' logits for its requests' rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from codefoundry.errors import ArtifactError
from codefoundry.model.quantize import QuantizedEmbedding

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_TOKEN_ROWS = ".token_adapter.trainable_tokens_delta"
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


@dataclass(frozen=True)
class TokenRows:
    """Trained embedding rows: `rows[j]` replaces the row of token `ids[j]` in `embedding` (and in `head`, the LM
    head tied to it, when there is one)."""

    embedding: str              # module path of the token embedding
    head: str | None            # module path of the LM head that shares its weight, or None
    ids: torch.Tensor           # [k] long
    rows: torch.Tensor          # [k, hidden]


@dataclass
class LoraAdapter:
    """An adapter read from a PEFT directory, its tensors on the model's device and in its dtype."""

    path: Path
    config: dict
    modules: dict[str, LoraModule]      # our module path → its update
    digest: str                         # of the config and weights: the same bytes give the same digest
    targets: list[str] = field(default_factory=list)   # the module paths the adapter names (before any fusing)
    tokens: TokenRows | None = None     # trained embedding rows, when the adapter has them

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
                "target_modules": sorted({name.rsplit(".", 1)[-1] for name in self.targets or self.modules}),
                **({"trained_token_ids": self.tokens.ids.tolist()} if self.tokens is not None else {})}


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
    token_rows: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        name = key.removeprefix(_PREFIX)
        if name.endswith(_TOKEN_ROWS) or name.endswith(_TOKEN_ROWS + ".default"):
            token_rows[name.partition(_TOKEN_ROWS)[0]] = tensor
            continue
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
    if not pairs and not token_rows:
        raise ArtifactError(f"{weights_file}: no LoRA weights in it")
    out: dict[str, LoraModule] = {}
    fused: dict[str, list[tuple[int, LoraModule]]] = {}      # fused module → (row offset, update) of each part
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"lora_A", "lora_B"}:
            raise ArtifactError(f"{weights_file}: {module} has {sorted(ab)} but needs lora_A and lora_B")
        target, into = modules.get(module), None
        if target is None:
            into = _fused_target(modules, module)
            if into is None:
                raise ArtifactError(f"{path}: the adapter targets {module}, which this model does not have "
                                    f"(an adapter for another architecture?)")
            target = modules[into[0]]
        a, b = ab["lora_A"], ab["lora_B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise ArtifactError(f"{weights_file}: {module} has lora_A {list(a.shape)} and lora_B {list(b.shape)}, "
                                "which do not form a low-rank pair")
        want_in = getattr(target, "in_features", None)
        want_out = into[2] if into is not None else getattr(target, "out_features", None)
        if (want_in is not None and a.shape[1] != want_in) or (want_out is not None and b.shape[0] != want_out):
            raise ArtifactError(f"{path}: {module} maps {want_in} → {want_out} features but the adapter's "
                                f"update maps {a.shape[1]} → {b.shape[0]} (an adapter for another model size?)")
        rank = a.shape[0]
        update = LoraModule(a.to(param.device, param.dtype).contiguous(),
                            b.to(param.device, param.dtype).contiguous(), _scaling(config, module, rank))
        if into is None:
            out[module] = update
        else:
            fused.setdefault(into[0], []).append((into[1], update))
    for name, parts in fused.items():
        out[name] = _fused_update(parts, modules[name].out_features)
    tokens = _token_rows(path, config, token_rows, model, param) if token_rows else None
    return LoraAdapter(path, config, out, digest, targets=sorted(pairs), tokens=tokens)


def _token_rows(path: Path, config: dict, found: dict[str, torch.Tensor], model: nn.Module,
                param: torch.Tensor) -> TokenRows:
    """The adapter's trained embedding rows, checked against `model`'s embedding and the config's token ids."""
    if len(found) != 1:
        raise ArtifactError(f"{path}: trained token rows for {sorted(found)}; only the token embedding's are "
                            "supported for serving (merge the adapter instead)")
    (module, rows), = found.items()
    embedding = dict(model.named_modules()).get(module)
    if isinstance(embedding, QuantizedEmbedding):    # a quantized model's tied embedding reads its head's table
        tied, dtype = embedding.head[0], embedding.dtype
    elif isinstance(embedding, nn.Embedding):
        tied, dtype = embedding.weight, embedding.weight.dtype
    else:
        raise ArtifactError(f"{path}: trained token rows for {module}, which is not this model's token embedding")
    indices = config.get("trainable_token_indices")
    if isinstance(indices, dict):
        matches = [v for k, v in indices.items() if module == k or module.endswith("." + k)]
        indices = matches[0] if len(matches) == 1 else None
    if not isinstance(indices, list) or not all(isinstance(i, int) for i in indices) or \
            len(set(indices)) != len(indices):
        raise ArtifactError(f"{path / CONFIG_FILE}: trainable_token_indices does not name the token ids of "
                            f"{module}'s trained rows")
    if rows.dim() != 2 or rows.shape != (len(indices), embedding.embedding_dim):
        raise ArtifactError(f"{path}: {module} has {embedding.embedding_dim}-wide rows but the adapter's trained "
                            f"rows are {list(rows.shape)} for {len(indices)} token ids")
    if any(not 0 <= i < embedding.num_embeddings for i in indices):
        raise ArtifactError(f"{path}: trained token ids {indices} are outside this model's vocabulary of "
                            f"{embedding.num_embeddings} (an adapter for a model with added tokens?)")
    head = next((name for name, m in model.named_modules() if m is not embedding and
                 (m is tied or (isinstance(m, nn.Linear) and m.weight is tied))), None)
    return TokenRows(module, head, torch.tensor(indices, dtype=torch.long, device=param.device),
                     rows.to(param.device, dtype).contiguous())


def _fused_target(modules: dict[str, nn.Module], module: str) -> tuple[str, int, int] | None:
    """(fused module, row offset, rows) holding `module`'s output when it was stacked into a sibling.

    A quantized model stacks q/k/v_proj into `qkv_proj` (gate/up_proj into `gate_up_proj`) and
    drops the originals; the fused layer's `fused_parts` says where each one's rows went.
    """
    parent, _, leaf = module.rpartition(".")
    owner = modules.get(parent)
    if owner is None:
        return None
    for child_name, child in owner.named_children():
        offset = 0
        for part, rows in getattr(child, "fused_parts", None) or ():
            if part == leaf:
                return f"{parent}.{child_name}" if parent else child_name, offset, rows
            offset += rows
    return None


def _fused_update(parts: list[tuple[int, LoraModule]], out_features: int) -> LoraModule:
    """The updates of a fused layer's parts as one: A's stacked, B block-diagonal in the parts' rows.

    `x @ A.T @ B.T` then gives each part's rows exactly its own delta (the other blocks of B are
    zeros), so the hooks treat the fused layer like any other target.
    """
    first = parts[0][1].lora_a
    rank = sum(m.rank for _, m in parts)
    a = torch.cat([m.lora_a for _, m in parts])
    b = torch.zeros(out_features, rank, dtype=first.dtype, device=first.device)
    col = 0
    for offset, m in parts:
        b[offset:offset + m.lora_b.shape[0], col:col + m.rank] = m.lora_b * m.scaling
        col += m.rank
    return LoraModule(a.contiguous(), b, 1.0)


@dataclass
class LoraBatch:
    """Which adapter each row of one flat batch uses: `adapters[slot]`, slot -1 = the base model.

    `slots[rows]` is, for a module input of `rows` rows, each row's slot and the one slot all
    rows share (None if they differ): the step's N flat tokens, and the L rows a model keeps
    before its head (`lm_head` sees only those), when L differs. Masks are made once per step.
    """

    adapters: tuple[LoraAdapter, ...]
    slots: dict[int, tuple[torch.Tensor, int | None]]
    _masks: dict[tuple, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def build(cls, adapters: Sequence[LoraAdapter], slots: Sequence[int], logits_rows: Sequence[int] | None,
              device: torch.device) -> LoraBatch:
        """`slots[i]` indexes `adapters` for flat token i (-1: the base model); built on the host, no syncs."""
        def entry(row_slots: Sequence[int]) -> tuple[torch.Tensor, int | None]:
            shared = row_slots[0] if len(set(row_slots)) == 1 else None
            return torch.tensor(row_slots, dtype=torch.long, device=device), shared

        by_rows = {len(slots): entry(slots)}
        if logits_rows is not None and len(logits_rows) not in by_rows:
            by_rows[len(logits_rows)] = entry([slots[i] for i in logits_rows])
        return cls(tuple(adapters), by_rows)

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(a.digest for a in self.adapters)

    def rows(self, n: int) -> tuple[torch.Tensor, int | None]:
        if n not in self.slots:
            raise ValueError(f"a LoRA target module got {n} rows; this batch has {sorted(self.slots)}")
        return self.slots[n]

    def mask(self, n: int, layout: tuple[tuple[int, int], ...], dtype: torch.dtype) -> torch.Tensor:
        """[n, sum of ranks] 1 where a row's adapter owns the column (`layout`: (slot, rank) per stacked block)."""
        key = (n, layout, dtype)
        if key not in self._masks:
            slots = self.rows(n)[0]
            owner = torch.tensor([slot for slot, rank in layout for _ in range(rank)], device=slots.device)
            self._masks[key] = (slots[:, None] == owner[None, :]).to(dtype)
        return self._masks[key]


@dataclass(frozen=True)
class _Stacked:
    """One module's updates of every adapter in a batch, side by side: x @ lora_a gives each its own columns."""

    lora_a: torch.Tensor                   # [in, R]: each adapter's A.T, R = the sum of their ranks
    lora_b: torch.Tensor                   # [R, out]: each adapter's B.T * scaling
    layout: tuple[tuple[int, int], ...]    # (slot, rank) of each block of columns

    @classmethod
    def of(cls, name: str, adapters: Sequence[LoraAdapter]) -> _Stacked | None:
        parts = [(slot, a.modules[name]) for slot, a in enumerate(adapters) if name in a.modules]
        if not parts:
            return None
        return cls(torch.cat([m.lora_a for _, m in parts]).T.contiguous(),
                   torch.cat([(m.lora_b * m.scaling).T for _, m in parts]).contiguous(),
                   tuple((slot, m.rank) for slot, m in parts))


class LoraLayers:
    """Forward hooks on a model's LoRA target modules that apply the active `LoraBatch`.

    Per module, the adapters present are stacked (cached per set of adapters, as the same few
    sets recur step after step): `out += ((x @ A) * mask) @ B`, one shrink and one expand
    matmul over every row whatever the number of adapters, the mask zeroing the columns of
    adapters a row does not use (no mask when one adapter has every row). Rows of the base
    model get exact zeros.
    """

    MAX_CACHED_SETS = 8

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.active: LoraBatch | None = None
        self._hooks: dict[str, torch.utils.hooks.RemovableHandle] = {}
        self._stacks: dict[tuple[str, ...], dict[str, _Stacked | None]] = {}

    def attach(self, module_names: Sequence[str], tokens: TokenRows | None = None) -> None:
        """Hook these modules (once each), and the embedding and tied head of `tokens`; called for every adapter
        loaded."""
        modules = dict(self.model.named_modules())
        for name in module_names:
            if name not in self._hooks:
                self._hooks[name] = modules[name].register_forward_hook(self._hook(name))
        if tokens is not None:
            for key, name, hook in (("embedding", tokens.embedding, self._embedding_hook),
                                    ("head", tokens.head, self._head_hook)):
                if name is not None and f"{key}:{name}" not in self._hooks:
                    self._hooks[f"{key}:{name}"] = modules[name].register_forward_hook(hook)

    def detach(self) -> None:
        """Remove every hook: the model is exactly the base model again."""
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()
        self._stacks.clear()

    def forget(self, adapter: LoraAdapter) -> None:
        """Drop the stacked copies that hold `adapter`'s weights (it was unloaded)."""
        self._stacks = {k: v for k, v in self._stacks.items() if adapter.digest not in k}

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

    def _stacked(self, batch: LoraBatch, name: str) -> _Stacked | None:
        key = batch.key
        per = self._stacks.pop(key, None)
        if per is None:
            per = {}
            while len(self._stacks) >= self.MAX_CACHED_SETS:
                self._stacks.pop(next(iter(self._stacks)))
        self._stacks[key] = per                      # most recently used last
        if name not in per:
            per[name] = _Stacked.of(name, batch.adapters)
        return per[name]

    def _token_slots(self, n: int) -> list[tuple[torch.Tensor | None, TokenRows]]:
        """(row mask, or None for every row, and the rows) of each adapter with token rows in the active batch."""
        batch = self.active
        if batch is None:
            return []
        slots, shared = batch.rows(n)
        return [(None if shared == slot else slots == slot, a.tokens) for slot, a in enumerate(batch.adapters)
                if a.tokens is not None and shared in (None, slot)]

    def _embedding_hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...],
                        output: torch.Tensor) -> torch.Tensor | None:
        ids = inputs[0].reshape(-1)
        parts = self._token_slots(ids.shape[0])
        if not parts:
            return None
        out = output.reshape(ids.shape[0], -1)
        for rows_mask, tokens in parts:
            hit = ids[:, None] == tokens.ids[None, :]                 # [N, k]: which trained id each row holds
            if rows_mask is not None:
                hit &= rows_mask[:, None]
            row = hit.any(dim=1)
            trained = tokens.rows[hit.long().argmax(dim=1)].to(out.dtype)
            out = torch.where(row[:, None], trained, out)
        return out.view(output.shape)

    def _head_hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...],
                   output: torch.Tensor) -> torch.Tensor | None:
        x = inputs[0].reshape(-1, inputs[0].shape[-1])
        parts = self._token_slots(x.shape[0])
        if not parts:
            return None
        out = output.reshape(x.shape[0], -1)
        for rows_mask, tokens in parts:
            logits = (x.to(tokens.rows.dtype) @ tokens.rows.T).to(out.dtype)   # [L, k]: the trained rows' logits
            if rows_mask is not None:
                logits = torch.where(rows_mask[:, None], logits, out[:, tokens.ids])
            out = out.index_copy(1, tokens.ids, logits)
        return out.view(output.shape)

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
            batch = self.active
            if batch is None:
                return None
            x = inputs[0]
            x2 = x.reshape(-1, x.shape[-1])
            n = x2.shape[0]
            _, shared = batch.rows(n)
            stacked = self._stacked(batch, name)
            if stacked is None or shared == -1:
                return None
            if shared is not None and all(slot != shared for slot, _ in stacked.layout):
                return None                          # every row's adapter leaves this module alone
            h = (x2 if x2.dtype == stacked.lora_a.dtype else x2.to(stacked.lora_a.dtype)) @ stacked.lora_a
            if not (shared is not None and len(stacked.layout) == 1):
                h.mul_(batch.mask(n, stacked.layout, h.dtype))
            out2 = output.reshape(-1, output.shape[-1])   # a view of the output (a copy only if it is strided)
            out2.addmm_(h, stacked.lora_b)
            return out2.view(output.shape)
        return hook
