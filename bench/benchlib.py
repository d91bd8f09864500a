"""Shared machinery of the benchmarks: machine record, run042 as a ray pool, FSC snapshots.

Every benchmark script saves JSON with :func:`machine_info` (platform, CPU, threads, load,
device name, versions). The time-to-resolution benchmarks run :func:`recon.fitting.loop.run_fit`
itself (the code path of ``recon fit``) with a progress hook that, at scheduled wall times,
pauses the clock, samples the field on the truth grid and resumes; the FSC against the truth of
every snapshot is computed after the run, so neither sampling nor FSC counts as fit time.

    from benchlib import load_case, FitTimer, fit_with_snapshots   # bench/ is on sys.path
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import recon.fitting.loop as fit_module
from recon.analysis.resolution import compare_volumes
from recon.environment import versions
from recon.fitting.config import FitConfig, field_factory
from recon.fitting.data import FitData, load_fit_data
from recon.fitting.loop import run_fit
from recon.fitting.raypool import RayPool, build_ray_pool, rays_per_sample
from recon.io.volume import Volume, grid_points, read_volume

__all__ = [
    "Baseline",
    "Case",
    "FitTimer",
    "Snapshot",
    "fit_with_snapshots",
    "fsc_resolution_um",
    "geometric_schedule",
    "load_case",
    "machine_info",
    "pick_device",
    "sample_on_grid",
    "save_json",
    "time_to_reach",
    "using_pool",
]


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU; ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """Human name of a device: the GPU's name, or the CPU's model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({os.cpu_count()} logical CPUs)"


def machine_info(device: torch.device | None = None) -> dict:
    """Where and with what a benchmark ran."""
    device = device or pick_device()
    return {
        "platform": platform.platform(),
        "cpu": device_name(torch.device("cpu")),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": device_name(device),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "load_average": list(os.getloadavg()),
        "versions": versions(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def save_json(path: str | os.PathLike, report: dict) -> None:
    """Write a report (NaN/inf become null), creating the folder."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(clean(report), indent=2) + "\n")
    tmp.replace(path)


@dataclass
class Case:
    """A run with its truth, traced once."""

    data: FitData
    truth: Volume
    pool: RayPool
    pool_seconds: float
    run_dir: str
    fringe_period_mm: float | None = None


def load_case(run_dir: str | os.PathLike = "data/run042", *, samples: int | None = None, seed: int = 0,
              views: int | None = None, pixel_fraction: float = 1.0) -> Case:
    """Read a run and its ``truth.tif`` and trace its pool (as ``recon fit`` does).

    Args:
        run_dir: the run directory.
        samples: pooled samples per pixel (default: ``FitConfig.pool_samples``, as ``recon fit``).
        seed: seed of the pool (``FitConfig.seed``).
        views: keep only the first ``views`` views (scaling benchmark).
        pixel_fraction: keep a centred crop holding this fraction of each view's pixels.
    """
    data, _, _ = load_fit_data(Path(run_dir))
    if views is not None or pixel_fraction != 1.0:
        data = subset_views(data, views, pixel_fraction)
    truth = read_volume(Path(run_dir) / "truth.tif")
    t0 = time.perf_counter()
    pool = build_ray_pool(data, samples=samples or FitConfig().pool_samples, seed=seed,
                          rays_per_sample=rays_per_sample(data, FitConfig().defocused_rays))
    period = None
    phantom = Path(run_dir) / "phantom.json"
    if phantom.is_file():
        period = json.loads(phantom.read_text()).get("params", {}).get("period_mm")
    return Case(data, truth, pool, time.perf_counter() - t0, str(run_dir), period)


def subset_views(data: FitData, views: int | None, pixel_fraction: float) -> FitData:
    """The first ``views`` views, each cropped (centred) to ``pixel_fraction`` of its pixels."""
    from recon.fitting.data import ViewData

    out = []
    for view in data.views[: views or len(data.views)]:
        x0, y0, w, h = view.roi
        s = math.sqrt(pixel_fraction)
        cw, ch = max(1, round(w * s)), max(1, round(h * s))
        ox, oy = (w - cw) // 2, (h - ch) // 2
        out.append(ViewData(view.name, view.camera, (x0 + ox, y0 + oy, cw, ch),
                            view.electrons[:, oy:oy + ch, ox:ox + cw].contiguous(),
                            view.mask[:, oy:oy + ch, ox:ox + cw].contiguous()))
    return FitData(data.system, tuple(out), data.photons_per_atom, data.read_noise_e)


@contextlib.contextmanager
def using_pool(pool: RayPool):
    """Make :func:`recon.fitting.loop.run_fit` use an already traced pool (same seed and samples)."""
    original = fit_module.build_ray_pool

    def cached(data, *, samples, seed, **kwargs):
        if samples != pool.samples:
            return original(data, samples=samples, seed=seed, **kwargs)
        return pool

    fit_module.build_ray_pool = cached
    try:
        yield
    finally:
        fit_module.build_ray_pool = original


@torch.no_grad()
def sample_on_grid(density: Callable[[torch.Tensor], torch.Tensor], like: Volume,
                   device: torch.device, chunk: int = 1 << 18) -> np.ndarray:
    """A density function evaluated at the voxel centres of ``like``: (Z, Y, X) float32."""
    pts = grid_points(like.shape, like.origin_mm, like.voxel_size_mm, device=device).reshape(-1, 3)
    out = torch.cat([density(pts[i:i + chunk]).float() for i in range(0, len(pts), chunk)])
    return out.reshape(like.shape).cpu().numpy()


def fsc_resolution_um(data: np.ndarray, truth: Volume, *, mask: str | None = None,
                      fringe_period_mm: float | None = None) -> dict:
    """Resolution of a reconstruction on the truth grid: FSC against the truth at 0.5.

    Returns the interpolated and the shell crossing (µm), the whole curve, and, given the
    phantom's fringe period, the FSC in the shell of the fringe frequency.
    """
    rec = Volume(data=np.asarray(data, dtype=np.float32), origin_mm=truth.origin_mm,
                 voxel_size_mm=truth.voxel_size_mm, unit=truth.unit)
    result = compare_volumes(rec, truth, threshold="0.5", mask=mask, directional=False)
    c = result.crossing
    curve = np.nan_to_num(np.asarray(result.curve.fsc, dtype=np.float64), nan=0.0)
    out = {"resolution_um": float(c.interpolated_resolution_um),
           "shell_resolution_um": float(c.resolution_um),
           "reached_nyquist": bool(c.reached_nyquist),
           "fsc_curve": [round(float(v), 4) for v in curve]}
    if fringe_period_mm:
        # FSC at the phantom's fringe frequency: whether the 100 µm bands are there at all
        shell = int(round(truth.shape[0] * truth.voxel_size_mm[0] / fringe_period_mm))
        if shell < len(curve):
            out["fringe_shell"] = shell
            out["fsc_at_fringe"] = float(curve[shell])
    return out


def geometric_schedule(first_s: float, ratio: float, until_s: float) -> list[float]:
    """Snapshot times ``first, first·ratio, …`` up to ``until_s`` (seconds of fit time)."""
    times, t = [], first_s
    while t < until_s:
        times.append(t)
        t *= ratio
    return times


@dataclass
class Snapshot:
    """The field sampled on the truth grid at some fit time."""

    time_s: float
    step: int
    volume: np.ndarray
    fsc: dict = field(default_factory=dict)

    def row(self) -> dict:
        """JSON-ready summary (without the volume)."""
        return {"time_s": self.time_s, "step": self.step, **self.fsc}

    def short(self) -> dict:
        """The summary without the FSC curve."""
        return {k: v for k, v in self.row().items() if k != "fsc_curve"}


class FitTimer:
    """A wall clock that stops while snapshots are taken.

    Args:
        schedule: fit times (s) at which to snapshot.
        cap_s: stop the fit at this fit time (``None``: run to the end).
        snap: ``snap() -> np.ndarray`` the current reconstruction on the truth grid.
        device: synchronised before reading the clock (CUDA).
    """

    class Stop(Exception):
        """Raised from the progress hook when the time cap is reached."""

    def __init__(self, schedule: list[float], cap_s: float | None, snap: Callable[[], np.ndarray],
                 device: torch.device) -> None:
        self.schedule = sorted(schedule)
        self.cap_s = cap_s
        self.snap = snap
        self.device = device
        self.snapshots: list[Snapshot] = []
        self.t0 = None
        self.paused = 0.0
        self.step = 0
        self.first_step_s = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        """Start the clock."""
        self._sync()
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        """Fit time so far, s (snapshots excluded)."""
        return time.perf_counter() - self.t0 - self.paused

    def take(self, step: int) -> None:
        """Snapshot now (the clock stands still meanwhile)."""
        self._sync()
        t = self.elapsed()
        start = time.perf_counter()
        self.snapshots.append(Snapshot(t, step, self.snap()))
        self.paused += time.perf_counter() - start

    def tick(self, step: int) -> None:
        """After each step: snapshot when due; raise :class:`FitTimer.Stop` at the cap."""
        self.step = step
        if self.first_step_s is None:
            self._sync()
            self.first_step_s = self.elapsed()
        if not self.schedule and self.cap_s is None:
            return
        self._sync()
        t = self.elapsed()
        if self.schedule and t >= self.schedule[0]:
            while self.schedule and t >= self.schedule[0]:
                self.schedule.pop(0)
            self.take(step)
        if self.cap_s is not None and t >= self.cap_s:
            if not self.snapshots or self.snapshots[-1].step != step:
                self.take(step)
            raise FitTimer.Stop


class _Hook:
    """The progress object of :func:`recon.fitting.loop.run_fit`, driving a :class:`FitTimer`."""

    def __init__(self, timer: FitTimer, log: Callable[[str], None] | None, every_s: float = 30.0):
        self.timer, self._log, self.every_s, self._next = timer, log, every_s, every_s

    def start(self, total: int, first: int = 0) -> None:
        self.total = total
        self.timer.start()

    def update(self, step: int, loss: float, rays_per_s: float) -> None:
        if self._log and self.timer.elapsed() >= self._next:
            self._next += self.every_s
            self._log(f"  step {step}/{self.total}  loss {loss:.4g}  fit time "
                      f"{self.timer.elapsed():.0f} s")
        self.timer.tick(step)

    def log(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


def fit_with_snapshots(case: Case, cfg: FitConfig, *, schedule: list[float], cap_s: float | None,
                       out_dir: Path, log: Callable[[str], None] | None = print) -> dict:
    """Run :func:`recon.fitting.loop.run_fit` on the case's pool with snapshots and an optional cap.

    Returns:
        ``{"snapshots": [...], "fit_time_s", "steps", "stopped_at_cap", "first_step_s",
        "field"}``; the last snapshot is the state at the end (or at the cap).
    """
    device = fit_module.resolve_device(cfg.device)
    holder: dict = {}

    def make_field(*args):
        holder["field"] = field_factory(*args)
        return holder["field"]

    timer = FitTimer(schedule, cap_s, lambda: sample_on_grid(holder["field"], case.truth, device),
                     device)
    out_dir.mkdir(parents=True, exist_ok=True)
    stopped = False
    with using_pool(case.pool):
        try:
            run_fit(case.data, cfg, out_dir, make_field=make_field, progress=_Hook(timer, log))
        except FitTimer.Stop:
            stopped = True
    if not timer.snapshots or timer.snapshots[-1].step != timer.step:
        timer.take(timer.step)
    fit_time = timer.snapshots[-1].time_s
    return {"snapshots": timer.snapshots, "fit_time_s": fit_time, "steps": timer.step,
            "stopped_at_cap": stopped, "first_step_s": timer.first_step_s,
            "field": holder.get("field")}


def time_to_reach(snapshots: list[Snapshot], resolution_um: float) -> float | None:
    """Fit time of the first snapshot at least as fine as ``resolution_um`` (None: never)."""
    for s in snapshots:
        if s.fsc.get("resolution_um", math.inf) <= resolution_um:
            return s.time_s
    return None


_ROOT = Path(__file__).resolve().parents[1]


class Baseline:
    """Another revision's ``recon`` command, run in a git worktree of it while this tree's runs.

    ``Baseline(rev, argv, work, env)`` adds the worktree at ``work/baseline`` and starts
    ``recon *argv`` there at once (its own code via PYTHONPATH, ``env`` otherwise); :meth:`finish`
    waits for it, removes the worktree and returns its own wall time (not the later of the two
    runs'), exiting with its stderr if it failed.
    """

    def __init__(self, rev: str, argv: list[str], work: Path, env: dict):
        self.rev, self.tree = rev, Path(work) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(self.tree), rev], check=True, cwd=_ROOT,
                       capture_output=True)
        self._done: dict = {}
        t0 = time.perf_counter()
        self._proc = subprocess.Popen([sys.executable, "-c", "from recon.cli import main; main()", *argv],
                                      cwd=self.tree, env={**env, "PYTHONPATH": str(self.tree)},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def wait() -> None:
            self._done["stderr"] = self._proc.communicate()[1]
            self._done["wall_s"] = time.perf_counter() - t0

        self._waiter = threading.Thread(target=wait, daemon=True)
        self._waiter.start()

    def finish(self) -> float:
        """The baseline's wall time, s, once it has ended (the worktree removed)."""
        self._waiter.join()
        subprocess.run(["git", "worktree", "remove", "--force", str(self.tree)], cwd=_ROOT,
                       capture_output=True)
        if self._proc.returncode != 0:
            sys.exit(f"the baseline's recon failed ({self._proc.returncode}): "
                     f"{self._done['stderr'].strip()}")
        return self._done["wall_s"]

