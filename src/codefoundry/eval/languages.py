"""How each language's program is built and run inside the sandbox, and how its result reads.

Commands follow MultiPL-E's `evaluation/src/eval_<lang>.py` (g++ -std=c++17, rustc, javac with
javatuples on the classpath and `java -ea`, `go test`, node, bash); the toolchains come from
Debian packages (`scripts/install-system-deps.sh`). Memory: a single RLIMIT_AS breaks JIT
runtimes that reserve address space up front, so the JVM, node and Go get RLIMIT_DATA plus
their own heap flag instead.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace

from codefoundry.eval.sandbox import SANDBOX_PATH, Limits, RunResult

JAVATUPLES = "/usr/share/java/javatuples-1.2.jar"  # Debian libjavatuples-java; MultiPL-E's Java prompts import it


@dataclass(frozen=True)
class Language:
    """A language's sandboxed build-and-run recipe."""

    name: str
    source: str                          # file name the program is written to
    argv: tuple[str, ...]                # run in the work dir; compile and run in one sandbox
    tools: tuple[str, ...]               # executables that must be on the sandbox PATH
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)
    built: str | None = None             # a file that exists after a successful compile

    def missing_tools(self) -> list[str]:
        return [t for t in self.tools if shutil.which(t, path=SANDBOX_PATH) is None]

    def verdict(self, result: RunResult) -> str:
        """passed | failed | timeout | compile_error | error."""
        if result.status == "ok":
            return "passed"
        if result.status in ("timeout", "error"):
            return result.status
        if self.built is not None and self.built not in result.work_files:
            return "compile_error"
        if self.name == "go" and ("[build failed]" in result.stdout or "[setup failed]" in result.stdout):
            return "compile_error"
        return "failed"

    def with_timeout(self, seconds: float) -> Language:
        cpu = max(1, int(seconds + 0.999))
        return replace(self, limits=replace(self.limits, wall_seconds=seconds, cpu_seconds=cpu))


def _sh(script: str) -> tuple[str, ...]:
    return ("/bin/sh", "-c", script)


_JIT = {"address_space_mb": None, "data_mb": 4096, "processes": 256}

LANGUAGES: dict[str, Language] = {
    "python": Language("python", "main.py", ("python3", "-I", "main.py"), ("python3",),
                       Limits(wall_seconds=20, cpu_seconds=10)),  # wall > cpu: loaded machines time out wrongly
    "js": Language("js", "main.js", ("node", "--max-old-space-size=1024", "main.js"), ("node",),
                   Limits(wall_seconds=15, cpu_seconds=15, **_JIT)),
    "java": Language("java", "Problem.java",
                     _sh(f"javac -J-Xmx512m -J-XX:+UseSerialGC -encoding UTF8 -cp {JAVATUPLES} Problem.java && "
                         f"exec java -Xmx512m -XX:+UseSerialGC -ea -cp .:{JAVATUPLES} Problem"),
                     ("javac", "java"), Limits(wall_seconds=30, cpu_seconds=30, **_JIT), built="Problem.class"),
    "cpp": Language("cpp", "main.cpp", _sh("g++ -std=c++17 -o main main.cpp && exec ./main"), ("g++",),
                    Limits(wall_seconds=30, cpu_seconds=30, processes=128), built="main"),
    "rs": Language("rs", "main.rs", _sh("rustc --edition 2021 -o main main.rs && exec ./main"), ("rustc",),
                   Limits(wall_seconds=30, cpu_seconds=30, address_space_mb=4096, processes=128), built="main"),
    "go": Language("go", "main_test.go", ("go", "test", "main_test.go"), ("go",),
                   Limits(wall_seconds=30, cpu_seconds=60, **_JIT),
                   env={"GOCACHE": "{work}/.gocache", "GOPATH": "{work}/go", "GO111MODULE": "off",
                        "CGO_ENABLED": "0", "GOFLAGS": "-count=1"}),
    "sh": Language("sh", "main.sh", ("bash", "main.sh"), ("bash",), Limits(wall_seconds=15, cpu_seconds=15)),
}
