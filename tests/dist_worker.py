"""One rank of a Pyro fit under torch.distributed (gloo, localhost), started by
tests/test_parallel.py: ``python dist_worker.py RANK WORLD PORT OUT NUM_STEPS [MODE]``.

MODE ``fit`` (the default): fits the 3x3 Ising test model (tests/models.py) to the data of
test_fit_accuracy.py and writes this rank's parameters, chains and history to ``OUT``.
MODE ``checkpoint``: for the Ising model (PCD, minibatches) and PPCA (``positive=
"persistent"``), the uninterrupted fit of NUM_STEPS updates and a fit that is
checkpointed (rank 0 writes) and resumed on every rank from the file, side by side.
MODE ``ppca``: PPCA with ``positive="persistent"``, NUM_STEPS updates, as
tests/test_estimators.py fits it in one process."""

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch
import torch.distributed as dist

import ebm_ppl
from ebm_ppl.testing.frameworks import framework as make_framework
from ebm_ppl.testing.ppca import ppca_data, ppca_model
from models import ising_model, ising_sample


def ising_data():
    rng = np.random.default_rng(1234)  # as test_fit_accuracy.py
    J, h = rng.uniform(-0.6, 0.6, 12), rng.uniform(-0.3, 0.3, 9)
    return ising_sample(J, h, 2000, seed=0)


def fit(num_steps, **kwargs):
    fw = make_framework("pyro")
    return ebm_ppl.fit_unnormalized(
        ising_model(fw), fw.array(ising_data()),
        estimator=ebm_ppl.PCD(num_chains=500, num_steps=2),
        optimizer=fw.adam_decay(0.05, 0.999), num_steps=num_steps, rng_seed=0, progress_bar=False, **kwargs)


def fit_ppca(num_steps, **kwargs):
    fw = make_framework("pyro")
    return ebm_ppl.fit_unnormalized(
        ppca_model(fw), fw.array(ppca_data()), estimator=ebm_ppl.PCD(num_chains=1000, positive="persistent"),
        optimizer=fw.adam_decay(0.01, 0.9995), num_steps=num_steps, rng_seed=0, progress_bar=False, **kwargs)


def arrays(result, prefix=""):
    """The result's parameters, chains, loss and (``positive="persistent"``) latent table."""
    out = {f"{prefix}{k}": v.detach().numpy() for k, v in result.params.items()}
    out.update({f"{prefix}chains_{k}": v.numpy() for k, v in result.chains.items()})
    out[f"{prefix}loss"] = result.history["loss"]
    positive = result.state.estimator_state.positive_aux
    if hasattr(positive, "latents"):
        out.update({f"{prefix}latents_{k}": v.numpy() for k, v in positive.latents.items()})
    return out


def checkpoints(num_steps, out):
    """Uninterrupted against checkpointed (every num_steps // 2, stopped past it) then resumed;
    the checkpoints stay beside ``out`` (ckpt_ising.npz, ckpt_ppca.npz)."""
    every = num_steps // 2
    saved = {}
    for name, run, kwargs in (("ising", fit, {"batch_size": 500}), ("ppca", fit_ppca, {"batch_size": 200})):
        ckpt = os.path.join(os.path.dirname(out), f"ckpt_{name}.npz")
        saved.update(arrays(run(num_steps, **kwargs), f"{name}_whole_"))
        dist.barrier()
        run(every + 3, checkpoint_every=every, checkpoint_path=ckpt, **kwargs)  # the last 3 updates are lost
        dist.barrier()  # rank 0 has written the checkpoint of update `every`
        loaded = ebm_ppl.load(ckpt)
        saved[f"{name}_ckpt_updates"] = loaded.state.num_updates
        saved[f"{name}_ckpt_chains"] = loaded.chains["x"].numpy()
        saved.update(arrays(run(num_steps - every, resume=loaded, **kwargs), f"{name}_resumed_"))
    return saved


def main(rank, world, port, out, num_steps, mode="fit"):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        if mode == "checkpoint":
            np.savez(out, **checkpoints(num_steps, out))
        elif mode == "ppca":
            np.savez(out, **arrays(fit_ppca(num_steps)))
        else:
            result = fit(num_steps)
            np.savez(out, J=result.params["J"].detach().numpy(), h=result.params["h"].detach().numpy(),
                     chains=result.chains["x"].numpy(), loss=result.history["loss"])
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    rank, world, port, out, num_steps = sys.argv[1:6]
    main(int(rank), int(world), int(port), out, int(num_steps), *sys.argv[6:7])
