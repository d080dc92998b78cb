"""Tensor parallelism for pretraining: Megatron-LM's layout through DTensor's `parallelize_module`.

Each block's matrices are split over the `tp` processes of a device mesh, as Megatron does and
torchtitan writes it with PyTorch's own engine:

    attention:  q (column-parallel: whole heads per process) │ k, v (replicated: multi-query's one
                KV head is too small to split) → SDPA on the local heads → c_proj (row-parallel)
    MLP:        c_fc (column-parallel) → GELU → c_proj (row-parallel)

so a block costs two all-reduces forward and two backward. The vocabulary is split too (Megatron's
vocab-parallel embedding): the token embedding row-wise (each process looks up the ids in its
range, an all-reduce sums), the tied head column-wise with the same rows, so the two stay one
parameter, and the loss is computed on the vocabulary-sharded logits under DTensor's
`loss_parallel` (a max and a sum all-reduced per row, never the whole [N, V] logits on one
process). Positions and LayerNorms stay replicated and get identical gradients everywhere. Multi-head attention's
fused c_attn is interleaved per head, so it is split column-wise as it is; multi-query's
`[Q | K | V]` is split into `q_attn` and `kv_attn` first (`split_multi_query`).

Checkpoints never hold this layout: `plain_state` turns the model's and the optimizer's
state into exactly what a one-process run saves (c_attn fused again, optimizer state keyed by
parameter index), and `load_plain_state` goes back, so a run resumes under any layout and the
model directory loads in transformers.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    loss_parallel,
    parallelize_module,
)

from codefoundry.errors import UserError
from codefoundry.model.loss import IGNORE_INDEX


class ReplicatedParallel(ParallelStyle):
    """Weights replicated over the mesh; each process's output gradient is a partial sum.

    For layers such as multi-query's K/V projection that every process computes in full but
    whose outputs feed only the local heads: the weight gradients (and the input gradient) are
    summed over processes in backward.
    """

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        from torch.distributed.tensor import distribute_module

        def inputs(_module: nn.Module, args: tuple, mesh: DeviceMesh) -> tuple:
            return tuple(DTensor.from_local(a, mesh, [Replicate()], run_check=False) for a in args)

        def outputs(_module: nn.Module, out: DTensor, _mesh: DeviceMesh) -> torch.Tensor:
            return out.to_local(grad_placements=[Partial()])

        return distribute_module(module, device_mesh, input_fn=inputs, output_fn=outputs)


def check_shapes(config: Any, tp: int) -> None:
    """Refuse a model that `tp` processes cannot split evenly, with the reason."""
    if config.n_head % tp:
        raise UserError(f"--tp {tp} does not divide the model's {config.n_head} attention heads")
    if config.inner_dim % tp:
        raise UserError(f"--tp {tp} does not divide the MLP width {config.inner_dim}")
    if config.vocab_size % tp:
        raise UserError(f"--tp {tp} does not divide the vocabulary of {config.vocab_size} tokens")
    if max(config.attn_pdrop, config.resid_pdrop, config.embd_pdrop) > 0:
        raise UserError("dropout with --tp > 1 is not supported: the processes' random streams would drift apart "
                        "on the replicated activations", hint="train with --config dropout: 0")


def split_multi_query(attn: nn.Module) -> None:
    """Replace a multi-query attention's fused c_attn by `q_attn` and `kv_attn` (same weights)."""
    fused = attn.c_attn
    C = attn.n_head * attn.head_dim
    q = nn.Linear(fused.in_features, C, device=fused.weight.device, dtype=fused.weight.dtype)
    kv = nn.Linear(fused.in_features, fused.out_features - C, device=fused.weight.device, dtype=fused.weight.dtype)
    with torch.no_grad():
        q.weight.copy_(fused.weight[:C])
        q.bias.copy_(fused.bias[:C])
        kv.weight.copy_(fused.weight[C:])
        kv.bias.copy_(fused.bias[C:])
    del attn.c_attn
    attn.c_attn, attn.q_attn, attn.kv_attn = None, q, kv


def parallelize_block(block: nn.Module, mesh: DeviceMesh) -> None:
    """Shard one block's attention and MLP over the 1-D `mesh` in place (Megatron's column/row split)."""
    plan: dict[str, ParallelStyle] = {"attn.c_proj": RowwiseParallel(), "mlp.c_fc": ColwiseParallel(),
                                      "mlp.c_proj": RowwiseParallel()}
    if block.attn.multi_query:
        split_multi_query(block.attn)
        plan |= {"attn.q_attn": ColwiseParallel(), "attn.kv_attn": ReplicatedParallel()}
    else:
        plan["attn.c_attn"] = ColwiseParallel()
    parallelize_module(block, mesh, plan)


def vocab_embedding() -> ParallelStyle:
    """The token embedding split row-wise over the vocabulary; the looked-up vectors all-reduced."""
    return RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())


def vocab_head() -> ParallelStyle:
    """The head split column-wise over the vocabulary (the embedding's rows): logits stay sharded for
    `loss_parallel`."""
    return ColwiseParallel(input_layouts=Replicate(), output_layouts=Shard(-1), use_local_output=False)


def parallelize(model: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """Shard every block of a GPTBigCode model over the 1-D `mesh` in place; returns the model."""
    check_shapes(model.config, mesh.size())
    for block in model.transformer.h:
        parallelize_block(block, mesh)
    parallelize_module(model, mesh, {"transformer.wte": vocab_embedding(), "lm_head": vocab_head()})
    model.lm_head.weight = model.transformer.wte.weight        # both Shard(0) over the vocabulary: tied again
    return model


def sharded_loss(logits: DTensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of vocabulary-sharded logits (call under `loss_parallel`, forward and backward)."""
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)


def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: float | None = None,
         autocast: AbstractContextManager = nullcontext()) -> torch.Tensor:
    """The mean cross-entropy of `model` on (x, y) from vocabulary-sharded logits (the forward under `autocast`);
    with `scale`, also backward of loss × scale (accumulation), under the same `loss_parallel` context, as it
    must be."""
    with loss_parallel():
        with autocast:
            value = sharded_loss(model(x), y)                 # logits: DTensor [B, T, V], sharded on V
        if scale is not None:
            (value * scale).backward()
    return value.full_tensor() if isinstance(value, DTensor) else value


def sync_replicated_grads(model: nn.Module) -> None:
    """Sum the partial gradients of replicated weights (multi-query K/V) before clipping and the step."""
    for p in model.parameters():
        g = p.grad
        if isinstance(g, DTensor) and isinstance(p, DTensor) and g.placements != p.placements:
            p.grad = g.redistribute(placements=p.placements)


def clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    """`torch.nn.utils.clip_grad_norm_` over a mix of sharded (DTensor) and replicated gradients."""
    norms = []
    for p in model.parameters():
        if p.grad is not None:
            n = torch.linalg.vector_norm(p.grad)
            norms.append(n.full_tensor() if isinstance(n, DTensor) else n)
    total = float(torch.linalg.vector_norm(torch.stack(norms)))
    coef = min(1.0, max_norm / (total + 1e-6))
    if coef < 1.0:
        for p in model.parameters():
            if p.grad is not None:
                p.grad.mul_(coef)
    return total


# ---- checkpoints in the one-process layout -------------------------------------------------------

def _fuse(state: dict[str, Any], prefix: str) -> None:
    """`prefix`q_attn.* + `prefix`kv_attn.* → `prefix`c_attn.* (rows: Q, then K and V)."""
    for kind in ("weight", "bias"):
        q, kv = state.pop(f"{prefix}q_attn.{kind}"), state.pop(f"{prefix}kv_attn.{kind}")
        state[f"{prefix}c_attn.{kind}"] = _cat(q, kv)


def _split(state: dict[str, Any], prefix: str, rows: int) -> None:
    """`_fuse` undone: `prefix`c_attn.* → `prefix`q_attn.* (the first `rows` rows) and `prefix`kv_attn.*."""
    for kind in ("weight", "bias"):
        q, kv = _cut(state.pop(f"{prefix}c_attn.{kind}"), rows)
        state[f"{prefix}q_attn.{kind}"], state[f"{prefix}kv_attn.{kind}"] = q, kv


def fuse_split_attention(state: dict[str, Any]) -> None:
    """`_fuse` every `…q_attn` / `…kv_attn` pair in `state` (keys: one-process parameter names)."""
    for key in [k for k in state if k.endswith("attn.q_attn.weight")]:
        _fuse(state, key[: -len("q_attn.weight")])


def split_fused_attention(state: dict[str, Any], prefixes: list[tuple[str, int]]) -> None:
    """`_split` the fused c_attn of each (prefix, query rows) present in `state`."""
    for prefix, rows in prefixes:
        if f"{prefix}c_attn.weight" in state:
            _split(state, prefix, rows)


def _split_prefixes(model: nn.Module) -> list[tuple[str, int]]:
    return [(f"transformer.h.{i}.attn.", b.attn.n_head * b.attn.head_dim)
            for i, b in enumerate(model.transformer.h) if getattr(b.attn, "q_attn", None) is not None]


def _cat(q: Any, kv: Any) -> Any:
    if isinstance(q, dict):                                   # an optimizer entry: step, exp_avg, exp_avg_sq
        return {k: (q[k] if k == "step" else torch.cat((q[k], kv[k]))) for k in q}
    return torch.cat((q, kv))


def _cut(fused: Any, rows: int) -> tuple[Any, Any]:
    if isinstance(fused, dict):
        parts = {k: _cut(v, rows) if k != "step" else (v, v.clone()) for k, v in fused.items()}
        return {k: v[0] for k, v in parts.items()}, {k: v[1] for k, v in parts.items()}
    return fused[:rows].clone(), fused[rows:].clone()


def plain_param_order(plain: nn.Module) -> list[str]:
    """Parameter names in the order a one-process run's optimizer numbers them (`loop.param_groups`)."""
    named = [(n, p) for n, p in plain.named_parameters() if p.requires_grad]
    return [n for n, p in named if p.dim() >= 2] + [n for n, p in named if p.dim() < 2]


def plain_state(model: nn.Module, optimizer: torch.optim.Optimizer, order: list[str]) -> tuple[dict, dict]:
    """The model's and optimizer's full state, laid out as a one-process run's `state_dict()`s.

    Collective: every process calls it; rank 0 gets the state, the others empty dicts.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not model_sd:
        return {}, {}
    by_name = dict(optim_sd["state"])
    for prefix, _ in _split_prefixes(model):
        _fuse(model_sd, prefix)
        if f"{prefix}q_attn.weight" in by_name:
            _fuse(by_name, prefix)
    decayed = sum(model_sd[n].dim() >= 2 for n in order)
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in optim_sd["param_groups"]]
    groups = [{**hyper[0], "params": list(range(decayed))}, {**hyper[1], "params": list(range(decayed, len(order)))}]
    return model_sd, {"state": {order.index(n): s for n, s in by_name.items()}, "param_groups": groups}


def load_plain_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, order: list[str]) -> None:
    """Load a one-process run's checkpoint (`plain_state`'s layout) into the parallelized model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    model_sd = dict(state["model"])
    by_name = {order[int(i)]: s for i, s in state["optimizer"]["state"].items()}
    for prefix, rows in _split_prefixes(model):
        _split(model_sd, prefix, rows)
        if f"{prefix}c_attn.weight" in by_name:
            _split(by_name, prefix, rows)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{**{k: v for k, v in g.items() if k != "params"},
               "params": [n for n, p in named if (p.dim() >= 2) == (i == 0)]}
              for i, g in enumerate(state["optimizer"]["param_groups"])]
    set_state_dict(model, optimizer, model_state_dict=model_sd,
                   optim_state_dict={"state": by_name, "param_groups": groups},
                   options=StateDictOptions(full_state_dict=True))
