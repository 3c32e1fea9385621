import numpy as np
import pytest

from nnfit.parallel import client_for, map_blocks


def _scale(block, factor):
    return block * factor


def test_local_map_blocks_in_order():
    seen = []
    out = map_blocks(_scale, [1, 2, 3], broadcast=[10], on_result=lambda i, r: seen.append(i))
    assert out == [10, 20, 30]
    assert seen == [0, 1, 2]


def test_local_threads_keep_block_order_and_hold_blas_to_one_thread():
    import threading
    import time

    from threadpoolctl import threadpool_info

    seen, during, running, peak = [], [], [0], [0]
    lock = threading.Lock()

    def work(block, factor):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        during.append([p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"])
        time.sleep(0.02 * (5 - block))  # later blocks finish first
        a = np.full((50, 50), float(block))
        with lock:
            running[0] -= 1
        return float((a @ a)[0, 0]) * factor

    out = map_blocks(
        work, list(range(5)), broadcast=[2.0], threads=2, on_result=lambda i, r: seen.append(i)
    )
    assert out == [2.0 * 50 * b * b for b in range(5)]
    assert seen == [0, 1, 2, 3, 4] and peak[0] == 2
    assert all(n == 1 for counts in during for n in counts)


def test_bad_scheduler_is_explained():
    with pytest.raises(ValueError, match="scheduler must be None"), client_for(42):
        pass


def test_an_address_without_a_scheduler_names_the_option():
    with pytest.raises(
        ValueError, match=r"scheduler 'garbage' \(CLI --scheduler\): could not reach"
    ):
        with client_for("garbage"):
            pass


@pytest.mark.slow
def test_local_cluster_gives_identical_results():
    from dask.distributed import Client, LocalCluster

    blocks = [np.arange(5.0) + i for i in range(6)]
    expected = map_blocks(_scale, blocks, broadcast=[np.float64(3.0)])
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as c,
        Client(c) as client,
    ):
        got = map_blocks(_scale, blocks, scheduler=client, broadcast=[np.float64(3.0)])
        # The same broadcast content again on the same client must still reach the workers.
        again = map_blocks(_scale, blocks, scheduler=client, broadcast=[np.float64(3.0)])
        got_addr = map_blocks(_scale, blocks, scheduler=c.scheduler_address, broadcast=[3.0])
    for a, b, c, d in zip(expected, got, again, got_addr, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c) and np.array_equal(a, d)
