"""Estimators that mix (issue 13): PT against PCD with the same chain transitions.

    python benchmarks/mixing.py lattice [seeds] [backends]    # 4x4 Ising, exact MLE gaps
    python benchmarks/mixing.py gaussians8 [seed] [backends]  # MLP energy, mode weights

Uses the reference problems of ebm_ppl.testing (lattice, gaussians8).
"""

import sys
import time

import numpy as np

import ebm_ppl
from ebm_ppl.testing.frameworks import framework as make_framework


def lattice(seeds, backends):
    from ebm_ppl.testing import lattice as L

    for seed in seeds:
        x = L.sample(2000, seed=seed)
        best = L.mean_loglik(x, *L.mle(x))
        for b in backends:
            fw = make_framework(b)
            for est in [ebm_ppl.PT(num_chains=100, num_temperatures=10), ebm_ppl.PCD(num_chains=1000, num_steps=1),
                        ebm_ppl.PCD(num_chains=100, num_steps=10)]:
                fw.clear()
                t = time.time()
                r = ebm_ppl.fit_unnormalized(L.lattice_model(fw), fw.array(x), estimator=est,
                                             optimizer=fw.adam_decay(0.05, 0.999), num_steps=3000, rng_seed=seed,
                                             progress_bar=False)
                p = {k: fw.to_numpy(v).astype(np.float64) for k, v in r.params.items()}
                print(f"seed {seed} {b} {est!r}: gap {best - L.mean_loglik(x, p['J'], p['h']):.4f} nats/example "
                      f"({time.time() - t:.0f} s)", flush=True)


def gaussians8(seeds, backends):
    from ebm_ppl.testing.gaussians8 import WEIGHTS, mixture_data, mlp_energy_model, mode_weights, numpy_log_density

    for seed in seeds:
        for b in backends:
            fw = make_framework(b)
            for est in [ebm_ppl.PT(num_chains=200, num_temperatures=8, num_steps=2),
                        ebm_ppl.PCD(num_chains=1600, num_steps=2)]:
                fw.clear()
                model, _ = mlp_energy_model(fw)
                r = ebm_ppl.fit_unnormalized(model, fw.array(mixture_data()), estimator=est,
                                             optimizer=fw.adam_decay(0.005, 0.99975), num_steps=12000, batch_size=200,
                                             rng_seed=seed, progress_bar=False)
                P = {k: fw.to_numpy(v).astype(np.float64) for k, v in r.params.items()}
                w = mode_weights(lambda pts: numpy_log_density(P, pts))
                print(f"seed {seed} {b} {est!r}: mode weights {w.round(3)} (true {WEIGHTS.round(3)}), "
                      f"max error {np.abs(w - WEIGHTS).max():.3f}", flush=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "lattice"
    seeds = [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "0").split(",")]
    backends = (sys.argv[3] if len(sys.argv) > 3 else "numpyro,pyro").split(",")
    {"lattice": lattice, "gaussians8": gaussians8}[what](seeds, backends)
