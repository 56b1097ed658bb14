"""Probabilistic PCA written as an energy with a latent z, and its closed-form MLE."""

import numpy as np

import ebm_ppl

W_TRUE = np.array([2.0, 1.0, -0.5])
MU_TRUE = np.array([0.5, -1.0, 0.0])
SIGMA_TRUE = 0.5


def ppca_data(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 1))
    return (z * W_TRUE + MU_TRUE + SIGMA_TRUE * rng.normal(size=(n, 3))).astype(np.float32)


def ppca_model(fw):
    """x = W z + mu + sigma eps; z ~ N(0, 1); x | z as an energy 0.5 |x - W z - mu|^2 / sigma^2
    (+ 3 log sigma), x's base ImproperUniform: log Z(θ) is left to the estimator."""

    def ppca(x):
        W = fw.param("W", fw.array([1.0, 0.0, 0.0]))
        mu = fw.param("mu", fw.zeros(3))
        sigma = fw.param("sigma", fw.array(1.0), constraint=fw.constraints.positive)
        with fw.plate("data", x.shape[0]):
            x = fw.sample("x", fw.dist.ImproperUniform(fw.constraints.real_vector, (), (3,)), obs=x)
            z = fw.sample("z", fw.dist.Normal(0.0, 1.0))
            r = x - z[..., None] * W - mu
            ebm_ppl.energy("x_given_z", 0.5 * (r ** 2).sum(-1) / sigma ** 2 + 3 * fw_log(sigma))

    def fw_log(s):
        return s.log() if fw.name == "pyro" else __import__("jax.numpy", fromlist=["log"]).log(s)

    return ppca


def ppca_mean_loglik(x, W, mu, sigma):
    x = np.asarray(x, np.float64)
    C = np.outer(W, W) + sigma ** 2 * np.eye(3)
    d = x - mu
    _, logdet = np.linalg.slogdet(C)
    quad = np.einsum("ni,ij,nj->n", d, np.linalg.inv(C), d)
    return float(np.mean(-0.5 * (quad + logdet + 3 * np.log(2 * np.pi))))


def ppca_mle(x):
    """Tipping & Bishop (1999): mu = mean, sigma^2 = mean of the discarded eigenvalues,
    W = u1 sqrt(lambda1 - sigma^2)."""
    x = np.asarray(x, np.float64)
    mu = x.mean(0)
    lam, U = np.linalg.eigh(np.cov(x.T, bias=True))
    sigma2 = lam[:2].mean()
    W = U[:, 2] * np.sqrt(lam[2] - sigma2)
    return W, mu, np.sqrt(sigma2)
