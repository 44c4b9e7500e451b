import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Run the tests on one intra-op thread (restored afterwards): they work on tiny tensors.

    On a busy 2-core machine torch's 2 OpenMP threads spin-wait on each other: a 10-node block
    forward took 0.1-0.4 s with 2 threads and 13 ms with 1.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
