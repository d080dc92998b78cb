"""`ServeConfig`: the launcher options of `codefoundry serve`, with TGI's names and defaults."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field

from codefoundry.config import StageConfig


class ServeConfig(StageConfig):
    """Settings of one server; a `None` limit is derived from the model and the KV budget at warmup."""

    model: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)            # 0 = any free port
    api_key: str | None = None                        # Bearer key on generation routes (TGI --api-key)
    max_concurrent_requests: int = Field(128, ge=1)   # TGI default; beyond it: 429 overloaded
    max_input_tokens: int | None = Field(None, ge=1)  # TGI default: max_total_tokens - 1
    max_total_tokens: int | None = Field(None, ge=2)  # TGI default: min(KV budget, n_positions)
    max_batch_prefill_tokens: int = Field(4096, ge=1)  # tokens computed per engine step (TGI's code falls back to 4096)
    max_batch_total_tokens: int | None = Field(None, ge=1)  # KV pool in tokens; None = sized from memory at warmup
    max_stop_sequences: int = Field(4, ge=0)          # TGI default
    max_top_n_tokens: int = Field(5, ge=0)            # TGI default
    max_client_batch_size: int = Field(4, ge=1)       # TGI default: prompts per /v1/completions request
    payload_limit: int = Field(2_000_000, ge=1)       # bytes; TGI default
    cors_allow_origin: list[str] = Field(default_factory=list)  # empty = no cross-origin access ("*" = any)
    allowed_host: list[str] = Field(default_factory=list)  # Host names accepted beside localhost when on loopback
    otlp_endpoint: str | None = None                  # OTLP/HTTP traces endpoint; tracing export off when None
    grace_period_s: float = Field(30.0, ge=0)         # SIGTERM: time in-flight requests get to finish
    block_size: int = Field(16, ge=1)                 # vLLM's default block size
    enable_prefix_caching: bool = True                # reuse the KV blocks of prompt prefixes seen before (vLLM)
    speculate: int = Field(0, ge=0, le=64)            # prompt-lookup draft tokens per step (TGI --speculate); 0 = off
    memory_fraction: float = Field(0.9, gt=0, le=1)   # TGI_WIGGLE_ROOM: share of free memory the KV pool may take
    cpu_kv_cache_bytes: int = Field(1 << 30, ge=1)    # cap on the KV pool when serving on CPU
    device: str | None = None                         # None = cuda when available, else cpu
    dtype: Literal["float32", "bfloat16", "float16"] | None = None  # None = bf16 on cuda, fp32 on cpu
    # weight-only quantized linear layers (model.quantize); None = the file's own: int4 for a Q4_0/Q4_1 GGUF file
    # (llama.cpp computes with those 4-bit weights), else float; "none" = float weights whatever the file holds
    quantize: Literal["int8", "int4", "none"] | None = None
    model_id: str | None = None                       # name in /info and /v1/models; default: the directory name
    log_prompts: bool = False                         # never log prompt text unless asked
    adapters: dict[str, Path] = Field(default_factory=dict)  # LoRA adapters loaded at start: name → PEFT dir
    adapter_root: Path | None = None                  # POST /v1/adapters loads only from under it; None = off
    tp: int = Field(1, ge=1)                          # tensor-parallel processes (generate/tensor_parallel.py)
    dataset: Path | None = None                       # /v1/provenance answers from it (default: the model's lineage)
    report: Path | None = None                        # an HTML report shown at /ui/report (the demo's)
    engine_process: bool = True                       # the engine core in its own process (vLLM v1); False: a thread

    @property
    def served_quantize(self) -> Literal["int8", "int4"] | None:
        """The quantization the model is served with (see `quantize`)."""
        if self.quantize == "none":
            return None
        if self.quantize is not None or self.model is None:
            return self.quantize
        from codefoundry.model import native_quantize

        return native_quantize(self.model)

    @property
    def file_int4(self) -> bool:
        """Served int4 because the model file holds int4 weights (a Q4 GGUF), not because --quantize said so."""
        return self.quantize is None and self.served_quantize == "int4"

    @property
    def loopback(self) -> bool:
        """Bound to a loopback address: only this machine's clients (and web pages it opens) can connect."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False
