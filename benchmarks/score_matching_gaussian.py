"""Score matching on the 4-D Gaussian energy (issue 22, acceptance 3): the relative
Frobenius error of the fitted precision against the closed form, the mean's relative
error, and the fit time, per method and backend.

The fits are the slow test's (tests/test_score_matching.py): 3000 draws, full batch, Adam
0.05 decaying to 5e-4 over 1500 updates, σ = 0.5 for denoising. ``fit s`` is one call of
``fit_unnormalized`` (NumPyro: including compilation); ``steady s`` a second, identical call
(the compiled update reused). ``--seeds N`` repeats the stochastic methods with N seeds.

    PYTHONPATH=.:backends python benchmarks/score_matching_gaussian.py [--seeds 5]
"""

import argparse
import os
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ebm_ppl  # noqa: E402
from ebm_ppl.testing.frameworks import framework  # noqa: E402
from ebm_ppl.testing.gaussian4 import X4, gaussian4_model, relative_error, score_matching_optimum  # noqa: E402

SIGMA, NUM_STEPS = 0.5, 1500


def fit(fw, method, rng_seed):
    fw.clear()
    start = time.perf_counter()
    result = ebm_ppl.fit_unnormalized(
        gaussian4_model(fw), fw.array(X4), estimator=ebm_ppl.ScoreMatching(method, noise_scale=SIGMA),
        optimizer=fw.adam_decay(0.05, 0.01 ** (1 / NUM_STEPS)), num_steps=NUM_STEPS, progress_bar=False,
        rng_seed=rng_seed)
    seconds = time.perf_counter() - start
    L = np.asarray(fw.to_numpy(result.params["L"]), np.float64)
    mean, precision = score_matching_optimum(X4, SIGMA if method == "denoising" else 0.0)
    return relative_error(L @ L.T, precision), relative_error(fw.to_numpy(result.params["mu"]), mean), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--backends", default="pyro,numpyro")
    args = parser.parse_args()
    print(f"{'backend':8} {'method':10} {'seed':>4} {'P rel.err':>10} {'mu rel.err':>10} {'fit s':>7} {'steady s':>8}")
    for backend in args.backends.split(","):
        fw = framework(backend)
        for method in ("exact", "sliced", "denoising"):
            for seed in range(1 if method == "exact" else args.seeds):
                err_p, err_mu, seconds = fit(fw, method, seed)
                steady = fit(fw, method, seed)[2] if seed == 0 else float("nan")
                print(f"{backend:8} {method:10} {seed:4d} {err_p:10.2e} {err_mu:10.2e} {seconds:7.1f} {steady:8.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
