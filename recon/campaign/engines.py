"""Where a campaign's fits run: local worker processes, or tasks on a Ray cluster.

Both engines run the same function (a module-level callable, so it can be pickled) with the same
arguments, so they give the same results for the same seeds. The driver keeps at most
:attr:`Engine.capacity` shots in flight, submits with :meth:`Engine.submit` and collects with
:meth:`Engine.wait`, which returns ``(name, result)`` pairs as shots finish. A shot whose worker
died (killed, out of memory) comes back as ``{"ok": False, "reason": ...}``; retrying it is the
driver's choice.

* ``local``: a :class:`concurrent.futures.ProcessPoolExecutor` of ``workers`` spawned processes
  (no Ray needed), each with ``threads`` torch threads. A dead worker breaks the pool: every shot
  then in flight is reported failed and a new pool is started.
* ``ray``: one stateless Ray task per shot, asking for ``num_cpus = threads`` and
  ``num_gpus = gpus`` (the scheduler then runs no more per node than its resources hold), at most
  ``workers`` of them pending, collected with ``ray.wait`` as they finish (the patterns of Ray's
  guide "Design Patterns": limiting pending tasks with ``ray.wait``, limiting running tasks with
  resources). Without ``address`` a private local Ray is started on the loopback only, with
  ``workers × threads`` CPUs, and stopped at :meth:`close`; with ``address`` the driver joins that
  cluster (``--workers`` is then how many shots it keeps in flight across it) and leaves it at
  :meth:`close`. An address that takes no TCP connection within :data:`REACH_TIMEOUT_S`, or a
  cluster that asks for a token the driver lacks, is a one-line :class:`~recon.errors.ConfigError`
  at once (Ray would retry for minutes).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import socket
from collections.abc import Callable

from recon.errors import ConfigError

__all__ = ["ENGINES", "Engine", "LocalEngine", "RayEngine", "check_engine", "make_engine", "ray_missing"]

ENGINES = ("local", "ray")


def _init_worker(threads: int) -> None:
    """Set a fresh worker process's thread counts (before torch is imported by the first shot)."""
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[key] = str(threads)


def _call(fn: Callable[..., dict], threads: int, kwargs: dict) -> dict:
    """Run one shot in a worker: ``fn(**kwargs)`` with ``threads`` torch threads, tagged with the worker."""
    import torch

    torch.set_num_threads(threads)
    result = dict(fn(**kwargs))
    result.setdefault("worker", f"{socket.gethostname()}:{os.getpid()}")
    return result


class Engine:
    """The interface of the engines (see the module docstring)."""

    name = ""
    capacity = 1

    def submit(self, name: str, kwargs: dict) -> None:  # pragma: no cover - interface
        """Start shot ``name``: the engine's function called with ``kwargs``."""
        raise NotImplementedError

    def wait(self) -> list[tuple[str, dict]]:  # pragma: no cover - interface
        """Block until a shot finishes; return every finished one as (name, result)."""
        raise NotImplementedError

    @property
    def in_flight(self) -> int:  # pragma: no cover - interface
        """Shots started and not yet returned by :meth:`wait`."""
        raise NotImplementedError

    def close(self, wait: bool = True) -> None:
        """Release the workers (``wait``: let the shots in flight finish first)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(wait=exc_type is None)  # interrupted: return at once, the shots in flight finish alone


class LocalEngine(Engine):
    """``workers`` local processes (spawned), each fitting one shot at a time with ``threads`` threads."""

    name = "local"

    def __init__(self, fn: Callable[..., dict], *, workers: int, threads: int):
        self.fn, self.capacity, self.threads = fn, workers, threads
        self._pool: cf.ProcessPoolExecutor | None = None
        self._futures: dict[cf.Future, tuple[str, cf.ProcessPoolExecutor]] = {}

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                self.capacity,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.threads,),
            )
        return self._pool

    def _restart(self) -> None:
        """Replace a broken pool; its workers are gone before any shot is retried."""
        broken, self._pool = self._pool, None
        if broken is not None:
            broken.shutdown(wait=True, cancel_futures=True)

    def submit(self, name: str, kwargs: dict) -> None:
        """Start shot ``name``."""
        try:
            future = self._executor().submit(_call, self.fn, self.threads, kwargs)
        except cf.process.BrokenProcessPool:  # a worker died since the last wait
            self._restart()
            future = self._executor().submit(_call, self.fn, self.threads, kwargs)
        self._futures[future] = (name, self._pool)

    @property
    def in_flight(self) -> int:
        """Shots started and not yet returned by :meth:`wait`."""
        return len(self._futures)

    def wait(self) -> list[tuple[str, dict]]:
        """Block until a shot finishes; return every finished one.

        A dead worker breaks its pool: every shot then in it comes back failed, and the next
        submission starts a new pool.
        """
        if not self._futures:
            return []
        done, _ = cf.wait(list(self._futures), return_when=cf.FIRST_COMPLETED)
        out = []
        for future in done:
            name, pool = self._futures.pop(future)
            try:
                out.append((name, future.result()))
            except cf.process.BrokenProcessPool as err:
                out.append(
                    (name, {"ok": False, "reason": f"its worker process died or its pool broke ({err})"})
                )
                if pool is self._pool:
                    self._restart()
            except Exception as err:  # noqa: BLE001 - the shot failed, the campaign goes on
                out.append((name, {"ok": False, "reason": f"{type(err).__name__}: {err}"}))
        return out

    def close(self, wait: bool = True) -> None:
        """Stop the worker processes once their shots are done (``wait``: block until then)."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None


def ray_missing() -> str | None:
    """Why the ``ray`` engine cannot run here (None: it can)."""
    try:
        import ray  # noqa: F401
    except ImportError as err:
        return f'ray is not installed ({err}); pip install ".[cluster]"'
    return None


#: Seconds to wait for a TCP connection to ``--address`` before saying it cannot be reached
#: (Ray itself retries for minutes).
REACH_TIMEOUT_S = 10.0


@contextlib.contextmanager
def _loopback_only(ray):
    """Start a private Ray whose servers listen on the loopback only.

    Ray turns ``_node_ip_address="127.0.0.1"`` into the machine's own address (so that other
    nodes could reach it), and its servers then listen on every interface. It keeps the
    loopback address only where it considers clusters disabled (its Windows and macOS
    default, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``), read from ``ray_constants`` when the
    node starts: set for the start, and put back (a later ``--address`` join needs the real
    address).
    """
    constants = ray._private.ray_constants
    before = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = before


def _first_line(err: BaseException) -> str:
    """An error's first line, or its type where it says nothing."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``host:port`` or ``ray://host:port``; None for other forms (``auto``, a bare host)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    return (host.strip("[]"), int(port)) if sep and port.isdigit() and host else None


def _reachable(address: str) -> str | None:
    """Why ``host:port`` (or ``ray://host:port``) takes no TCP connection within REACH_TIMEOUT_S, or None.

    Other forms (``auto``, a bare host) are left to Ray.
    """
    where = _host_port(address)
    if where is None:
        return None
    try:
        with socket.create_connection(where, timeout=REACH_TIMEOUT_S):
            return None
    except OSError as err:
        return err.strerror or type(err).__name__


def _join(ray, address: str) -> None:
    """``ray.init(address=...)``, or a one-line ConfigError saying why the cluster cannot be joined."""
    fix = "check --address, or start one with `ray start --head`"
    why = _reachable(address)
    if why is not None:
        raise ConfigError(f"batch: cannot reach the Ray cluster at {address} ({why}); {fix}")
    host = (_host_port(address) or ("", 0))[0]
    local = host in ("localhost", "::1") or host.startswith("127.")
    try:  # a cluster on this machine's loopback is joined there, not at the machine's own address
        with _loopback_only(ray) if local else contextlib.nullcontext():
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as err:
        causes, cause = [], err
        while cause is not None:  # Ray wraps the GCS client's AuthenticationError in two more errors
            causes.append(f"{type(cause).__name__}: {cause}")
            cause = cause.__cause__ or cause.__context__
        if any("InvalidAuthToken" in c or "AuthenticationError" in c for c in causes):
            raise ConfigError(
                f"batch: the Ray cluster at {address} asks for its token; export RAY_AUTH_MODE=token and the "
                "token (RAY_AUTH_TOKEN, or the file ~/.ray/auth_token; `ray get-auth-token` on the head "
                "prints it), then run again") from None
        raise ConfigError(f"batch: cannot join the Ray cluster at {address} ({_first_line(err)}); "
                          f"{fix}") from None


class RayEngine(Engine):
    """One Ray task per shot, on a private local Ray (loopback only) or the cluster at ``address``."""

    name = "ray"

    def __init__(
        self,
        fn: Callable[..., dict],
        *,
        workers: int,
        threads: int,
        gpus: float = 0.0,
        address: str | None = None,
    ):
        import ray

        self._ray, self.threads, self._owned = ray, threads, False
        if not ray.is_initialized():
            if address:
                _join(ray, address)
                self._owned = True
            else:
                with _loopback_only(ray):
                    ray.init(
                        num_cpus=workers * threads,
                        num_gpus=0,
                        include_dashboard=False,
                        log_to_driver=False,
                        _node_ip_address="127.0.0.1",
                    )
                self._owned = True
        self.capacity = workers if not address else max(workers, 1)
        self._remote = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0)(_call)
        self._fn, self._refs = fn, {}

    def submit(self, name: str, kwargs: dict) -> None:
        """Start shot ``name`` as a Ray task."""
        self._refs[self._remote.remote(self._fn, self.threads, kwargs)] = name

    @property
    def in_flight(self) -> int:
        """Tasks started and not yet returned by :meth:`wait`."""
        return len(self._refs)

    def wait(self) -> list[tuple[str, dict]]:
        """Block until a task finishes; return every finished one."""
        if not self._refs:
            return []
        ready, _ = self._ray.wait(list(self._refs), num_returns=1)
        out = []
        for ref in ready:
            name = self._refs.pop(ref)
            try:
                out.append((name, self._ray.get(ref)))
            except self._ray.exceptions.RayError as err:  # the task's worker died, or the task raised
                out.append((name, {"ok": False, "reason": f"Ray task failed: {_first_line(err)}"}))
        return out

    def close(self, wait: bool = True) -> None:
        """Stop the private local Ray, or leave the cluster joined by address (it keeps running).

        A Ray the caller had started before this engine is left as it is.
        """
        if self._owned:
            self._ray.shutdown()
            self._owned = False


def check_engine(engine: str, *, gpus: float = 0.0, address: str | None = None) -> None:
    """Refuse an unknown engine, or options it does not take (before any work starts).

    Raises:
        ConfigError: naming the option and the fix.
    """
    if engine not in ENGINES:
        raise ConfigError(f"batch: --engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if address and engine != "ray":
        raise ConfigError("batch: --address only applies with --engine ray; add --engine ray or drop it")
    if gpus and engine != "ray":
        raise ConfigError(
            "batch: --gpus-per-fit only applies with --engine ray (local workers share this "
            "machine's devices); add --engine ray or drop it"
        )
    if engine == "ray" and ray_missing():
        raise ConfigError(f"batch: --engine ray: {ray_missing()}")


def make_engine(
    engine: str,
    fn: Callable[..., dict],
    *,
    workers: int,
    threads: int,
    gpus: float = 0.0,
    address: str | None = None,
) -> Engine:
    """The engine named ``engine`` (:data:`ENGINES`), its options checked by :func:`check_engine`."""
    check_engine(engine, gpus=gpus, address=address)
    if engine == "local":
        return LocalEngine(fn, workers=workers, threads=threads)
    return RayEngine(fn, workers=workers, threads=threads, gpus=gpus, address=address)
