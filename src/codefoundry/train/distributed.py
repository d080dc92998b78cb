"""Processes under torchrun: process group, DDP, and FSDP2 behind a gradient-parity check.

    torchrun --standalone --nproc_per_node 2 -m codefoundry train --tokens tokens/ --tokenizer tok/ --out model/

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; we pick nccl on GPUs and gloo on CPU (PyTorch's
recommended CPU backend). FSDP2 on gloo is only used when `fsdp_gradient_parity()` passes:
pytorch#162338 ("Incorrect AVG reduction for GLOO", open) sums FSDP2 gradients instead of
averaging them, silently (reference/model.md §5).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from codefoundry.errors import UserError


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str | None:
        return dist.get_backend() if dist.is_initialized() else None

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, value: float) -> float:
        """Mean of a float over processes (SUM then divide: gloo's AVG is not trusted, see above)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item()) / self.world

    def broadcast(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return float(t.item())


def setup() -> Dist:
    """Join the torchrun process group if there is one; otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, local_rank, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def fsdp_gradient_parity(d: Dist, atol: float = 1e-6) -> tuple[bool, float]:
    """Do FSDP2's gradients equal plain full-batch gradients here? (max abs difference)

    Every process builds the same small MLP; each feeds its own slice of one batch through
    `fully_shard`-ed copies, while the reference computes the mean loss over the whole batch
    unsharded. Averaging bugs in the backend's reduce-scatter show up as a factor of `world`.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(1234)
    ref = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8)).to(d.device)
    sharded = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8)).to(d.device)
    sharded.load_state_dict(ref.state_dict())
    x = torch.randn(4 * d.world, 16, generator=torch.Generator().manual_seed(99)).to(d.device)
    ref(x).pow(2).mean().backward()
    mesh = init_device_mesh(d.device.type, (d.world,))
    for layer in (sharded[0], sharded[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    sharded(x[4 * d.rank:4 * (d.rank + 1)]).pow(2).mean().backward()
    worst = 0.0
    for (_, p_ref), (_, p) in zip(ref.named_parameters(), sharded.named_parameters(), strict=True):
        grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
        worst = max(worst, float((grad - p_ref.grad).abs().max()))
    worst = max(worst, 0.0)
    if d.world > 1:
        t = torch.tensor([worst], device=d.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        worst = float(t.item())
    return worst <= atol, worst


def shard_fsdp(model: nn.Module, d: Dist, blocks: list[nn.Module], mesh: Any = None, dp_tp: Any = None,
               reshard_after_forward: bool = True) -> nn.Module:
    """FSDP2: each block, then the root (tied wte/lm_head live at the root). Refuses on a failing gloo.

    `mesh`: the data-parallel dimension of a larger mesh (blocks already tensor-parallel: FSDP2 shards
    their shards again, torchtitan's 2-D layout; or a pipeline stage); None: all processes. `dp_tp`: the
    `dp × tp` mesh, flattened so that reducing a gradient norm over both is one collective, not two.
    `reshard_after_forward=False` keeps a pipeline stage's weights gathered from its first micro-batch's
    forward to its last backward (torchtitan's choice under PP): one all-gather a step, not two per micro-batch."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if d.world == 1:
        raise UserError("--distributed fsdp needs several processes: run under torchrun --nproc_per_node N")
    if d.backend == "gloo":
        ok, diff = fsdp_gradient_parity(d)
        if not ok:
            raise UserError(f"FSDP2 on gloo failed the gradient-parity check (max difference {diff:.3g}): this "
                            "PyTorch's gloo reduce-scatter does not average (pytorch#162338)",
                            hint="use --distributed ddp on CPU, or FSDP2 on GPUs (nccl)")
    mesh = mesh if mesh is not None else init_device_mesh(d.device.type, (d.world,))
    if dp_tp is not None:
        dp_tp._flatten("dp_tp")           # private, as torchtitan uses it: DTensor finds the flattened group
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if d.device.type == "cuda" else MixedPrecisionPolicy())
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    return model


# ---- data parallelism beside tensor and pipeline parallelism: a 2-D or 3-D device mesh -------------

@dataclass(frozen=True)
class Layout:
    """The processes as a `dp × pp × tp` device mesh (torchtitan's dimension names; a dimension of size 1
    is left out, so `dp × tp`, `dp × pp` or all three).

    Ranks are laid out row-major, tensor parallelism innermost, so the `tp` shards of a stage are
    consecutive ranks (on GPUs, the processes of one node, where tensor parallelism's all-reduces
    belong), then the pipeline stages of a replica, then the replicas.
    """

    dp: int
    tp: int
    pp: int
    mesh: Any                           # torch DeviceMesh with dims ("dp", ["pp",] ["tp"])

    @property
    def dp_rank(self) -> int:
        return self.mesh.get_local_rank("dp")

    @property
    def stage_rank(self) -> int:
        """This process's pipeline stage (0 without pipeline parallelism)."""
        return self.mesh.get_local_rank("pp") if self.pp > 1 else 0

    def group(self, dim: str) -> Any:
        return self.mesh.get_group(dim)

    def ranks(self, dim: str) -> list[int]:
        """The global ranks of this process's group along `dim`, in order."""
        return [int(r) for r in dist.get_process_group_ranks(self.group(dim))]

    def pipelines(self) -> list[list[int]]:
        """Every pipeline's ranks, stage by stage: one per data-parallel replica and tensor-parallel shard."""
        ranks = self.mesh.mesh.reshape(self.dp, self.pp, self.tp)
        return ranks.permute(0, 2, 1).reshape(-1, self.pp).tolist()


def make_layout(d: Dist, tp: int, pp: int) -> Layout | None:
    """The mesh for `--tp`/`--pp` beside data parallelism (None when neither is asked for)."""
    from torch.distributed.device_mesh import init_device_mesh

    if tp == 1 and pp == 1:
        return None
    n = tp * pp
    asked = " × ".join(f"{flag} {k}" for flag, k in (("--pp", pp), ("--tp", tp)) if k > 1)
    if d.world % n:
        raise UserError(f"{asked} needs a multiple of {n} processes (torchrun --nproc_per_node {n}, {2 * n}, …); "
                        f"this run has {d.world}", hint=f"the processes form world / {n} data-parallel replicas")
    sizes = {"dp": d.world // n, "pp": pp, "tp": tp}
    dims = tuple(name for name, k in sizes.items() if name == "dp" or k > 1)
    mesh = init_device_mesh(d.device.type, tuple(sizes[name] for name in dims), mesh_dim_names=dims)
    return Layout(d.world // n, tp, pp, mesh)


def average_gradients(params: list[nn.Parameter], layout: Layout) -> None:
    """Average the gradients over the data-parallel replicas: one flat all-reduce after backward.

    What DDP does, without its bucketed overlap with backward: DDP cannot wrap a model whose
    parameters are DTensors or a pipeline stage whose backward the schedule drives. SUM and
    divide, as `Dist.mean` (gloo's AVG is not trusted). Sharded (DTensor) gradients are
    reduced shard by shard: replica r's shard i meets the other replicas' shard i.
    """
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
    from torch.distributed.tensor import DTensor

    if layout.dp == 1:
        return
    with torch.no_grad():
        grads = [p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad for p in params if p.grad is not None]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=layout.group("dp"))
        flat /= layout.dp
        for g, mean in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
            g.copy_(mean)
