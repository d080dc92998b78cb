"""The sandbox-escape catalogue: every hostile program the evaluation harness must contain, with its verdict.

Each case is a real program (real system calls through `posix`, `ctypes`, `socket`) judged by
the real `Executor` as the evaluation judges generations, then checked from the host: the
decoys it went for are intact, nothing of it is left running, nothing it wrote is left on disk.
The decoys are files, a listener and a process this test creates; nothing else is touched.

    case                      verdict            contained by
    fork bomb                 timeout | failed   RLIMIT_NPROC per slot uid, pid namespace killed whole
    infinite loop             timeout            wall clock
    10 GB allocation          failed             RLIMIT_AS
    delete canaries in HOME   failed             HOME is the work dir; the host's files are read-only
    write outside its dir     failed             read-only mounts (/tmp, /var/tmp, /dev/shm too)
    read other users' files   failed             unprivileged uid (0600 files of root and of another uid)
    read another slot's dir   failed             work dirs are 0700 per slot uid
    network (TCP, UDP, DNS)   failed             empty network namespace
    flood stdout              failed             RLIMIT_FSIZE on the output file, head and tail kept
    exhaust the disk          failed             RLIMIT_FSIZE per file; ENOSPC of the slot's own tmpfs
                                                 (bytes and inodes); work dir removed
    kill the parent           failed             pid namespace: the harness is not visible, kill(-1) hits
                                                 only the program's own processes
    daemon / setsid escape    passed (harmless)  killing pid 1 of the namespace ends every process in it

Tests run as root here (as CI does): the sandbox itself drops to its per-slot uids.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codefoundry.eval import Executor, Sandbox
from codefoundry.eval.sandbox import Limits

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the full sandbox needs root (uid switch, namespaces)")

OTHER_UID = 4242   # a host user that is neither root nor a sandbox uid


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    with Sandbox(slots=2) as sb:
        yield sb


@pytest.fixture(scope="module")
def executor(sandbox: Sandbox) -> Executor:
    ex = Executor(sandbox, timeout=3)
    yield ex
    ex.close()


@pytest.fixture
def decoys(tmp_path: Path) -> dict[str, Path]:
    """Files a hostile program would go for, readable only by their owners."""
    tmp_path.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    (home / "canary.txt").write_text("alive")
    root_secret = tmp_path / "root-secret.txt"
    root_secret.write_text("root-s3cret")
    root_secret.chmod(0o600)
    user_dir = tmp_path / "otheruser"
    user_dir.mkdir()
    user_secret = user_dir / "id_rsa"
    user_secret.write_text("user-s3cret")
    os.chown(user_dir, OTHER_UID, OTHER_UID)
    os.chown(user_secret, OTHER_UID, OTHER_UID)
    user_dir.chmod(0o755)
    user_secret.chmod(0o600)
    return {"root": tmp_path, "home": home, "root_secret": root_secret, "user_secret": user_secret}


def _verdict(executor: Executor, code: str) -> tuple[str, str]:
    v = executor.run("python", code)
    return v.verdict, v.output


def _attempts(*attempts: str) -> str:
    """A program whose check is that its attacks worked: each is tried, and it asserts that one succeeded.

    Contained, it fails with `AssertionError: contained [<the exception each attempt met>]`; an
    attack that worked makes it pass (stdout is swallowed by the check runner, the assertion is seen)."""
    body = "\n".join(f"try:\n    {a}\n    hits.append({a!r})\n"
                     "except Exception as e:\n    misses.append(type(e).__name__)" for a in attempts)
    return f"import os, posix, socket, subprocess, ctypes\nhits, misses = [], []\n{body}\n" \
           "assert hits, f'contained {misses}'\n"


def _contained(verdict: str, output: str, attempts: int) -> bool:
    """Failed with every attempt contained (the assertion names one exception per attempt)."""
    found = re.search(r"contained \[(.*?)\]", output)
    return verdict == "failed" and found is not None and len(re.findall(r"'\w+'", found.group(1))) == attempts


def _uid_processes(uids: list[int]) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                status = (p / "status").read_text()
            except OSError:
                continue
            uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:"))
            if uid in uids:
                found.append(int(p.name))
    return found


def _no_processes_left(sandbox: Sandbox, deadline: float = 5.0) -> bool:
    end = time.monotonic() + deadline
    while _uid_processes(sandbox.uids):
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow   # also in tests/eval/test_eval_sandbox.py, unmarked
def test_fork_bomb(executor: Executor, sandbox: Sandbox) -> None:
    verdict, _ = _verdict(executor, "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n"
                                    "        pass\n")
    assert verdict in ("timeout", "failed")
    assert _no_processes_left(sandbox)


@pytest.mark.slow   # also in tests/eval/test_eval_sandbox.py, unmarked
def test_infinite_loop(executor: Executor) -> None:
    assert _verdict(executor, "while True:\n    pass\n")[0] == "timeout"


def test_ten_gigabyte_allocation(executor: Executor) -> None:
    verdict, output = _verdict(executor, "import ctypes\nb = ctypes.create_string_buffer(10 * 1024**3)\n")
    assert verdict == "failed" and "MemoryError" in output


def test_delete_canaries_and_write_outside(executor: Executor, decoys: dict[str, Path]) -> None:
    home, root = decoys["home"], decoys["root"]
    verdict, output = _verdict(executor, _attempts(
        f"posix.unlink({str(home / 'canary.txt')!r})",
        f"subprocess.run(['rm', '-rf', {str(home)!r}], check=True)",
        f"open({str(root / 'dropped.txt')!r}, 'w').write('x')",
        "open('/tmp/codefoundry-catalogue-escape', 'w').write('x')",
        "open('/var/tmp/codefoundry-catalogue-escape', 'w').write('x')",
        "open('/dev/shm/codefoundry-catalogue-escape', 'w').write('x')",
        "open('/etc/passwd', 'a').write('x')",
        "posix.chmod('/usr/bin/python3', 0o777)",
    ))
    assert _contained(verdict, output, 8), output
    assert (home / "canary.txt").read_text() == "alive" and not (root / "dropped.txt").exists()
    assert not any(Path(d, "codefoundry-catalogue-escape").exists() for d in ("/tmp", "/var/tmp", "/dev/shm"))


def test_read_other_users_files(executor: Executor, decoys: dict[str, Path]) -> None:
    with Sandbox(slots=1) as other:                  # another evaluation's slot: its own uid, its own work dir
        work = other.base / "work-0-1"
        work.mkdir()
        (work / "solution.py").write_text("slot-s3cret")
        os.chown(work, other.uids[0], other.uids[0])
        work.chmod(0o700)
        verdict, output = _verdict(executor, _attempts(
            f"print(open({str(decoys['root_secret'])!r}).read())",
            f"print(open({str(decoys['user_secret'])!r}).read())",
            f"print(os.listdir({str(work)!r}))",
            f"print(open({str(work / 'solution.py')!r}).read())",
            "print(open('/etc/shadow').read())",
            f"print(open('/proc/{os.getpid()}/environ').read())",
        ))
    assert _contained(verdict, output, 6) and "s3cret" not in output, output


def test_network(executor: Executor) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    verdict, output = _verdict(executor, _attempts(
        f"socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')",
        "socket.create_connection(('1.1.1.1', 80), timeout=1)",
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'leak', ('8.8.8.8', 53))",
        "socket.getaddrinfo('pypi.org', 443)",
    ))
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()
    assert _contained(verdict, output, 4), output


@pytest.mark.slow   # also in tests/eval/test_eval_sandbox.py, unmarked
def test_flood_stdout(executor: Executor) -> None:
    verdict, output = _verdict(executor, "import posix\nwhile True:\n    posix.write(1, b'x' * 65536)\n")
    assert verdict in ("failed", "timeout") and len(output) < 10_000


def test_exhaust_the_disk(executor: Executor, sandbox: Sandbox) -> None:
    """One huge file stops at RLIMIT_FSIZE; many files (or many empty ones) fill the slot's own small disk, not
    the host's, and all of it is removed after."""
    assert sandbox.isolation()["disk_quota"]
    free_before = shutil.disk_usage(sandbox.base).free
    verdict, output = _verdict(executor, "import posix, os\nfd = posix.open('big', os.O_WRONLY | os.O_CREAT)\n"
                                         "while True:\n    posix.write(fd, b'\\0' * (1 << 20))\n")
    assert verdict == "failed" and "File too large" in output
    patient = Executor(sandbox, timeout=30)  # ENOSPC must stop them, not the wall clock
    for make, size in (("open(f'f{i}', 'wb').write(b'\\0' * (1 << 20))", 1 << 20), ("open(f'f{i}', 'wb').close()", 0)):
        code = (f"import errno\ni = written = 0\nwhile True:\n    i += 1\n    try:\n        {make}\n"
                "    except OSError as e:\n"
                "        assert False, f'stopped errno={errno.errorcode[e.errno]} files={i} bytes={written}'\n"
                f"    written += {size}\n")
        verdict, output = _verdict(patient, code)
        stopped = re.search(r"stopped errno=(\w+) files=(\d+) bytes=(\d+)", output)
        assert verdict == "failed" and stopped is not None, output
        assert stopped.group(1) == "ENOSPC", output
        assert int(stopped.group(3)) <= Limits().disk_mb << 20 and int(stopped.group(2)) <= Limits().disk_files, output
    patient.close()
    assert not [p for d in sandbox.base.glob("disk-*") for p in d.iterdir()]   # the work dirs are gone
    assert shutil.disk_usage(sandbox.base).free > free_before - (64 << 20)     # the host's disk never filled


def test_kill_the_parent(executor: Executor, sandbox: Sandbox) -> None:
    """The harness and the namespaces' holder are out of sight; kill(-1) reaches only the program's own processes."""
    harness, holder = os.getpid(), sandbox.holder_pid
    code = (f"import posix, signal\nfor pid in ({harness}, {holder}, posix.getppid()):\n    try:\n"
            "        posix.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
            "posix.kill(-1, signal.SIGKILL)\n")
    verdict, _ = _verdict(executor, code)
    assert verdict == "failed"                       # it killed itself (and its check runner) with the rest
    assert holder is not None and Path(f"/proc/{holder}").exists()
    assert executor.run("python", "assert 1 + 1 == 2\n").passed     # the sandbox still works
    assert _no_processes_left(sandbox)


def test_daemon_escape(executor: Executor, sandbox: Sandbox) -> None:
    code = "import posix, time\nif posix.fork() == 0:\n    posix.setsid()\n    time.sleep(60)\n    posix._exit(0)\n"
    verdict, _ = _verdict(executor, code)
    assert verdict == "passed"     # nothing is tested: the program itself is harmless once it ends
    assert _no_processes_left(sandbox)


def _mounts_under(base: str) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(base + "/")]


def test_a_killed_harness_disks_are_unmounted_by_the_next_sandbox(tmp_path: Path) -> None:
    """SIGKILL leaves no `close()`: the slot disks (and what the program wrote on them) stay mounted until the
    next sandbox on the host finds their owner gone."""
    marker = tmp_path / "base.txt"
    harness = subprocess.Popen([sys.executable, "-c", f"""
from codefoundry.eval import Limits, Sandbox
sb = Sandbox(slots=2)
open({str(marker)!r}, "w").write(" ".join(map(str, [sb.base, *sb.uids])))
program = "open('junk', 'wb').write(bytes(1 << 20))\\nimport time\\ntime.sleep(600)\\n"
sb.run({{"main.py": program}}, ["python3", "main.py"], Limits(wall_seconds=3))
"""])
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    harness.send_signal(signal.SIGKILL)
    harness.wait()
    base, *uids = marker.read_text().split()
    assert len(_mounts_under(base)) == 2      # left behind by the killed harness
    with Sandbox(slots=1) as sb:
        assert sb.isolation()["disk_quota"]
        assert not _mounts_under(base) and not Path(base).exists()
    end = time.monotonic() + 15  # its program dies at its wall clock (coreutils timeout), not with the harness
    while _uid_processes([int(u) for u in uids]) and time.monotonic() < end:
        time.sleep(0.1)
