# %% [markdown]
# # 1. An Ising model in Pyro: maximum likelihood with persistent contrastive divergence
#
# An **Ising model** on a 3×3 grid gives every configuration of nine ±1 spins
# a probability
#
# $$p(x;\theta) = \frac{\tilde p(x;\theta)}{Z(\theta)},\qquad
#   \log \tilde p(x;\theta) = \sum_{(i,k)\in E} J_{ik}\, s_i s_k + \sum_i h_i s_i,\quad s = 2x - 1,$$
#
# with couplings $J$ on the 12 edges and fields $h$. The **normalizer**
# $Z(\theta) = \sum_x \tilde p(x;\theta)$ depends on the parameters. The gradient of the
# mean log-likelihood of data $x_1..x_N$ has two parts:
#
# $$\nabla_\theta \frac1N\sum_n \log p(x_n) =
#   \underbrace{\frac1N\sum_n \nabla_\theta \log\tilde p(x_n)}_{\text{positive phase}}
#   \;-\; \underbrace{\mathbb E_{x'\sim p_\theta}\,\nabla_\theta \log\tilde p(x')}_{\text{negative phase} \;=\; \nabla_\theta \log Z}.$$
#
# The positive phase pushes the density up at the data; the negative phase pushes it down
# wherever the *model* puts mass. Drop the negative phase and nothing stops $\tilde p$ from
# growing everywhere. `ebm_ppl` estimates the negative phase with Markov chains that sample
# the model: **persistent contrastive divergence** (PCD, also called stochastic maximum
# likelihood; Younes 1998, Tieleman 2008) keeps a set of chains alive between parameter
# updates and advances them a few steps after each update.
#
# This notebook:
# 1. writes the model as an ordinary Pyro model with `ebm_ppl.factor`,
# 2. fits it with `ebm_ppl.fit_unnormalized` and PCD,
# 3. checks the learned couplings against the exact maximum-likelihood estimate (512 states
#    are few enough to enumerate),
# 4. shows what goes wrong when the same model is given to Pyro's SVI, which treats the
#    factor's normalizer as a constant.

# %%
import itertools
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import torch

import ebm_ppl

SMALL = os.environ.get("EBM_PPL_TUTORIAL_SMALL", "0") == "1"  # the test suite runs a shrunken version
torch.manual_seed(0)
NUM_UPDATES = 400 if SMALL else 2000          # PCD parameter updates
NUM_CHAINS = 200 if SMALL else 500            # persistent chains
NUM_SVI_STEPS = 200 if SMALL else 1000
print("small run" if SMALL else "full run")

# %% [markdown]
# ## Data from a known Ising model
#
# We draw 2000 configurations exactly from an Ising model with random couplings (by
# enumerating its 512 states), so we know what a good fit looks like.

# %%
EDGES = [(3 * r + c, 3 * r + c + 1) for r in range(3) for c in range(2)] + [
    (3 * r + c, 3 * r + c + 3) for r in range(2) for c in range(3)
]
I, K = [e[0] for e in EDGES], [e[1] for e in EDGES]
STATES = np.array(list(itertools.product([0, 1], repeat=9)), dtype=np.float64)  # all 512 states


def features(x):
    """Sufficient statistics: the 12 products s_i s_k on the edges, then the 9 spins."""
    s = 2 * x - 1
    return np.concatenate([s[:, I] * s[:, K], s], axis=1)


def log_unnorm(x, J, h):
    return features(x) @ np.concatenate([J, h])


def exact_mean_loglik(x, J, h):
    """Exact mean log-likelihood by enumerating the 512 states."""
    return float(np.mean(log_unnorm(x, J, h)) - np.logaddexp.reduce(log_unnorm(STATES, J, h)))


rng = np.random.default_rng(1234)
J_true, h_true = rng.uniform(-0.6, 0.6, 12), rng.uniform(-0.3, 0.3, 9)
p_true = np.exp(log_unnorm(STATES, J_true, h_true) - np.logaddexp.reduce(log_unnorm(STATES, J_true, h_true)))
x_np = STATES[rng.choice(512, size=2000, p=p_true)].astype(np.float32)
data = torch.as_tensor(x_np)
print(data.shape, "mean spin up:", x_np.mean().round(3))

# %% [markdown]
# ## The exact maximum-likelihood estimate
#
# The Ising model is an exponential family, so its log-likelihood is concave and its
# maximum is where the model's expected features equal the data's. With 512 states we can
# find it by Newton's method. This is the target PCD should reach: not the true couplings
# (2000 samples leave some sampling error) but the MLE of *this* data set.

# %%
def exact_mle(x, num_iters=100):
    F, target = features(STATES), features(x.astype(np.float64)).mean(0)
    theta = np.zeros(F.shape[1])
    for _ in range(num_iters):
        logits = F @ theta
        p = np.exp(logits - np.logaddexp.reduce(logits))
        mean = p @ F
        cov = (F * p[:, None]).T @ F - np.outer(mean, mean)
        step = np.linalg.solve(cov, target - mean)
        theta += step
        if np.abs(step).max() < 1e-12:
            break
    return theta[:12], theta[12:]


J_mle, h_mle = exact_mle(x_np)
print("RMSE(MLE couplings, true couplings) =", np.sqrt(np.mean((J_mle - J_true) ** 2)).round(3))
print("exact mean log-likelihood at the MLE:", round(exact_mean_loglik(x_np, J_mle, h_mle), 4))

# %% [markdown]
# ## The model, in plain Pyro
#
# The observed site `x` carries the **base measure** (independent fair coins,
# `Bernoulli(0.5)`): it says the data are binary vectors and gives the sampler its support.
# `ebm_ppl.factor` adds the unnormalized log-factor, one value per example inside the plate.
# Nothing here is specific to energy-based models: the function is an ordinary Pyro model.

# %%
def ising(x):
    J = pyro.param("J", torch.zeros(12))
    h = pyro.param("h", torch.zeros(9))
    with pyro.plate("data", x.shape[0]):
        x = pyro.sample("x", dist.Bernoulli(0.5).expand([9]).to_event(1), obs=x)
        s = 2 * x - 1
        ebm_ppl.factor("ising", (s[..., I] * s[..., K] * J).sum(-1) + (s * h).sum(-1))

# %% [markdown]
# ## Fitting with PCD
#
# `PCD(num_chains, num_steps)` keeps `num_chains` chains and moves each by `num_steps`
# sweeps of the sampler after every parameter update. On a grid, the spins of one colour of a
# checkerboard are independent given the others, so `BlockGibbs` can redraw each colour at
# once (the default `sampler="auto"` finds this blocking by itself; here we state it).
#
# We fit in chunks with `resume=` (which continues the chains, optimizer and random streams)
# to record the couplings along the way.

# %%
even = np.array([(i // 3 + i % 3) % 2 == 0 for i in range(9)])
sampler = ebm_ppl.samplers.BlockGibbs([{"x": even}, {"x": ~even}])
optimizer = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.999})

pyro.clear_param_store()
chunk = NUM_UPDATES // 20
pcd_trace, result = [], None
start = time.time()
for _ in range(20):
    result = ebm_ppl.fit_unnormalized(
        ising, data, estimator=ebm_ppl.PCD(num_chains=NUM_CHAINS, num_steps=2), sampler=sampler,
        optimizer=optimizer, num_steps=chunk, rng_seed=0, progress_bar=False, resume=result,
    )
    J_fit = result.params["J"].detach().numpy().astype(np.float64)
    h_fit = result.params["h"].detach().numpy().astype(np.float64)
    pcd_trace.append((len(pcd_trace) * chunk + chunk, np.linalg.norm(J_fit), exact_mean_loglik(x_np, J_fit, h_fit)))
print(f"{NUM_UPDATES} PCD updates in {time.time() - start:.1f} s")

rmse_pcd = float(np.sqrt(np.mean((J_fit - J_mle) ** 2)))
gap_pcd = exact_mean_loglik(x_np, J_mle, h_mle) - exact_mean_loglik(x_np, J_fit, h_fit)
print(f"RMSE(PCD couplings, exact MLE) = {rmse_pcd:.4f}")
print(f"log-likelihood gap to the MLE  = {gap_pcd:.5f} nats per example")

# %% [markdown]
# `result.history["loss"]` holds the *surrogate* loss, mean log p̃(chains) − mean log p̃(data),
# whose gradient is the PCD estimate. It is not the negative log-likelihood: it hovers near
# zero once the chains look like the data.

# %%
print("last surrogate losses:", result.history["loss"][-5:].round(3))

# %% [markdown]
# ## The same model under SVI: the normalizer forgotten
#
# Pyro's `factor` adds a term to the log joint, and SVI maximizes the log joint of the data
# (here, with no latent variables and an empty guide, the ELBO *is* the log joint). Pyro
# has no way to know that $Z(\theta)$ depends on $J$ and $h$, so SVI maximizes
# $\sum_n \log\tilde p(x_n)$ instead of $\sum_n \log p(x_n)$. That objective is linear in
# the parameters and unbounded: every coupling whose edge agrees more often than not in the
# data is pushed to $+\infty$, the others to $-\infty$. The ELBO improves forever while the
# true log-likelihood collapses.

# %%
pyro.clear_param_store()
svi = pyro.infer.SVI(ising, lambda x: None, pyro.optim.Adam({"lr": 0.05}), pyro.infer.Trace_ELBO())
svi_trace = []
for step in range(1, NUM_SVI_STEPS + 1):
    loss = svi.step(data) / len(data)
    if step % (NUM_SVI_STEPS // 20) == 0:
        J_svi = pyro.param("J").detach().numpy().astype(np.float64)
        h_svi = pyro.param("h").detach().numpy().astype(np.float64)
        svi_trace.append((step, np.linalg.norm(J_svi), exact_mean_loglik(x_np, J_svi, h_svi), loss))
print(f"after {NUM_SVI_STEPS} SVI steps: |J| = {svi_trace[-1][1]:.1f} "
      f"(MLE: {np.linalg.norm(J_mle):.2f}), ELBO loss per example = {svi_trace[-1][3]:.1f}, "
      f"exact mean log-likelihood = {svi_trace[-1][2]:.1f}")

# %% [markdown]
# ## Figure: couplings and training curves

# %%
pcd_trace, svi_trace = np.array(pcd_trace), np.array(svi_trace)
ll_mle = exact_mean_loglik(x_np, J_mle, h_mle)
fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))

ax = axes[0]
lim = 1.1 * max(np.abs(J_mle).max(), np.abs(J_fit).max())
ax.plot([-lim, lim], [-lim, lim], color="gray", lw=1, label="y = x")
ax.scatter(J_mle, J_fit, s=40, label=f"PCD fit (RMSE {rmse_pcd:.3f})", zorder=3)
ax.scatter(J_mle, J_true, s=25, marker="x", color="C2", label="true couplings", zorder=3)
ax.set(xlabel="exact MLE coupling $J_{ik}$", ylabel="coupling", title="12 couplings: PCD vs exact MLE")
ax.legend(loc="upper left")

ax = axes[1]
ax.plot(pcd_trace[:, 0], pcd_trace[:, 1], "o-", ms=3, label="PCD (ebm_ppl)")
ax.plot(svi_trace[:, 0], svi_trace[:, 1], "s-", ms=3, color="C3", label="SVI on the same factor")
ax.axhline(np.linalg.norm(J_mle), color="gray", ls="--", label="exact MLE")
ax.set(xlabel="parameter update", ylabel="coupling norm $\\|J\\|_2$", yscale="log",
       title="Without the negative phase, couplings diverge")
ax.legend()

ax = axes[2]
ax.plot(pcd_trace[:, 0], -pcd_trace[:, 2], "o-", ms=3, label="PCD (ebm_ppl)")
ax.plot(svi_trace[:, 0], -svi_trace[:, 2], "s-", ms=3, color="C3", label="SVI on the same factor")
ax.axhline(-ll_mle, color="gray", ls="--", label=f"exact MLE ({-ll_mle:.3f})")
ax.set(xlabel="parameter update", ylabel="exact negative mean log-likelihood (nats)", yscale="log",
       title="True objective, by enumeration (lower is better)")
ax.legend(loc="upper left")
fig.tight_layout()
if not SMALL:
    fig.savefig("figures/01_ising_pyro.png", dpi=80)
plt.show()

# %% [markdown]
# ## The claims, checked
#
# * PCD's couplings are within **0.05 RMSE** of the exact MLE (full size; the shrunken test
#   run, with 5× fewer updates, is held to 0.08), and its exact log-likelihood is within
#   0.01 nats per example of the maximum.
# * SVI on the same `factor` runs away: its couplings end far larger than the MLE's and its
#   exact log-likelihood falls far below even that of the all-zero starting point
#   (9 log ½ ≈ −6.24 nats).

# %%
assert rmse_pcd < (0.08 if SMALL else 0.05), rmse_pcd
assert gap_pcd < (0.02 if SMALL else 0.01), gap_pcd
assert svi_trace[-1, 1] > 5 * np.linalg.norm(J_mle), svi_trace[-1, 1]
assert svi_trace[-1, 2] < 9 * np.log(0.5) - 1.0, svi_trace[-1, 2]
print("all claims hold")
