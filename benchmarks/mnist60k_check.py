"""An independent check of a Bernoulli RBM's held-out log-likelihood, written without ebm_ppl.

Forward annealed importance sampling as in Salakhutdinov & Murray (2008), "On the
quantitative analysis of deep belief networks": the hidden units are summed out, the base
model is the visible-only RBM with the training images' base rates as visible biases
(b_A = logit((Σx + 1) / (N + 2))), the intermediate distributions are

    p*_β(v) = exp((1 − β) b_Aᵀv + β bᵀv) Π_j (1 + exp(β (vᵀW + c)_j)),

each transition one block-Gibbs sweep (h ~ p_β(h | v), v ~ p_β(v | h)) that leaves p_β
invariant, and log Z_A = Σ_i log(1 + e^{b_A,i}) + n_h log 2. The held-out estimate is
mean_test [bᵀv + Σ_j softplus(vᵀW + c)_j] − log Ẑ; forward AIS is a stochastic lower bound
on log Z, so this is a stochastic upper bound on the log-likelihood (an optimistic one when
the annealing is too short).

Parameters: an ``.npz`` with ``W`` (n_v, n_h), ``b`` (n_v,), ``c`` (n_h,) of
p(v, h) ∝ exp(vᵀWh + bᵀv + cᵀh). Data: the binarized MNIST ``mnist_bin.npz`` (packbits rows;
read directly with numpy).

Run (about 4 CPU minutes at 10,000 temperatures and 200 chains, one thread):

    python benchmarks/mnist60k_check.py benchmarks/results/mnist60k_rbm500.npz \
        --temperatures 10000 --chains 200 --out benchmarks/results/mnist60k_check.json
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "ebm_ppl" / "datasets" / "mnist_bin.npz"


def load_binarized(path=DATA):
    """(train, test) float32 (n, 784) images in {0, 1}, straight from the packbits file."""
    d = np.load(path)
    unpack = lambda a: np.unpackbits(a, axis=1)[:, :784].astype(np.float32)  # noqa: E731
    return unpack(d["train"]), unpack(d["test"])


def base_rate_biases(x):
    p = (x.sum(0, dtype=np.float64) + 1.0) / (x.shape[0] + 2.0)
    return np.log(p) - np.log1p(-p)


def free_log_p(W, b, c, v):
    """log p*(v) = bᵀv + Σ_j softplus(vᵀW + c)_j (float64), rows of v."""
    a = v.astype(np.float64) @ W.astype(np.float64) + c
    return v @ b.astype(np.float64) + np.logaddexp(0.0, a).sum(1)


def ais_log_z(W, b, c, b_a, betas, num_chains, seed=0):
    """Forward AIS estimate of log Z: (log Ẑ, its standard error by the delta method, log w)."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    W32, b32, c32, ba32 = (jnp.asarray(a, jnp.float32) for a in (W, b, c, b_a))
    betas = jnp.asarray(betas, jnp.float32)

    def log_star_terms(v, a, beta):  # per-chain log p*_β(v) pieces (float32) given a = vW + c
        return (1 - beta) * (v @ ba32) + beta * (v @ b32), jax.nn.softplus(beta * a)

    def step(carry, pair):
        v, a, logw, key = carry
        b_prev, b_next = pair
        # weight: log p*_{β_k}(v) − log p*_{β_{k−1}}(v) at the current state, per unit then summed
        lin = (b_next - b_prev) * (v @ (b32 - ba32))
        soft = (jax.nn.softplus(b_next * a) - jax.nn.softplus(b_prev * a)).sum(1)
        logw = logw + lin.astype(jnp.float64) + soft.astype(jnp.float64)
        # transition that leaves p_{β_k} invariant
        key, kh, kv = jax.random.split(key, 3)
        h = (jax.random.uniform(kh, a.shape) < jax.nn.sigmoid(b_next * a)).astype(jnp.float32)
        field = (1 - b_next) * ba32 + b_next * (h @ W32.T + b32)
        v = (jax.random.uniform(kv, v.shape) < jax.nn.sigmoid(field)).astype(jnp.float32)
        return (v, v @ W32 + c32, logw, key), None

    @jax.jit
    def run(key):
        k0, key = jax.random.split(key)
        v = (jax.random.uniform(k0, (num_chains, W32.shape[0])) < jax.nn.sigmoid(ba32)).astype(jnp.float32)
        carry = (v, v @ W32 + c32, jnp.zeros(num_chains, jnp.float64), key)
        (v, a, logw, _), _ = jax.lax.scan(step, carry, (betas[:-1], betas[1:]))
        return logw

    logw = np.asarray(run(jax.random.PRNGKey(seed)), np.float64)
    log_za = np.logaddexp(0.0, np.asarray(b_a, np.float64)).sum() + W.shape[1] * np.log(2.0)
    m = logw.max()
    r = np.exp(logw - m)
    log_mean = m + np.log(r.mean())
    stderr = r.std(ddof=1) / np.sqrt(len(r)) / r.mean()
    return float(log_za + log_mean), float(stderr), logw


def make_betas(num_temperatures, schedule="sm"):
    """Salakhutdinov & Murray's schedule shape (0..0.5, 0.5..0.9, 0.9..1 at increasing density),
    or ``schedule="linear"``: evenly spaced from 0 to 1."""
    if schedule == "linear":
        return np.linspace(0.0, 1.0, num_temperatures)
    n1, n2 = int(0.05 * num_temperatures), int(0.2 * num_temperatures)
    n3 = num_temperatures - n1 - n2
    return np.concatenate([np.linspace(0, 0.5, n1, endpoint=False), np.linspace(0.5, 0.9, n2, endpoint=False),
                           np.linspace(0.9, 1.0, n3)])


def check(params, x_train, x_test, num_temperatures, num_chains, seed=0, schedule="sm"):
    """{'log_z', 'log_z_se', 'held_out_ll', ...} for one parameter set."""
    W, b, c = (np.asarray(params[k], np.float64) for k in ("W", "b", "c"))
    b_a = base_rate_biases(x_train)
    c0, t0 = time.process_time(), time.perf_counter()
    log_z, se, logw = ais_log_z(W, b, c, b_a, make_betas(num_temperatures, schedule), num_chains, seed)
    mean_lp = float(free_log_p(W, b, c, x_test).mean())
    return {"log_z": log_z, "log_z_se": se, "mean_log_p_tilde_test": mean_lp, "held_out_ll": mean_lp - log_z,
            "temperatures": num_temperatures, "schedule": schedule, "chains": num_chains, "seed": seed,
            "log_w_spread": float(logw.max() - logw.min()), "log_w_std": float(logw.std(ddof=1)),
            "cpu_seconds": time.process_time() - c0, "wall_seconds": time.perf_counter() - t0}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("params", help=".npz with W, b, c")
    parser.add_argument("--temperatures", type=int, default=10000)
    parser.add_argument("--chains", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedule", choices=("sm", "linear"), default="sm",
                        help="sm: Salakhutdinov & Murray's shape (default); linear: evenly spaced")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    x_train, x_test = load_binarized()
    out = check(dict(np.load(args.params)), x_train, x_test, args.temperatures, args.chains, args.seed,
                args.schedule)
    out["params"] = str(args.params)
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
