"""PCD with MALA on a small neural energy: ebm_ppl against the same update written by hand.

The model: log p̃(x) = log N(x; 0, 1.5² I) − E_θ(x), x in R², E_θ an MLP 2→64→64→1 with
SiLU activations. The update (identical in both contenders): a batch of ``--batch``
examples (two moons); the ``--chains`` persistent chains take one MALA step (step size
``--step``, no adaptation; proposal x + ε∇log p̃ + √(2ε)ξ, Metropolis-Hastings per chain);
the gradient of mean log p̃(chains) − mean log p̃(batch) goes to Adam(1e-3).
ebm_ppl runs it as ``fit_unnormalized(model, data, PCD(chains, 1), MALA(step), Adam)``:

- NumPyro: against a hand-written ``jax.jit`` + ``lax.scan`` epoch (optax.adam);
- Pyro: against a hand-written eager torch loop (torch.optim.Adam).

Run: ``python benchmarks/mala_neural.py [--runs 5]``. Prints one line per contender
(median seconds per epoch, one-off cost), then the ratios in one line.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import epoch_timer, fit_timer, jax_epochs, paired, ratio  # noqa: E402

SIZES = [2, 64, 64, 1]


def two_moons(num=2000, seed=0):
    from sklearn.datasets import make_moons

    x, _ = make_moons(num, noise=0.1, random_state=seed)
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32)


def init_weights(seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        out[f"w{i}"] = (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        out[f"b{i}"] = np.zeros(n_out, np.float32)
    return out


def mlp(params, x, silu):
    h = x
    for i in range(len(SIZES) - 1):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < len(SIZES) - 2:
            h = silu(h)
    return h[..., 0]


# ---------------------------------------------------------------------------- ebm_ppl
def ebm_ppl_fit(backend, x, step, chains, batch, lr=1e-3):
    import ebm_ppl

    init = init_weights()
    if backend == "pyro":
        import pyro
        import pyro.distributions as dist
        import torch

        data = torch.as_tensor(x)
        P0 = {k: torch.as_tensor(v) for k, v in init.items()}
        param, plate, sample, silu = pyro.param, pyro.plate, pyro.sample, torch.nn.functional.silu
        base = dist.Normal(0.0, 1.5).expand([2]).to_event(1)
        make_opt = lambda: pyro.optim.Adam({"lr": lr})  # noqa: E731
    else:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist
        import optax

        data = jnp.asarray(x)
        P0 = {k: jnp.asarray(v) for k, v in init.items()}
        param, plate, sample, silu = numpyro.param, numpyro.plate, numpyro.sample, jax.nn.silu
        base = dist.Normal(0.0, 1.5).expand([2]).to_event(1)
        adam = optax.adam(lr)
        make_opt = lambda: adam  # noqa: E731  (one object: the compiled update is reused)

    def model(x):
        params = {k: param(k, v) for k, v in P0.items()}
        with plate("data", x.shape[0]):
            x = sample("x", base, obs=x)
            ebm_ppl.energy("mlp", mlp(params, x, silu))

    def fit(num_epochs):
        if backend == "pyro":
            pyro.clear_param_store()
        return ebm_ppl.fit_unnormalized(
            model, data, ebm_ppl.PCD(num_chains=chains, num_steps=1), ebm_ppl.samplers.MALA(step),
            optimizer=make_opt(), num_epochs=num_epochs, batch_size=batch, progress_bar=False,
        )

    return fit


# ---------------------------------------------------------------------------- by hand
def jax_epoch(x, step, chains, batch, lr=1e-3, seed=0):
    import jax
    import jax.numpy as jnp
    import optax

    data = jnp.asarray(x)
    n = x.shape[0]
    opt = optax.adam(lr)

    def logp(p, x):  # per row
        return jax.scipy.stats.norm.logpdf(x, 0.0, 1.5).sum(-1) - mlp(p, x, jax.nn.silu)

    ld_and_grad = jax.vmap(jax.value_and_grad(lambda p, x: logp(p, x[None])[0], argnums=1), in_axes=(None, 0))

    def update(carry, idx):
        p, s, x_neg, key = carry
        key, k_noise, k_acc = jax.random.split(key, 3)
        ld, g = ld_and_grad(p, x_neg)
        xi = jax.random.normal(k_noise, x_neg.shape)
        prop = x_neg + step * g + jnp.sqrt(2 * step) * xi
        ld_new, g_new = ld_and_grad(p, prop)
        back = x_neg - prop - step * g_new
        log_alpha = ld_new - ld + (xi ** 2).sum(-1) / 2 - (back ** 2).sum(-1) / (4 * step)
        accept = jnp.log(jax.random.uniform(k_acc, ld.shape)) < log_alpha
        x_neg = jnp.where(accept[:, None], prop, x_neg)
        v = data[idx]
        loss, grads = jax.value_and_grad(lambda q: logp(q, x_neg).mean() - logp(q, v).mean())(p)
        updates, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, updates), s, x_neg, key), loss

    key = jax.random.PRNGKey(seed)
    p = {k: jnp.asarray(v) for k, v in init_weights().items()}
    return jax_epochs(update, (p, opt.init(p), 1.5 * jax.random.normal(key, (chains, 2)), key), n, batch)


def torch_epoch(x, step, chains, batch, lr=1e-3, seed=0):
    import math

    import torch

    g = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(x)
    n = x.shape[0]
    p = {k: torch.tensor(v, requires_grad=True) for k, v in init_weights().items()}
    opt = torch.optim.Adam(list(p.values()), lr=lr)
    x_neg = [1.5 * torch.randn((chains, 2), generator=g)]
    const = -math.log(1.5) - 0.5 * math.log(2 * math.pi)

    def logp(q, x):
        return (-0.5 * (x / 1.5) ** 2 + const).sum(-1) - mlp(q, x, torch.nn.functional.silu)

    def ld_and_grad(x):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            ld = logp({k: v.detach() for k, v in p.items()}, x)
            (grad,) = torch.autograd.grad(ld.sum(), x)
        return ld.detach(), grad

    def run():
        perm = torch.randperm(n, generator=g)[: (n // batch) * batch].reshape((-1, batch))
        for idx in perm:
            xn = x_neg[0]
            ld, gr = ld_and_grad(xn)
            xi = torch.randn(xn.shape, generator=g)
            prop = xn + step * gr + math.sqrt(2 * step) * xi
            ld_new, g_new = ld_and_grad(prop)
            back = xn - prop - step * g_new
            log_alpha = ld_new - ld + (xi ** 2).sum(-1) / 2 - (back ** 2).sum(-1) / (4 * step)
            accept = torch.log(torch.rand(ld.shape, generator=g)) < log_alpha
            x_neg[0] = torch.where(accept[:, None], prop, xn)
            loss = logp(p, x_neg[0]).mean() - logp(p, data[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss

    return run, lambda out: out


# ---------------------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed rounds; medians are reported")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per timed run")
    parser.add_argument("--backends", default="numpyro,pyro")
    parser.add_argument("--step", type=float, default=0.05)
    args = parser.parse_args()
    x = two_moons()
    chains, batch = 100, 100
    print(f"neural energy 2-64-64-1 (SiLU), {x.shape[0]} two-moons points, batch {batch}, {chains} chains, "
          f"PCD-1 with MALA({args.step}), Adam(1e-3); {x.shape[0] // batch} updates per epoch; "
          f"medians of {args.runs} rounds", flush=True)
    timers, pairs = {}, []
    for backend in args.backends.split(","):
        mine, hand = f"ebm_ppl {backend}", "hand-written " + ("jax" if backend == "numpyro" else "torch")
        timers[mine] = fit_timer(ebm_ppl_fit(backend, x, args.step, chains, batch), args.epochs)
        run, block = (jax_epoch if backend == "numpyro" else torch_epoch)(x, args.step, chains, batch)
        timers[hand] = epoch_timer(run, args.epochs, block)
        pairs.append((mine, hand, f"{backend}/hand"))
    timings = paired(timers, args.runs)
    for label, timing in timings.items():
        print(f"  {label:28s} {timing.per_epoch * 1e3:9.2f} ms/epoch  one-off {timing.one_off:5.2f} s")
    print("ratios (MALA neural energy, ebm_ppl / hand-written, median of per-round ratios of seconds per epoch): "
          + ", ".join(f"{name} {ratio(timings, a, b):.2f}" for a, b, name in pairs))


if __name__ == "__main__":
    main()
