"""Reconstruction of 3D densities from single-shot multi-view images.

The operations of the command line are Python functions here, imported on first use so that
``import recon`` stays light (no torch, pyvista or tinycudann until an operation needs them)::

    import recon

    run, stats = recon.inspect("data/run042")
    outcome = recon.fit("data/run042", out="fits/run042", steps=500)
    report, where = recon.fsc("fits/run042", truth="data/run042/truth.tif")
    found = recon.analyze("fits/run042")  # interference fringes: found.fringes, found.summary()
    recon.mesh("fits/run042", "cloud.stl")
    recon.render("fits/run042", frames=0, views=True)
    recon.simulate_campaign("data/systems/magis_dome.toml", "gaussian", "shots", 40)
    outcome = recon.batch("shots", out="campaign", workers=2)

Each is documented where it lives: :func:`recon.jobs.fit.fit`, :func:`recon.simulation.simulate.simulate_run`,
:func:`recon.jobs.compare.compare_paths`, :func:`recon.jobs.analyze.analyze`,
:func:`recon.jobs.mesh.mesh`, :func:`recon.jobs.render.render`,
:func:`recon.jobs.export.export`, :func:`recon.jobs.batch.batch`,
:func:`recon.simulation.campaign.simulate_campaign`,
:func:`recon.jobs.inspect.inspect`,
:func:`recon.jobs.calibrate.calibrate`, :func:`recon.io.run.load_run`, :func:`recon.io.volume.read_volume`,
:func:`recon.io.volume.write_volume`.
"""

from importlib import import_module

__version__ = "0.1.0"

#: Public name → (module, attribute).
_API = {
    "fit": ("recon.jobs.fit", "fit"),
    "simulate": ("recon.simulation.simulate", "simulate_run"),
    "simulate_campaign": ("recon.simulation.campaign", "simulate_campaign"),
    "batch": ("recon.jobs.batch", "batch"),
    "fsc": ("recon.jobs.compare", "compare_paths"),
    "analyze": ("recon.jobs.analyze", "analyze"),
    "mesh": ("recon.jobs.mesh", "mesh"),
    "render": ("recon.jobs.render", "render"),
    "export": ("recon.jobs.export", "export"),
    "inspect": ("recon.jobs.inspect", "inspect"),
    "calibrate": ("recon.jobs.calibrate", "calibrate"),
    "load_run": ("recon.io.run", "load_run"),
    "read_volume": ("recon.io.volume", "read_volume"),
    "write_volume": ("recon.io.volume", "write_volume"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    """Import an operation of :data:`_API` on first use (PEP 562)."""
    if name in _API:
        module, attribute = _API[name]
        return getattr(import_module(module), attribute)
    raise AttributeError(f"module 'recon' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
