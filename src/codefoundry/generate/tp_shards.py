"""What one rank of tensor-parallel serving keeps of a model: Megatron's column/row split of every block.

    attention:  query heads split (column-parallel), each rank with the K/V heads its query heads
                read → attention over the rank's own KV cache → output projection row-parallel
                + all-reduce (its bias added once, after the sum)
    MLP:        up-projections column-parallel (GPTBigCode's and StarCoder2's c_fc, Llama's gate
                and up) → activation → down-projection row-parallel + all-reduce

Grouped-query attention keeps its groups whole: with at least as many K/V heads as ranks, each
rank takes a contiguous run of groups (uneven when they do not divide: SmolLM2's 3 K/V heads
over 2 ranks are 2 + 1, its 9 query heads 6 + 3); with fewer, each K/V head is replicated on
world / kv_heads ranks that split its group's query heads (multi-query's one head on every rank,
as Megatron does). Embeddings, norms, RoPE and the head stay whole on every rank.

Quantized serving shards the float model first and quantizes each shard the way `load_model`
quantizes the whole one: int8 is per output channel, so a row-parallel shard takes its columns
of the whole layer's int8 matrix with the whole rows' scales; int4 groups run along the input
features, so a shard boundary must fall on a group boundary (else `check_shardable` refuses).
A GGUF file's own Q4 blocks are sliced the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from codefoundry.errors import UserError
from codefoundry.model.quantize import (
    DEFAULT_GROUP_SIZE,
    QuantizedLinear,
    int4_fits,
    quantize_int8,
    quantize_model,
)


class RowParallelLinear(nn.Module):
    """`linear` ([out, in]) with this rank's slice of input features; the partial products summed over the group.

    `int8`: also keep this slice of the whole layer's int8 matrix and its per-row scales, which
    `quantize_shard` puts in place of the shard's own (a slice's rows have other maxima).
    """

    def __init__(self, linear: nn.Linear, start: int, stop: int, int8: bool = False) -> None:
        super().__init__()
        self.linear = _slice(linear, cols=slice(start, stop), bias=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.whole_int8: tuple[torch.Tensor, torch.Tensor] | None = None
        if int8:
            q, scales = quantize_int8(linear.weight.detach())
            self.whole_int8 = (q[:, start:stop].contiguous(), scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        dist.all_reduce(y)
        return y if self.bias is None else y + self.bias           # once, after the sum


def _slice(linear: nn.Linear, rows: torch.Tensor | slice = slice(None), cols: slice = slice(None),
           bias: bool = True) -> nn.Linear:
    """A new `nn.Linear` with `rows` (output features) and `cols` (input features) of `linear`; a GGUF int4 source
    (`int4_source`: q [N, K], scale_zeros [K / g, N, 2]) sliced alike."""
    weight = linear.weight.detach()[rows][:, cols]
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias and linear.bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if out.bias is not None:
            out.bias.copy_(linear.bias.detach()[rows])
    source = getattr(linear, "int4_source", None)
    if source is not None:
        q, scale_zeros = source
        g = DEFAULT_GROUP_SIZE
        groups = slice(None) if cols == slice(None) else slice(cols.start // g, cols.stop // g)
        out.int4_source = (q[rows][:, cols], scale_zeros[groups][:, rows])
    return out.requires_grad_(False)


def _rows(linear: nn.Linear, *spans: tuple[int, int]) -> nn.Linear:
    """A column-parallel shard: the output features of `spans` (start, stop) of `linear`, in that order."""
    index = torch.cat([torch.arange(a, b) for a, b in spans]).to(linear.weight.device)
    return _slice(linear, rows=index)


# ---- which heads a rank keeps --------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeadSplit:
    """Rank's query heads q_start…q_stop-1 and the K/V heads kv_start…kv_stop-1 they read."""

    q_start: int
    q_stop: int
    kv_start: int
    kv_stop: int

    @property
    def n_head(self) -> int:
        return self.q_stop - self.q_start

    @property
    def kv_heads(self) -> int:
        return self.kv_stop - self.kv_start


def head_split(n_head: int, kv_heads: int, world: int, rank: int) -> HeadSplit:
    """The heads rank `rank` of `world` keeps (see the module docstring); `UserError` when they cannot be split."""
    group = n_head // kv_heads                  # query heads per K/V head
    if kv_heads >= world:                       # whole groups per rank, the first ranks one more when uneven
        base, extra = divmod(kv_heads, world)
        start = rank * base + min(rank, extra)
        stop = start + base + (rank < extra)
        return HeadSplit(start * group, stop * group, start, stop)
    per = world // kv_heads                     # ranks sharing one K/V head (replicated on each)
    if world % kv_heads or group % per:
        raise UserError(f"--tp {world} does not divide the model's {n_head} attention heads"
                        + (f" ({kv_heads} key/value heads)" if kv_heads > 1 else ""),
                        hint="pick a --tp that divides the key/value heads, or a multiple of them dividing the heads")
    kv, part = rank // per, group // per
    start = kv * group + rank % per * part
    return HeadSplit(start, start + part, kv, kv + 1)


def _config_shape(config: Any) -> tuple[int, int, int]:
    """(query heads, K/V heads, MLP width) of any of our configs."""
    from codefoundry.model import GPTBigCodeConfig

    if isinstance(config, GPTBigCodeConfig):
        return config.n_head, config.num_kv_heads, config.inner_dim
    return config.num_attention_heads, config.num_key_value_heads, config.intermediate_size


def local_kv_heads(config: Any, world: int, rank: int) -> int:
    """K/V heads in rank `rank`'s cache."""
    heads, kv_heads, _ = _config_shape(config)
    return head_split(heads, kv_heads, world, rank).kv_heads


def check_shardable(config: Any, world: int, quantize: str | None = None, file_int4: bool = False) -> None:
    """Refuse a model (by its config) that `world` ranks cannot split, or whose int4 groups a split would cut;
    `file_int4`: int4 is the model file's own (a Q4 GGUF served as it is), not asked for by `--quantize int4`."""
    from codefoundry.model import GPTBigCodeConfig, LlamaConfig, Starcoder2Config

    if not isinstance(config, (GPTBigCodeConfig, LlamaConfig, Starcoder2Config)):
        raise UserError(f"--tp {world}: tensor-parallel serving supports gpt_bigcode, llama and starcoder2 models; "
                        f"this one is {type(config).__name__}", hint="serve it with --tp 1")
    heads, kv_heads, width = _config_shape(config)
    for rank in range(world):
        head_split(heads, kv_heads, world, rank)
    if width % world:
        raise UserError(f"--tp {world} does not divide the MLP width {width}")
    if quantize == "int4":
        _check_int4_layout(config, world, file_int4)


def _check_int4_layout(config: Any, world: int, file_int4: bool = False) -> None:
    """int4 with --tp: every layer that is int4 in the whole model must be int4 in each shard (group-aligned)."""
    from codefoundry.model import model_class

    with torch.device("meta"):
        whole = model_class(config)(config)
    before = _int4_layout(whole)
    for rank in range(world):
        with torch.device("meta"):
            shard = shard_model(model_class(config)(config), rank, world)
        for name, fits in _int4_layout(shard).items():
            if before.get(name) == fits:
                continue
            if file_int4:
                raise UserError(f"--tp {world} with the model file's own int4 weights (a Q4 GGUF is served int4 "
                                f"unless --quantize says otherwise): rank {rank}'s shard of {name} does not fall on "
                                f"int4 groups of {DEFAULT_GROUP_SIZE} input features",
                                hint="add --quantize none (float weights) or --quantize int8, or use a --tp that "
                                     "keeps the groups whole")
            raise UserError(f"--tp {world} with --quantize int4: rank {rank}'s shard of {name} does not fall on "
                            f"int4 groups of {DEFAULT_GROUP_SIZE} input features",
                            hint="use --quantize int8 with --tp, or a --tp that keeps the groups whole")


def _int4_layout(model: nn.Module) -> dict[str, bool]:
    """Layer name → whether `quantize_model` would make it int4 (q/k/v and gate/up as it fuses them)."""
    head = getattr(model, "lm_head", None)
    out: dict[str, bool] = {}
    for name, module in model.named_modules():
        fused = [getattr(module, n, None) for n in ("q_proj", "k_proj", "v_proj")]
        if hasattr(module, "qkv_proj") and all(isinstance(m, nn.Linear) for m in fused):
            out[f"{name}.qkv"] = int4_fits(sum(m.out_features for m in fused), fused[0].in_features)
        fused = [getattr(module, n, None) for n in ("gate_proj", "up_proj")]
        if hasattr(module, "gate_up_proj") and all(isinstance(m, nn.Linear) for m in fused):
            out[f"{name}.gate_up"] = int4_fits(sum(m.out_features for m in fused), fused[0].in_features)
        for child_name, child in module.named_children():
            if not isinstance(child, nn.Linear) or child is head or child_name in (
                    "q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"):
                continue
            if isinstance(module, RowParallelLinear):
                key = name                                        # the layer it shards
            elif child_name in ("q_attn", "kv_attn"):
                key = f"{name}.c_attn"                            # multi-query's c_attn, in two when sharded
            else:
                key = f"{name}.{child_name}"
            out[key] = out.get(key, True) and int4_fits(child.out_features, child.in_features)
    return out


# ---- sharding a model ------------------------------------------------------------------------------------------

def shard_model(model: nn.Module, rank: int, world: int, quantize: str | None = None) -> nn.Module:
    """Keep rank `rank`'s shard of every block of `model` (float weights), in place, quantized as `quantize` says
    (None, "int8", "int4"); returns the model."""
    check_shardable(model.config, world)
    int8 = quantize is not None           # int4 mode keeps int8 where int4 does not fit
    if hasattr(model, "transformer"):
        _shard_gpt_bigcode(model, rank, world, int8)
    else:
        _shard_rotary(model, rank, world, int8)
    if quantize is not None:
        quantize_shard(model, quantize)
    return model


def quantize_shard(model: nn.Module, mode: str) -> None:
    """`quantize_model` on a shard, then the row-parallel int8 layers given the whole layer's values (module doc)."""
    quantize_model(model, mode)           # type: ignore[arg-type]
    for module in model.modules():
        if isinstance(module, RowParallelLinear) and module.whole_int8 is not None:
            layer = module.linear
            if isinstance(layer, QuantizedLinear) and layer.mode == "int8":
                q, scales = module.whole_int8
                layer.qweight.copy_(q)
                layer.scales.copy_(scales.to(layer.scales.dtype))
            module.whole_int8 = None


def attach_gguf_int4(model: nn.Module, path: str | Path) -> None:
    """Give `model`'s linear layers the Q4 blocks of GGUF file `path` (as `load_model(..., "int4")` reads them),
    so that each shard slices the file's own values."""
    from codefoundry.model.gguf_import import q4_linear_weights
    from codefoundry.model.quantize import attach_int4_sources

    attach_int4_sources(model, q4_linear_weights(path))


def _shard_gpt_bigcode(model: nn.Module, rank: int, world: int, int8: bool) -> None:
    for block in model.transformer.h:
        attn, mlp = block.attn, block.mlp
        split = head_split(attn.n_head, attn.kv_heads, world, rank)
        hd, fused = attn.head_dim, attn.c_attn
        if attn.multi_query:                  # [Q | K | V]: this rank's query heads; the one K/V head whole
            C = attn.n_head * hd
            attn.q_attn = _rows(fused, (split.q_start * hd, split.q_stop * hd))
            attn.kv_attn = _rows(fused, (C, fused.out_features))
            del attn.c_attn
            attn.c_attn = None
        else:                                 # interleaved per head [q_h k_h v_h]: a slice of whole heads
            attn.c_attn = _rows(fused, (split.q_start * 3 * hd, split.q_stop * 3 * hd))
        attn.c_proj = RowParallelLinear(attn.c_proj, split.q_start * hd, split.q_stop * hd, int8)
        width = mlp.c_fc.out_features // world
        mlp.c_fc = _rows(mlp.c_fc, (rank * width, (rank + 1) * width))
        mlp.c_proj = RowParallelLinear(mlp.c_proj, rank * width, (rank + 1) * width, int8)


def _shard_rotary(model: nn.Module, rank: int, world: int, int8: bool) -> None:
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        split = head_split(attn.n_head, attn.kv_heads, world, rank)
        hd = attn.head_dim
        attn.q_proj = _rows(attn.q_proj, (split.q_start * hd, split.q_stop * hd))
        attn.k_proj = _rows(attn.k_proj, (split.kv_start * hd, split.kv_stop * hd))
        attn.v_proj = _rows(attn.v_proj, (split.kv_start * hd, split.kv_stop * hd))
        attn.o_proj = RowParallelLinear(attn.o_proj, split.q_start * hd, split.q_stop * hd, int8)
        attn.n_head, attn.kv_heads = split.n_head, split.kv_heads     # the shapes its qkv views use
        ups = ("gate_proj", "up_proj") if hasattr(mlp, "gate_proj") else ("c_fc",)
        down = "down_proj" if hasattr(mlp, "down_proj") else "c_proj"
        width = getattr(mlp, ups[0]).out_features // world
        for name in ups:
            setattr(mlp, name, _rows(getattr(mlp, name), (rank * width, (rank + 1) * width)))
        setattr(mlp, down, RowParallelLinear(getattr(mlp, down), rank * width, (rank + 1) * width, int8))
