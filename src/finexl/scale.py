"""Per-model work for many models at once, in this process or as Ray tasks.

An :class:`Executor` maps a top-level function over work items. :class:`LocalExecutor`
(the default) runs them one after another in this process; :class:`RayExecutor` runs each
item as a Ray task, on a small local cluster or on an existing one (``RAY_ADDRESS``). Ray is
an existing engine for this (DESIGN.md section 7), so finexl adds no scheduler of its own.

A work item carries only plain data: folders or file paths, an encoder *spec* and settings,
never a live model. Each worker loads its encoder from the spec (once per worker process)
and reads and writes the same on-disk embedding cache, so the driver's later runs, and other
workers, hit what one worker computed.

For ``compare`` the unit of work is "embed one personalized model's images and return its
per-pair differences". The base set is embedded once, by one task, and its embeddings are
handed to every model's task (one copy in Ray's object store, not one per task).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from finexl.errors import FinexlError

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations are strings, so 3.10 imports this file

    from finexl.encoders.base import Encoder
    from finexl.pairs import PairSet

logger = logging.getLogger(__name__)

RAY_EXTRA = 'pip install "finexl[ray]"'
EXECUTORS = ("local", "ray")
# A small object store is plenty: the largest object is one set of embeddings (n x dim floats).
_LOCAL_OBJECT_STORE_BYTES = 100 * 1024 * 1024


class Executor(Protocol):
    """Runs ``function`` over ``items`` and returns the results in the order of ``items``.

    ``function`` must be a module-level function (Ray ships it to workers by reference).
    With ``shared`` given, each call is ``function(item, shared)``; otherwise ``function(item)``.
    """

    name: str

    def map(self, function: Callable[..., Any], items: Sequence[Any], *, shared: Any = None,
            description: str = "working", progress: bool = False) -> list[Any]: ...


class LocalExecutor:
    """Run every item in this process, one after another (the default)."""

    name = "local"

    def map(self, function: Callable[..., Any], items: Sequence[Any], *, shared: Any = None,
            description: str = "working", progress: bool = False) -> list[Any]:
        from finexl.progress import track

        args = () if shared is None else (shared,)
        return [function(item, *args)
                for item in track(items, total=len(items), description=description,
                                  enabled=progress)]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


class RayExecutor:
    """Run every item as a Ray task.

    Parameters
    ----------
    address : str or None
        An existing cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``). ``None``
        uses ``$RAY_ADDRESS`` when set, else starts a local cluster on loopback only, with
        no dashboard and a small object store, which :meth:`shutdown` stops again.
    num_cpus : int or None
        CPUs of a local cluster (``None``: up to 2). Ignored when joining a cluster.
    num_cpus_per_task, num_gpus_per_task : float
        Resources each task asks for. With GPUs, also set the encoder device to ``"cuda"``.
    max_retries : int
        Times Ray reruns a task whose worker died (a task that raised is not rerun).
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None,
                 num_cpus_per_task: float = 1.0, num_gpus_per_task: float = 0.0,
                 max_retries: int = 1) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.num_cpus_per_task = num_cpus_per_task
        self.num_gpus_per_task = num_gpus_per_task
        self.max_retries = max_retries
        self._started_here = False

    def start(self) -> None:
        """Connect to Ray, or start a local cluster (a no-op when Ray is already running)."""
        ray = import_ray()
        if ray.is_initialized():
            return
        # Ray reports usage statistics over the network unless told not to; a user who set
        # the variable keeps their choice.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "logging_level": logging.WARNING}
        if address is None:
            # Workers and the driver talk over loopback only.
            options.update(num_cpus=self.num_cpus or min(2, os.cpu_count() or 1),
                           object_store_memory=_LOCAL_OBJECT_STORE_BYTES,
                           _node_ip_address="127.0.0.1")
        try:
            ray.init(address=address, **options)
        except Exception as exc:  # Ray raises several types (ConnectionError, RuntimeError...)
            where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
            raise FinexlError(f"could not start or reach {where} ({type(exc).__name__}: {exc});"
                              " run without --ray, or check the address and `ray status`") from exc
        self._started_here = True
        logger.info("ray: %s", "joined " + address if address else "started a local cluster")

    def shutdown(self) -> None:
        """Stop Ray if :meth:`start` started or joined it; leave a caller's Ray running."""
        if self._started_here:
            import_ray().shutdown()
            self._started_here = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def map(self, function: Callable[..., Any], items: Sequence[Any], *, shared: Any = None,
            description: str = "working", progress: bool = False) -> list[Any]:
        from finexl.progress import track

        ray = import_ray()
        self.start()
        remote = ray.remote(num_cpus=self.num_cpus_per_task, num_gpus=self.num_gpus_per_task,
                            max_retries=self.max_retries)(function)
        # One copy of the shared value in the object store, not one per task.
        args = () if shared is None else (ray.put(shared),)
        refs = [remote.remote(item, *args) for item in items]
        done = track(_as_completed(ray, refs), total=len(refs), description=description,
                     enabled=progress)
        for _ in done:
            pass
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, FinexlError):
                # A user's mistake found in a worker reads as if found here: one line.
                raise FinexlError(str(cause)) from exc
            raise


def _as_completed(ray: Any, refs: list[Any]) -> Iterator[Any]:
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        yield from ready


def import_ray() -> Any:
    """``import ray``, or a ``FinexlError`` naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise FinexlError(f"--ray needs the Ray package, which is not installed; {RAY_EXTRA}"
                          " (or run without --ray)") from exc
    return ray


def make_executor(name: str = "local", **options: Any) -> LocalExecutor | RayExecutor:
    """The executor called ``name`` (``"local"`` or ``"ray"``); ``options`` go to RayExecutor."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(**options)
    raise FinexlError(f"executor {name!r} is unknown; choose one of {', '.join(EXECUTORS)}")


# --- compare's unit of work ------------------------------------------------------------------

@dataclass(frozen=True)
class EmbedSettings:
    """How a worker loads its encoder (everything but the spec); plain data, cheap to ship."""

    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32
    cache: str | None = None  # an embedding cache folder every worker reaches; None: memory only

    @classmethod
    def from_config(cls, config: Any) -> EmbedSettings:
        """Settings from an ``ExplainConfig`` (``device``, ``dtype``, ``batch_size``, ``cache``).

        ``cache=True`` is resolved here, in the driver, so workers write where the driver reads
        even when their environment lacks ``$FINEXL_CACHE_DIR``.
        """
        from finexl.store.files import default_cache_dir

        cache = config.cache
        if cache is True:
            cache = str(default_cache_dir())
        elif cache is False or cache is None:
            cache = None
        else:
            cache = str(Path(cache).expanduser().resolve())
        return cls(device=config.device, dtype=config.dtype, batch_size=config.batch_size,
                   cache=cache)


@dataclass(frozen=True)
class ImageTask:
    """Embed ``paths`` with the encoder ``encoder_spec`` names (one model's side of the pairs)."""

    name: str
    encoder_spec: str
    settings: EmbedSettings
    paths: tuple[str, ...]


def embed_image_task(task: ImageTask) -> np.ndarray:
    """Image embeddings of ``task.paths``, shape ``(n, dim)``, float32 unit rows."""
    encoder = _worker_encoder(task.encoder_spec, task.settings)
    from finexl.encoders.base import embed_image_files

    return embed_image_files(encoder, task.paths, task.settings.batch_size)


def embed_difference_task(task: ImageTask, base_embeddings: np.ndarray) -> np.ndarray:
    """``E(personal_i) - E(base_i)`` for one model, shape ``(n, dim)``, float64.

    ``base_embeddings`` (``(n, dim)``) come from :func:`embed_image_task` on the base paths.
    """
    personal = embed_image_task(task)
    if personal.shape != base_embeddings.shape:
        raise ValueError(f"model {task.name}: {personal.shape} personal embeddings for"
                         f" {base_embeddings.shape} base embeddings")
    return personal.astype(np.float64) - base_embeddings.astype(np.float64)


@functools.lru_cache(maxsize=1)
def _worker_encoder(encoder_spec: str, settings: EmbedSettings) -> Encoder:
    # A Ray worker process runs many tasks: load the weights once per process, not per task.
    from finexl.encoders.loader import load_encoder

    return load_encoder(encoder_spec, device=settings.device, dtype=settings.dtype,
                        batch_size=settings.batch_size,
                        cache=settings.cache if settings.cache is not None else False)


def release_encoders() -> None:
    """Drop the encoder this process keeps loaded for :func:`embed_image_task`."""
    _worker_encoder.cache_clear()


def embed_pair_sets(pair_sets: Mapping[str, PairSet], encoder_spec: str,
                    settings: EmbedSettings | None = None, executor: Executor | None = None, *,
                    progress: bool = False) -> dict[str, np.ndarray]:
    """Per-pair differences for several models that share one base set.

    Parameters
    ----------
    pair_sets : mapping of str to PairSet
        Model name -> its pairs; every set must pair the same base files (same prompts and
        seeds), as ``compare`` requires.
    encoder_spec : str
        What ``load_encoder`` resolves in each worker (``"mini"``, a directory, a hub id).
    settings : EmbedSettings, optional
        Device, dtype, batch size and the shared cache folder.
    executor : Executor, optional
        Where the tasks run; :class:`LocalExecutor` when omitted.
    progress : bool
        A bar counting models.

    Returns
    -------
    dict of str to ndarray
        Model name -> ``E(personal_i) - E(base_i)``, shape ``(n_pairs, dim)``, float64, in
        the order of ``pair_sets``.
    """
    settings = settings or EmbedSettings()
    executor = executor or LocalExecutor()
    if not pair_sets:
        return {}
    names = list(pair_sets)
    base_paths = tuple(str(p) for p in pair_sets[names[0]].base_paths)
    for name in names[1:]:
        if tuple(str(p) for p in pair_sets[name].base_paths) != base_paths:
            raise FinexlError(f"model {name} is paired with other base images than {names[0]};"
                              " every model must share one base set to be embedded together")
    # The base set once, by one task (it also lands in the shared cache for later runs).
    base_task = ImageTask("base", encoder_spec, settings, base_paths)
    base_embeddings = executor.map(embed_image_task, [base_task],
                                   description="embedding base images")[0]
    tasks = [ImageTask(name, encoder_spec, settings,
                       tuple(str(p) for p in pair_sets[name].personal_paths)) for name in names]
    diffs = executor.map(embed_difference_task, tasks, shared=base_embeddings,
                         description="embedding models", progress=progress)
    return dict(zip(names, diffs))


def embed_models(base_dir: str | Path, personal: Mapping[str, str | Path], encoder_spec: str,
                 settings: EmbedSettings | None = None, executor: Executor | None = None, *,
                 prompts_file: str | Path | None = None,
                 progress: bool = False) -> dict[str, np.ndarray]:
    """Load and check every model's folder, then :func:`embed_pair_sets` them.

    Parameters
    ----------
    base_dir : str or Path
        The base model's images.
    personal : mapping of str to str or Path
        Model name -> folder of its images (paired with ``base_dir`` by file name).
    encoder_spec, settings, executor, progress
        As in :func:`embed_pair_sets`.
    prompts_file : str or Path, optional
        Prompts when the folders carry no ``metadata.jsonl``.

    Returns
    -------
    dict of str to ndarray
        Model name -> per-pair differences, shape ``(n_pairs, dim)``, float64.
    """
    from finexl.image_hashes import checked_before
    from finexl.pairs import check_images, load_pair_sets

    pair_sets = load_pair_sets(base_dir, personal, prompts_file=prompts_file)
    store = None
    if settings is not None and settings.cache is not None:
        from finexl.store.cache import open_store

        store = open_store(settings.cache, subdir="embeddings")  # skip unchanged, checked files
    for pairs in pair_sets.values():
        check_images(pairs, skip=checked_before(pairs, store))
    return embed_pair_sets(pair_sets, encoder_spec, settings, executor, progress=progress)
