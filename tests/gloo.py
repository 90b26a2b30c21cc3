"""Two real gloo processes on this machine, for tests of the selector's collectives."""

import socket


def run_two_ranks(worker) -> dict:
    """Run ``worker(rank, port, out)`` on ranks 0 and 1; returns what each wrote to ``out[rank]``."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(worker, args=(port, out), nprocs=2, join=True)
        return dict(out)
