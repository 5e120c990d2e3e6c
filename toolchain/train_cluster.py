"""The cluster of a ``--strategy multi-worker`` training run: from ``--workers host:port,... --worker-index I`` or
from the ``TF_CONFIG`` environment variable, validated here (no TensorFlow needed) so that a bad configuration is
a one-line usage error before any worker starts its gRPC server.

``TF_CONFIG`` is TensorFlow's JSON cluster description, e.g. for the second of two workers::

    {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 1}}

A ``chief`` job (one address) is accepted as well; it is then worker 0 and the ``worker`` job follows it. Other
jobs (``ps``, ``evaluator``) belong to other strategies and are refused. ``--workers`` builds exactly this JSON
(:meth:`ClusterConfig.tf_config`); giving both ``--workers`` and ``TF_CONFIG`` is refused rather than guessing
which one wins.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from toolchain.errors import UsageError

TF_CONFIG_ENV = "TF_CONFIG"
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?)$")


@dataclass(frozen=True)
class ClusterConfig:
    """``addresses``: every worker, chief first; ``index``: this process's position in it (0 = chief)."""

    addresses: tuple[str, ...]
    index: int
    source: str  # "--workers" or "TF_CONFIG"
    has_chief_job: bool = False

    @property
    def num_workers(self) -> int:
        return len(self.addresses)

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    def task(self) -> tuple[str, int]:
        """TensorFlow's (job name, task index) of this process."""
        if self.has_chief_job:
            return ("chief", 0) if self.index == 0 else ("worker", self.index - 1)
        return "worker", self.index

    def cluster_spec(self) -> dict[str, list[str]]:
        if self.has_chief_job:
            return {"chief": [self.addresses[0]], "worker": list(self.addresses[1:])}
        return {"worker": list(self.addresses)}

    def tf_config(self) -> dict[str, Any]:
        job, index = self.task()
        return {"cluster": self.cluster_spec(), "task": {"type": job, "index": index}}


def check_address(address: str, what: str) -> str:
    """``host:port`` with a plausible host name / IPv4 / bracketed IPv6 address and a port in 1..65535."""
    text = address.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host or not _HOST_RE.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{what}: every worker must be host:port with a port in 1..65535",
                         received=repr(address))
    return text


def _check_unique(addresses: list[str], what: str) -> None:
    seen = set()
    for a in addresses:
        if a in seen:
            raise UsageError(f"{what}: a worker address appears twice", received=a)
        seen.add(a)


def parse_workers(workers: str, worker_index: int | None) -> ClusterConfig:
    """``--workers host:port,host:port,...`` and ``--worker-index I`` -> the cluster."""
    parts = [p for p in (s.strip() for s in workers.split(","))]
    if not parts or any(not p for p in parts):
        raise UsageError("--workers must be a comma-separated list of host:port", received=f"--workers={workers!r}")
    addresses = [check_address(p, "--workers") for p in parts]
    _check_unique(addresses, "--workers")
    if worker_index is None:
        raise UsageError("--workers needs --worker-index (this process's position in the list, 0 = chief)",
                         received=f"--workers={workers}")
    if not 0 <= worker_index < len(addresses):
        raise UsageError(f"--worker-index must be in 0..{len(addresses) - 1} for {len(addresses)} workers",
                         received=f"--worker-index={worker_index}")
    return ClusterConfig(tuple(addresses), int(worker_index), "--workers")


def parse_tf_config(text: str) -> ClusterConfig:
    """The ``TF_CONFIG`` JSON -> the cluster (job ``worker``, optionally one ``chief``)."""
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{TF_CONFIG_ENV} is not valid JSON ({exc.msg} at character {exc.pos})",
                         received=f"{TF_CONFIG_ENV}={text[:80]!r}") from None
    cluster = cfg.get("cluster") if isinstance(cfg, dict) else None
    task = cfg.get("task") if isinstance(cfg, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UsageError(f"{TF_CONFIG_ENV} needs a 'cluster' object and a 'task' object",
                         received=f"{TF_CONFIG_ENV}={text[:80]!r}")
    other = sorted(set(cluster) - {"chief", "worker"})
    if other:
        raise UsageError(f"{TF_CONFIG_ENV}: multi-worker training uses the 'worker' (and optional 'chief') jobs "
                         "only", received=f"jobs {other}")
    jobs: dict[str, list[str]] = {}
    for job in ("chief", "worker"):
        addrs = cluster.get(job, [])
        if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
            raise UsageError(f"{TF_CONFIG_ENV}: cluster.{job} must be a list of host:port strings",
                             received=repr(addrs))
        jobs[job] = [check_address(a, TF_CONFIG_ENV) for a in addrs]
    if len(jobs["chief"]) > 1:
        raise UsageError(f"{TF_CONFIG_ENV}: there is at most one chief", received=jobs["chief"])
    addresses = jobs["chief"] + jobs["worker"]
    if not addresses:
        raise UsageError(f"{TF_CONFIG_ENV}: cluster.worker lists no workers", received=repr(cluster))
    _check_unique(addresses, TF_CONFIG_ENV)
    job, index = task.get("type"), task.get("index", 0)
    if job not in jobs or not jobs[job]:
        raise UsageError(f"{TF_CONFIG_ENV}: task.type must be one of the cluster's jobs "
                         f"({', '.join(j for j in jobs if jobs[j])})", received=f"task.type={job!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(jobs[job]):
        raise UsageError(f"{TF_CONFIG_ENV}: task.index must be in 0..{len(jobs[job]) - 1} for job {job!r}",
                         received=f"task.index={index!r}")
    offset = len(jobs["chief"]) if job == "worker" else 0
    return ClusterConfig(tuple(addresses), offset + index, TF_CONFIG_ENV, has_chief_job=bool(jobs["chief"]))


def resolve_cluster(strategy: str | None, workers: str | None, worker_index: int | None,
                    environ: Mapping[str, str]) -> ClusterConfig | None:
    """The cluster for ``strategy`` (None unless it is ``multi-worker``); refuses options that would be ignored."""
    if strategy != "multi-worker":
        if workers is not None or worker_index is not None:
            flag = "--workers" if workers is not None else "--worker-index"
            raise UsageError(f"{flag} needs --strategy multi-worker", received=f"--strategy={strategy}")
        return None
    env = environ.get(TF_CONFIG_ENV)
    if workers is not None:
        if env:
            raise UsageError(f"give the cluster either as --workers/--worker-index or in {TF_CONFIG_ENV}, not both",
                             received=f"--workers={workers} and {TF_CONFIG_ENV} set")
        return parse_workers(workers, worker_index)
    if worker_index is not None:
        raise UsageError("--worker-index needs --workers (with TF_CONFIG the index is its task.index)",
                         received=f"--worker-index={worker_index}")
    if not env:
        raise UsageError(f"--strategy multi-worker needs the cluster: --workers host:port,... --worker-index I, "
                         f"or the {TF_CONFIG_ENV} environment variable", received="neither given")
    return parse_tf_config(env)
