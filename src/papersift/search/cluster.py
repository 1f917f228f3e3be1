"""Embedding on a Ray cluster: how arXiv-sized backlogs get their vectors in hours, not days.

One onnxruntime process embeds some 40-100 abstracts a second on two cores, so 2.7M papers
take most of a day. ``papersift index --ray ADDRESS`` hands the backlog (papers without a
stored vector for the current model) to Ray Data instead:

- a :class:`PaperBlocks` datasource reads the papers from the database in blocks of ids,
  one read task per block, so nothing holds the whole corpus in memory;
- ``map_batches`` with a class runs an actor pool, each actor holding the ONNX model once
  (threads sized to the CPUs it was given; a GPU execution provider where the
  ``embed_providers`` setting asks for one and the node has it);
- this process writes each finished batch to the ``embeddings`` table as it arrives, so a
  killed run keeps every batch it finished, and the next run embeds only the rest.

The search index itself is then brought in step by the ordinary indexer, which finds the
stored vectors and only adds them to the graph. Ray is an optional extra
(``pip install papersift[ray]``); nothing imports it unless a cluster run is asked for.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

from papersift.settings import Settings, current, worker_environment
from papersift.store import search_docs
from papersift.store.db import Database

log = logging.getLogger("papersift.search")

BATCH_ROWS = 256  # papers per model call inside an actor (length-sorted by the embedder)
BLOCKS_OF = 4  # batches per read task: ~1.5 MB of text, some seconds of one actor's work
REACH_SECONDS = 5.0  # how long a cluster address may take to accept a connection

Progress = Callable[[int, int], None]


class ClusterError(RuntimeError):
    """A cluster run that cannot start (Ray missing, cluster unreachable)."""


@dataclass
class ClusterReport:
    backlog: int = 0
    embedded: int = 0
    workers: int = 0
    seconds: float = 0.0
    address: str = ""

    @property
    def per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"per_second": round(self.per_second, 1)}


def _ray() -> Any:
    """The ray module, or a ClusterError that says how to get it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ClusterError(
            "embedding on a cluster needs Ray: pip install 'papersift[ray]'"
        ) from exc
    return ray


def _read_block(db_url: str, ids: list[str]) -> Iterable[Any]:
    """One read task: the id, text and content hash of a block of papers."""
    import pyarrow as pa

    db = _worker_db(db_url)
    with db.session() as s:
        docs = search_docs.paper_docs(s, ids)
    rows = [docs[pid] for pid in ids if pid in docs]  # a paper deleted meanwhile is skipped
    yield pa.table(
        {
            "id": [d.id for d in rows],
            "text": [d.text for d in rows],
            "content_hash": [d.content_hash for d in rows],
        }
    )


_WORKER_DBS: dict[str, Database] = {}


def _worker_db(db_url: str) -> Database:
    """One engine per worker process and database (read tasks of a run share it)."""
    db = _WORKER_DBS.get(db_url)
    if db is None:
        db = _WORKER_DBS[db_url] = Database(db_url, migrate=False)
    return db


def paper_blocks(db_url: str, ids: list[str], block_rows: int) -> Any:
    """A Ray Data datasource over the papers ``ids``, one read task per block of ids."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class PaperBlocks(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return len(ids) * 1500  # ids, an abstract and a hash: ~1.5 kB a paper

        def get_read_tasks(
            self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
        ) -> list[ReadTask]:
            tasks = []
            for start in range(0, len(ids), block_rows):
                block = ids[start : start + block_rows]
                meta = BlockMetadata(
                    num_rows=len(block),
                    size_bytes=len(block) * 1500,
                    input_files=None,
                    exec_stats=None,
                )
                tasks.append(ReadTask(partial(_read_block, db_url, block), meta))
            return tasks

    return PaperBlocks()


class EncodeBatches:
    """The actor of the pool: loads the model once, then turns batches of texts into
    float16 vectors (the stored form). Settings reach it through the job's environment."""

    def __init__(self, threads: int) -> None:
        from papersift.search.embedder import Embedder

        settings = current()
        self.embedder = Embedder(
            settings.model_dir, threads=threads, document_int8=settings.document_int8
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        vectors = self.embedder.encode(texts) if texts else np.zeros((0, self.embedder.dim))
        return {
            "id": batch["id"],
            "content_hash": batch["content_hash"],
            "vector": np.asarray(vectors, dtype=np.float16),
            "model": np.array([self.embedder.model_id] * len(texts), dtype=object),
        }


def check_reachable(address: str, timeout: float = REACH_SECONDS) -> None:
    """Fail fast when nothing listens at a cluster's ``host:port`` (or ``ray://host:port``).

    ``ray.init`` has no connect timeout: at an address where nothing answers it retries for
    minutes, printing warnings. A plain TCP connect tells in seconds; ``auto`` and other
    address forms are left to Ray."""
    where = address.removeprefix("ray://")
    host, sep, port = where.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit():
        return
    host = host.strip("[]") or "127.0.0.1"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise ClusterError(
            f"cannot reach the Ray cluster at {address}: {reason}; start its head with "
            "`ray start --head` or check the address (host:port of the head's GCS)"
        ) from exc


def _connect(ray: Any, address: str, settings: Settings, cpus: int) -> None:
    """Join the cluster at ``address``, or start a local one for ``local``. Workers get the
    settings of this process (home, database, model) through the job's environment."""
    runtime_env = {"env_vars": worker_environment(settings, embedding=True)}
    if address != "local":
        check_reachable(address)
    try:
        if address == "local":
            ray.init(
                num_cpus=cpus,
                include_dashboard=False,
                object_store_memory=256 * 1024 * 1024,
                runtime_env=runtime_env,
                log_to_driver=False,
                configure_logging=False,
            )
        else:
            ray.init(
                address=address,
                runtime_env=runtime_env,
                log_to_driver=False,
                configure_logging=False,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:  # what ray.init raises
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {exc}") from exc


def embed_backlog(
    settings: Settings,
    db: Database,
    model_id: str,
    address: str,
    *,
    workers: int | None = None,
    threads: int = 1,
    batch_rows: int = BATCH_ROWS,
    progress: Progress | None = None,
) -> ClusterReport:
    """Embed every paper without a stored vector for ``model_id`` on the Ray cluster at
    ``address`` (``local`` starts one here), storing each batch as it finishes."""
    ray = _ray()
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its INFO lines drown the bar
    with db.session() as s:
        ids = search_docs.unembedded_ids(s, model_id)
    report = ClusterReport(backlog=len(ids), address=address)
    if not ids:
        return report
    local_cpus = max(1, (workers or os.cpu_count() or 1) * threads)  # a local cluster's size
    _connect(ray, address, settings, local_cpus)
    started = time.perf_counter()
    try:
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        report.workers = workers or max(1, cluster_cpus // threads)
        # Reading is light next to the model: read tasks reserve no CPU, so the actors,
        # which hold every CPU, cannot starve them (Ray Data's backpressure bounds them).
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # papersift draws its own bar
        data = ray.data.read_datasource(
            paper_blocks(settings.db_url, ids, batch_rows * BLOCKS_OF), num_cpus=0
        )
        vectors = data.map_batches(
            EncodeBatches,
            fn_constructor_kwargs={"threads": threads},
            batch_size=batch_rows,
            num_cpus=threads,
            compute=ray.data.ActorPoolStrategy(size=report.workers),
            batch_format="numpy",
        )
        for batch in _batches(vectors):
            models = {str(m) for m in batch["model"]}
            if models != {model_id}:
                raise ClusterError(
                    f"the cluster embeds with {sorted(models)}, this home with {model_id}: "
                    "install the same papersift and model on every node"
                )
            rows = [
                (str(pid), str(chash), vec)
                for pid, chash, vec in zip(
                    batch["id"], batch["content_hash"], batch["vector"], strict=True
                )
            ]
            with db.session() as s:
                search_docs.save_embeddings(s, rows, model_id)
            report.embedded += len(rows)
            if progress is not None:
                progress(report.embedded, report.backlog)
    finally:
        report.seconds = time.perf_counter() - started
        ray.shutdown()
    return report


def _batches(dataset: Any) -> Iterator[dict[str, np.ndarray]]:
    """The finished batches in the order the actors deliver them (not the input order:
    a slow block must not hold back the writes of the others)."""
    yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
