"""Pipeline parallelism for pretraining through `torch.distributed.pipelining` (1F1B schedule).

The blocks are cut into `pp` consecutive stages, one per process; a step's micro-batches (the
gradient-accumulation micro-batches of a one-process run, in the same order) flow through them
under PyTorch's 1F1B schedule, which scales each micro-batch's gradient by 1/micro-batches as
accumulation does. The first stage holds the embeddings, the last the final LayerNorm and the
head. The head is tied to the token embedding, so, as in Megatron, the last stage keeps a copy
and the two copies' gradients are summed after every backward (`sync_tied_grads`): they start
equal, get equal gradients and equal optimizer steps, and stay equal.

Under `--tp` as well, each stage is split over its tensor-parallel group as the whole model is
(`tensor_parallel`): its blocks, the first stage's embedding and the last stage's head over the
vocabulary (loss under `loss_parallel`), the two tied copies' shards summed pairwise; under
`--distributed fsdp` each stage is then sharded by FSDP2 over the data-parallel replicas, and the
schedule defers FSDP2's gradient reduce-scatter to the step's last micro-batch.

Checkpoints and the model directory are in the one-process layout (`plain_state`,
`load_plain_state`), so a `--pp 2` run resumes at `--pp 1` and the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from codefoundry.errors import UserError
from codefoundry.model.loss import linear_cross_entropy
from codefoundry.train import tensor_parallel

TIED = "transformer.wte.weight"


class Stage(nn.Module):
    """Blocks `first`…`last - 1` of a GPTBigCode model, with the embeddings and/or the head at the ends."""

    def __init__(self, model: nn.Module, first: int, last: int, is_first: bool, is_last: bool) -> None:
        super().__init__()
        t = model.transformer
        self.is_first, self.is_last = is_first, is_last
        self.vocab_parallel = False                           # set when --tp splits the embedding and head
        self.h = nn.ModuleDict({str(i): t.h[i] for i in range(first, last)})    # names keep the block index
        if is_first:
            self.wte, self.wpe = t.wte, t.wpe
        if is_last:
            self.ln_f = t.ln_f
            self.lm_head = nn.Linear(t.wte.weight.shape[1], t.wte.weight.shape[0], bias=False)
            with torch.no_grad():
                self.lm_head.weight.copy_(t.wte.weight)        # the tied head's own copy (summed grads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_first:
            x = self.wte(x) + self.wpe(torch.arange(x.shape[1], device=x.device))
        for block in self.h.values():
            x = block(x)
        return self.ln_f(x) if self.is_last else x

    def loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The one-process model's loss on the last stage's output (from vocabulary-sharded logits under --tp)."""
        if self.vocab_parallel:
            return tensor_parallel.sharded_loss(self.lm_head(hidden), labels).to_local()
        return linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), self.lm_head.weight, labels.reshape(-1))

    def split_prefixes(self) -> list[tuple[str, int]]:
        """(one-process attention prefix, query rows) of the blocks whose c_attn --tp split in two."""
        return [(f"transformer.h.{i}.attn.", b.attn.n_head * b.attn.head_dim)
                for i, b in self.h.items() if getattr(b.attn, "q_attn", None) is not None]

    def plain_name(self, name: str) -> str | None:
        """This stage's parameter name in the one-process model (None: the head's tied copy)."""
        if name == "lm_head.weight":
            return None
        return f"transformer.{name}"


def _pipeline_stage(stage: Stage, rank: int, pp: int, device: torch.device, group: Any = None) -> Any:
    from torch.distributed.pipelining import PipelineStage

    return PipelineStage(stage, rank, pp, device, group=group)       # shapes inferred on the first step


def build(model: nn.Module, pp: int, rank: int, n_microbatches: int, micro: int, seq_len: int,
          device: torch.device, group: Any = None, tp_mesh: Any = None,
          shard: Callable[[Stage], Any] | None = None) -> tuple[Stage, Any]:
    """This process's stage of `model` (`rank`: its stage index in the pipeline `group`, None: all processes)
    and its 1F1B schedule; with `tp_mesh`, the stage's blocks, embedding and head split over it (--tp);
    `shard(stage)` then wraps it further (FSDP2 over the data-parallel replicas)."""
    from torch.distributed.pipelining import Schedule1F1B
    from torch.distributed.tensor.parallel import parallelize_module

    n_layer = len(model.transformer.h)
    if n_layer < pp:
        raise UserError(f"--pp {pp} needs at least {pp} layers; the model has {n_layer}")
    if n_microbatches < pp:
        raise UserError(f"--pp {pp} needs at least {pp} micro-batches per step (1F1B); this run has {n_microbatches}",
                        hint="raise --batch-tokens or lower --micro-batch-size")
    cuts = [round(i * n_layer / pp) for i in range(pp + 1)]
    stage = Stage(model, cuts[rank], cuts[rank + 1], rank == 0, rank == pp - 1).to(device)
    if tp_mesh is not None:
        tensor_parallel.check_shapes(model.config, tp_mesh.size())
        for block in stage.h.values():
            tensor_parallel.parallelize_block(block, tp_mesh)
        ends = {"wte": tensor_parallel.vocab_embedding()} if stage.is_first else {}
        if stage.is_last:
            ends["lm_head"] = tensor_parallel.vocab_head()
        parallelize_module(stage, tp_mesh, ends)
        stage.vocab_parallel = True
    if shard is not None:
        shard(stage)
    pipe = _pipeline_stage(stage, rank, pp, device, group)
    # a loss_fn on every stage, though only the last calls it: without one a stage runs no backward
    return stage, Schedule1F1B(pipe, n_microbatches, loss_fn=stage.loss)


def sync_tied_grads(stage: Stage, pp: int, replicas: list[list[int]] | None = None) -> None:
    """Sum the token embedding's gradient (first stage) and the head copy's (last stage).

    `replicas`: every pipeline's ranks, stage by stage (None: one pipeline, all processes).
    """
    if pp == 1:
        return
    group = _ends_group(replicas or [list(range(pp))])
    for end, weight in ((stage.is_first, "wte"), (stage.is_last, "lm_head")):
        if end:          # under --tp, the first and last stages' vocabulary shards pair up: the same rows
            grad = getattr(stage, weight).weight.grad
            dist.all_reduce(grad.to_local() if isinstance(grad, DTensor) else grad, group=group)


_GROUPS: dict[tuple, Any] = {}


def _ends_group(replicas: list[list[int]]) -> Any:
    """This process's replica's first-and-last-stage group; every process creates every replica's, in the same order."""
    key = tuple(map(tuple, replicas))
    if key not in _GROUPS:
        me = dist.get_rank()
        for ranks in replicas:
            group = dist.new_group([ranks[0], ranks[-1]])
            if me in ranks:
                _GROUPS[key] = group
    return _GROUPS[key]


def clip_grad_norm(stage: Stage, max_norm: float, group: Any = None) -> float:
    """The global gradient norm over the pipeline `group`'s stages (the tied weight counted once), then clipped.

    Under --tp a sharded gradient's norm is gathered over its shards (every shard process gets it)."""
    params = [p for n, p in stage.named_parameters() if p.grad is not None]
    squares = sum(float(_full(torch.linalg.vector_norm(p.grad.double())) ** 2) for n, p in stage.named_parameters()
                  if p.grad is not None and stage.plain_name(n) is not None)
    total = torch.tensor([squares], dtype=torch.float64)
    dist.all_reduce(total, group=group)
    norm = float(total.sqrt())
    coef = min(1.0, max_norm / (norm + 1e-6))
    if coef < 1.0:
        for p in params:
            p.grad.mul_(coef)
    return norm


def last_rank_value(value: float, pp: int, group: Any = None) -> float:
    """A number known on the last stage, on every process of the pipeline `group`."""
    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, group=group, group_src=pp - 1)
    return float(t.item())


# ---- checkpoints in the one-process layout -------------------------------------------------------

def _full(t: Any) -> Any:
    """A DTensor gathered whole (collective over its mesh); anything else as it is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def plain_state(stage: Stage, optimizer: torch.optim.Optimizer, order: list[str]) -> tuple[dict, dict]:
    """The whole model's and optimizer's state on rank 0, as a one-process run saves them (collective).

    Under --tp every shard process of a stage gathers its stage's tensors whole first (same order on all)."""
    name_of = {id(p): n for n, p in stage.named_parameters()}
    by_param = optimizer.state_dict()
    ids = [i for g in by_param["param_groups"] for i in g["params"]]
    plain_of = {i: stage.plain_name(name_of[id(p)]) for i, p in zip(ids, _optimizer_params(optimizer), strict=True)}
    mine_model = {stage.plain_name(n): _full(t).detach().cpu() for n, t in stage.state_dict().items()
                  if stage.plain_name(n) is not None}
    mine_optim = {plain_of[i]: {k: _full(v).cpu() if torch.is_tensor(v) else v for k, v in s.items()}
                  for i, s in by_param["state"].items() if plain_of[i] is not None}
    gathered: list[Any] = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object((mine_model, mine_optim, by_param["param_groups"]), gathered, dst=0)
    if dist.get_rank() != 0:
        return {}, {}
    model_sd: dict[str, torch.Tensor] = {}
    optim_by_name: dict[str, Any] = {}
    for m, o, _ in gathered:
        model_sd |= m
        optim_by_name |= o
    tensor_parallel.fuse_split_attention(model_sd)
    tensor_parallel.fuse_split_attention(optim_by_name)
    model_sd["lm_head.weight"] = model_sd[TIED]
    decayed = sum(model_sd[n].dim() >= 2 for n in order)
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in gathered[0][2]]
    groups = [{**hyper[0], "params": list(range(decayed))}, {**hyper[1], "params": list(range(decayed, len(order)))}]
    return model_sd, {"state": {order.index(n): s for n, s in optim_by_name.items()}, "param_groups": groups}


def load_plain_state(stage: Stage, optimizer: torch.optim.Optimizer, state: dict, order: list[str]) -> None:
    """Load a one-process checkpoint into this stage and its optimizer (its shards of them under --tp)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    model_sd = dict(state["model"])
    by_name = {order[int(i)]: s for i, s in state["optimizer"]["state"].items()}
    prefixes = stage.split_prefixes()
    tensor_parallel.split_fused_attention(model_sd, prefixes)
    tensor_parallel.split_fused_attention(by_name, prefixes)
    named = [(n, p) for n, p in stage.named_parameters() if p.requires_grad]
    own = {n: model_sd[stage.plain_name(n) or TIED] for n, _ in named}
    moments = {n: by_name[stage.plain_name(n) or TIED] for n, _ in named if (stage.plain_name(n) or TIED) in by_name}
    groups = [{**{k: v for k, v in g.items() if k != "params"},
               "params": [n for n, p in named if (p.dim() >= 2) == (i == 0)]}
              for i, g in enumerate(state["optimizer"]["param_groups"])]
    set_state_dict(stage, optimizer, model_state_dict=own, optim_state_dict={"state": moments, "param_groups": groups},
                   options=StateDictOptions(full_state_dict=True))


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in optimizer.param_groups for p in g["params"]]


# ---- a step and an evaluation ----------------------------------------------------------------------

def _whole_batch(batcher: Any, firsts: list[int], size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The micro-batches starting at `firsts` (each `size` sequences), stacked in order."""
    pairs = [batcher.batch(range(f, f + size)) for f in firsts]
    return torch.cat([x for x, _ in pairs]).to(device), torch.cat([y for _, y in pairs]).to(device)


def _run(stage: Stage, schedule: Any, x: torch.Tensor, y: torch.Tensor, pp: int, train: bool,
         group: Any = None) -> float:
    from torch.distributed.tensor.parallel import loss_parallel

    losses: list[torch.Tensor] = []
    run = schedule.step if train else schedule.eval
    with loss_parallel() if stage.vocab_parallel else nullcontext():     # the last stage's backward too
        if stage.is_first:
            run(x)
        elif stage.is_last:
            run(target=y, losses=losses)
        else:
            run()
    mean = float(torch.stack([loss.detach().float() for loss in losses]).mean()) if stage.is_last else 0.0
    return last_rank_value(mean, pp, group)


def train_step(stage: Stage, schedule: Any, batcher: Any, firsts: list[int], size: int, device: torch.device,
               pp: int, group: Any = None) -> float:
    """Forward and backward of one optimizer step's micro-batches; their mean loss, on every process."""
    x, y = _whole_batch(batcher, firsts, size, device)
    return _run(stage, schedule, x, y, pp, True, group)


def eval_schedule(stage: Stage, pp: int, rank: int, n_batches: int, micro: int, seq_len: int,
                  device: torch.device, group: Any = None) -> Any:
    """A forward-only GPipe schedule over `n_batches` validation micro-batches, on the same stage."""
    from torch.distributed.pipelining import ScheduleGPipe

    return ScheduleGPipe(_pipeline_stage(stage, rank, pp, device, group), n_batches,
                         loss_fn=stage.loss)


def evaluate(stage: Stage, schedule: Any, batcher: Any, n_batches: int, size: int, device: torch.device,
             pp: int, group: Any = None) -> float:
    """The one-process run's validation loss: the mean over `n_batches` batches of `size` sequences."""
    x, y = _whole_batch(batcher, [b * size for b in range(n_batches)], size, device)
    with torch.no_grad():
        value = _run(stage, schedule, x, y, pp, False, group)
    stage.train()
    return value
