"""Milliseconds per parameter update of the 3x3 Ising PCD fit (500 chains, 2 Gibbs sweeps),
with single-site Gibbs and with "auto" (which finds the checkerboard blocks).

Steady state: two fits of different lengths, (t_long - t_short) / (n_long - n_short), so
one-off costs (tracing, JAX compilation) cancel; they are reported apart.

Run:  python benchmarks/ising_pcd.py [--updates 300]
"""

import argparse
import time

import numpy as np

import ebm_ppl
from ebm_ppl.testing.frameworks import framework as make_framework
from ebm_ppl.testing.ising import ising_model, ising_sample


def timed_fit(fw, x, num_steps, sampler):
    start = time.perf_counter()
    ebm_ppl.fit_unnormalized(
        ising_model(fw), fw.array(x), estimator=ebm_ppl.PCD(num_chains=500, num_steps=2),
        sampler=sampler, optimizer=fw.adam(0.01), num_steps=num_steps, progress_bar=False,
    )
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=320)
    args = parser.parse_args()
    x = ising_sample(np.full(12, 0.3), np.zeros(9), 2000, seed=0)
    samplers = {"single-site Gibbs": ebm_ppl.samplers.Gibbs(), "auto (checkerboard)": "auto"}
    for backend in ("pyro", "numpyro"):
        fw = make_framework(backend)
        for label, sampler in samplers.items():
            timed_fit(fw, x, 32, sampler)  # warm-up: imports, first compilation caches
            short = min(timed_fit(fw, x, 32, sampler) for _ in range(2))
            long = timed_fit(fw, x, args.updates + 32, sampler)
            per_update = (long - short) / args.updates
            print(f"{backend:8s} Ising PCD(500 chains, 2 sweeps of {label}): {1e3 * per_update:.2f} ms/update "
                  f"(one-off per fit: {max(short - 32 * per_update, 0):.2f} s)")


if __name__ == "__main__":
    main()
