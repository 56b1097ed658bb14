"""One rank of a Pyro fit under torch.distributed (gloo, localhost), started by
tests/test_parallel.py: ``python dist_worker.py RANK WORLD PORT OUT NUM_STEPS``.

Fits the 3x3 Ising test model (tests/models.py) to the data of test_fit_accuracy.py and
writes this rank's parameters, chains and history to ``OUT``."""

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch
import torch.distributed as dist

import ebm_ppl
from ebm_ppl.testing.frameworks import framework as make_framework
from models import ising_model, ising_sample


def ising_data():
    rng = np.random.default_rng(1234)  # as test_fit_accuracy.py
    J, h = rng.uniform(-0.6, 0.6, 12), rng.uniform(-0.3, 0.3, 9)
    return ising_sample(J, h, 2000, seed=0)


def fit(num_steps):
    fw = make_framework("pyro")
    return ebm_ppl.fit_unnormalized(
        ising_model(fw), fw.array(ising_data()),
        estimator=ebm_ppl.PCD(num_chains=500, num_steps=2),
        optimizer=fw.adam_decay(0.05, 0.999), num_steps=num_steps, rng_seed=0, progress_bar=False)


def main(rank, world, port, out, num_steps):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = fit(num_steps)
        np.savez(out, J=result.params["J"].detach().numpy(), h=result.params["h"].detach().numpy(),
                 chains=result.chains["x"].numpy(), loss=result.history["loss"])
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    rank, world, port, out, num_steps = sys.argv[1:6]
    main(int(rank), int(world), int(port), out, int(num_steps))
