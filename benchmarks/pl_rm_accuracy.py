"""PseudoLikelihood and RatioMatching against their exact optima (issue 22, acceptance 1-2).

For each backend: the 3x3 Ising model (2000 examples) fitted by PseudoLikelihood and by
RatioMatching (full batch, Adam with a decaying step, 600 updates), and a 6 x 3 RBM
(hidden layer summed out, an L2 penalty lam = 30 once per data set) fitted by
PseudoLikelihood (2000 updates), each compared with the exact optimum of the same
objective found by scipy's L-BFGS in numpy (float64). Prints the objective at the fit and
at the optimum, their gap, the largest parameter difference (the RBM's up to relabelling
its hidden units) and the seconds of the fit (wall and CPU, compilation included, and a
second, compiled-already call on NumPyro).

The numpy references are :mod:`ebm_ppl.testing.coordinates`, as in the tests.

Usage: ``python benchmarks/pl_rm_accuracy.py [pyro|numpyro ...]``
"""

import itertools
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

import ebm_ppl
from ebm_ppl.testing.coordinates import (flip_objective, hidden_permutation_diff, ising_flip_features, lbfgs,
                                         rbm_flip_objective, rbm_penalized_model)
from ebm_ppl.testing.frameworks import framework
from ebm_ppl.testing.ising import ising_model, ising_sample

# the 3x3 Ising data of the tests (tests/models.py: X_ISING)
_rng = np.random.default_rng(1234)
X_ISING = ising_sample(_rng.uniform(-0.6, 0.6, 12), _rng.uniform(-0.3, 0.3, 9), 2000, seed=0)


def small_rbm_data(num_rows=3000):
    """3000 exact draws of a 6 x 3 RBM's visible layer: the tests' data set
    (tests/models.py: small_rbm_truth_and_data)."""
    vs = np.array(list(itertools.product([0, 1], repeat=6)), float)
    r = np.random.default_rng(0)
    W, b, c = r.normal(0, 1.0, (6, 3)), r.normal(0, 0.5, 6), r.normal(0, 0.5, 3)
    lpv = vs @ b + np.logaddexp(0, vs @ W + c).sum(-1)
    x = vs[np.random.default_rng(2).choice(len(vs), num_rows, p=np.exp(lpv - np.logaddexp.reduce(lpv)))]
    return x.astype(np.float32)


def _fit(fw, model, data, estimator, lr, decay, num_steps):
    wall, cpu = time.perf_counter(), time.process_time()
    r = ebm_ppl.fit_unnormalized(model, data, estimator=estimator, optimizer=fw.adam_decay(lr, decay),
                                 num_steps=num_steps, progress_bar=False)
    return r, time.perf_counter() - wall, time.process_time() - cpu


def _row(name, backend, value, best, diff, times):
    print(f"{name:28s} {backend:8s} fit {value:.9f} exact {best:.9f} gap {value - best:.2e} "
          f"max|Δθ| {diff:.2e}  " + "  ".join(f"{k} {v:.1f} s" for k, v in times.items()), flush=True)


def ising(backend, kind, reference):
    fw = framework(backend)
    theta, best, dF = reference
    est = {"pl": ebm_ppl.PseudoLikelihood, "rm": ebm_ppl.RatioMatching}[kind]
    times = {}
    for label in ("first call", "again"):
        fw.clear()
        r, wall, cpu = _fit(fw, ising_model(fw), fw.array(X_ISING), est(), 0.05, 0.99, 600)
        times[f"{label} wall"], times[f"{label} cpu"] = wall, cpu
        if backend == "pyro":
            break
    fitted = np.concatenate([fw.to_numpy(r.params[k]).astype(np.float64) for k in ("J", "h")])
    _row(f"Ising {kind.upper()}", backend, flip_objective(fitted, dF, kind)[0], best,
         np.abs(fitted - theta).max(), times)


def rbm(backend, reference, x, W0, lam):
    fw = framework(backend)
    theta, best = reference
    r, wall, cpu = _fit(fw, rbm_penalized_model(fw, W0, lam), fw.array(x), ebm_ppl.PseudoLikelihood(), 0.05, 0.998,
                        2000)
    fitted = np.concatenate([fw.to_numpy(r.params[k]).astype(np.float64).ravel() for k in ("W", "b", "c")])
    _row("RBM 6x3 PL (free energy)", backend, rbm_flip_objective(fitted, x, 3, "pl", lam)[0], best,
         hidden_permutation_diff(fitted, theta, 6, 3), {"wall": wall, "cpu": cpu})


def main(backends):
    dF = ising_flip_features(X_ISING)
    refs = {kind: lbfgs(flip_objective, np.zeros(21), dF, kind) + (dF,) for kind in ("pl", "rm")}
    lam, x = 30.0, small_rbm_data()
    W0 = 0.01 * np.random.default_rng(1).normal(size=(6, 3))
    rbm_ref = lbfgs(rbm_flip_objective, np.concatenate([W0.ravel(), np.zeros(9)]), x, 3, "pl", lam)
    for backend in backends:
        for kind in ("pl", "rm"):
            ising(backend, kind, refs[kind])
        rbm(backend, rbm_ref, x, W0, lam)


if __name__ == "__main__":
    main(sys.argv[1:] or ["pyro", "numpyro"])
