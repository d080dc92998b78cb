"""Execute programs in the sandbox, in parallel, each distinct program once.

The infilling sets rebuild the same 164 functions thousands of times (every canonical
middle gives back the whole canonical function), and samples at low temperature repeat:
a program's verdict is cached by (language, sha256 of its text).
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from codefoundry.errors import UserError
from codefoundry.eval.languages import LANGUAGES, Language, SplitProgram
from codefoundry.eval.sandbox import Sandbox


@dataclass(frozen=True)
class Verdict:
    """The outcome of one program: passed | failed | timeout | compile_error."""

    verdict: str
    exit_code: int | None
    output: str          # stderr then stdout, head and tail only
    seconds: float

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"


class Executor:
    """`submit(language, program)` → Future[Verdict], at most `sandbox.slots` at a time."""

    def __init__(self, sandbox: Sandbox, timeout: float | None = None) -> None:
        """`timeout`: the run phase's limit in seconds for every language (default: each language's)."""
        self.sandbox = sandbox
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(sandbox.slots, thread_name_prefix="sandbox")
        self._cache: dict[tuple[str, str, str], Future[Verdict]] = {}
        self._lock = threading.Lock()
        self.executed = 0

    def language(self, name: str) -> Language:
        lang = LANGUAGES[name]
        missing = lang.missing_tools()
        if missing:
            raise UserError(f"language {name!r} needs {', '.join(missing)} on PATH, not found",
                            "run scripts/install-system-deps.sh")
        return lang.with_timeout(self.timeout) if self.timeout else lang

    def submit(self, language: str, program: str | SplitProgram) -> Future[Verdict]:
        """`program`: the text to run, or a Python `SplitProgram` (tests judged outside the candidate's process)."""
        text = program.to_json() if isinstance(program, SplitProgram) else program
        kind = "split" if isinstance(program, SplitProgram) else "text"
        key = (language, kind, hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._pool.submit(self._run, self.language(language), program)
            return self._cache[key]

    def run(self, language: str, program: str | SplitProgram) -> Verdict:
        return self.submit(language, program).result()

    def _run(self, lang: Language, program: str | SplitProgram) -> Verdict:
        prepared = lang.prepare(program)
        result = self.sandbox.run(prepared.files, prepared.argv, lang.sandbox_limits(), lang.env)
        self.executed += 1
        stdout = result.stdout.replace(prepared.proof, "") if prepared.proof else result.stdout
        output = (result.stderr + ("\n" if result.stderr and stdout else "") + stdout).strip()
        return Verdict(lang.verdict(result, prepared.proof), result.exit_code, output, round(result.seconds, 3))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
