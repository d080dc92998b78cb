"""The sandbox against hostile programs: each is contained, scored as a failure, the host untouched.

Every attack uses real system calls (ctypes, the posix module, subprocess) and only decoys:
files this test creates, a listener it starts, its own environment.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from codefoundry.eval import Executor, Limits, Sandbox

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the full sandbox needs root (uid switch, namespaces)")


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    with Sandbox(slots=2) as sb:
        yield sb


def run_py(sandbox: Sandbox, code: str, **limits: object) -> object:
    lim = Limits(**{"wall_seconds": 5, "cpu_seconds": 5, **limits})
    return sandbox.run({"main.py": code}, ["python3", "-I", "main.py"], lim)


def test_isolation_reported(sandbox: Sandbox) -> None:
    iso = sandbox.isolation()
    assert iso["unprivileged_uid"] and iso["network_namespace"] and iso["pid_namespace"], iso
    r = run_py(sandbox, "import os; print(os.getuid(), os.getgid(), os.getgroups(), os.getpid(), os.environ['HOME'])")
    uid, gid, groups, pid, home = r.stdout.split(" ", 4)
    assert int(uid) in sandbox.uids and int(gid) == int(uid) and groups == "[]" and int(pid) == 2, r.stdout
    assert "codefoundry-sandbox" in home


def test_fork_bomb_is_bounded_and_killed(sandbox: Sandbox) -> None:
    start = time.perf_counter()
    r = run_py(sandbox, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
               wall_seconds=3, processes=32)
    assert r.status in ("timeout", "failed") and not r.passed
    assert time.perf_counter() - start < 10
    assert _sandbox_processes_gone(sandbox.uids)


def _sandbox_processes_gone(uids: list[int], deadline: float = 5.0) -> bool:
    """No process of the sandbox's uids is left on the host (the kernel reaps a killed namespace quickly)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        running = [int(line.split()[1]) for p in Path("/proc").iterdir() if p.name.isdigit()
                   for line in _status_lines(p) if line.startswith("Uid:")]
        if not [u for u in running if u in uids]:
            return True
        time.sleep(0.1)
    return False


def _status_lines(proc: Path) -> list[str]:
    try:
        return (proc / "status").read_text().splitlines()
    except OSError:
        return []


def test_infinite_loop_times_out(sandbox: Sandbox) -> None:
    r = run_py(sandbox, "while True:\n    pass\n", wall_seconds=1.5, cpu_seconds=10)
    assert r.status == "timeout" and r.seconds < 5


def test_cpu_limit_kills_before_the_wall_clock(sandbox: Sandbox) -> None:
    r = run_py(sandbox, "while True:\n    pass\n", wall_seconds=20, cpu_seconds=1)
    assert r.status == "failed" and r.exit_code == 128 + 9 and r.seconds < 10


def test_ten_gigabyte_allocation_fails(sandbox: Sandbox) -> None:
    code = "import ctypes\nbuf = ctypes.create_string_buffer(10 * 1024**3)\nprint('allocated')\n"
    r = run_py(sandbox, code, address_space_mb=1024)
    assert r.status == "failed" and "allocated" not in r.stdout and "MemoryError" in r.stderr


def test_canaries_outside_the_work_dir_survive(sandbox: Sandbox, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    canary, secret = home / "canary.txt", tmp_path / "secret.txt"
    canary.write_text("alive")
    secret.write_text("s3cret")
    secret.chmod(0o600)
    code = f"""
import os, posix, shutil, subprocess
errors = []
for attempt in (lambda: posix.unlink({str(canary)!r}), lambda: shutil.rmtree({str(home)!r}),
                lambda: open({str(tmp_path / 'dropped.txt')!r}, 'w').write('x'),
                lambda: open('/tmp/codefoundry-escape.txt', 'w').write('x'),
                lambda: open('/etc/passwd', 'a').write('x'),
                lambda: subprocess.run(['rm', '-rf', {str(home)!r}], check=True),
                lambda: print(open({str(secret)!r}).read())):
    try:
        attempt()
        errors.append('escaped')
    except Exception as e:
        errors.append(type(e).__name__)
print(errors)
raise SystemExit(1 if 'escaped' in errors else 0)
"""
    r = run_py(sandbox, code)
    assert "escaped" not in r.stdout, r.stdout + r.stderr
    assert canary.read_text() == "alive" and secret.read_text() == "s3cret"
    assert not (tmp_path / "dropped.txt").exists() and not Path("/tmp/codefoundry-escape.txt").exists()
    assert "s3cret" not in r.stdout


def test_network_is_unreachable(sandbox: Sandbox) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.settimeout(0.5)
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'leak')\n"
    r = run_py(sandbox, code)
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()
    assert r.status == "failed" and ("ConnectionRefused" in r.stderr or "unreachable" in r.stderr), r.stderr


def test_stdout_flood_is_capped(sandbox: Sandbox) -> None:
    code = "import os\nchunk = b'x' * 65536\nwhile True:\n    os.write(1, chunk)\n"
    r = run_py(sandbox, code, file_size_mb=4, output_bytes=1000)
    # RLIMIT_FSIZE stops it: SIGXFSZ, or EFBIG where the runtime ignores that signal (Python does)
    assert r.status == "failed" and (r.exit_code == 128 + 25 or "File too large" in r.stderr)
    assert len(r.stdout) < 3000 and "bytes cut" in r.stdout


def test_a_daemonized_child_dies_with_the_program(sandbox: Sandbox, tmp_path: Path) -> None:
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(30)\n    os._exit(0)\n"
            "print('parent done')\n")
    r = run_py(sandbox, code)
    assert r.passed and "parent done" in r.stdout
    assert _sandbox_processes_gone(sandbox.uids)


def test_hostile_programs_are_failures_through_the_executor(sandbox: Sandbox) -> None:
    ex = Executor(sandbox, timeout=2)
    try:
        verdicts = [ex.run("python", code).verdict for code in (
            "import posix\nposix.kill(-1, 9)\n",  # every process it may signal: its own namespace only
            "while True: pass\n",
            "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\n",
        )]
        assert verdicts[1] == "timeout" and all(v != "passed" for v in verdicts), verdicts
        assert ex.run("python", "print('ok')\n").passed
    finally:
        ex.close()


def test_without_namespaces_the_sandbox_says_so() -> None:
    with Sandbox(slots=1, namespaces=False) as sb:
        iso = sb.isolation()
        assert iso["network_namespace"] is False and "without network/pid/mount namespaces" in iso["note"]
        code = "import os\nprint(os.getuid(), flush=True)\nwhile True:\n    pass\n"
        r = sb.run({"main.py": code}, ["python3", "main.py"], Limits(wall_seconds=10, cpu_seconds=1))
        assert r.status == "failed" and int(r.stdout) in sb.uids  # still its own uid, still CPU-limited


def test_a_killed_harness_leaves_no_program_behind(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    marker = tmp_path / "uids.txt"
    harness = subprocess.Popen([sys.executable, "-c", f"""
from codefoundry.eval import Limits, Sandbox
sb = Sandbox(slots=1)
open({str(marker)!r}, "w").write(str(sb.uids[0]))
sb.run({{"main.py": "import time\\ntime.sleep(600)\\n"}}, ["python3", "main.py"], Limits(wall_seconds=3))
"""])
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    harness.send_signal(signal.SIGKILL)  # no cleanup code runs
    harness.wait()
    assert _sandbox_processes_gone([int(marker.read_text())], deadline=15)
