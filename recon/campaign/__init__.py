"""Campaigns: many shots fitted with one setting, resumably, on local processes or a Ray cluster.

* :mod:`recon.campaign.shots`: which run directories make the campaign;
* :mod:`recon.campaign.manifest`: each shot's state (pending, running, done, failed), saved atomically;
* :mod:`recon.campaign.engines`: where the fits run (local processes, Ray tasks);
* :mod:`recon.campaign.results`: the per-shot table (results.csv, Parquet).

:mod:`recon.jobs.batch` sequences them for ``recon batch``.
"""

__all__: list[str] = []
