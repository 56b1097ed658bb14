"""NCE's accuracy figures (issue 22, acceptance 4): per backend, the 3x3 Ising model's fit
(base-measure noise, ν = 8, and data-marginal Bernoulli noise, ν = 4; 300 full-batch
updates of Adam(0.02)) against the exact MLE, the learned log Z against the exact log Z at
the fitted parameters, and a 6 x 3 RBM (hidden layer summed out; ν = 8, 600 updates of
Adam(0.03)) against scipy's L-BFGS optimum of its exact log-likelihood. Wall-clock fit
times include tracing / compilation (one call each).

    PYTHONPATH=.:backends python benchmarks/nce_accuracy.py [pyro] [numpyro] [--seeds N]
"""

import argparse
import itertools
import os
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ebm_ppl  # noqa: E402
from ebm_ppl.testing.frameworks import framework  # noqa: E402
from ebm_ppl.testing.ising import (STATES, ising_log_unnorm, ising_mean_loglik, ising_mle, ising_model,  # noqa: E402
                                   ising_sample)

# the Ising data set of the accuracy tests (2000 exact draws; the same construction)
_rng = np.random.default_rng(1234)
X_ISING = ising_sample(_rng.uniform(-0.6, 0.6, 12), _rng.uniform(-0.3, 0.3, 9), 2000, seed=0)
VS = np.array(list(itertools.product([0, 1], repeat=6)), float)
HS = np.array(list(itertools.product([0, 1], repeat=3)), float)


def exact_ising_log_z(J, h):
    return float(np.logaddexp.reduce(ising_log_unnorm(STATES, J, h) + 9 * np.log(0.5)))


def rbm_data(num_rows=3000):
    """A 6 x 3 RBM's exact draws of its visible layer (the RBM accuracy test's data)."""
    r = np.random.default_rng(0)
    W, b, c = r.normal(0, 1.0, (6, 3)), r.normal(0, 0.5, 6), r.normal(0, 0.5, 3)
    lpv = VS @ b + np.logaddexp(0, VS @ W + c).sum(-1)
    return VS[np.random.default_rng(2).choice(len(VS), num_rows, p=np.exp(lpv - np.logaddexp.reduce(lpv)))]


def rbm_mean_loglik(x, W, b, c):
    lpv = VS @ b + np.logaddexp(0, VS @ W + c).sum(-1)
    idx = (x @ (2 ** np.arange(6)[::-1])).astype(int)
    return float(np.mean(lpv[idx]) - np.logaddexp.reduce(lpv))


def rbm_log_z(W, b, c):
    return 9 * np.log(0.5) + float(np.logaddexp.reduce(HS @ c + np.logaddexp(0.0, b + HS @ W.T).sum(1)))


def rbm_model(fw, W0):
    def rbm(v):
        W = fw.param("W", fw.array(W0))
        b = fw.param("b", fw.zeros(6))
        c = fw.param("c", fw.zeros(3))
        with fw.plate("data", v.shape[0]):
            v = fw.sample("v", fw.dist.Bernoulli(0.5).expand([6]).to_event(1), obs=v)
            h = fw.sample("h", fw.dist.Bernoulli(0.5).expand([3]).to_event(1))
            ebm_ppl.factor("rbm", ((v @ W) * h).sum(-1) + (v * b).sum(-1) + (h * c).sum(-1))

    return rbm


def _fit(fw, model, x, estimator, lr, num_steps, seed):
    fw.clear()
    start = time.perf_counter()
    result = ebm_ppl.fit_unnormalized(model, fw.array(x), estimator=estimator, optimizer=fw.adam(lr),
                                      num_steps=num_steps, rng_seed=seed, progress_bar=False)
    params = {k: np.asarray(fw.to_numpy(v), np.float64) for k, v in result.params.items()}
    return result, time.perf_counter() - start, params


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("backends", nargs="*", default=["pyro", "numpyro"])
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    J, h = ising_mle(X_ISING)
    best = ising_mean_loglik(X_ISING, J, h)
    from scipy.optimize import minimize

    xr = rbm_data()
    W0 = 0.01 * np.random.default_rng(1).normal(size=(6, 3))
    rbm_best = -minimize(lambda t: -rbm_mean_loglik(xr, t[:18].reshape(6, 3), t[18:24], t[24:]),
                         np.concatenate([W0.ravel(), np.zeros(9)]), method="L-BFGS-B").fun
    for name in args.backends:
        fw = framework(name)
        p = np.clip(X_ISING.mean(0), 0.05, 0.95)
        cases = [("ising base noise nu=8", lambda: ebm_ppl.NCE(noise_ratio=8)),
                 ("ising marginal noise nu=4", lambda: ebm_ppl.NCE(noise=fw.dist.Bernoulli(probs=fw.array(p)),
                                                                   noise_ratio=4))]
        for label, make in cases:
            for seed in range(args.seeds):
                result, secs, q = _fit(fw, ising_model(fw), X_ISING, make(), 0.02, 300, seed)
                gap = best - ising_mean_loglik(X_ISING, q["J"], q["h"])
                err = result.history["log_z"][-1] - exact_ising_log_z(q["J"], q["h"])
                print(f"{name:8s} {label:26s} seed {seed}: loglik gap {gap:.4f}  log Z error {err:+.4f}  "
                      f"fit {secs:.1f} s", flush=True)
        result, secs, q = _fit(fw, rbm_model(fw, W0), xr, ebm_ppl.NCE(noise_ratio=8), 0.03, 600, 0)
        gap = rbm_best - rbm_mean_loglik(xr, q["W"], q["b"], q["c"])
        err = result.history["log_z"][-1] - rbm_log_z(q["W"], q["b"], q["c"])
        print(f"{name:8s} {'rbm 6x3 base noise nu=8':26s} seed 0: loglik gap {gap:.4f}  log Z error {err:+.4f}  "
              f"fit {secs:.1f} s", flush=True)


if __name__ == "__main__":
    main()
