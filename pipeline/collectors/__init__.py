"""Real usage sources (issue 13): collectors that turn what a GPU platform observes into
``gpu.usage.v1`` events, and the edge that gets them to Kafka without losing any.

* :mod:`~pipeline.collectors.dcgm` (``gpumeter collect dcgm``): NVIDIA DCGM-exporter
  Prometheus text on Kubernetes GPU nodes; parsing in :mod:`~pipeline.collectors.dcgm_parse`.
* :mod:`~pipeline.collectors.sacct` (``gpumeter import sacct``): Slurm accounting; parsing and
  hourly slicing in :mod:`~pipeline.collectors.sacct_parse`.
* :mod:`~pipeline.collectors.nvml` (``gpumeter collect nvml``): NVML on a single host; reading
  in :mod:`~pipeline.collectors.nvml_read`.

What is pure (parsing, intervals between two observations, attribution, event identities) is
apart from the I/O (HTTP, NVML, the spool, Kafka): :mod:`~pipeline.collectors.intervals` is
shared by the DCGM and NVML collectors, :mod:`~pipeline.collectors.spool` and
:mod:`~pipeline.collectors.publish` are the edge (write-ahead spool, idempotent producer).
"""
