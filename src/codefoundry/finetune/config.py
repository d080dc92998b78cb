"""Settings of `codefoundry finetune`; defaults cite the StarCoder fine-tune they come from.

Source of the defaults: bigcode-project/starcoder `finetune/finetune.py` and its README command
(LoRA r 16, alpha 32, dropout 0.05; lr 1e-4 with cosine decay and 100 warmup steps; weight decay
0.05; 16 sequences per optimizer step).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from codefoundry.config import StageConfig

DataFormat = Literal["auto", "instruction", "chat", "commits", "dataset"]


class LoraSettings(StageConfig):
    """The adapter: `peft.LoraConfig` fields."""

    r: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | None = None
    """Module names to adapt (suffixes, as PEFT matches them). None: those of StarCoder's fine-tune
    (`c_attn`, `c_proj`) and PEFT's Llama default (`q_proj`, `v_proj`) that the architecture has."""
    trainable_tokens: list[str] = Field(default_factory=list)
    """Tokens (by text, e.g. `<fim_middle>`) whose embedding rows are trained and saved with the adapter (PEFT's
    `trainable_token_indices`): tokens added to a base model's tokenizer, which it has never seen. Tied input and
    output embeddings stay tied: the rows replace both wherever the adapter is applied."""


class FinetuneDataSettings(StageConfig):
    """How `--data` becomes training sequences."""

    format: DataFormat = "auto"
    """auto: a directory is a curated `dataset/`; a JSONL file is read by its first row's keys
    (`instruction`/`response`, `messages`, or `old_contents`/`new_contents`/`message`)."""
    mask_prompt: bool = True
    """Instruction, chat and commit rows: only the response's tokens count in the loss."""
    template: Literal["auto", "chat", "plain"] = "auto"
    """Instruction rows: the model's chat template (auto: when it has one), or StarCoder's
    fine-tune prompt `Question: …\\n\\nAnswer: …` (plain)."""
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of rows (JSONL) or repositories (dataset/) held out for the validation loss."""
    fim_rate: float | None = Field(None, ge=0, le=1)
    """dataset/ only: FIM probability per document (None: 0.5, as in pretraining, when the tokenizer
    has the FIM tokens, else 0); with fim_holes=lines, per request (None: 1; the rest left-to-right)."""
    fim_spm_rate: float = Field(0.5, ge=0, le=1)
    fim_holes: Literal["documents", "lines"] = "documents"
    """dataset/ only. documents: pretraining's FIM on seq_len chunks, every token learned. lines: one
    IDE-style request per example (`codefoundry.finetune.lines`): a hole of 1..fim_max_lines whole lines
    between short prefix/suffix windows (FIM rate 1 unless fim_rate says), only the middle and its EOS learned."""
    fim_max_prefix_tokens: int = Field(256, ge=0)
    """lines: prefix window before the hole, in tokens."""
    fim_max_suffix_tokens: int = Field(128, ge=0)
    """lines: suffix window after the hole, in tokens."""
    fim_max_lines: int = Field(3, ge=1)
    """lines: the longest hole, in lines (one line half of the time)."""
    examples: Literal["lines", "functions", "mix"] = "lines"
    """fim_holes=lines only. lines: the FIM requests above. functions: signature + docstring → body + EOS of
    Python functions (`codefoundry.finetune.functions`, HumanEval's shape). mix: as many of each."""

    @model_validator(mode="after")
    def _check(self) -> FinetuneDataSettings:
        if self.examples != "lines" and self.fim_holes != "lines":   # else silently ignored
            raise ValueError(f"examples={self.examples} needs fim_holes=lines (--fim-holes lines)")
        return self


class FinetuneConfig(StageConfig):
    """The fine-tuning run."""

    lora: LoraSettings = Field(default_factory=LoraSettings)
    data: FinetuneDataSettings = Field(default_factory=FinetuneDataSettings)
    seq_len: int = Field(1024, ge=8)
    """Longest training sequence in tokens; longer rows are skipped (JSONL), dataset/ is chunked to it."""
    micro_batch_size: int = Field(4, ge=1)
    """Sequences per forward pass."""
    grad_accum: int = Field(4, ge=1)
    """Micro-batches per optimizer step (StarCoder's fine-tune: 16 sequences per step)."""
    max_steps: int | None = Field(None, ge=1)
    """None: one epoch of the training rows (or until max_time)."""
    max_time: float | None = Field(None, gt=0)
    """Stop after this many seconds of training (the `--max-time 10m` flag)."""
    lr: float = Field(1e-4, gt=0)
    min_lr: float = Field(0.0, ge=0)          # transformers' cosine schedule decays to 0
    warmup_steps: int | None = Field(None, ge=0)
    """None: StarCoder's 100, but at most a tenth of the cosine horizon."""
    decay_steps: int | None = Field(None, ge=1)
    """Cosine horizon (None: max_steps, or estimated from the first step under max_time); a resume keeps it."""
    weight_decay: float = Field(0.05, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    eval_interval: int = Field(50, ge=1)
    eval_max_sequences: int = Field(256, ge=1)
    """Validation sequences scored at each evaluation (the first ones of the held-out rows)."""
    checkpoint_interval: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_interval: int = Field(1, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 base weights and autocast on GPU and on a CPU with bf16 hardware (AMX, AVX-512 BF16), else
    fp32. The adapter's weights and optimizer stay fp32."""
    device: str | None = None
    """cuda, cpu, … (None: cuda when available)."""
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        return self
