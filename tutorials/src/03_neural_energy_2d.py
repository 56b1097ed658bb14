# %% [markdown]
# # 3. A neural energy on 2-D data, in NumPyro
#
# An energy-based model need not be a Boltzmann machine: any function $E_\theta(x)$ defines
# a density $p_\theta(x) = e^{-E_\theta(x)}/Z(\theta)$. Here $E_\theta$ is a small neural
# network (a multilayer perceptron written with `numpyro.param` weights) and the data are
# scikit-learn's **two moons**, a shape no single Gaussian can fit.
#
# The model is a NumPyro program: a broad Gaussian base measure on the observed site `x`
# times $e^{-E_\theta(x)}$, added with `ebm_ppl.energy`. `ebm_ppl.fit_unnormalized` trains it
# by maximum likelihood with **PCD**: the negative phase comes from persistent chains moved
# by **MALA** (the Metropolis-adjusted Langevin algorithm: a gradient step plus Gaussian
# noise, accepted or rejected so the chain targets $p_\theta$ exactly), whose step size adapts
# to an acceptance rate of 0.574.
#
# The data are 2-D, so we can do what is impossible in high dimension: normalize the model
# on a fine grid ($\log Z$ by quadrature) and score it by its exact held-out log-likelihood,
# against the best single Gaussian.

# %%
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from scipy.stats import multivariate_normal
from sklearn.datasets import make_moons

import ebm_ppl

SMALL = os.environ.get("EBM_PPL_TUTORIAL_SMALL", "0") == "1"  # the test suite runs a shrunken version
NUM_UPDATES = 600 if SMALL else 4000     # PCD parameter updates
NUM_CHUNKS = 2 if SMALL else 4           # snapshots of the density during training
NUM_CHAINS = 500
print("small run" if SMALL else "full run")

# %% [markdown]
# ## Data: two moons, standardized
#
# 2000 training and 1000 held-out points, noise 0.1, shifted and scaled to mean 0 and
# standard deviation 1 per coordinate (with the training set's statistics).

# %%
train, _ = make_moons(2000, noise=0.1, random_state=0)
test, _ = make_moons(1000, noise=0.1, random_state=1)
mean, std = train.mean(0), train.std(0)
train, test = ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)
print("train", train.shape, "test", test.shape)

# %% [markdown]
# ## The model: a Gaussian base measure times a neural energy
#
# $E_\theta$ is an MLP $2\to64\to64\to1$ with SiLU activations; its weights are NumPyro
# parameters, initialized at random (scaled by $1/\sqrt{\text{fan-in}}$). The base measure
# $\mathcal N(0, 1.5^2 I)$ keeps the density integrable while the network is small; the
# network then carves the moons out of it:
# $\log\tilde p_\theta(x) = \log\mathcal N(x; 0, 1.5^2I) - E_\theta(x)$.

# %%
SIZES = [2, 64, 64, 1]
init_keys = jax.random.split(jax.random.PRNGKey(0), len(SIZES) - 1)
INIT = {}
for i, (key, n_in, n_out) in enumerate(zip(init_keys, SIZES[:-1], SIZES[1:])):
    INIT[f"w{i}"] = jax.random.normal(key, (n_in, n_out)) / np.sqrt(n_in)
    INIT[f"b{i}"] = jnp.zeros(n_out)


def mlp_energy(params, x):
    h = x
    for i in range(len(SIZES) - 1):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < len(SIZES) - 2:
            h = jax.nn.silu(h)
    return h[..., 0]


BASE = dist.Normal(0.0, 1.5).expand([2]).to_event(1)


def neural_ebm(x):
    params = {name: numpyro.param(name, value) for name, value in INIT.items()}
    with numpyro.plate("data", x.shape[0]):
        x = numpyro.sample("x", BASE, obs=x)
        ebm_ppl.energy("mlp", mlp_energy(params, x))

# %% [markdown]
# ## Normalizing on a grid
#
# On a $300\times300$ grid over $[-4.5, 4.5]^2$ (the data lie within about $\pm2.5$; the base
# measure puts well under 0.1% of its mass outside), $\log Z\approx\log\sum_{\text{cells}}
# \tilde p_\theta(x)\,\Delta x^2$, and the held-out log-likelihood is the mean of
# $\log\tilde p_\theta(x) - \log Z$ over the test set.

# %%
GRID = np.linspace(-4.5, 4.5, 300)
XX, YY = np.meshgrid(GRID, GRID)
GRID_POINTS = jnp.asarray(np.stack([XX.ravel(), YY.ravel()], 1), jnp.float32)
CELL = (GRID[1] - GRID[0]) ** 2


@jax.jit
def log_unnorm(params, x):
    return BASE.log_prob(x) - mlp_energy(params, x)


def grid_density(params):
    """Returns (log Z, density on the grid as a 300x300 array)."""
    lp = np.asarray(log_unnorm(params, GRID_POINTS), np.float64)
    log_z = float(np.logaddexp.reduce(lp) + np.log(CELL))
    return log_z, np.exp(lp - log_z).reshape(XX.shape)


def heldout_loglik(params):
    log_z, _ = grid_density(params)
    return float(np.mean(np.asarray(log_unnorm(params, jnp.asarray(test)), np.float64)) - log_z)

# %% [markdown]
# ## The baseline: the best single Gaussian
#
# Its maximum-likelihood fit is the sample mean and covariance of the training set.

# %%
gauss = multivariate_normal(train.mean(0), np.cov(train.T, bias=True))
ll_gauss = float(gauss.logpdf(test).mean())
print(f"best Gaussian: held-out mean log-likelihood {ll_gauss:.3f}")

# %% [markdown]
# ## Training with PCD and MALA
#
# 500 persistent chains, 5 MALA steps per update (step size adapted), minibatches of 200,
# Adam with learning rate $10^{-3}$. We train in chunks, continuing with `resume=`; after
# each we normalize the density on the grid, score it, and draw fresh samples from it with
# `ebm_ppl.sample` (500 independent MALA chains, 300 warm-up steps each).

# %%
optimizer = optax.adam(1e-3)
sampler = ebm_ppl.samplers.MALA(step_size=0.05, adapt=True)
example = jnp.asarray(train[:1])
snapshots, result = [], None
start = time.time()
for i in range(NUM_CHUNKS):
    result = ebm_ppl.fit_unnormalized(
        neural_ebm, jnp.asarray(train), estimator=ebm_ppl.PCD(num_chains=NUM_CHAINS, num_steps=5), sampler=sampler,
        optimizer=optimizer, num_steps=NUM_UPDATES // NUM_CHUNKS, batch_size=200, rng_seed=0,
        progress_bar=False, resume=result,
    )
    params = dict(result.params)
    draws = ebm_ppl.sample(neural_ebm, params, example, num_samples=500, num_chains=500, num_warmup=300,
                           sampler=sampler, rng_seed=i + 1)
    ll = heldout_loglik(params)
    snapshots.append(((i + 1) * NUM_UPDATES // NUM_CHUNKS, grid_density(params)[1], np.asarray(draws["x"]).reshape(-1, 2), ll))
    print(f"update {snapshots[-1][0]:5d}: held-out mean log-likelihood {ll:.3f} ({time.time() - start:.0f} s)")
ll_ebm = snapshots[-1][3]

# %% [markdown]
# ## The picture
#
# Top row: the normalized density $p_\theta$ on the grid as training goes, with the
# held-out log-likelihood in each title. Bottom row: 500 fresh MALA samples from the model
# at the same moment (orange) over the training data (grey).

# %%
fig, axes = plt.subplots(2, NUM_CHUNKS, figsize=(3.6 * NUM_CHUNKS, 7.2), squeeze=False)
for j, (step, density, samples, ll) in enumerate(snapshots):
    ax = axes[0, j]
    ax.contourf(XX, YY, density, levels=20, cmap="viridis")
    ax.set(title=f"density after {step} updates\nheld-out LL {ll:.2f} (Gaussian {ll_gauss:.2f})",
           xlim=(-3, 3), ylim=(-3, 3), xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
    ax = axes[1, j]
    ax.scatter(train[:, 0], train[:, 1], s=2, color="0.6", label="training data")
    ax.scatter(samples[:, 0], samples[:, 1], s=3, color="C1", label="MALA samples")
    ax.set(title=f"samples after {step} updates", xlim=(-3, 3), ylim=(-3, 3), xlabel="$x_1$", ylabel="$x_2$",
           aspect="equal")
    ax.legend(loc="lower left", fontsize=8, markerscale=3)
fig.suptitle("A neural energy on two moons, trained by PCD with MALA")
fig.tight_layout()
if not SMALL:
    fig.savefig("figures/03_neural_energy_2d.png", dpi=80)
plt.show()

# %% [markdown]
# ## The claims, checked
#
# * At full size the grid-normalized held-out mean log-likelihood beats the best single
#   Gaussian by at least **0.5 nats** per point (measured: −1.96 against −2.72, a margin of
#   0.76); at small size (600 updates) by 0.2 (measured 0.34).
# * The grid normalizer is accurate: halving the grid resolution changes $\log Z$ by less
#   than 0.01.

# %%
print(f"neural EBM {ll_ebm:.3f} vs Gaussian {ll_gauss:.3f}: margin {ll_ebm - ll_gauss:.3f} nats")
assert ll_ebm > ll_gauss + (0.2 if SMALL else 0.5), (ll_ebm, ll_gauss)
coarse = np.asarray(log_unnorm(params, jnp.asarray(np.stack([XX[::2, ::2].ravel(), YY[::2, ::2].ravel()], 1), jnp.float32)))
log_z_coarse = float(np.logaddexp.reduce(coarse.astype(np.float64)) + np.log(4 * CELL))
assert abs(log_z_coarse - grid_density(params)[0]) < 0.01, (log_z_coarse, grid_density(params)[0])
print("all claims hold")
