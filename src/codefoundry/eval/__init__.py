"""codefoundry.eval: HumanEval, MBPP, MultiPL-E and FIM infilling on a local model or any endpoint.

    from codefoundry.eval import EvalConfig, run_eval
    run_eval(Path("eval/"), EvalConfig(tasks=["humaneval"], endpoint="http://127.0.0.1:8080"))

Pieces: `tasks` (problems, prompts, stop sequences, test programs; user JSONL tasks),
`generation` (local model through codefoundry.generate, or TGI/OpenAI endpoints), `sandbox`
(one real subprocess per program, unprivileged uid, namespaces, rlimits; its failures raise
`SandboxError`, never a verdict), `languages` (how each language is run and judged, as the
reference harnesses do; `proxy_check` runs a Python task's tests in a checker process the
completion never runs in, calling its functions in another with plain data only), `execute`
(parallel, each distinct program once), `metrics` (unbiased pass@k), `contamination`
(lineage check), `harness` (the run, resumable, and its artifact).
"""

from codefoundry.eval.execute import Executor, Verdict
from codefoundry.eval.generation import EndpointError
from codefoundry.eval.harness import EvalConfig, run_eval, run_evals, score
from codefoundry.eval.languages import LANGUAGES, Language
from codefoundry.eval.metrics import mean_pass_at_k, pass_at_k
from codefoundry.eval.sandbox import Limits, RunResult, Sandbox, SandboxError
from codefoundry.eval.tasks import TASK_NAMES, Problem, Task, cut_at_stop, load_task

__all__ = [
    "LANGUAGES",
    "TASK_NAMES",
    "EndpointError",
    "EvalConfig",
    "Executor",
    "Language",
    "Limits",
    "Problem",
    "RunResult",
    "Sandbox",
    "SandboxError",
    "Task",
    "Verdict",
    "cut_at_stop",
    "load_task",
    "mean_pass_at_k",
    "pass_at_k",
    "run_eval",
    "run_evals",
    "score",
]
