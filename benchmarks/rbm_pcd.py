"""PCD-1 on a Bernoulli RBM: ebm_ppl against the same update written by hand, and sklearn.

The update (identical in every contender except scikit-learn, see below): a batch v of
``--batch`` examples; positive phase h ~ p(h | v); the ``--chains`` persistent chains take
one block-Gibbs sweep h ~ p(h | v'), v' ~ p(v | h); the gradient of
mean log p̃(v', h') − mean log p̃(v, h) (log p̃ = vᵀWh + bᵀv + cᵀh) goes to Adam(lr).
ebm_ppl runs it as ``fit_unnormalized(rbm, data, PCD(chains, 1), BlockGibbs(["h", "v"]),
Adam(lr), batch_size=batch)`` on a model with an explicit latent site ``h``:

- NumPyro: against a hand-written ``jax.jit`` + ``lax.scan`` epoch (optax.adam);
- Pyro: against a hand-written eager torch loop (torch.optim.Adam);
- scikit-learn's ``BernoulliRBM`` (same hidden size, batch and learning rate; it uses
  mean-field hidden probabilities and plain SGD, so its update is a little cheaper).

Sizes: ``--size digits`` is 64 visible x 64 hidden on scikit-learn's binarized digits
(the first 1700, so every epoch is 17 full batches); ``--size mnist5k`` is 784 x 500 on
the 4500 MNIST-5k training images (``ebm_ppl.datasets.load_mnist5k``; 45 updates an
epoch); ``--size mnist60k`` the same on the full 60,000 MNIST training images
(``ebm_ppl.datasets.load_mnist``; 600 updates an epoch: the full-MNIST throughput); ``--size large`` is 784 x 500 on a synthetic binary set of 2000 examples. The two
784 x 500 sizes also print peak memory and the resident memory after each timed epoch
(growth across epochs would show as a rising list).

Run: ``python benchmarks/rbm_pcd.py [--size digits|mnist5k|large] [--runs 5] [--cores 1]``.
``--cores 1`` (the default) pins the process to one core before JAX or torch starts (see
``_bench.pin_cores``: with ``OMP_NUM_THREADS=1`` alone XLA still used both cores of this
machine, for ebm_ppl and the hand-written loop alike); ``--cores 0`` leaves it unpinned.
Prints one line per contender (median seconds per epoch, one-off cost), then the ratios
in one line.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (pin_cores, binarized_digits, epoch_timer, fit_timer, jax_epochs, paired, peak_rss_mib,  # noqa: E402
                    ratio, rbm_model, rss_mib, synthetic_binary)


# ---------------------------------------------------------------------------- ebm_ppl
def ebm_ppl_fit(backend, x, num_hidden, lr, chains, batch):
    import ebm_ppl

    if backend == "pyro":
        import pyro
        import torch

        data = torch.as_tensor(x)
        make_opt = lambda: pyro.optim.Adam({"lr": lr})  # noqa: E731
    else:
        import jax.numpy as jnp
        import optax

        data = jnp.asarray(x)
        adam = optax.adam(lr)
        make_opt = lambda: adam  # noqa: E731  (one object: the compiled update is reused)
    model, _ = rbm_model(backend, x.shape[1], num_hidden)

    def fit(num_epochs):
        if backend == "pyro":
            pyro.clear_param_store()
        result = ebm_ppl.fit_unnormalized(
            model, data, ebm_ppl.PCD(num_chains=chains, num_steps=1), ebm_ppl.samplers.BlockGibbs(["h", "v"]),
            optimizer=make_opt(), num_epochs=num_epochs, batch_size=batch, progress_bar=False,
        )
        return result

    return fit


# ---------------------------------------------------------------------------- by hand
def jax_epoch(x, W_init, lr, chains, batch, seed=0):
    """One epoch of the update as a jitted ``lax.scan`` (returns a function of nothing)."""
    import jax
    import jax.numpy as jnp
    import optax

    data = jnp.asarray(x)
    n, nv = x.shape
    nh = W_init.shape[1]
    opt = optax.adam(lr)

    def logp(p, v, h):
        return ((v @ p["W"]) * h).sum(-1) + v @ p["b"] + h @ p["c"]

    def update(carry, idx):
        p, s, v_neg, key = carry
        key, k1, k2, k3 = jax.random.split(key, 4)
        v = data[idx]
        h_pos = jax.random.bernoulli(k1, jax.nn.sigmoid(v @ p["W"] + p["c"])).astype(v.dtype)
        h_neg = jax.random.bernoulli(k2, jax.nn.sigmoid(v_neg @ p["W"] + p["c"])).astype(v.dtype)
        v_neg = jax.random.bernoulli(k3, jax.nn.sigmoid(h_neg @ p["W"].T + p["b"])).astype(v.dtype)
        loss, grads = jax.value_and_grad(lambda q: logp(q, v_neg, h_neg).mean() - logp(q, v, h_pos).mean())(p)
        updates, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, updates), s, v_neg, key), loss

    key = jax.random.PRNGKey(seed)
    p = {"W": jnp.asarray(W_init), "b": jnp.zeros(nv), "c": jnp.zeros(nh)}
    v_neg = jax.random.bernoulli(key, 0.5, (chains, nv)).astype(jnp.float32)
    return jax_epochs(update, (p, opt.init(p), v_neg, key), n, batch)


def torch_epoch(x, W_init, lr, chains, batch, seed=0):
    """One epoch of the update as an eager torch loop."""
    import torch

    g = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(x)
    n, nv = x.shape
    nh = W_init.shape[1]
    W = torch.tensor(W_init, requires_grad=True)
    b = torch.zeros(nv, requires_grad=True)
    c = torch.zeros(nh, requires_grad=True)
    opt = torch.optim.Adam([W, b, c], lr=lr)
    v_neg = [torch.bernoulli(torch.full((chains, nv), 0.5), generator=g)]

    def logp(v, h):
        return ((v @ W) * h).sum(-1) + v @ b + h @ c

    def run():
        perm = torch.randperm(n, generator=g)[: (n // batch) * batch].reshape((-1, batch))
        for idx in perm:
            v = data[idx]
            with torch.no_grad():
                h_pos = torch.bernoulli(torch.sigmoid(v @ W + c), generator=g)
                h_neg = torch.bernoulli(torch.sigmoid(v_neg[0] @ W + c), generator=g)
                v_neg[0] = torch.bernoulli(torch.sigmoid(h_neg @ W.T + b), generator=g)
            loss = logp(v_neg[0], h_neg).mean() - logp(v, h_pos).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss

    return run, lambda out: out


def sklearn_fit(x, num_hidden, lr, batch):
    from sklearn.neural_network import BernoulliRBM

    def fit(num_epochs):
        BernoulliRBM(n_components=num_hidden, learning_rate=lr, batch_size=batch, n_iter=num_epochs,
                     random_state=0).fit(x)

    return fit


# ---------------------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("digits", "mnist5k", "mnist60k", "large"), default="digits")
    parser.add_argument("--runs", type=int, default=5, help="timed rounds; medians are reported")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per timed run")
    parser.add_argument("--backends", default="numpyro,pyro,sklearn")
    parser.add_argument("--cores", type=int, default=1, help="pin to this many cores (0: do not pin)")
    args = parser.parse_args()
    cores = pin_cores(args.cores)  # before JAX or torch starts its thread pools

    if args.size == "digits":
        x, num_hidden, epochs = binarized_digits(1700), 64, args.epochs or 20
    elif args.size == "mnist5k":
        from ebm_ppl.datasets import load_mnist5k

        x, num_hidden, epochs = load_mnist5k()[0], 500, args.epochs or 2
    elif args.size == "mnist60k":
        from ebm_ppl.datasets import load_mnist

        x, num_hidden, epochs = load_mnist("train"), 500, args.epochs or 1
    else:
        x, num_hidden, epochs = synthetic_binary(2000, 784), 500, args.epochs or 2
    lr, chains, batch = 0.01, 100, 100
    backends = args.backends.split(",")
    _, W_init = rbm_model("numpyro" if "numpyro" in backends else "pyro", x.shape[1], num_hidden)
    updates = x.shape[0] // batch
    sweeps = updates * (chains + batch)  # chain-sweeps per epoch (negative chains + positive phase)
    print(f"RBM {x.shape[1]}x{num_hidden}, {x.shape[0]} examples, batch {batch}, {chains} chains, "
          f"PCD-1, Adam({lr}); {updates} updates per epoch; medians of {args.runs} rounds; "
          f"cores {cores if cores else 'all'}", flush=True)
    timers, pairs = {}, []
    for backend in ("numpyro", "pyro"):
        if backend not in backends:
            continue
        mine, hand = f"ebm_ppl {backend}", "hand-written " + ("jax" if backend == "numpyro" else "torch")
        timers[mine] = fit_timer(ebm_ppl_fit(backend, x, num_hidden, lr, chains, batch), epochs)
        run, block = (jax_epoch if backend == "numpyro" else torch_epoch)(x, W_init, lr, chains, batch)
        timers[hand] = epoch_timer(run, epochs, block)
        pairs.append((mine, hand, f"{backend}/hand"))
    if "sklearn" in backends:
        sk = "scikit-learn BernoulliRBM"
        timers[sk] = fit_timer(sklearn_fit(x, num_hidden, lr, batch), epochs)
        pairs += [(f"ebm_ppl {b}", sk, f"{b}/sklearn") for b in ("numpyro", "pyro") if b in backends]
    timings = paired(timers, args.runs)
    for label, timing in timings.items():
        print(f"  {label:28s} {timing.per_epoch * 1e3:9.2f} ms/epoch  "
              f"{timing.per_epoch / sweeps * 1e6:8.3f} us/chain-sweep ({sweeps / timing.per_epoch / 1e6:6.3f} M/s)  "
              f"one-off {timing.one_off:5.2f} s")
    if args.size != "digits":
        print(f"  peak RSS of this process {peak_rss_mib():.0f} MiB")
        for backend in ("numpyro", "pyro"):
            if backend in backends:
                fit = ebm_ppl_fit(backend, x, num_hidden, lr, chains, batch)
                print(f"  ebm_ppl {backend}: RSS after fits of 1, 2, 4, 8 epochs: "
                      f"{[round(_rss_after(fit, e)) for e in (1, 2, 4, 8)]} MiB")
    print(f"ratios ({args.size}, ebm_ppl / baseline, median of per-round ratios of seconds per epoch): "
          + ", ".join(f"{name} {ratio(timings, a, b):.2f}" for a, b, name in pairs))


def _rss_after(fit, num_epochs):
    fit(num_epochs)
    return rss_mib()


if __name__ == "__main__":
    main()
