"""The rendezvous of a job: a --dist-url that is not an address, and processes that wait for peers
that never come (they say whom they wait for, and give up after the join timeout)."""
import datetime
import logging
import socket

import pytest

from d2mask.engine import LaunchError, launch
from d2mask.engine.rendezvous import check_dist_url, join_process_group


@pytest.mark.parametrize("url", ["localhost:12345", "tcp://localhost", "tcp://localhost:99999", "tcp://:1234",
                                 "http://host:1234", "file://"])
def test_a_dist_url_that_is_not_an_address_is_a_launch_error(url):
    with pytest.raises(LaunchError, match="is not a rendezvous address: use tcp://HOST:PORT"):
        check_dist_url(url)
    with pytest.raises(LaunchError, match="is not a rendezvous address"):
        launch(print, 2, dist_url=url)


@pytest.mark.parametrize("url", ["auto", None, "env://", "tcp://10.0.0.1:29500", "file:///shared/rendezvous"])
def test_addresses_are_accepted(url):
    check_dist_url(url)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rank_0_says_which_ranks_and_machines_it_waits_for_then_gives_up(caplog):
    url = f"tcp://127.0.0.1:{_free_port()}"
    with caplog.at_level(logging.WARNING, logger="d2mask"), pytest.raises(LaunchError) as e:
        join_process_group("gloo", url, world_size=4, rank=0, ranks_per_machine=2, timeout=datetime.timedelta(seconds=5),
                           join_timeout=datetime.timedelta(seconds=1.5), log_period=0.5)
    assert f"Rank 0: ranks [1, 2, 3] (machines [0, 1]) have not joined at {url} after " in str(e.value)
    assert "(1 of 4 have); gave up after the join timeout" in str(e.value)
    assert f"Rank 0: waiting: ranks [1, 2, 3] (machines [0, 1]) have not joined at {url}" in caplog.text


def test_a_rank_whose_rank_0_never_starts_gives_up_naming_the_address(caplog):
    port = _free_port()
    with caplog.at_level(logging.WARNING, logger="d2mask"), pytest.raises(LaunchError) as e:
        join_process_group("gloo", f"tcp://127.0.0.1:{port}", world_size=2, rank=1, ranks_per_machine=1,
                           timeout=datetime.timedelta(seconds=5), join_timeout=datetime.timedelta(seconds=4),
                           log_period=1.0)
    assert str(e.value).startswith(f"Rank 1: nothing answered at tcp://127.0.0.1:{port} within 4 s")
    assert f"Rank 1: waiting for rank 0 to serve tcp://127.0.0.1:{port}" in caplog.text
