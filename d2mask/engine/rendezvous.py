"""How the processes of a job find each other: the --dist-url, and a rendezvous that says whom it
waits for.

torch.distributed's own tcp:// rendezvous waits silently, for the whole collective timeout, when a
machine of the job never starts (a typo in its --machine-rank, a firewall, a node that failed). Here
each process logs, every `log_period` seconds, which ranks (on which machines) have not joined at
which address, and gives up after `join_timeout` with one line.
"""
import datetime
import logging
import time
from typing import List
from urllib.parse import urlparse

import torch.distributed as dist

from .errors import LaunchError

__all__ = ["DEFAULT_JOIN_TIMEOUT", "check_dist_url", "join_process_group"]

logger = logging.getLogger(__name__)

DEFAULT_JOIN_TIMEOUT = datetime.timedelta(minutes=30)
_JOINED = "d2mask/joined"


def check_dist_url(dist_url: str) -> None:
    """Raises LaunchError unless `dist_url` is "auto", "env://", "file:///PATH" or "tcp://HOST:PORT"."""
    if dist_url in (None, "auto") or dist_url == "env://":
        return
    url = urlparse(dist_url)
    try:
        port = url.port
    except ValueError:  # a port that is not a number, or out of range
        port = None
    if (url.scheme == "tcp" and url.hostname and port) or (url.scheme == "file" and url.path):
        return
    raise LaunchError(
        f"--dist-url {dist_url!r} is not a rendezvous address: use tcp://HOST:PORT (HOST: machine 0, PORT: "
        f"1-65535), file:///shared/path, env:// (set by a launcher) or auto (one machine)"
    )


def _missing(store: dist.Store, world_size: int) -> List[int]:
    return [r for r in range(world_size) if not store.check([f"{_JOINED}/{r}"])]


def _connect(host: str, port: int, rank: int, world_size: int, join_timeout: float, log_period: float):
    """The job's key-value store: served by rank 0, reached by the others (retrying, with a log line
    every `log_period` seconds, until `join_timeout`)."""
    if rank == 0:
        return dist.TCPStore(host, port, world_size, is_master=True, wait_for_workers=False)
    start = time.monotonic()
    while True:
        remaining = join_timeout - (time.monotonic() - start)
        try:
            return dist.TCPStore(
                host, port, world_size, is_master=False, wait_for_workers=False,
                timeout=datetime.timedelta(seconds=max(1.0, min(log_period, remaining))),
            )
        except (RuntimeError, dist.DistError) as e:  # not served yet: machine 0 has not started
            waited = time.monotonic() - start
            logger.warning(f"Rank {rank}: waiting for rank 0 to serve tcp://{host}:{port} ({waited:.0f} s so far; "
                           f"giving up after {join_timeout:.0f} s): {str(e).splitlines()[0][:200]}")
            if waited >= join_timeout:
                raise LaunchError(
                    f"Rank {rank}: nothing answered at tcp://{host}:{port} within {join_timeout:.0f} s (the join "
                    f"timeout); start machine 0 (--machine-rank 0) with this --dist-url, and check that this "
                    f"machine can reach {host}:{port}"
                ) from None


def join_process_group(
    backend: str,
    dist_url: str,
    *,
    world_size: int,
    rank: int,
    ranks_per_machine: int,
    timeout: datetime.timedelta,
    join_timeout: datetime.timedelta = DEFAULT_JOIN_TIMEOUT,
    log_period: float = 60.0,
) -> None:
    """`torch.distributed.init_process_group` for this process, saying whom it waits for.

    Args:
        dist_url: "tcp://HOST:PORT" (rendezvous served by rank 0), or any init_method torch accepts.
        ranks_per_machine: processes per machine, to name the machines that have not joined.
        timeout: how long collective operations may wait for each other.
        join_timeout: how long to wait for every process to join.
        log_period: seconds between the log lines of a process that waits.

    Raises:
        LaunchError: not every process joined within `join_timeout`, naming the missing ranks.
    """
    url = urlparse(dist_url)
    if url.scheme != "tcp":
        dist.init_process_group(backend, init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout)
        return
    limit = join_timeout.total_seconds()
    store = _connect(url.hostname, url.port, rank, world_size, limit, log_period)
    store.set(f"{_JOINED}/{rank}", "1")
    joined = store.add(_JOINED, 1)
    start = last_log = time.monotonic()
    while joined < world_size:
        now = time.monotonic()
        if now - start >= limit or now - last_log >= log_period:
            missing = _missing(store, world_size)
            machines = sorted({r // ranks_per_machine for r in missing})
            status = (f"ranks {missing} (machines {machines}) have not joined at {dist_url} after {now - start:.0f} s "
                      f"({world_size - len(missing)} of {world_size} have)")
            if now - start >= limit:
                raise LaunchError(
                    f"Rank {rank}: {status}; gave up after the join timeout. Start every machine with the same "
                    f"--dist-url, --num-machines and its own --machine-rank"
                )
            logger.warning(f"Rank {rank}: waiting: {status}; giving up after {limit:.0f} s")
            last_log = now
        time.sleep(0.05)
        joined = store.add(_JOINED, 0)
    dist.init_process_group(backend, store=store, world_size=world_size, rank=rank, timeout=timeout)
