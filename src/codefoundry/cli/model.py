"""`codefoundry model …`: GGUF in and out, and what a model directory or file holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from codefoundry.cli.common import OutOpt, examples

app = typer.Typer(help="Import and export models (GGUF for llama.cpp / Ollama) and inspect them.",
                  no_args_is_help=True)

OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace what is already at --out.")]


@app.command("import", epilog=examples(
    "codefoundry model import SmolLM2-135M-Instruct.Q4_1.gguf --out smollm2/",
    "codefoundry serve --model smollm2/",
))
def import_(
    file: Annotated[Path, typer.Argument(help="A .gguf file (llama, starcoder, starcoder2 architectures).",
                                         show_default=False)],
    out: OutOpt,
    overwrite: OverwriteOpt = False,
) -> None:
    """Dequantize a GGUF file into an HF model directory (float32 safetensors, tokenizer.json, chat template).

    transformers' AutoModelForCausalLM and AutoTokenizer open the result; every codefoundry
    stage reads it. Quantized types read: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants.
    """
    from codefoundry.console import console
    from codefoundry.manifest import check_out_dir
    from codefoundry.model import import_gguf

    check_out_dir(out, "model", {"GGUF file": file})
    with console.status(f"importing {file}"):
        import_gguf(file, out, overwrite=overwrite)
    console.print(f"wrote {out}")


@app.command("export", epilog=examples(
    "codefoundry model export model/ --format gguf --out model-f16.gguf",
    "codefoundry model export smollm2/ --format gguf --type q8_0 --out smollm2-q8_0.gguf",
))
def export(
    model_dir: Annotated[Path, typer.Argument(help="A model/ directory (gpt_bigcode, llama or starcoder2).",
                                              show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .gguf file to write.", show_default=False)],
    format: Annotated[str, typer.Option("--format", help="Output format; only gguf.")] = "gguf",
    weight_type: Annotated[str, typer.Option("--type", help="Matrix weights: f16, q8_0, q4_0 or q4_1.")] = "f16",
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a model directory as a GGUF file that llama.cpp and Ollama run.

    GPTBigCode becomes llama.cpp's `starcoder` architecture, Llama `llama`, StarCoder2
    `starcoder2`; the tokenizer and chat template go into the file's metadata.
    """
    from codefoundry.console import console
    from codefoundry.errors import UserError
    from codefoundry.model import export_gguf

    if format != "gguf":
        raise UserError(f"--format {format!r} is not supported; supported: gguf")
    if out.is_dir():  # --overwrite replaces a file, never a directory
        raise UserError(f"--out {out} is a directory", "give the path of the .gguf file to write")
    if out.exists() and out.suffix != ".gguf" and out.resolve().is_relative_to(model_dir.resolve()):
        raise UserError(f"--out {out} is one of the files of the model being exported",
                        "give the path of a new .gguf file")
    with console.status(f"exporting {model_dir}"):
        export_gguf(model_dir, out, weight_type, overwrite=overwrite)
    console.print(f"wrote {out}")


@app.command("info", epilog=examples(
    "codefoundry model info model/",
    "codefoundry model info SmolLM2-135M-Instruct.Q4_1.gguf --json",
))
def info(
    path: Annotated[Path, typer.Argument(help="A model/ directory or a .gguf file.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Architecture, parameters, dtype, context and shape of a model, and the artifacts it came from."""
    from codefoundry.model import model_info

    result = model_info(path)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    rows = {
        "architecture": result["architecture"] + (f" (GGUF {result['gguf_architecture']})"
                                                  if result.get("gguf_architecture") else ""),
        "parameters": f"{result['parameters']:,}",
        "dtype": ", ".join(f"{k} ({v:,})" for k, v in result["dtype"].items()),
        "context": str(result["context"]),
        "shape": f"{result['layers']} layers, hidden {result['hidden_size']}, {result['heads']} heads "
                 f"({result['kv_heads']} KV), vocab {result['vocab_size']}",
    }
    if result.get("imported_from"):
        rows["imported from"] = str(result["imported_from"].get("gguf"))
    for entry in result["lineage"][1:]:
        rows[entry["role"]] = f"{entry['kind']} at {entry['path']}"
    width = max(map(len, rows))
    for key, value in rows.items():
        typer.echo(f"{key:<{width}}  {value}")
