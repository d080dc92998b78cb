"""The one sampler: a batch of logits with per-row parameters → next tokens and their logprobs.

Logit processing follows TGI's `HeterogeneousNextTokenChooser` order: watermark, (grammar masks and
OpenAI's `logit_bias`, before anything else reads the logits), repetition penalty,
frequency and presence penalties, then the warpers temperature, top-k, top-p, typical-p (HF's definitions),
then greedy argmax or a random draw. Each step is one vectorized op over the rows that use it, and a
row pays only for the processors its parameters turn on (a greedy batch is one argmax over log-softmax).

Frequency and presence penalties have two definitions: TGI's (`count / tokens so far`, over prompt
and generated tokens) on TGI's routes, and OpenAI's (`count`, over generated tokens only, as the
OpenAI API reference and vLLM define them) for rows with `openai_penalties`.

The watermark is Kirchenbauer et al.'s "A Watermark for Large Language Models" as TGI implements
it (`utils/watermark.py`): the previous token seeds a generator with `HASH_KEY * token`, a random
permutation of the vocabulary picks the green list (its first `gamma * V` ids), and green logits
get `+delta`. The generator is always a CPU one, so a detector reproduces the list on any device.

Randomness is counter-based: row r draws one uniform `u = hash(seed_r, step_r)` (splitmix64)
and takes the token where the cumulative distribution passes `u` (inverse-CDF sampling).
So a request's tokens depend only on its seed, its step and its own logits, never on which
other requests share the batch or in what order — the server can batch freely and a seed
reproduces a completion exactly.

Logprobs are those of the distribution the token was chosen from (after penalties and
warpers), as TGI reports them; greedy rows have no warpers, so theirs are the model's
(penalized) log-softmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from codefoundry.generate.params import SamplingParams

MASK64 = 2**64 - 1
WATERMARK_GAMMA = 0.5          # TGI's defaults (its WATERMARK_GAMMA / WATERMARK_DELTA)
WATERMARK_DELTA = 2.0
WATERMARK_HASH_KEY = 15485863  # a large prime, as in the paper's reference code and TGI


def splitmix64(x: int) -> int:
    """One round of splitmix64 (Steele et al. 2014): a fast, well-mixed 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def uniform(seed: int, step: int) -> float:
    """A uniform in [0, 1) that is a pure function of (seed, step): 53 random bits."""
    return (splitmix64(splitmix64(seed & MASK64) ^ (step & MASK64)) >> 11) * 2.0**-53


@dataclass
class SampleRow:
    """One row of a sampling batch."""

    params: SamplingParams
    token_ids: Sequence[int]   # prompt + generated so far (for the penalties)
    step: int                  # index of the token being chosen among the generated ones (0 = first)
    seed: int | None = None    # the request's resolved seed (needed when params.sampling)


@dataclass
class SampleResult:
    token_ids: list[int]                           # [B] chosen tokens
    logprobs: list[float]                          # [B] their logprobs
    top_tokens: list[list[tuple[int, float]]]      # [B][top_n] (id, logprob), best first; [] when not asked


def apply_token_masks(scores: torch.Tensor, masks: Sequence[torch.Tensor | None]) -> None:
    """Disallowed tokens of the masked rows to -inf, in place, before penalties and warpers (so top-p and
    top-k choose among allowed tokens only); rows without a mask are untouched."""
    idx = [i for i, m in enumerate(masks) if m is not None]
    if not idx:
        return
    allowed = torch.stack([masks[i] for i in idx]).to(scores.device)
    rows = torch.tensor(idx, device=scores.device)
    scores[rows] = scores[rows].masked_fill(~allowed[:, :scores.shape[1]], -float("inf"))


class Sampler:
    """Stateless: `sample(logits[B, V], rows)`. Processing runs in float32 (float64 logits stay float64)."""

    def sample(self, logits: torch.Tensor, rows: Sequence[SampleRow],
               masks: Sequence[torch.Tensor | None] | None = None) -> SampleResult:
        """`masks`: per row, a bool [V] tensor of the tokens it may pick (a grammar's), or None for any token."""
        if logits.dim() != 2 or logits.shape[0] != len(rows):
            raise ValueError(f"logits must be [B={len(rows)}, V], got {list(logits.shape)}")
        scores = logits if logits.dtype == torch.float64 else logits.float()
        scores = scores.clone()
        params = [r.params for r in rows]
        device = scores.device

        apply_watermark(scores, rows)
        if masks is not None:
            apply_token_masks(scores, masks)
        apply_logit_bias(scores, rows)
        self._penalize(scores, rows)
        apply_openai_penalties(scores, rows)
        self._warp(scores, params)

        logprobs = torch.log_softmax(scores, dim=-1)                       # (B, V)
        chosen = scores.argmax(dim=-1)                                      # greedy for every row first
        sample_rows = [i for i, p in enumerate(params) if p.sampling]
        if sample_rows:
            idx = torch.tensor(sample_rows, device=device)
            for i in sample_rows:
                if rows[i].seed is None:
                    raise ValueError(f"row {i} samples but has no seed")
            u = torch.tensor([uniform(rows[i].seed, rows[i].step) for i in sample_rows],
                             dtype=torch.float64, device=device)
            probs = logprobs[idx].double().exp()                           # (R, V)
            cdf = probs.cumsum(dim=-1)
            target = (u * cdf[:, -1]).unsqueeze(-1)                          # (R, 1)
            drawn = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=scores.shape[1] - 1)
            chosen[idx] = drawn

        chosen_lp = logprobs.gather(1, chosen.unsqueeze(-1)).squeeze(-1)
        top_n = max(p.top_n_tokens for p in params)
        top: list[list[tuple[int, float]]] = [[] for _ in rows]
        if top_n:
            values, ids = logprobs.topk(min(top_n, scores.shape[1]), dim=-1)
            values, ids = values.tolist(), ids.tolist()
            top = [list(zip(ids[i][:p.top_n_tokens], values[i][:p.top_n_tokens], strict=True))
                   for i, p in enumerate(params)]
        return SampleResult(chosen.tolist(), chosen_lp.tolist(), top)

    @staticmethod
    def _penalize(scores: torch.Tensor, rows: Sequence[SampleRow]) -> None:
        """Repetition (HF/CTRL), frequency (TGI: penalty × count / len) and presence penalties, in place."""
        rep = [i for i, r in enumerate(rows) if r.params.repetition_penalty not in (None, 1.0)]
        tgi = [i for i, r in enumerate(rows) if not r.params.openai_penalties]
        freq = [i for i in tgi if rows[i].params.frequency_penalty not in (None, 0.0)]
        pres = [i for i in tgi if rows[i].params.presence_penalty not in (None, 0.0)]
        if not rep and not freq and not pres:
            return
        V, device = scores.shape[1], scores.device
        which = sorted(set(rep) | set(freq) | set(pres))
        counts = torch.zeros(len(which), V, dtype=scores.dtype, device=device)
        for j, i in enumerate(which):
            ids = torch.as_tensor(list(rows[i].token_ids), dtype=torch.long, device=device)
            ids = ids[ids < V]
            counts[j].scatter_add_(0, ids, torch.ones_like(ids, dtype=scores.dtype))
        pos = {i: j for j, i in enumerate(which)}
        if rep:
            r_idx = torch.tensor(rep, device=device)
            penalty = torch.tensor([rows[i].params.repetition_penalty for i in rep],
                                   dtype=scores.dtype, device=device).unsqueeze(-1)
            seen = counts[[pos[i] for i in rep]] > 0
            s = scores[r_idx]
            penalized = torch.where(s < 0, s * penalty, s / penalty)
            scores[r_idx] = torch.where(seen, penalized, s)
        if freq:
            f_idx = torch.tensor(freq, device=device)
            penalty = torch.tensor([rows[i].params.frequency_penalty for i in freq],
                                   dtype=scores.dtype, device=device).unsqueeze(-1)
            lengths = torch.tensor([max(1, len(rows[i].token_ids)) for i in freq],
                                   dtype=scores.dtype, device=device).unsqueeze(-1)
            scores[f_idx] -= penalty * counts[[pos[i] for i in freq]] / lengths
        if pres:
            p_idx = torch.tensor(pres, device=device)
            penalty = torch.tensor([rows[i].params.presence_penalty for i in pres],
                                   dtype=scores.dtype, device=device).unsqueeze(-1)
            scores[p_idx] -= penalty * (counts[[pos[i] for i in pres]] > 0).to(scores.dtype)

    @staticmethod
    def _warp(scores: torch.Tensor, params: Sequence[SamplingParams]) -> None:
        """Temperature, top-k, top-p, typical-p (HF's warpers, min_tokens_to_keep=1), in place."""
        device = scores.device

        def rows_with(attr: str, active) -> tuple[torch.Tensor, torch.Tensor] | None:
            idx = [i for i, p in enumerate(params) if getattr(p, attr) is not None and active(getattr(p, attr))]
            if not idx:
                return None
            values = torch.tensor([getattr(params[i], attr) for i in idx], dtype=scores.dtype, device=device)
            return torch.tensor(idx, device=device), values.unsqueeze(-1)

        if (t := rows_with("temperature", lambda v: v != 1.0)) is not None:
            idx, temp = t
            scores[idx] = scores[idx] / temp
        if (t := rows_with("top_k", lambda v: v < scores.shape[1])) is not None:
            idx, k = t
            s = scores[idx]
            kth = s.sort(dim=-1, descending=True).values.gather(1, k.long() - 1)   # (R, 1)
            scores[idx] = s.masked_fill(s < kth, -float("inf"))
        if (t := rows_with("top_p", lambda v: True)) is not None:
            idx, top_p = t
            s = scores[idx]
            sorted_s, sorted_i = s.sort(dim=-1, descending=False)
            cum = sorted_s.softmax(dim=-1).cumsum(dim=-1)
            remove = cum <= 1 - top_p
            remove[:, -1] = False                                              # keep at least one token
            scores[idx] = s.masked_fill(remove.scatter(1, sorted_i, remove), -float("inf"))
        if (t := rows_with("typical_p", lambda v: True)) is not None:
            idx, mass = t
            s = scores[idx]
            logp = s.log_softmax(dim=-1)
            p = logp.exp()
            entropy = -(logp * p).nansum(dim=-1, keepdim=True)
            shifted = (-logp - entropy).abs()
            sorted_shift, sorted_i = shifted.sort(dim=-1)
            sorted_s = s.gather(1, sorted_i)
            cum = sorted_s.softmax(dim=-1).cumsum(dim=-1)
            last = (cum < mass).sum(dim=1).clamp(max=s.shape[1] - 1)
            remove = sorted_shift > sorted_shift.gather(1, last.unsqueeze(-1))
            scores[idx] = s.masked_fill(remove.scatter(1, sorted_i, remove), -float("inf"))


def watermark_greenlist(prev_token: int, vocab_size: int, gamma: float = WATERMARK_GAMMA) -> torch.Tensor:
    """The green token ids after `prev_token` (TGI's `_get_greenlist_ids`, on a CPU generator)."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(WATERMARK_HASH_KEY * prev_token)
    return torch.randperm(vocab_size, generator=generator)[:int(vocab_size * gamma)]


def apply_watermark(scores: torch.Tensor, rows: Sequence[SampleRow], delta: float = WATERMARK_DELTA) -> None:
    """Add `delta` to the green list of every row with `watermark`, in place (TGI applies it before penalties)."""
    for i, row in enumerate(rows):
        if row.params.watermark and row.token_ids:
            green = watermark_greenlist(int(row.token_ids[-1]), scores.shape[1]).to(scores.device)
            scores[i, green] += delta


def apply_logit_bias(scores: torch.Tensor, rows: Sequence[SampleRow]) -> None:
    """OpenAI's `logit_bias`, in place: each listed token's logit plus its bias (-100 all but bans it, +100 all
    but forces it). Ids past the logits' width (padding of a smaller tokenizer) are skipped."""
    for i, row in enumerate(rows):
        bias = [(t, b) for t, b in row.params.logit_bias if t < scores.shape[1]]
        if bias:
            ids = torch.tensor([t for t, _ in bias], device=scores.device)
            scores[i, ids] += torch.tensor([b for _, b in bias], dtype=scores.dtype, device=scores.device)


def apply_openai_penalties(scores: torch.Tensor, rows: Sequence[SampleRow]) -> None:
    """OpenAI's frequency and presence penalties, in place, for rows with `openai_penalties`:
    `logit[j] -= frequency_penalty * c[j] + presence_penalty * (c[j] > 0)`, c counting generated tokens only."""
    which = [i for i, r in enumerate(rows) if r.params.openai_penalties
             and (r.params.frequency_penalty not in (None, 0.0) or r.params.presence_penalty not in (None, 0.0))
             and r.step > 0]
    if not which:
        return
    V, device = scores.shape[1], scores.device
    counts = torch.zeros(len(which), V, dtype=scores.dtype, device=device)
    for j, i in enumerate(which):
        generated = list(rows[i].token_ids[len(rows[i].token_ids) - rows[i].step:])
        ids = torch.as_tensor(generated, dtype=torch.long, device=device)
        ids = ids[ids < V]
        counts[j].scatter_add_(0, ids, torch.ones_like(ids, dtype=scores.dtype))
    freq = torch.tensor([rows[i].params.frequency_penalty or 0.0 for i in which], dtype=scores.dtype,
                        device=device).unsqueeze(-1)
    pres = torch.tensor([rows[i].params.presence_penalty or 0.0 for i in which], dtype=scores.dtype,
                        device=device).unsqueeze(-1)
    idx = torch.tensor(which, device=device)
    scores[idx] -= freq * counts + pres * (counts > 0).to(scores.dtype)
