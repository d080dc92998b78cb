"""How big each stage of the demo is for a time budget (a leaf module: the stages' demo parts import it)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BUDGET_S = 900.0


@dataclass(frozen=True)
class DemoPlan:
    """How big each stage is for a time budget; the default budget (15 min) gives the figures below."""

    budget_s: float
    files_per_repo: int            # 100: files of each installed distribution (and of the stdlib) curated
    tokenizer_bytes: int           # 20 MB of code to train the tokenizer on
    vocab_size: int                # 8192
    pretrain_s: float              # 90 s of `small` pretraining (it scores 0 either way: the honest from-scratch row)
    finetune_s: float              # 414 s of LoRA fine-tuning (time-bound: a faster loop gives more steps)
    humaneval_limit: int           # all 164 HumanEval problems, greedy (SmolLM2 solves 7; 32 gave 4 vs 2: noise)
    infilling_limit: int           # the first 200 single-line infilling problems (40 HumanEval functions), greedy
    humaneval_new_tokens: int = 160
    infilling_new_tokens: int = 24
    probe_requests: int = 8        # concurrent streamed requests in the serving probe
    probe_new_tokens: int = 32

    @classmethod
    def for_budget(cls, budget_s: float) -> DemoPlan:
        # the evaluation of three models on 164 + 200 problems, base and fine-tune in one engine and one batch
        # (eval.demo), takes ~4.5 min of a quiet 2-core run (it took ~8 as three separate ones): the default
        # budget's last minutes, so a score difference of a few problems is one the reader can trust; what that
        # saved went to the fine-tune. Tiny budgets (tests, a first look) keep a couple of problems: their
        # models score 0 anyway
        scale = budget_s / DEFAULT_BUDGET_S
        return cls(budget_s=budget_s,
                   files_per_repo=max(5, min(1000, round(100 * scale))),
                   tokenizer_bytes=max(200_000, round(20_000_000 * scale)),
                   vocab_size=8192 if scale >= 0.3 else 2048,
                   pretrain_s=max(5.0, 0.08 * budget_s),
                   finetune_s=max(5.0, 0.46 * budget_s),
                   humaneval_limit=max(2, min(164, round((164 if scale >= 0.3 else 32) * scale))),
                   infilling_limit=max(2, min(1033, round((200 if scale >= 0.3 else 40) * scale))),
                   humaneval_new_tokens=160 if scale >= 0.3 else 24,
                   probe_requests=8 if scale >= 0.3 else 4,
                   probe_new_tokens=32 if scale >= 0.3 else 8)
