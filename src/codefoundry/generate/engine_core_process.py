"""The engine core in its own process (vLLM v1's `EngineCoreProc`): an `Engine` stepped in a loop behind ZeroMQ.

A server's HTTP, validation and SSE then never share an interpreter lock with the model's
step. The parent starts `run_engine_core` with `start_engine_core` (a new interpreter: no
forked torch threads, no re-run of the caller's `__main__`) and talks to it over two ZeroMQ
IPC sockets, one each way, with msgpack (msgspec) frames of plain lists:

    parent → core   one frame per batch of commands:
                    [ADD, id, prompt_ids, params (dict), adapter_id] | [ABORT, id]
                    | [CALL, call_id, method, args] | [SHUTDOWN]
    core → parent   [READY, info] once the engine is built and warmed up (or [FAILED, message]),
                    then one [STEP, …] frame per loop turn that did anything: every request's
                    output of that step, the requests it could not add or that failed, the
                    results of engine calls, the step's timing and the engine's stats.

`CALL` runs any public `Engine` method (or reads an attribute) between two steps and sends
back its result or its exception, so server code can call engine methods across the
boundary. The core ignores SIGINT and SIGTERM (the parent decides when it stops: a drain
finishes the in-flight requests first), and exits when its parent is gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from codefoundry.errors import UserError
from codefoundry.generate.engine import Completion, Engine, EngineStats, GeneratedToken, StepOutput
from codefoundry.generate.params import FinishReason, SamplingParams, ValidationError

log = logging.getLogger(__name__)

# message kinds (small ints keep frames short)
ADD, ABORT, CALL, SHUTDOWN = 0, 1, 2, 3
READY, FAILED, STEP = 10, 11, 12
PARENT_CHECK_S = 1.0            # how often an idle core checks that its parent is still there

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
encode, decode = _encoder.encode, _decoder.decode


# ---- wire forms of the engine's outputs (lists: no field names in every frame) ----

def token_to_wire(t: GeneratedToken) -> list:
    return [t.id, t.text, t.logprob, t.special, t.top_tokens]


def token_from_wire(w: list) -> GeneratedToken:
    return GeneratedToken(w[0], w[1], w[2], w[3], [(i, lp) for i, lp in w[4]])


def completion_to_wire(c: Completion) -> list:
    """Without `tokens`: the receiver saw every one of them as a step output and rebuilds the list."""
    return [c.text, c.token_ids, str(c.finish_reason), c.generated_tokens, c.seed, c.prompt_token_ids,
            c.stop_sequence, c.prefill_logprobs, c.prefill_top_tokens, c.error]


def completion_from_wire(w: list, tokens: list[GeneratedToken]) -> Completion:
    return Completion(text=w[0], token_ids=w[1], finish_reason=FinishReason(w[2]), generated_tokens=w[3], seed=w[4],
                      tokens=tokens, prompt_token_ids=w[5], stop_sequence=w[6], prefill_logprobs=w[7],
                      prefill_top_tokens=None if w[8] is None else [[(i, lp) for i, lp in top] for top in w[8]],
                      error=w[9])


def output_to_wire(o: StepOutput) -> list:
    return [o.request_id, token_to_wire(o.token), o.text,
            None if o.completion is None else completion_to_wire(o.completion)]


@dataclass
class StepReport:
    """What one turn of the core's loop did, as the parent reads it from a STEP frame."""

    outputs: list[list]                   # output_to_wire forms, in batch order
    errors: list[tuple[int, str, str]]    # (request id, error kind "validation" | "generation", message)
    aborted: list[int]                    # requests the engine dropped on the parent's ABORT
    results: list[tuple[int, bool, Any]]  # (call id, ok, result or [exception type, message, is_user_error])
    stepped: bool                         # a step ran (scheduled or not)
    step_start_ns: int                    # time.time_ns() at the step's start
    step_seconds: float
    num_scheduled: int
    admitted_ids: list[int]
    stats: EngineStats

    @classmethod
    def from_wire(cls, w: list) -> StepReport:
        return cls(w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9], EngineStats(*w[10]))


class EngineCallError(RuntimeError):
    """An engine method called across the process boundary raised an exception of a type this side cannot rebuild."""


def rebuild_exception(type_name: str, message: str, user_error: bool) -> Exception:
    """The engine's exception on this side of the boundary: same type where it is a builtin or ours."""
    import builtins

    if type_name == "ValidationError":
        return ValidationError(message)
    if user_error:
        return UserError(message)
    kind = getattr(builtins, type_name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        return kind(message)
    return EngineCallError(f"{type_name}: {message}")


# ---- the parent's side: starting the process ----

class EngineCoreProcess:
    """A started engine-core process (a fresh interpreter, so no caller's `__main__` is re-run) and its addresses."""

    def __init__(self, popen: subprocess.Popen, input_address: str, output_address: str) -> None:
        self.popen, self.input_address, self.output_address = popen, input_address, output_address
        self.pid = popen.pid
        self.sentinel = os.pidfd_open(popen.pid)      # readable once the process exits: poll it beside the socket

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        """None while running; negative: killed by that signal."""
        return self.popen.poll()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)

    def kill(self) -> None:
        if self.is_alive():
            self.popen.kill()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.sentinel)


def start_engine_core(make_engine: Callable[..., tuple[Engine, dict]], args: Sequence[Any],
                      socket_dir: str) -> EngineCoreProcess:
    """Start `run_engine_core(make_engine, args, …)` in a new interpreter; `make_engine(*args)` builds the engine
    there (a module-level function, sent by name; `args` plain JSON data) and returns it with the info dict sent
    back in READY. The caller binds the two sockets."""
    inp, out = f"ipc://{socket_dir}/input", f"ipc://{socket_dir}/output"
    popen = subprocess.Popen([sys.executable, "-c", f"import {__name__} as m; m.main()"],
                             stdin=subprocess.PIPE, close_fds=True)
    assert popen.stdin is not None
    # JSON, not pickle: nothing read from a pipe may run code (the same rule as checkpoints and model files)
    target = f"{make_engine.__module__}:{make_engine.__qualname__}"
    popen.stdin.write(json.dumps([target, list(args), inp, out, os.getpid()]).encode())
    popen.stdin.close()
    return EngineCoreProcess(popen, inp, out)


def main() -> None:
    """The engine-core process's entry point: its arguments come as JSON on stdin (from `start_engine_core`)."""
    target, args, inp, out, parent_pid = json.loads(sys.stdin.buffer.read())
    module, _, name = target.partition(":")
    make_engine = getattr(importlib.import_module(module), name)
    logging.basicConfig(level=logging.WARNING, format="engine-core: %(levelname)s %(name)s: %(message)s")
    faulthandler.register(signal.SIGUSR1, all_threads=True)   # `kill -USR1 PID`: where a stuck core is
    code = run_engine_core(make_engine, args, inp, out, parent_pid)
    sys.stdout.flush()
    sys.stderr.flush()
    # skip the interpreter's teardown: collecting the model and the KV pool can take many seconds on a busy
    # machine, and nothing is left to save (the sockets are closed)
    os._exit(code)


# ---- the child's side: the loop ----

def run_engine_core(make_engine: Callable[..., tuple[Engine, dict]], args: tuple, input_address: str,
                    output_address: str, parent_pid: int) -> int:
    """The engine-core process's main: build the engine, say READY, then serve commands and step until SHUTDOWN;
    the process's exit code (1: the engine could not be built)."""
    import zmq

    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C reaches the whole group: the parent drains, then stops us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctx = zmq.Context()
    inp = ctx.socket(zmq.PULL)
    inp.connect(input_address)
    out = ctx.socket(zmq.PUSH)
    out.setsockopt(zmq.LINGER, 5000)
    out.setsockopt(zmq.SNDTIMEO, int(PARENT_CHECK_S * 1000))   # a send to a vanished parent must not block forever
    out.connect(output_address)
    try:
        try:
            engine, info = make_engine(*args)
        except UserError as e:
            out.send(encode([FAILED, str(e) + (f" ({e.hint})" if e.hint else "")]))
            return 1
        except Exception as e:
            log.exception("building the engine failed")      # the traceback on stderr, the summary to the parent
            out.send(encode([FAILED, f"building the engine failed: {type(e).__name__}: {e}"]))
            return 1
        out.send(encode([READY, info]))
        _EngineCoreLoop(engine, inp, out, parent_pid).run()
    except _ParentGone:
        log.warning("the server process is gone: the engine core stops")
    finally:
        inp.close(linger=0)
        out.close()
        ctx.term()
    return 0


class _ParentGone(Exception):
    pass


class _EngineCoreLoop:
    def __init__(self, engine: Engine, inp: Any, out: Any, parent_pid: int) -> None:
        self.engine, self.inp, self.out, self.parent_pid = engine, inp, out, parent_pid
        self.live: set[int] = set()                   # requests added and not finished, failed or aborted
        self._checked = time.monotonic()

    def _check_parent(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._checked >= PARENT_CHECK_S:
            self._checked = now
            if os.getppid() != self.parent_pid:      # the server is gone without a SHUTDOWN: nobody to serve
                raise _ParentGone

    def _send(self, frame: bytes) -> None:
        import zmq

        while True:
            try:
                self.out.send(frame)
                return
            except zmq.Again:                         # the parent is not reading: still there?
                self._check_parent(force=True)

    def run(self) -> None:
        import zmq

        engine = self.engine
        while True:
            busy = engine.has_unfinished()
            frames = []
            if busy or self.inp.poll(int(PARENT_CHECK_S * 1000)):
                while True:
                    try:
                        frames.append(self.inp.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
            self._check_parent()
            errors: list[tuple[int, str, str]] = []
            aborted: list[int] = []
            results: list[tuple[int, bool, Any]] = []
            stop = False
            for frame in frames:
                for command in decode(frame):
                    kind = command[0]
                    if kind == ADD:
                        self._add(command, errors)
                    elif kind == ABORT:
                        rid = command[1]
                        self.live.discard(rid)
                        if engine.abort(rid):
                            aborted.append(rid)
                    elif kind == CALL:
                        results.append(self._call(command[1], command[2], command[3]))
                    elif kind == SHUTDOWN:
                        stop = True
            stepped, start, seconds, num_scheduled, admitted, outputs = False, 0, 0.0, 0, [], []
            if engine.has_unfinished() and not stop:
                stepped, start = True, time.time_ns()
                try:
                    result = engine.step()
                except Exception as e:                # a failed step fails its requests, never the core
                    log.exception("engine step failed")
                    message = f"{type(e).__name__}: {e}"
                    for rid in list(self.live):
                        engine.abort(rid)
                        errors.append((rid, "generation", message))
                    self.live.clear()
                else:
                    num_scheduled, admitted = result.num_scheduled, result.admitted_ids
                    outputs = [output_to_wire(o) for o in result.outputs]
                    for o in result.outputs:
                        if o.completion is not None:
                            self.live.discard(o.request_id)
                seconds = (time.time_ns() - start) / 1e9
            if frames or stepped:
                s = engine.stats()
                self._send(encode([STEP, outputs, errors, aborted, results, stepped, start, seconds,
                                      num_scheduled, admitted, dataclasses.astuple(s)]))
            if stop:
                for rid in self.live:
                    engine.abort(rid)
                return

    def _add(self, command: list, errors: list[tuple[int, str, str]]) -> None:
        _, rid, prompt_ids, params, adapter_id = command
        try:
            sampling = SamplingParams(**{**params, "stop": tuple(params.get("stop", ()))})
            extra = {} if adapter_id is None else {"adapter_id": adapter_id}
            self.engine.add_request(rid, prompt_ids, sampling, **extra)
        except (ValidationError, TypeError, ValueError) as e:
            errors.append((rid, "validation", str(e)))
        else:
            self.live.add(rid)

    def _call(self, call_id: int, method: str, args: list) -> tuple[int, bool, Any]:
        try:
            if method.startswith("_"):
                raise AttributeError(f"engine method {method!r} is private")
            target = getattr(self.engine, method)
            value = msgspec.to_builtins(target(*args) if callable(target) else target)
            msgspec.msgpack.encode(value)             # fail here, as the call's error, not in the frame's send
            return call_id, True, value
        except Exception as e:
            return call_id, False, [type(e).__name__, str(e), isinstance(e, UserError)]
