"""The peer library ``rbms`` (PyPI, PyTorch) on the full binarized MNIST: a 784 x 500 RBM
trained with rbms' own primitives (``BBRBM.init_chains``, its ``PCD`` sampler,
``BBRBM.compute_gradient``) in the loop of its ``rbms.training.pcd.train`` (minus the HDF5
saving), with the recipe of ``mnist60k_rbm.py``: the same initial parameters, persistent
chains, batch, ``torch.optim.SGD`` (maximize) with the same learning-rate and momentum
schedules, uncentered gradient (``centered=False``; rbms' centered default measured 7 nats
worse on MNIST-5k), single-threaded, a budget of process CPU seconds; snapshots every
``--snapshot-every`` CPU seconds. Run by ``mnist60k_rbm.py --rbms`` with the Python of an
environment that has rbms (it imports neither jax nor ebm_ppl); the snapshots are evaluated
there by ebm_ppl's estimator.

Data: MNIST by Yann LeCun and Corinna Cortes (CC BY-SA 3.0), binarized at pixel > 127.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--recipe", default="{}", help="JSON: mnist60k_rbm.py's recipe")
    parser.add_argument("--snapshot-every", type=float, default=600.0)
    parser.add_argument("--out", required=True, help="folder for the snapshots")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wall-limit", type=float, default=None)
    args = parser.parse_args()
    import torch
    from rbms.bernoulli_bernoulli.classes import BBRBM
    from rbms.sampler.pcd import PCD

    torch.set_num_threads(1)
    recipe = json.loads(args.recipe)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cpu0 = time.process_time()
    d = np.load(ROOT / "ebm_ppl" / "datasets" / "mnist_bin.npz")
    x = np.unpackbits(d["train"], axis=1)[:, :784].astype(np.float32)
    p = (x.sum(0, dtype=np.float64) + 1.0) / (len(x) + 2.0)
    W0 = 0.01 * np.random.default_rng(args.seed).standard_normal((784, 500))
    params = BBRBM(torch.tensor(W0, dtype=torch.float32), torch.tensor(np.log(p) - np.log1p(-p), dtype=torch.float32),
                   torch.zeros(500))
    for t in params.parameters():
        t.requires_grad_(False)
    torch.manual_seed(args.seed)
    chains = params.init_chains(recipe["chains"])
    sampler = PCD(params, chains, num_steps=recipe["k"])
    opt = torch.optim.SGD(params.parameters(), lr=recipe["lr"], momentum=recipe["mom0"], maximize=True)
    data = torch.from_numpy(x)
    rng = np.random.default_rng(args.seed)
    batch, epochs, next_snap, log = recipe["batch"], 0, args.snapshot_every, []

    def snapshot(spent):
        np.savez(out / f"rbms_cpu{int(spent):05d}.npz", W=params.weight_matrix.numpy(), b=params.vbias.numpy(),
                 c=params.hbias.numpy(), epochs=epochs, cpu_seconds=spent)

    wall0 = time.perf_counter()

    def fraction():
        wall = (time.perf_counter() - wall0) / args.wall_limit if args.wall_limit else 0.0
        return max((time.process_time() - cpu0) / args.seconds, wall)

    while fraction() < 1.0:
        frac = fraction()
        lr = recipe["lr"] * (max(0.0, 1 - frac) if recipe["decay"] == "linear" else 1.0)
        for g in opt.param_groups:
            g["lr"], g["momentum"] = lr, recipe["mom0"] if frac < recipe["momswitch"] else recipe["mom"]
        order = torch.from_numpy(rng.permutation(len(x)))
        for i in range(0, len(x) - batch + 1, batch):  # rbms.training.pcd.train's update
            v = data[order[i:i + batch]]
            opt.zero_grad(set_to_none=False)
            curr = params.init_chains(num_samples=v.shape[0], start_v=v)
            neg = sampler.get_conf_grad(batch=v)
            params.compute_gradient(data=curr, chains=neg, centered=False)
            if recipe.get("wd", 0) > 0:
                params.weight_matrix.grad -= recipe["wd"] * params.weight_matrix
            opt.step()
        epochs += 1
        spent = time.process_time() - cpu0
        log.append({"cpu": spent, "lr": lr})
        print(f"rbms epoch {epochs} cpu {spent:.0f} lr {lr:.4g}", flush=True)
        if spent >= next_snap:
            snapshot(spent)
            next_snap += args.snapshot_every
    spent = time.process_time() - cpu0
    snapshot(spent)
    summary = {"epochs": epochs, "cpu_seconds": spent, "recipe": recipe, "wall_limit": args.wall_limit,
               "cpu_budget": args.seconds, "epoch_log": log, "torch": torch.__version__}
    (out / "rbms_train.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
