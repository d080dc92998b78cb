"""`codefoundry finetune`: LoRA fine-tuning with peft (and `finetune merge`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from codefoundry.cli.common import ConfigOpt, SeedOpt, examples, stage_config
from codefoundry.cli.train import parse_duration
from codefoundry.errors import UserError

FINETUNE_EXAMPLES = examples(
    "codefoundry finetune --model SmolLM2-135M-Instruct.Q4_1.gguf --data instructions.jsonl --out adapters/mine "
    "--max-steps 200",
    "codefoundry finetune --model model/ --data dataset/ --out adapters/my-code --lora-r 8 --max-time 10m",
    "codefoundry finetune --model model/ --data dataset/ --out adapters/fim --fim-holes lines --lr 1e-3 --max-time 5m",
    "codefoundry finetune --model model/ --data commits.jsonl --out adapters/commits --target-modules c_attn",
    "codefoundry finetune --model model/ --data instructions.jsonl --out adapters/mine --resume",
)
MERGE_EXAMPLES = examples(
    "codefoundry finetune merge --model model/ --adapter adapters/mine --out merged/",
)

app = typer.Typer(help="Fine-tune a LoRA adapter (peft) on instructions, chats, commits or a curated dataset.",
                  invoke_without_command=True, epilog=FINETUNE_EXAMPLES)


def _targets(values: list[str] | None) -> list[str] | None:
    """`--target-modules a,b --target-modules c` → [a, b, c]."""
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


@app.callback()
def finetune(
    ctx: typer.Context,
    model: Annotated[Path | None, typer.Option("--model", help="Base model: an HF model directory or a .gguf file."
                                               )] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Instruction/chat/commit JSONL, or a curated dataset/."
                                              )] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output adapter directory (adapters/NAME).")] = None,
    config: ConfigOpt = None,
    data_format: Annotated[str | None, typer.Option("--format", help="auto, instruction, chat, commits or dataset."
                                                    )] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r", min=1, help="LoRA rank (default 16).")] = None,
    lora_alpha: Annotated[float | None, typer.Option("--lora-alpha", help="LoRA alpha (default 32).")] = None,
    lora_dropout: Annotated[float | None, typer.Option("--lora-dropout", help="LoRA dropout (default 0.05).")
                            ] = None,
    target_modules: Annotated[list[str] | None, typer.Option(
        "--target-modules", help="Modules to adapt, comma-separated or repeated (default: c_attn, c_proj, q_proj, "
                                 "v_proj where the model has them).")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Optimizer steps (default: one epoch)."
                                                  )] = None,
    max_time: Annotated[str | None, typer.Option("--max-time", help="Time budget, e.g. 90s, 10m, 1h.")] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", min=8, help="Longest sequence in tokens.")] = None,
    micro_batch_size: Annotated[int | None, typer.Option("--micro-batch-size", min=1)] = None,
    grad_accum: Annotated[int | None, typer.Option("--grad-accum", min=1, help="Micro-batches per step.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (default 1e-4).")] = None,
    mask_prompt: Annotated[bool | None, typer.Option("--mask-prompt/--no-mask-prompt", show_default=False,
                                                     help="Learn only the responses (default: yes).")] = None,
    template: Annotated[str | None, typer.Option("--template", help="Instruction rows: auto, chat or plain.")
                        ] = None,
    validation_fraction: Annotated[float | None, typer.Option("--validation-fraction",
                                                              help="Share of rows held out (default 0.1).")] = None,
    fim_rate: Annotated[float | None, typer.Option("--fim-rate", help="dataset/ only: FIM probability.")] = None,
    fim_holes: Annotated[str | None, typer.Option(
        "--fim-holes", help="dataset/ only: documents (pretraining's FIM, default) or lines (IDE-style requests: "
                            "a hole of 1-3 lines in a short window, only the middle learned).")] = None,
    examples: Annotated[str | None, typer.Option(
        "--examples", help="--fim-holes lines: lines (FIM requests, default), functions (signature + docstring -> "
                           "body, HumanEval's shape) or mix (as many of each).")] = None,
    eval_interval: Annotated[int | None, typer.Option("--eval-interval", min=1)] = None,
    checkpoint_interval: Annotated[int | None, typer.Option("--checkpoint-interval", min=1)] = None,
    device: Annotated[str | None, typer.Option("--device", help="cuda, cpu (default: cuda when available).")
                      ] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="auto (bf16 on a GPU or a CPU with AMX/"
                         "AVX-512 BF16, else fp32), bf16 or fp32; the adapter's weights stay fp32.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    seed: SeedOpt = None,
) -> None:
    """Train a LoRA adapter for --model on --data and save it in PEFT's format to --out."""
    if ctx.invoked_subcommand is not None:
        return
    from codefoundry.finetune import FinetuneConfig
    from codefoundry.finetune import finetune as run_finetune

    for name, value in (("--model", model), ("--data", data), ("--out", out)):
        if value is None:
            raise UserError(f"missing {name}", hint="see: codefoundry finetune --help")
    cfg = stage_config(FinetuneConfig, config, max_steps=max_steps, max_time=parse_duration(max_time),
                       seq_len=seq_len, micro_batch_size=micro_batch_size, grad_accum=grad_accum, lr=lr,
                       eval_interval=eval_interval, checkpoint_interval=checkpoint_interval, device=device,
                       precision=precision,
                       seed=seed, **{"lora.r": lora_r, "lora.alpha": lora_alpha, "lora.dropout": lora_dropout,
                                     "lora.target_modules": _targets(target_modules), "data.format": data_format,
                                     "data.mask_prompt": mask_prompt, "data.template": template,
                                     "data.validation_fraction": validation_fraction, "data.fim_rate": fim_rate,
                                     "data.fim_holes": fim_holes, "data.examples": examples})
    run_finetune(model, data, out, cfg, resume=resume)


@app.command("merge", epilog=MERGE_EXAMPLES)
def merge(
    model: Annotated[Path | None, typer.Option("--model", help="Base model: an HF model directory or a .gguf file."
                                               )] = None,
    adapter: Annotated[Path | None, typer.Option("--adapter", help="A PEFT LoRA adapter directory.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output model/ directory.")] = None,
) -> None:
    """Fold a LoRA adapter into its base model's weights: a plain HF model directory."""
    from codefoundry.finetune import merge as run_merge

    for name, value in (("--model", model), ("--adapter", adapter), ("--out", out)):
        if value is None:
            raise UserError(f"missing {name} DIR", hint="see: codefoundry finetune merge --help")
    from codefoundry.manifest import check_out_dir

    check_out_dir(out, "model", {"model": model, "adapter": adapter})
    run_merge(model, adapter, out)
