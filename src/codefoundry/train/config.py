"""Settings of `codefoundry train pack` and `codefoundry train`; defaults cite their source."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from codefoundry.config import StageConfig
from codefoundry.train.fim import FIM_RATE, FIM_SPM_RATE


class PackConfig(StageConfig):
    """How a dataset becomes a `tokens/` artifact."""

    validation_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    """Share of repositories held out for validation (whole repositories: none is on both sides)."""
    subset_weights: dict[str, float] = Field(default_factory=dict)
    """Sampling weight per subset (`data/<subset>/`); missing subsets weigh 1.0, 0 leaves one out."""
    metadata_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Probability of each StarCoder metadata prefix (`<reponame>`, `<filename>`, `<gh_stars>`) per
    document; StarCoder used 0.2 for each (arXiv 2305.06161 §5.1). 0 turns them off."""
    workers: int | None = Field(None, ge=1)
    """Tokenizer processes (None: number of cores)."""
    seed: int = 0


Preset = Literal["tiny", "small", "long", "125m", "santacoder-1b", "starcoder-15b"]


class TrainConfig(StageConfig):
    """The pretraining run. Optimizer defaults: StarCoder (arXiv 2305.06161 §5, reference/model.md §4)."""

    preset: Preset = "small"
    """Model size (codefoundry.model presets); `long` trains at 8,192 tokens."""
    model_overrides: dict[str, bool | int | float | str] = Field(default_factory=dict)
    """GPTBigCodeConfig fields that replace the preset's (e.g. `{n_layer: 4, n_embd: 128}`)."""
    seq_len: int | None = Field(None, ge=8)
    """Tokens per sequence (None: the preset's n_positions)."""
    micro_batch_size: int = Field(4, ge=1)
    """Sequences per forward pass on each process."""
    batch_tokens: int | None = Field(None, ge=1)
    """Global batch in tokens; reached by gradient accumulation (None: micro_batch × seq_len × processes).
    StarCoder: 512 × 8192 ≈ 4M."""
    max_steps: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_time: float | None = Field(None, gt=0)
    """Stop after this many seconds of training (the `--max-time 10m` flag)."""
    lr: float = Field(3e-4, gt=0)            # StarCoderBase
    min_lr: float = Field(3e-5, ge=0)        # StarCoderBase: cosine decay to lr / 10
    warmup_steps: int | None = Field(None, ge=0)
    """Linear warmup steps (None: StarCoderBase's 2,000, but at most a tenth of the cosine horizon)."""
    decay_steps: int | None = Field(None, ge=1)
    """Cosine horizon in steps (None: max_steps, or max_tokens / batch_tokens, or estimated from
    the first steps' speed under max_time). Recorded in checkpoints so a resume keeps it."""
    weight_decay: float = Field(0.1, ge=0)   # StarCoderBase; applied to ≥2-dim params only (nanoGPT)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = Field(1.0, ge=0)      # StarCoderBase; 0 disables
    fim_rate: float = Field(FIM_RATE, ge=0, le=1)
    fim_spm_rate: float = Field(FIM_SPM_RATE, ge=0, le=1)
    dropout: float | None = Field(None, ge=0, lt=1)
    """Override the preset's attention/residual/embedding dropout (StarCoder: 0.1)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on GPU, fp32 on CPU."""
    compile: bool = False
    """torch.compile the model."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward (memory for compute)."""
    tp: int = Field(1, ge=1)
    """Tensor-parallel processes per replica (Megatron's column/row split of every block and the vocabulary;
    train/tensor_parallel.py). Under torchrun the processes form world / tp data-parallel replicas."""
    pp: int = Field(1, ge=1)
    """Pipeline stages, one process each, per replica (1F1B over the accumulation micro-batches;
    train/pipeline_parallel.py). Under torchrun the processes form world / pp data-parallel replicas."""
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun: DDP, or FSDP2 (`fully_shard`, gated by a gradient-parity check on gloo). Beside --tp
    and --pp, either is over the data-parallel replicas only (FSDP2 shards each stage's tensor-parallel shards
    again; ddp is one gradient all-reduce after backward)."""
    log_interval: int = Field(1, ge=1)
    eval_interval: int = Field(50, ge=1)
    eval_batches: int = Field(4, ge=1)
    checkpoint_interval: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    peak_flops: float | None = Field(None, gt=0)
    """Device peak FLOP/s for MFU (None: known GPUs' bf16 dense peak; none on CPU)."""
    seed: int = 0
    pack: PackConfig = Field(default_factory=PackConfig)
    """Used when training from a dataset (packs it into OUT/tokens first)."""

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        return self
