"""One full pass of EM's operator over run042: forward (A x) and adjoint (Aᵀ y) over every pixel.

Side by side in one process, one thread: the projector's compiled kernels (numba) and the torch
path the fit used before (``render_pixels`` of a linear VoxelField and autograd for the adjoint,
as ``OSEM`` did at c755b32), the latter timed on every ``--torch-stride``-th pixel and scaled to
all pixels (its cost is linear in the pixels). Also compares A x on those pixels with the torch
specification in float64 (the float32 render's own positions, hundreds of mm from the segments'
origins, are off by up to ~1e-4 voxel, so the float64 render is the reference).

Also one EM subset at a time (``recon fit``'s partition of its training pixels into 32 subsets):
the forward map and adjoint of each of ``--subsets`` subsets with its pixels in index order and in
the projector's locality order (``Projector.locality_order``, what OSEM uses), interleaved,
medians per subset.

    python bench/projector_pass.py [--torch-stride 8] [--out bench/results/projector_pass.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from benchlib import load_case, machine_info, save_json

from recon.fitting.config import FitConfig, field_factory, resolved
from recon.fitting.em import partition
from recon.fitting.holdout import split_held_out
from recon.fitting.projector import Projector, grid_density
from recon.model.render import render_pixels


def _torch_pass(field, pool, pixels, y, photons_per_atom, step_mm, chunk=32768):
    """A x and Aᵀ y as OSEM computed them before the projector: a render graph and autograd."""
    lam, back = [], torch.zeros_like(field.grid)
    for part, values in zip(pixels.split(chunk), y.split(chunk), strict=True):
        pred = render_pixels(field, pool.gather(part), len(part), photons_per_atom=photons_per_atom,
                             step_mm=step_mm, jitter=False)
        lam.append(pred.detach())
        back += torch.autograd.grad(pred, field.grid, values)[0]
    return torch.cat(lam), back


def _subset_times(op, x, y, cfg, pool, count: int) -> dict:
    """Median seconds of a subset's forward and adjoint, in index order and in locality order."""
    usable = (pool.observed_frames > 0).nonzero(as_tuple=True)[0]
    train, _ = split_held_out(pool, usable, cfg.holdout, cfg.seed)
    subsets = partition(train, cfg.subsets, cfg.seed)[:count]
    times = {order: {"forward": [], "adjoint": []} for order in ("index", "locality")}
    for s in subsets:
        for order, px in (("index", s), ("locality", op.locality_order(s))):
            t0 = time.perf_counter()
            op.forward(x, px)
            t1 = time.perf_counter()
            op.adjoint(y[px], px)
            times[order]["forward"].append(t1 - t0)
            times[order]["adjoint"].append(time.perf_counter() - t1)
    out = {order: {k: statistics.median(v) for k, v in t.items()} for order, t in times.items()}
    for k in ("forward", "adjoint"):
        out[f"{k}_ratio"] = statistics.median(a / b for a, b in zip(times["locality"][k], times["index"][k],
                                                                       strict=True))
    out.update(subsets_timed=len(subsets), of_subsets=cfg.subsets, pixels_per_subset=len(subsets[0]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-stride", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--subsets", type=int, default=8, help="EM subsets timed in both orders")
    parser.add_argument("--out", default="bench/results/projector_pass.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    case = load_case()
    pool, data = case.pool, case.data
    cfg = resolved(FitConfig(), data)  # recon fit's strata (step_mm = 0: from its voxel)
    box = data.system.volume
    y_photons = data.photons_per_atom
    field = field_factory(cfg, box.min_mm.tolist(), box.max_mm.tolist(), 1.0, "cpu")  # recon fit's EM grid
    with torch.no_grad():  # a cloud-like positive grid
        field.grid.uniform_(0.0, 2.0, generator=torch.Generator().manual_seed(0))
    x = field.grid.detach()[0, 0]
    op = Projector(pool, box.min_mm.tolist(), box.max_mm.tolist(), x.shape, photons_per_atom=y_photons,
                   step_mm=cfg.step_mm, backend="numba")
    pixels = torch.arange(pool.n_pixels)
    y = torch.rand(pool.n_pixels, generator=torch.Generator().manual_seed(1))
    op.forward(x, pixels[:100])  # compile (or load) the kernels before timing
    op.adjoint(y[:100], pixels[:100])
    fwd, adj = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        lam = op.forward(x, pixels)
        t1 = time.perf_counter()
        op.adjoint(y, pixels)
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        adj.append(t2 - t1)
    some = pixels[:: args.torch_stride]
    t0 = time.perf_counter()
    lam_torch, _ = _torch_pass(field, pool, some, y[some], y_photons, cfg.step_mm)
    torch_s = (time.perf_counter() - t0) * len(pixels) / len(some)
    agree = float((lam[some] - lam_torch).abs().max() / lam_torch.abs().max())
    rays64 = pool.gather(some).to(dtype=torch.float64)
    density64 = grid_density(x.double(), box.min_mm.tolist(), box.max_mm.tolist())
    spec = render_pixels(density64, rays64, len(some), photons_per_atom=y_photons, step_mm=cfg.step_mm,
                         jitter=False)
    exact = float((lam[some].double() - spec).abs().max() / spec.abs().max())
    torch32 = float((lam_torch.double() - spec).abs().max() / spec.abs().max())
    numba_s = min(fwd) + min(adj)
    subset = _subset_times(op, x, y, cfg, pool, args.subsets)
    report = {
        "pixels": pool.n_pixels,
        "segments": len(pool.rays),
        "grid": list(x.shape),
        "step_mm": cfg.step_mm,
        "numba_forward_s": min(fwd),
        "numba_adjoint_s": min(adj),
        "numba_pass_s": numba_s,
        "torch_pass_s_scaled": torch_s,
        "torch_pixels_timed": len(some),
        "speedup": torch_s / numba_s,
        "max_rel_difference_of_forward": agree,
        "max_rel_difference_vs_float64_spec": {"numba": exact, "torch_float32": torch32},
        "em_subset_s": subset,
        "machine": machine_info(torch.device("cpu")),
    }
    print(f"pass over {pool.n_pixels} pixels, {len(pool.rays)} segments: numba forward {min(fwd):.2f} s + "
          f"adjoint "
          f"{min(adj):.2f} s = {numba_s:.2f} s; torch (render + autograd) {torch_s:.1f} s (from {len(some)} "
          f"pixels); speed-up {torch_s / numba_s:.1f}×; against the float64 render: numba {exact:.1e}, "
          f"torch float32 {torch32:.1e} (of the largest pixel)")
    print(f"one EM subset ({subset['pixels_per_subset']} pixels, median of {subset['subsets_timed']}): "
          f"index order forward {subset['index']['forward'] * 1e3:.0f} ms + adjoint "
          f"{subset['index']['adjoint'] * 1e3:.0f} ms, locality order "
          f"{subset['locality']['forward'] * 1e3:.0f} + "
          f"{subset['locality']['adjoint'] * 1e3:.0f} ms (ratios {subset['forward_ratio']:.2f}, "
          f"{subset['adjoint_ratio']:.2f})")
    save_json(args.out, report)


if __name__ == "__main__":
    main()
