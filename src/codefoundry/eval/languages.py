"""How each language's program is built and run inside the sandbox, and how its result reads.

Python (HumanEval, MBPP, infilling, user tasks) is judged as human-eval and
bigcode-evaluation-harness judge it (human-eval's `reliability_guard`, a 3 s time limit, the
test code must run to its end with asserts on; exiting early with status 0 is a failure), but
the verdict is decided outside the candidate's interpreter: a task's program is a
`SplitProgram`, and `proxy_check.py` runs its tests in a checker process that the completion's
code never runs in, calling the candidate's functions in a second process with plain data only
(a completion that walks frames, scans gc or reads memory finds no proof to forge). A plain
string program (no split) is still run in one interpreter by `pycheck.py`, as human-eval does;
the benchmark tasks never build one.

The MultiPL-E languages are judged as MultiPL-E's own evaluators (`evaluation/src/eval_<lang>.py`,
as bigcode-evaluation-harness copies them) judge them: by exit status (Go: by `go test`'s
"FAIL"), with their commands and per-phase time limits:

| lang | compile (limit) | run (limit) |
|---|---|---|
| js | – | `node main.js` (5 s) |
| java | `javac -encoding UTF8` (15 s) | `java -ea -cp .:javatuples Problem` (15 s) |
| cpp | `g++ -std=c++17` (15 s) | `./main` (15 s) |
| rs | `rustc` (default edition 2015, 15 s) | `./main` (5 s) |
| go | – | `go test main_test.go` (30 s) |
| sh | – | `bash main.sh` (15 s) |

Toolchains are Debian's, from /usr/bin (`scripts/install-system-deps.sh`), the way MultiPL-E's
container takes Ubuntu's; `toolchain_versions()` records them. Memory: a single RLIMIT_AS
breaks JIT runtimes that reserve address space up front, so the JVM, node and Go get
RLIMIT_DATA plus their own heap flag instead.
"""

from __future__ import annotations

import ast
import json
import math
import secrets
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from codefoundry.eval.sandbox import SANDBOX_PATH, Limits, RunResult

JAVATUPLES = "/usr/share/java/javatuples-1.2.jar"  # Debian libjavatuples-java; MultiPL-E's Java prompts import it
PYTHON_TIME_LIMIT = 3.0  # human-eval's and bigcode-evaluation-harness's `timeout`
_PYCHECK = (Path(__file__).with_name("pycheck.py")).read_text(encoding="utf-8")
# pycheck.py's guard, stream and TimeoutException, then the split checker (one text for `python3 -c`)
_PROXY_CHECK = _PYCHECK.rsplit('\nif __name__ == "__main__":', 1)[0] + "\n\n" + \
    (Path(__file__).with_name("proxy_check.py")).read_text(encoding="utf-8")
_TIMED_OUT = (124, 137)  # coreutils timeout: TERM sent (124), KILL needed (137)


@dataclass(frozen=True)
class SplitProgram:
    """A Python program cut where trust changes: `candidate` (the prompt and the completion) runs in a
    process of its own; `helpers` (benchmark code the tests use, e.g. HumanEval/38's `encode_cyclic`) and
    `tests` run in the checker, where the names in `entry_points` are the candidate's functions (classes),
    called with plain data; `entry_points=None`: every free name of the tests that is not a built-in."""

    candidate: str
    tests: str
    helpers: str = ""
    entry_points: tuple[str, ...] | None = None

    @property
    def text(self) -> str:
        """The same program in one piece, as human-eval runs it."""
        return self.candidate + self.tests

    def to_json(self) -> str:
        return json.dumps({"candidate": self.candidate, "helpers": self.helpers, "tests": self.tests,
                           "entry_points": None if self.entry_points is None else list(self.entry_points)},
                          ensure_ascii=False)


def python_compiles(code: str) -> bool:
    """`code` is Python on its own (compiled, never run)."""
    try:
        compile(code, "<tests>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def python_definitions(code: str) -> tuple[tuple[str, ...], str]:
    """(the functions and classes `code` defines at top level, its top-level imports as code): a reference
    solution's entry points, and the imports its tests may lean on. ((), "") where `code` does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return (), ""
    names = tuple(n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))
    imports = "".join(ast.unparse(n) + "\n" for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    return names, imports


@dataclass(frozen=True)
class Prepared:
    """One run of a program: the files to write, the command, and the proof a pass must print."""

    files: dict[str, str | bytes]
    argv: list[str]
    proof: str | None = None


@dataclass(frozen=True)
class Language:
    """A language's sandboxed build-and-run recipe."""

    name: str
    source: str                          # file name the program is written to
    run: tuple[str, ...]                 # run in the work dir
    tools: tuple[str, ...]               # executables that must be on the sandbox PATH
    run_seconds: float = 15.0
    compile: tuple[str, ...] | None = None
    compile_seconds: float = 15.0
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)
    built: str | None = None             # a file that exists after a successful compile
    version_command: tuple[str, ...] = ()

    def missing_tools(self) -> list[str]:
        return [t for t in self.tools if shutil.which(t, path=SANDBOX_PATH) is None]

    def with_timeout(self, seconds: float) -> Language:
        """The run phase limited to `seconds` (compiling keeps the reference's limit)."""
        return replace(self, run_seconds=seconds)

    def sandbox_limits(self) -> Limits:
        """The sandbox's wall clock and CPU limit: a backstop above the per-phase limits."""
        total = self.run_seconds + (self.compile_seconds if self.compile else 0) + 3
        cpu = max(self.limits.cpu_seconds, math.ceil(max(self.run_seconds, self.compile_seconds) + 2))
        return replace(self.limits, wall_seconds=total, cpu_seconds=cpu)

    def prepare(self, program: str | SplitProgram) -> Prepared:
        if isinstance(program, SplitProgram):
            if self.name != "python":
                raise ValueError(f"a split program is Python, not {self.name}")
            proof = secrets.token_hex(16)
            return Prepared({"check.json": program.to_json(), ".proof": proof},
                            ["python3", "-I", "-c", _PROXY_CHECK, f"{self.run_seconds:g}"], proof)
        if self.name == "python":
            proof = secrets.token_hex(16)
            return Prepared({"main.py": program, ".proof": proof},
                            ["python3", "-I", "-c", _PYCHECK, f"{self.run_seconds:g}"], proof)
        timed = f"timeout -k 1 {self.run_seconds:g} {shlex.join(self.run)}"
        if self.compile:
            script = f"timeout -k 1 {self.compile_seconds:g} {shlex.join(self.compile)} && exec {timed}"
        else:
            script = f"exec {timed}"
        return Prepared({self.source: program}, ["/bin/sh", "-c", script])

    def verdict(self, result: RunResult, proof: str | None = None) -> str:
        """passed | failed | timeout | compile_error."""
        if proof is not None:  # python: the test code ran to its end
            if proof in result.stdout:
                return "passed"
            return "timeout" if result.status == "timeout" or result.exit_code in (3, 128 + 14) else "failed"
        if result.status == "timeout" or result.exit_code in _TIMED_OUT:
            return "timeout"
        if self.built is not None and self.built not in result.work_files:
            return "compile_error"
        if self.name == "go":
            if "[build failed]" in result.stdout or "[setup failed]" in result.stdout:
                return "compile_error"
            return "failed" if "FAIL" in result.stdout or result.status != "ok" else "passed"
        return "passed" if result.status == "ok" else "failed"

    def settings(self) -> dict[str, object]:
        """What a reader needs to compare this language's verdicts (recorded in results.json)."""
        return {"compile": shlex.join(self.compile) if self.compile else None,
                "compile_seconds": self.compile_seconds if self.compile else None,
                "run": "python3 -I proxy_check.py (human-eval's check; tests in a process of their own)"
                if self.name == "python" else shlex.join(self.run),
                "run_seconds": self.run_seconds,
                "verdict": ("the test code ran to its end with asserts on (human-eval), outside the candidate's "
                            "process" if self.name == "python"
                            else "go test without FAIL (MultiPL-E)" if self.name == "go"
                            else "exit status 0 (MultiPL-E)"),
                "memory_mb": self.limits.address_space_mb or self.limits.data_mb,
                "toolchain": toolchain_version(self.name)}


@cache
def toolchain_version(name: str) -> str:
    """The first line of the toolchain's version, as the sandbox's PATH finds it."""
    lang = LANGUAGES[name]
    if not lang.version_command or lang.missing_tools():
        return "missing"
    try:
        r = subprocess.run(lang.version_command, capture_output=True, text=True, timeout=60,
                           env={"PATH": SANDBOX_PATH, "HOME": "/nonexistent", "LANG": "C.UTF-8"})
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    lines = [line.strip() for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    return " | ".join(lines[:2]) if name == "python" else (lines[0] if lines else "unknown")


def _sh(script: str) -> tuple[str, ...]:
    return ("/bin/sh", "-c", script)


_JIT = {"address_space_mb": None, "data_mb": 4096, "processes": 256}

LANGUAGES: dict[str, Language] = {
    "python": Language("python", "main.py", ("python3",), ("python3",), run_seconds=PYTHON_TIME_LIMIT,
                       limits=Limits(cpu_seconds=5),
                       version_command=("python3", "-I", "-c", "import sys, numpy; print(sys.version.split()[0]); "
                                        "print('numpy', numpy.__version__)")),
    "js": Language("js", "main.js", ("node", "--max-old-space-size=1024", "main.js"), ("node",), run_seconds=5,
                   limits=Limits(cpu_seconds=15, **_JIT), version_command=("node", "--version")),
    "java": Language("java", "Problem.java", ("java", "-Xmx512m", "-XX:+UseSerialGC", "-ea", "-cp", f".:{JAVATUPLES}",
                                              "Problem"), ("javac", "java"), run_seconds=15,
                     compile=("javac", "-J-Xmx512m", "-J-XX:+UseSerialGC", "-encoding", "UTF8", "-cp", JAVATUPLES,
                              "Problem.java"),
                     limits=Limits(cpu_seconds=30, **_JIT), built="Problem.class",
                     version_command=("javac", "-version")),
    "cpp": Language("cpp", "main.cpp", ("./main",), ("g++",), run_seconds=15,
                    compile=("g++", "main.cpp", "-o", "main", "-std=c++17"),
                    limits=Limits(cpu_seconds=30, processes=128), built="main", version_command=("g++", "--version")),
    "rs": Language("rs", "main.rs", ("./main",), ("rustc",), run_seconds=5, compile=("rustc", "main.rs", "-o", "main"),
                   limits=Limits(cpu_seconds=30, address_space_mb=4096, processes=128), built="main",
                   version_command=("rustc", "--version")),
    "go": Language("go", "main_test.go", ("go", "test", "main_test.go"), ("go",), run_seconds=30,
                   limits=Limits(cpu_seconds=60, **_JIT),
                   env={"GOCACHE": "{work}/.gocache", "GOPATH": "{work}/go", "GO111MODULE": "off",
                        "CGO_ENABLED": "0", "GOFLAGS": "-count=1"}, version_command=("go", "version")),
    "sh": Language("sh", "main.sh", ("bash", "main.sh"), ("bash",), run_seconds=15, limits=Limits(cpu_seconds=15),
                   version_command=("bash", "--version")),
}
