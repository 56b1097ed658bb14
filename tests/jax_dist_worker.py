"""One process of a NumPyro fit over two JAX processes (``jax.distributed`` on CPU, gloo
collectives, coordinator on localhost), or the same fit in one plain process; started by
tests/test_parallel.py:

    python jax_dist_worker.py PROCESS_ID PORT OUT     # one of the two processes
    python jax_dist_worker.py single OUT              # the one-process fit

Each fit is ``devices=jax.devices()`` (the global devices: one CPU device per process)
under jax.distributed, ``devices=None`` in the single process. Writes the parameters,
the loss history and the chains (gathered from both processes) of every case to ``OUT``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax

DISTRIBUTED = sys.argv[1] != "single"
if DISTRIBUTED:  # before any other use of jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{sys.argv[2]}", num_processes=2,
                               process_id=int(sys.argv[1]), local_device_ids=[0])

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.experimental import multihost_utils

import ebm_ppl
from ebm_ppl.testing.frameworks import framework as make_framework
from models import ising_model, ising_sample

fw = make_framework("numpyro")
rng = np.random.default_rng(0)
X = jnp.asarray(ising_sample(rng.uniform(-0.6, 0.6, 12), rng.uniform(-0.3, 0.3, 9), 400, seed=0))
G = jnp.asarray(rng.normal(1.0, 1.0, (400, 3)), jnp.float32)


def gaussian(x):  # continuous: the default sampler is MALA with an adapted step size
    mu = numpyro.param("mu", jnp.zeros(3))
    with numpyro.plate("data", x.shape[0]):
        x = numpyro.sample("x", dist.ImproperUniform(dist.constraints.real, (), (3,)), obs=x)
        ebm_ppl.factor("q", -0.5 * ((x - mu) ** 2).sum(-1))


CASES = {
    "PCD": (ising_model(fw), X, ebm_ppl.PCD(num_chains=64, num_steps=2)),
    "PCD-MALA": (gaussian, G, ebm_ppl.PCD(num_chains=32)),
}


def host(tree):
    """Every leaf as a numpy array of all its rows (gathered from the processes)."""
    if DISTRIBUTED:
        tree = multihost_utils.process_allgather(tree, tiled=True)
    return {k: np.asarray(v) for k, v in tree.items()}


def main(out):
    devices = jax.devices() if DISTRIBUTED else None
    arrays = {"process_count": np.array(jax.process_count()), "device_count": np.array(jax.device_count())}
    for name, (model, data, estimator) in CASES.items():
        result = ebm_ppl.fit_unnormalized(model, data, estimator=estimator, optimizer=fw.adam(0.05), num_steps=30,
                                          batch_size=100, progress_bar=False, devices=devices)
        for kind, tree in (("params", result.params), ("chains", result.chains)):
            for k, v in host(tree).items():
                arrays[f"{name}/{kind}/{k}"] = v
        arrays[f"{name}/loss"] = np.asarray(result.history["loss"])
        if DISTRIBUTED:  # the chains are split over the two processes' devices
            arrays[f"{name}/chains_devices"] = np.array(len(result.chains["x"].sharding.device_set))
            arrays[f"{name}/chains_local_rows"] = np.array(
                sum(s.data.shape[0] for s in result.chains["x"].addressable_shards))
    np.savez(out, **arrays)
    if DISTRIBUTED:
        multihost_utils.sync_global_devices("ebm_ppl jax_dist_worker done")


if __name__ == "__main__":
    main(sys.argv[-1])
