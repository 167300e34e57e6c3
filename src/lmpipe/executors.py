"""One seam for shard-parallel work: ``executor.map(fn, items)`` returns results in input order.

Local process pool by default; ``dask.distributed`` (a ``LocalCluster`` or a scheduler address) or Ray
as drop-ins for clusters. ``fn`` must be a picklable top-level function and must write its own outputs
under names derived from its item, so results never depend on which executor or how many workers ran it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol, TypeVar

from tqdm.auto import tqdm

from lmpipe.config import ExecutorConfig

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str = "") -> list[R]: ...
    def close(self) -> None: ...


def _progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc or "shards", unit="shard", dynamic_ncols=True, mininterval=1.0)


class LocalExecutor:
    """A process pool; ``workers=1`` runs in-process (easier to debug, no pickling)."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers

    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str = "") -> list[R]:
        results: list[Any] = [None] * len(items)
        with _progress(len(items), desc) as bar:
            if self.workers == 1 or len(items) <= 1:
                for i, item in enumerate(items):
                    results[i] = fn(item)
                    bar.update()
                return results
            with ProcessPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
                futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update()
        return results

    def close(self) -> None:
        pass


class DaskExecutor:
    """``dask.distributed``: a scheduler ``address``, or a ``LocalCluster`` of ``workers`` processes."""

    def __init__(self, workers: int = 2, address: str | None = None) -> None:
        from dask.distributed import Client, LocalCluster

        self._cluster = None
        if address:
            self.client = Client(address)
        else:
            self._cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self.client = Client(self._cluster)

    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str = "") -> list[R]:
        from dask.distributed import as_completed as dask_completed

        futures = self.client.map(fn, list(items), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(items)
        with _progress(len(items), desc) as bar:
            for fut in dask_completed(futures):
                results[index[fut.key]] = fut.result()
                bar.update()
        return results

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


class RayExecutor:
    """Ray tasks (``pip install lmpipe[ray]``): ``address`` of a cluster, or a local one."""

    def __init__(self, workers: int = 2, address: str | None = None) -> None:
        import ray

        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False)

    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str = "") -> list[R]:
        remote = self.ray.remote(fn)
        refs = [remote.remote(item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(items)
        pending = list(refs)
        with _progress(len(items), desc) as bar:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                results[index[done[0]]] = self.ray.get(done[0])
                bar.update()
        return results

    def close(self) -> None:
        self.ray.shutdown()


def make_executor(cfg: ExecutorConfig) -> Executor:
    if cfg.kind == "dask":
        return DaskExecutor(cfg.workers, cfg.address)
    if cfg.kind == "ray":
        return RayExecutor(cfg.workers, cfg.address)
    return LocalExecutor(cfg.workers)
