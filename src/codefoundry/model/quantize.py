"""Weight-only quantization of a loaded model's linear layers: int8 per output channel, int4 per group.

    model = load_model("model/", quantize="int8")      # or quantize_model(model, "int4")

Only weights are quantized; activations, norms, the KV cache and the residual stream keep the
model's dtype. Each `nn.Linear` becomes a `QuantizedLinear` that holds its weight packed for
PyTorch's weight-only CPU kernels and multiplies through them:

- int8: symmetric, one scale per output channel (`w ≈ q · s`, q in [-127, 127]), through
  `aten._weight_int8pack_mm`;
- int4: asymmetric, one scale and offset per group of `group_size` input channels
  (`w ≈ (q - 8) · s + z`, q in [0, 15]: the tinygemm convention, which is exactly GGUF's Q4_0
  and Q4_1 with block 32), through `aten._weight_int4pack_mm_for_cpu`.

The kernels run in bfloat16 (`compute_dtype`): measured here, their float32 paths are slower than
a dense float32 matmul, the bfloat16 ones 2-4x faster at batch 1. They are matrix-vector
kernels, so for many rows (a prefill chunk, a large batch) the layer dequantizes its weight
to `compute_dtype` and runs one dense matmul instead (`PACKED_KERNEL_MAX_ROWS`).

The output projection (`lm_head`) is int8 in both modes, as llama.cpp's Q4 files keep their
output/token-embedding matrix in Q8_0: it is the layer whose rounding shows most in the
logits. When it is tied to the token embedding, the embedding becomes a `QuantizedEmbedding`
that reads rows of the same int8 table, so the tie survives and the fp32 table is freed.
On devices without these kernels (CUDA, …) every call takes the dequantize path: same numbers,
no speed-up, only the memory saving.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

QuantizeMode = Literal["int8", "int4"]
QUANTIZE_MODES: tuple[str, ...] = ("int8", "int4")
DEFAULT_GROUP_SIZE = 32            # GGUF's Q4 block; the CPU kernel takes 32, 64, 128, 256 dividing K
PACKED_KERNEL_MAX_ROWS = 32        # above: dequantize and run one dense matmul (measured crossover ~40-80 rows)
_ROWS_PER_CHUNK = 4096            # rows quantized at once (bounds the float temporaries of a large table)
_INT4_BLOCK_N = 64                 # the CPU int4 packing interleaves output channels in blocks of 64


class QuantizedLinear(nn.Module):
    """A weight-only quantized `nn.Linear` (see the module docstring); `weight` dequantizes on access."""

    def __init__(self, linear: nn.Linear, mode: QuantizeMode, group_size: int = DEFAULT_GROUP_SIZE,
                 compute_dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        if mode not in QUANTIZE_MODES:
            raise ValueError(f"quantize mode must be one of {', '.join(QUANTIZE_MODES)}, got {mode!r}")
        weight = linear.weight.detach()
        self.out_features, self.in_features = weight.shape
        self.mode, self.group_size, self.compute_dtype = mode, group_size, compute_dtype
        self.out_dtype = weight.dtype
        if mode == "int4" and not int4_fits(self.out_features, self.in_features, group_size):
            raise ValueError(f"int4 needs in_features % {group_size} == 0 and out_features % 16 == 0, "
                             f"got {self.in_features} and {self.out_features}")
        # int4 values read from a file that was quantized already (a GGUF Q4_0/Q4_1 matrix): kept as they are
        source = getattr(linear, "int4_source", None) if group_size == DEFAULT_GROUP_SIZE else None
        if mode == "int8":
            q, scales = quantize_int8(weight)
            self.register_buffer("qweight", q)
            self.register_buffer("scales", scales.to(compute_dtype))
        else:
            q, scale_zeros = ((source[0].to(weight.device), source[1].to(weight.device)) if source is not None
                              else quantize_int4(weight, group_size))
            self.register_buffer("qweight", _pack_int4(q))
            self.register_buffer("scale_zeros", scale_zeros.to(compute_dtype))
        bias = linear.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        # (name, out_features) of the layers stacked into this one, in row order (`_fuse_projections`):
        # what lets a LoRA adapter that targets q_proj find its rows in qkv_proj
        self.fused_parts: tuple[tuple[str, int], ...] | None = getattr(linear, "fused_parts", None)
        self.packed = weight.device.type == "cpu" and _kernel_works(self)
        self.cast_output = True            # False: return the compute dtype (`quantize_model`, inner layers)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight [out, in] in the original dtype (for the loss path and inspection)."""
        return self.dequantized(self.out_dtype)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        if self.mode == "int8":
            return self.qweight.to(dtype) * self.scales.to(dtype)[:, None]
        q = _unpack_int4(self.qweight, self.out_features, self.in_features).to(dtype)
        scales, zeros = self.scale_zeros.to(dtype).unbind(-1)                      # [K / g, N] each
        g = self.group_size
        return ((q - 8).view(self.out_features, -1, g) * scales.T[:, :, None]
                + zeros.T[:, :, None]).view(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        if x2.dtype != self.compute_dtype:
            x2 = x2.to(self.compute_dtype)
        if self.packed and x2.shape[0] <= PACKED_KERNEL_MAX_ROWS:
            if self.mode == "int8":
                y = torch.ops.aten._weight_int8pack_mm(x2, self.qweight, self.scales)
            else:
                y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.qweight, self.group_size, self.scale_zeros)
        else:
            y = F.linear(x2, self.dequantized(self.compute_dtype))
        # the kernel's bf16 result as it is (the next op promotes it, or takes bf16 anyway) unless the caller
        # needs x's dtype: the logits, and a LoRA hook that adds its update in place
        if (self.cast_output or self._forward_hooks) and y.dtype != x.dtype:
            y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y if x.dim() == 2 else y.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.mode == "int4" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}{g}"


class QuantizedEmbedding(nn.Module):
    """An embedding that reads rows of a tied int8 `QuantizedLinear`'s table (one copy of the weights)."""

    def __init__(self, head: QuantizedLinear, dtype: torch.dtype) -> None:
        super().__init__()
        if head.mode != "int8":
            raise ValueError("a tied embedding needs an int8 output projection")
        self.head, self.dtype = [head], dtype      # a list: not a submodule, so its buffers are counted once
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features

    @property
    def weight(self) -> torch.Tensor:
        return self.head[0].weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        head = self.head[0]
        return F.embedding(ids, head.qweight).to(self.dtype) * F.embedding(ids, head.scales[:, None]).to(self.dtype)


def int4_fits(out_features: int, in_features: int, group_size: int = DEFAULT_GROUP_SIZE) -> bool:
    """Whether the CPU int4 kernel takes this shape."""
    return in_features % group_size == 0 and out_features % 16 == 0


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: q [N, K] int8 and scales [N] float32, w ≈ q · s."""
    q = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
    scales = torch.empty(weight.shape[0], dtype=torch.float32, device=weight.device)
    for start in range(0, weight.shape[0], _ROWS_PER_CHUNK):     # row by row: the float temporaries of a
        w = weight[start:start + _ROWS_PER_CHUNK].float()          # chunk, not of a whole vocabulary table
        s = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        q[start:start + len(w)] = torch.round(w / s[:, None]).clamp(-127, 127)
        scales[start:start + len(w)] = s
    return q, scales


def quantize_int4(weight: torch.Tensor, group_size: int = DEFAULT_GROUP_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric group-wise int4 (min/max per group): q [N, K] int32 in [0, 15] and scale_zeros [K / g, N, 2].

    w ≈ (q - 8) · scale + zero, with zero = min + 8 · scale (so q = 0 is the group's minimum).
    """
    n, k = weight.shape
    w = weight.float().view(n, k // group_size, group_size)
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)                                    # [N, K / g]
    scales = ((hi - lo) / 15).clamp(min=1e-12)
    q = torch.round((w - lo[..., None]) / scales[..., None]).clamp(0, 15).to(torch.int32).view(n, k)
    zeros = lo + 8 * scales
    return q, torch.stack((scales, zeros), dim=-1).transpose(0, 1).contiguous()   # [K / g, N, 2]


def from_gguf_q4(d: torch.Tensor, q: torch.Tensor, m: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """GGUF Q4_0 (w = d · (q - 8)) or Q4_1 (w = d · q + m) blocks of 32 as this module's int4: exact.

    `d`, `m`: [N, K / 32] block scales and minimums; `q`: [N, K] in [0, 15]. Returns (q, scale_zeros).
    """
    zeros = torch.zeros_like(d) if m is None else m + 8 * d
    return q.to(torch.int32), torch.stack((d, zeros), dim=-1).transpose(0, 1).contiguous()


def _pack_int4(q: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.cpu().to(torch.int32), 1).to(q.device)


def _unpack_int4(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """The [N, K] uint8 values in [0, 15] of `_convert_weight_to_int4pack_for_cpu`'s layout.

    Output channels come in blocks of 64, each stored as [K, 32] bytes whose low nibble is channel
    j and high nibble channel j + 32; a narrower last block is [K, width / 2] bytes holding
    channels 2j (low) and 2j + 1 (high).
    """
    flat = packed.reshape(-1)
    parts, at = [], 0
    for start in range(0, n, _INT4_BLOCK_N):
        width = min(_INT4_BLOCK_N, n - start)
        block = flat[at:at + k * width // 2].view(k, width // 2)
        at += k * width // 2
        if width == _INT4_BLOCK_N:
            parts.append(torch.cat((block & 15, block >> 4), dim=1).T)         # [width, K]
        else:
            parts.append(torch.stack((block & 15, block >> 4), dim=2).view(k, width).T)
    return torch.cat(parts, dim=0)


def _kernel_works(layer: QuantizedLinear) -> bool:
    """Whether the packed CPU kernel exists here and agrees with the dequantized weight on one row."""
    x = torch.linspace(-1, 1, layer.in_features, dtype=layer.compute_dtype)[None]
    try:
        if layer.mode == "int8":
            y = torch.ops.aten._weight_int8pack_mm(x, layer.qweight, layer.scales)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, layer.qweight, layer.group_size, layer.scale_zeros)
    except (RuntimeError, NotImplementedError, AttributeError):
        return False
    if layer.mode == "int8":      # a sample of rows: a vocabulary-sized table is not dequantized whole
        rows = slice(0, 256)
        ref = F.linear(x.float(), layer.qweight[rows].float() * layer.scales[rows].float()[:, None])
    else:
        rows = slice(None)
        ref = F.linear(x.float(), layer.dequantized(torch.float32))
    y = y[:, rows].float()
    return bool(torch.allclose(y, ref, rtol=0.05, atol=0.05 * float(ref.abs().max()) + 1e-3))


def attach_int4_sources(model: nn.Module, int4_weights: dict) -> None:
    """Give each linear layer but the head whose `<name>.weight` has GGUF Q4 blocks (q, d, m) of its shape those
    blocks as its int4 values, so quantizing keeps the file's own numbers."""
    head = getattr(model, "lm_head", None)
    for name, module in model.named_modules():
        blocks = int4_weights.get(f"{name}.weight")
        if isinstance(module, nn.Linear) and blocks is not None and module is not head \
                and tuple(blocks[0].shape) == tuple(module.weight.shape):
            q, d, m = blocks
            module.int4_source = from_gguf_q4(d, q, m)


def quantize_model(model: nn.Module, mode: QuantizeMode, *, group_size: int = DEFAULT_GROUP_SIZE,
                   compute_dtype: torch.dtype | None = None,
                   int4_weights: Mapping[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] | None = None,
                   ) -> nn.Module:
    """Replace `model`'s linear layers by `QuantizedLinear`s in place; returns `model` (in eval mode).

    int4 layers whose shape the kernel does not take (in_features not a multiple of
    `group_size`, out_features not a multiple of 16) and the output projection are int8.
    `int4_weights`: parameter name → GGUF Q4 blocks (q, d, m) (`gguf_import.q4_linear_weights`);
    in int4 mode those layers keep exactly these values instead of requantizing their weight.
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, got {mode!r}")
    dtype = next(model.parameters()).dtype
    if compute_dtype is None:
        compute_dtype = dtype if dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    head = getattr(model, "lm_head", None)
    embeddings = {id(m.weight): (name, m) for name, m in model.named_modules() if isinstance(m, nn.Embedding)}
    tied = embeddings.get(id(head.weight)) if isinstance(head, nn.Linear) else None
    if mode == "int4" and int4_weights:
        attach_int4_sources(model, int4_weights)
    _fuse_projections(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            layer_mode = mode
            if child is head or (mode == "int4" and not int4_fits(child.out_features, child.in_features, group_size)):
                layer_mode = "int8"
            layer = QuantizedLinear(child, layer_mode, group_size, compute_dtype)
            # a bf16 result feeds the next layer without two casts; the logits stay in the model's dtype
            layer.cast_output = child is head
            setattr(parent, name, layer)
    if tied is not None:
        emb_name, emb = tied
        owner_name, _, attr = emb_name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        setattr(owner, attr, QuantizedEmbedding(model.lm_head, emb.weight.dtype))
    model.eval()
    return model


def _fuse_projections(model: nn.Module) -> None:
    """q/k/v (and a SwiGLU's gate/up) into one linear layer each: one kernel call where there were three.

    Rows are only stacked, and both quantizations work row by row (per channel, or per group
    of one row), so the fused layer holds exactly the values the separate ones would.
    """
    for module in model.modules():
        if all(isinstance(getattr(module, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj")) \
                and hasattr(module, "qkv_proj"):
            module.qkv_proj = _stacked({"q_proj": module.q_proj, "k_proj": module.k_proj, "v_proj": module.v_proj})
            del module.q_proj, module.k_proj, module.v_proj
        if all(isinstance(getattr(module, n, None), nn.Linear) for n in ("gate_proj", "up_proj")) \
                and hasattr(module, "gate_up_proj"):
            module.gate_up_proj = _stacked({"gate_proj": module.gate_proj, "up_proj": module.up_proj})
            del module.gate_proj, module.up_proj


def _stacked(named: dict[str, nn.Linear]) -> nn.Linear:
    layers = list(named.values())
    first = layers[0]
    fused = nn.Linear(first.in_features, sum(m.out_features for m in layers), bias=first.bias is not None,
                      device="meta")
    fused.weight = nn.Parameter(torch.cat([m.weight.detach() for m in layers]), requires_grad=False)
    if first.bias is not None:
        fused.bias = nn.Parameter(torch.cat([m.bias.detach() for m in layers]), requires_grad=False)
    fused.fused_parts = tuple((name, m.out_features) for name, m in named.items())
    sources = [getattr(m, "int4_source", None) for m in layers]
    if all(s is not None for s in sources):          # rows stacked: q by rows, scale_zeros along its N axis
        fused.int4_source = (torch.cat([q for q, _ in sources]), torch.cat([sz for _, sz in sources], dim=1))
    return fused


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (a tied tensor counted once): what the weights take in memory."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def decode_weight_bytes(model: nn.Module) -> int:
    """Bytes of weights read to decode one token: every linear layer and norm, not the embedding tables.

    An embedding lookup reads one row, so the embedding tables are left out unless tied to the
    output projection (then counted once, as that projection).
    """
    skip = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = getattr(model, "lm_head", None)
    if head is not None and isinstance(head, nn.Linear):
        skip.discard(id(head.weight))
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in skip or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


@torch.inference_mode()
def perplexity(model: nn.Module, token_ids: list[int], window: int = 256) -> float:
    """exp(mean next-token cross-entropy) of `model` over `token_ids`, in non-overlapping windows of `window`."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(token_ids) - 1, window):
        chunk = torch.tensor(token_ids[start:start + window + 1], device=device)
        if len(chunk) < 2:
            break
        logits = model(chunk[None, :-1])[0].float()
        total += float(F.cross_entropy(logits, chunk[1:], reduction="sum"))
        count += len(chunk) - 1
    return float(torch.exp(torch.tensor(total / count)))
