"""Ray Data engine: score a ``Dataset`` with one warmed-up predictor per actor."""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import replace
from typing import Any

from illia_export.errors import InputError, require
from illia_export.scale.scorer import BatchScorer, ScoreSettings, check_ids_needed

log = logging.getLogger(__name__)

#: Rows per graph call by default.
DEFAULT_BATCH_SIZE = 1024
#: Seconds to wait for a cluster address to accept a connection (Ray itself retries for minutes).
CONNECT_TIMEOUT = 5.0


def require_ray():
    """``ray`` with Ray Data, or a MissingBackendError naming the ``scale`` extra."""
    require("ray.data", "scale", "the Ray engine")
    import ray

    return ray


def ensure_ray(address: str | None = None) -> bool:
    """Connect to Ray: the cluster at `address` (``"auto"``, ``"ray://host:10001"``, ...), else
    a local instance on this machine. Returns True when this call started it (the caller shuts
    it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    if address not in (None, "auto", "local"):
        probe_address(address)
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    # Ray Data's per-run INFO lines (execution plans, log paths) would drown the CLI's output.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return True


def probe_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail within `timeout` seconds when nothing listens at a cluster address
    (``host:port`` or ``ray://host:port``): ``ray.init`` would retry for minutes."""
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise InputError(f"--address {address!r} must be 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise InputError(
            f"cannot reach the Ray cluster at {address} within {timeout:g} s ({exc.strerror or exc}); "
            "check the address and that the cluster is running (ray status)"
        ) from exc


def check_resources(ray, n_actors: int, cpus_per_actor: float) -> None:
    """Refuse an actor pool the cluster can never schedule (Ray would wait forever): an actor
    larger than the largest node, or a pool that leaves no CPU for Ray Data's reads."""
    nodes = [n for n in ray.nodes() if n.get("Alive", True)]
    largest = max((float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes), default=0.0)
    total = float(ray.cluster_resources().get("CPU", 0.0))
    if cpus_per_actor > largest:
        raise InputError(
            f"--cpus-per-actor {cpus_per_actor:g} exceeds the CPUs of the largest node in the cluster ({largest:g}); "
            "such an actor can never start: ask for fewer CPUs per actor"
        )
    budget = max(total - 1, total / 2)
    if n_actors * cpus_per_actor > budget + 1e-9:
        raise InputError(
            f"{n_actors} actors x {cpus_per_actor:g} CPUs need {n_actors * cpus_per_actor:g} CPUs; the cluster has "
            f"{total:g} and Ray Data's reads need one free ({budget:g} usable): lower --actors or --cpus-per-actor"
        )


def plan_actors(total_cpus: float, actors: int | None = None, cpus_per_actor: float | None = None) -> tuple[int, float]:
    """(actors, CPUs per actor) for a cluster of `total_cpus`.

    One CPU stays free for Ray Data's read and write tasks (at most half the cluster): with
    every CPU held by actors the reads never get one and the job hangs for good. By default
    one actor per CPU shares the rest (2 CPUs: two actors of 0.5 CPU). Each actor's backend
    runs ``max(1, int(CPUs per actor))`` threads.
    """
    if actors is not None and actors < 1:
        raise InputError(f"actors (={actors}) must be a positive integer")
    if cpus_per_actor is not None and cpus_per_actor <= 0:
        raise InputError(f"cpus_per_actor (={cpus_per_actor}) must be positive")
    budget = max(total_cpus - 1, total_cpus / 2)
    if actors is None and cpus_per_actor is None:
        actors = max(1, int(total_cpus))
    if actors is None:
        actors = max(1, math.floor(budget / cpus_per_actor))  # type: ignore[operator]
    if cpus_per_actor is None:
        cpus_per_actor = math.floor(1000 * budget / actors) / 1000  # never above the budget
    return int(actors), float(cpus_per_actor)


def score_dataset(
    dataset,
    artifact: str | os.PathLike,
    settings: ScoreSettings | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    actors: int | None = None,
    cpus_per_actor: float | None = None,
    threads: int | None = None,
    device: str = "cpu",
    load_options: dict[str, Any] | None = None,
    **options: Any,
):
    """Monte Carlo prediction columns for a Ray Data ``Dataset`` (lazy: returns a Dataset).

    Args:
        dataset: rows with the model's input column(s) (or numeric feature columns).
        artifact: the exported model; every actor loads it once.
        settings: :class:`ScoreSettings`, or pass its fields as keyword `options`
            (``num_samples=64, seed=0, strategy="bank", id_column="customer_id"``...).
            ``seed=None`` draws one seed on the driver for the whole run (logged).
        batch_size: rows per graph call.
        actors, cpus_per_actor: the actor pool (see :func:`plan_actors`; default from the
            cluster's CPUs).
        threads: backend threads per actor (default: its CPUs, at least 1).
        device: ``"cpu"`` or ``"cuda"`` (then give the actors GPUs with ``num_gpus`` in Ray).
        load_options: ``runtime.load``'s trust options (``trust_native_code``,
            ``expected_digest``, ``allow_unverified``), used by the driver and every actor.

    Returns:
        The scored Dataset: the id column (or every input column with ``keep_inputs``), then
        one column per ``Prediction`` summary.

    Raises:
        StrategyError: the artifact draws per-example noise (``local``, MC dropout, Flipout)
            and the rows have no stable id column.
    """
    from illia_export.runtime import load
    from illia_export.runtime.sampling import random_seed

    ray = require_ray()
    settings = replace(settings or ScoreSettings(), **options)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size (={batch_size!r}) must be a positive integer")
    path = os.path.abspath(os.fspath(artifact))
    load_options = dict(load_options or {})
    predictor = load(path, **load_options)  # the driver checks the artifact and the settings before any worker starts
    if settings.seed is None:
        settings = replace(settings, seed=random_seed())
        log.warning("illia-export: scoring with seed %d (pass seed=%d to reproduce)", settings.seed, settings.seed)
    names = dataset.schema().names
    id_name = settings.id_name(names)
    if id_name is not None and id_name not in names:
        raise InputError(f"id column {id_name!r} is not in the dataset (has {names})")
    check_ids_needed(predictor, settings, id_name is not None)
    total = float(ray.cluster_resources().get("CPU", 1.0))
    n_actors, cpus = plan_actors(total, actors, cpus_per_actor)
    check_resources(ray, n_actors, cpus)
    return dataset.map_batches(
        BatchScorer,
        fn_constructor_kwargs={
            "artifact": path, "settings": settings, "threads": threads, "device": device, **load_options,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        num_cpus=cpus,
    )
