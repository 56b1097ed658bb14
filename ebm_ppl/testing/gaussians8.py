"""A 2-D neural energy (MLP) on a mixture of 8 well-separated Gaussians with unequal
weights; mode weights of a fit read off a grid-normalized density."""

import numpy as np

import ebm_ppl

RADIUS, SCALE = 4.0, 0.3
ANGLES = 2 * np.pi * np.arange(8) / 8
CENTERS = RADIUS * np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1)
WEIGHTS = np.arange(1, 9) / 36.0  # 1/36 ... 8/36
BASE_SCALE = 4.0  # x's base measure N(0, 4^2): proper, so tempering can start at beta = 0


def mixture_data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    k = rng.choice(8, size=n, p=WEIGHTS)
    return (CENTERS[k] + SCALE * rng.normal(size=(n, 2))).astype(np.float32)


def mlp_energy_model(fw, hidden=64, seed=0):
    rng = np.random.default_rng(seed)
    init = {"W1": rng.normal(size=(2, hidden)) / np.sqrt(2), "b1": np.zeros(hidden),
            "W2": rng.normal(size=(hidden, hidden)) / np.sqrt(hidden), "b2": np.zeros(hidden),
            "w3": rng.normal(size=(hidden,)) / np.sqrt(hidden)}
    if fw.name == "pyro":
        act = lambda a: a * a.sigmoid()  # noqa: E731  (swish)
    else:
        import jax

        act = jax.nn.swish

    def energy_model(x):
        p = {k: fw.param(k, fw.array(v)) for k, v in init.items()}
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.Normal(0.0, BASE_SCALE).expand([2]).to_event(1), obs=x)
            a = act(x @ p["W1"] + p["b1"])
            a = act(a @ p["W2"] + p["b2"])
            ebm_ppl.energy("mlp", a @ p["w3"])

    return energy_model, init


def mode_weights(log_density_fn, lim=7.0, num=281):
    """Mass of the grid-normalized density nearest each center (Voronoi cells)."""
    g = np.linspace(-lim, lim, num)
    xx, yy = np.meshgrid(g, g)
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    ld = np.asarray(log_density_fn(pts), np.float64)
    p = np.exp(ld - ld.max())
    p /= p.sum()
    nearest = np.argmin(((pts[:, None] - CENTERS[None]) ** 2).sum(-1), axis=1)
    return np.bincount(nearest, weights=p, minlength=8)


def numpy_log_density(params, x):
    """log p̃(x) of :func:`mlp_energy_model` at numpy parameters (base included)."""
    swish = lambda a: a / (1 + np.exp(-a))  # noqa: E731
    a = swish(x @ params["W1"] + params["b1"])
    a = swish(a @ params["W2"] + params["b2"])
    return -(a @ params["w3"]) - 0.5 * (x ** 2).sum(-1) / BASE_SCALE ** 2
