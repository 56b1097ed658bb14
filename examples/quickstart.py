"""Quick start: fit a 3x3 Ising model by persistent contrastive divergence, in Pyro and NumPyro,
and compare each fit with the exact maximum-likelihood estimate (the model has 512 states, so
its log-likelihood and its MLE are computed exactly by enumeration).

Run:  python examples/quickstart.py
"""

import itertools

import numpy as np

import ebm_ppl
from ebm_ppl.testing.ising import ising_mle  # the exact MLE by Newton's method over the 512 states

EDGES = [(3 * r + c, 3 * r + c + 1) for r in range(3) for c in range(2)] + [
    (3 * r + c, 3 * r + c + 3) for r in range(2) for c in range(3)
]
I, K = [e[0] for e in EDGES], [e[1] for e in EDGES]


def exact_mean_loglik(x, J, h):
    """Mean log-likelihood by enumerating the 512 states (Bernoulli(0.5) base included)."""
    states = np.array(list(itertools.product([0, 1], repeat=9)), float)
    f = lambda v: ((2 * v - 1)[:, I] * (2 * v - 1)[:, K] * J).sum(-1) + ((2 * v - 1) * h).sum(-1)
    return float(np.mean(f(x)) - np.logaddexp.reduce(f(states)))


def pyro_fit(x):
    import torch
    import pyro
    import pyro.distributions as dist

    def ising(x):
        J = pyro.param("J", torch.zeros(12))
        h = pyro.param("h", torch.zeros(9))
        with pyro.plate("data", x.shape[0]):
            x = pyro.sample("x", dist.Bernoulli(0.5).expand([9]).to_event(1), obs=x)
            s = 2 * x - 1
            ebm_ppl.factor("pairs", (s[..., I] * s[..., K] * J).sum(-1) + (s * h).sum(-1))

    pyro.clear_param_store()
    result = ebm_ppl.fit_unnormalized(
        ising, torch.as_tensor(x), estimator=ebm_ppl.PCD(num_chains=200, num_steps=1),
        optimizer=pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.99}), num_steps=300,  # lr 0.05 * 0.99**t
    )
    return {k: v.detach().numpy() for k, v in result.params.items()}


def numpyro_fit(x):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    import optax

    def ising(x):
        J = numpyro.param("J", jnp.zeros(12))
        h = numpyro.param("h", jnp.zeros(9))
        with numpyro.plate("data", x.shape[0]):
            x = numpyro.sample("x", dist.Bernoulli(0.5).expand([9]).to_event(1), obs=x)
            s = 2 * x - 1
            ebm_ppl.factor("pairs", (s[..., I] * s[..., K] * J).sum(-1) + (s * h).sum(-1))

    result = ebm_ppl.fit_unnormalized(
        ising, jnp.asarray(x), estimator=ebm_ppl.PCD(num_chains=200, num_steps=1),
        # ClippedAdam({"lr": 0.05, "lrd": 0.99}) in optax (see the README)
        optimizer=optax.chain(optax.clip(10.0), optax.adam(optax.exponential_decay(0.05 * 0.99, 1, 0.99))),
        num_steps=300,
    )
    return {k: np.asarray(v) for k, v in result.params.items()}


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    J_true, h_true = rng.uniform(-0.6, 0.6, 12), rng.uniform(-0.3, 0.3, 9)
    states = np.array(list(itertools.product([0, 1], repeat=9)), float)
    logp = ((2 * states - 1)[:, I] * (2 * states - 1)[:, K] * J_true).sum(-1) + ((2 * states - 1) * h_true).sum(-1)
    p = np.exp(logp - np.logaddexp.reduce(logp))
    x = states[rng.choice(512, size=1000, p=p)].astype(np.float32)
    zero = exact_mean_loglik(x, np.zeros(12), np.zeros(9))
    best = exact_mean_loglik(x, *ising_mle(x))
    print(f"mean log-likelihood at J = h = 0: {zero:.4f}; at the exact MLE: {best:.4f} (no fit can beat it)")
    print("a good fit is within 0.01 nats of the MLE (PCD's chains make the gradient noisy; with a learning rate "
          "that does not decay, these fits end 0.02-0.06 nats below it)")
    for name, fit in [("pyro", pyro_fit), ("numpyro", numpyro_fit)]:
        params = fit(x)
        ll = exact_mean_loglik(x, params["J"], params["h"])
        verdict = "good" if best - ll < 0.01 else "not there yet"
        print(f"{name:8s} PCD fit: mean log-likelihood {ll:.4f} (exact), {best - ll:.4f} below the MLE: {verdict}")
