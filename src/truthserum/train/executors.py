"""Where training shards run: in this process (the default), or as Ray tasks on a cluster.

A backend only trains; the run directory stays with the caller. Every finished shard comes
back to this process, which writes it under the same name whichever backend trained it, so a
run started on one backend resumes on another and never trains a finished shard again. A
shard's numbers depend on (seed, model index) alone (:mod:`truthserum.train.shard`); on a CPU they
agree across backends up to the float rounding of a different thread count.

Ray is an optional dependency (``pip install 'truthserum[ray]'``), imported only when the Ray
backend is used. Machines of a Ray cluster need truthserum installed in the same version.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from truthserum.config import RunConfig
from truthserum.errors import BackendError, ConfigError, TruthserumError
from truthserum.train.shard import ShardTrainer, TrainingJob, train_shard

Shard = dict[str, np.ndarray]

DEFAULT_CONNECT_TIMEOUT = 30.0  # seconds for a Ray cluster at an address to accept a connection
MAX_CONNECT_TIMEOUT = 3600.0


class BackendName(str, Enum):
    LOCAL = "local"
    RAY = "ray"


class ShardBackend(Protocol):
    """Trains shards of a job and yields each finished shard as soon as it is done."""

    def resolve_device(self, name: str) -> torch.device:
        """``cpu``, ``cuda`` or ``auto``: the device the shards will train on."""

    def train(
        self, config: RunConfig, job: TrainingJob, shards: Sequence[range], device: torch.device,
        *, progress: bool,
    ) -> Generator[Shard, None, None]:
        """Train ``shards`` (in any order); yields :func:`~truthserum.train.shard.train_shard`'s arrays.
        Closing the generator early stops what is still running."""

    def close(self) -> None:
        """Release what the backend started."""


DEVICES = ("cpu", "cuda", "auto")


def _check_device_name(name: str) -> None:
    if name not in DEVICES:
        raise ConfigError(f"device must be cpu, cuda or auto, got {name!r}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def progress_bar(total: int, desc: str, unit: str, progress: bool) -> tqdm:
    """A bar on stderr while ``progress``; disable=None shows it only on a terminal (a log
    gets the stages' own lines instead)."""
    return tqdm(total=total, disable=None if progress else True, leave=False, file=sys.stderr,
                desc=desc, unit=unit)


@dataclass
class LocalBackend:
    """Shards one after another in this process; each shard is one vectorized ensemble of the
    config's architecture, or whatever ``trainer`` does (a user's own model:
    :mod:`truthserum.train.own`)."""

    trainer: ShardTrainer = train_shard

    def resolve_device(self, name: str) -> torch.device:
        _check_device_name(name)
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda': no CUDA device is available (this torch build or machine has none)")
        return torch.device(name)

    def train(
        self, config: RunConfig, job: TrainingJob, shards: Sequence[range], device: torch.device,
        *, progress: bool,
    ) -> Generator[Shard, None, None]:
        # a trainer that reports once per model (one by one, or a user's trainer) says so
        counts = getattr(self.trainer, "progress", lambda config, models: (config.train.epochs, "epoch"))
        for models in shards:
            total, unit = counts(config, models)
            with progress_bar(total, f"{job.condition} models {models.start}-{models.stop - 1}", unit, progress) as bar:
                def on_epoch(epoch: int, loss: float) -> None:
                    if loss == loss:  # a trainer of the user's reports no loss (NaN)
                        bar.set_postfix(loss=f"{loss:.3f}")
                    bar.update(1)

                yield self.trainer(config, job, models, device, on_epoch)

    def close(self) -> None:
        pass


def _ray_shard(
    config: RunConfig, job: TrainingJob, first: int, stop: int, device: str, threads: int, queue: Any,
) -> Shard:
    """The body of one Ray task. It reports epochs through ``queue`` so that the caller's
    progress bar moves while the shard trains far away."""
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendError("a Ray worker was given a GPU but its torch cannot use CUDA")
    torch.set_num_threads(threads)

    def on_epoch(epoch: int, loss: float) -> None:
        if queue is not None:
            queue.put_nowait((first, loss))

    return train_shard(config, job, range(first, stop), torch.device(device), on_epoch)


@contextlib.contextmanager
def _quiet_stderr() -> Generator[None, None, None]:
    """Send file descriptor 2 to /dev/null meanwhile: Ray's C++ core writes a reconnect warning
    a second straight to it while it tries an address that answers but is no Ray cluster (it
    gives up after about 20 s); the failure is reported as one line instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass
class RayBackend:
    """Every shard a Ray task, all submitted at once; Ray runs as many as the cluster has room for.

    Attributes:
        address: an existing cluster (``auto``, ``host:port`` or ``ray://host:10001``), or None
            to start a local Ray instance with this machine's CPUs. A Ray instance already
            started in this process (``ray.init``) is used as it is.
        cpus_per_shard: CPUs each task asks for (and torch threads it uses).
        connect_timeout: seconds to wait for the cluster at ``address`` to accept a connection
            before giving up (Ray itself would retry for many minutes).
    """

    address: str | None = None
    cpus_per_shard: int = 1
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    _started: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.cpus_per_shard < 1:
            raise ConfigError(f"cpus_per_shard must be at least 1, got {self.cpus_per_shard}")
        if not 0 < self.connect_timeout <= MAX_CONNECT_TIMEOUT:
            raise ConfigError(f"connect_timeout must be in (0, {MAX_CONNECT_TIMEOUT:g}] seconds, got "
                              f"{self.connect_timeout:g}")

    def _check_reachable(self) -> None:
        """Fail within ``connect_timeout`` when nothing listens at ``address``: ``ray.init``
        retries an unreachable cluster for many minutes, printing reconnect warnings."""
        if self.address is None or self.address == "auto":
            return
        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"address must be auto, host:port or ray://host:port, got {self.address!r}")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=self.connect_timeout):
                pass
        except TimeoutError:
            raise BackendError(f"no Ray cluster answers at {self.address}: nothing accepted a connection within "
                               f"{self.connect_timeout:g} s (raise connect_timeout for a slow network)") from None
        except OSError as exc:
            raise BackendError(f"no Ray cluster answers at {self.address} ({exc.strerror or exc}); start one with "
                               "`ray start --head`, or check the address") from None

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise BackendError(
                "the Ray backend needs Ray, which is not installed: pip install 'truthserum[ray]'"
            ) from None
        if not ray.is_initialized():
            self._check_reachable()
            try:
                # an address's reconnect warnings are kept off the terminal; a local start is left
                # alone, since its daemons would inherit the silenced stderr
                with _quiet_stderr() if self.address is not None else contextlib.nullcontext():
                    ray.init(address=self.address, include_dashboard=False, logging_level="ERROR",
                             configure_logging=True, log_to_driver=False)
            except Exception as exc:  # Ray raises several types for an unreachable cluster
                where = f"at {self.address}" if self.address else "locally"
                raise BackendError(f"cannot start or reach Ray {where}: {_first_line(exc)}") from None
            self._started = True
        return ray

    def resolve_device(self, name: str) -> torch.device:
        """Connects to Ray (the first thing a run does), so that a missing or unreachable Ray
        is reported before anything is loaded or written."""
        _check_device_name(name)
        ray = self._ray()
        if name == "cpu":
            return torch.device("cpu")
        gpus = ray.cluster_resources().get("GPU", 0)
        if name == "cuda" and not gpus:
            raise ConfigError("device 'cuda': the Ray cluster has no GPUs")
        return torch.device("cuda" if gpus else "cpu")

    def train(
        self, config: RunConfig, job: TrainingJob, shards: Sequence[range], device: torch.device,
        *, progress: bool,
    ) -> Generator[Shard, None, None]:
        if not shards:
            return
        ray = self._ray()
        from ray.util.queue import Queue

        gpus = 1 if device.type == "cuda" else 0
        task = ray.remote(num_cpus=self.cpus_per_shard, num_gpus=gpus, max_retries=0)(_ray_shard)
        pending: list = []
        queue = None
        bar = progress_bar(len(shards) * config.train.epochs, f"{job.condition} {len(shards)} shards on Ray", "epoch",
                   progress)
        try:
            # epochs reach the bar through a queue only when there is a bar to move
            queue = None if bar.disable else Queue(actor_options={"num_cpus": 0})
            job_ref = ray.put(job)  # the data travel to the object store once, not once per shard
            pending = [
                task.remote(config, job_ref, models.start, models.stop, device.type, self.cpus_per_shard, queue)
                for models in shards
            ]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                if queue is not None:
                    for _, loss in queue.get_nowait_batch(queue.qsize()):
                        bar.set_postfix(loss=f"{loss:.3f}")
                        bar.update(1)
                for ref in ready:
                    yield _result(ray, ref)
        except ray.exceptions.RayTaskError:
            raise  # a bug inside a task (see _result): keep the remote traceback
        except ray.exceptions.RayError as exc:  # the object store, a dead queue, a lost node
            raise BackendError(f"Ray failed: {_first_line(exc)}") from None
        finally:
            bar.close()
            for ref in pending:  # stopped early: finished shards are already written
                ray.cancel(ref, force=True)
            if queue is not None:
                queue.shutdown()

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def _result(ray: Any, ref: Any) -> Shard:
    """A finished task's shard. A user's error raised far away (a diverged training, say)
    reaches the user as that same one-line error; a dead worker as a :class:`BackendError`."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, TruthserumError):
            raise exc.cause from None
        raise  # a bug in truthserum: keep the remote traceback
    except ray.exceptions.RayError as exc:
        raise BackendError(f"a Ray task was lost: {_first_line(exc)}") from None


def make_backend(name: BackendName, *, address: str | None = None, cpus_per_shard: int = 1,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> ShardBackend:
    """The backend ``name``; ``address``, ``cpus_per_shard`` and ``connect_timeout`` are for Ray only."""
    if name is BackendName.LOCAL:
        if address is not None:
            raise ConfigError("address is for the Ray backend")
        return LocalBackend()
    return RayBackend(address=address, cpus_per_shard=cpus_per_shard, connect_timeout=connect_timeout)
