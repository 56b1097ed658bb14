"""Bernoulli RBMs on MNIST-5k: ebm_ppl's PCD against scikit-learn at equal wall-clock time,
every model evaluated by the same bracketed log-likelihood estimator.

1. 784 x 500 RBM, NumPyro backend, ``PCD(num_chains=100, num_steps=1)``,
   ``BlockGibbs(["h", "v"])``, Adam, minibatches of 100, trained for ``--seconds`` of wall
   clock (whole epochs; the time of every epoch is printed).
2. scikit-learn's ``BernoulliRBM`` (500 hidden units) for the same wall-clock time at each
   learning rate in {0.01, 0.05, 0.1} and batch size in {20, 100} (one ``partial_fit`` per
   minibatch, epochs of shuffled minibatches until the time is spent).
3. Every model: ``log_partition(method="bidirectional", init=x_train)`` — forward AIS from a
   base-rate start (a stochastic lower bound on log Z) and reverse AIS from long runs started
   at the training images (an approximate stochastic upper bound; the 500 hidden units are
   summed out of the weights analytically) — the rigorous data bound log Σ_{5000 images} p̃(x),
   and the held-out mean log-likelihood bracket [log p̃ − upper, log p̃ − lower]. sklearn's
   parameters map onto the same energy (W = components_.T, b = intercept_visible_,
   c = intercept_hidden_); the Bernoulli(0.5) base measures of the ebm_ppl model add the
   constant 1284 log 0.5 to log p̃ and to log Z alike, so the log-likelihood is the same.
4. AIS from the uniform base (``init="base"``) on the ebm_ppl model: the failure the data
   bound catches (an ``EstimateWarning`` is printed, or the estimate respects the bound).
5. The figure ``tutorials/figures/05_rbm_mnist.png``: filters and model samples.

Run (about 45 minutes on a quiet 2-core machine):

    OMP_NUM_THREADS=1 python benchmarks/mnist_rbm.py --seconds 180 --temperatures 3000

``--quick`` runs everything at toy sizes (a smoke test). ``--reevaluate --temperatures K``
evaluates the saved models again with K temperatures.
"""

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def rbm(num_visible, num_hidden, W0, b0, c0):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    import ebm_ppl

    def model(v):
        W = numpyro.param("W", jnp.asarray(W0))
        b = numpyro.param("b", jnp.asarray(b0))
        c = numpyro.param("c", jnp.asarray(c0))
        with numpyro.plate("data", v.shape[0]):
            v = numpyro.sample("v", dist.Bernoulli(0.5).expand([num_visible]).to_event(1), obs=v)
            h = numpyro.sample("h", dist.Bernoulli(0.5).expand([num_hidden]).to_event(1))
            ebm_ppl.factor("rbm", ((v @ W) * h).sum(-1) + (v * b).sum(-1) + (h * c).sum(-1))

    return model


def base_rate_logits(x):
    p = (x.sum(0) + 1.0) / (x.shape[0] + 2.0)
    return np.log(p) - np.log1p(-p)


def train_ebm_ppl(x, num_hidden, seconds, lr, batch, seed=0, optimizer="adam"):
    import jax.numpy as jnp
    import optax

    import ebm_ppl

    W0 = (0.01 * np.random.default_rng(seed).standard_normal((x.shape[1], num_hidden))).astype(np.float32)
    model = rbm(x.shape[1], num_hidden, W0, base_rate_logits(x).astype(np.float32), np.zeros(num_hidden, np.float32))
    data = jnp.asarray(x)
    opt = optax.adam(lr) if optimizer == "adam" else optax.sgd(lr)
    result, times, start = None, [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        result = ebm_ppl.fit_unnormalized(
            model, data, ebm_ppl.PCD(num_chains=100, num_steps=1), ebm_ppl.samplers.BlockGibbs(["h", "v"]),
            optimizer=opt, num_epochs=1, batch_size=batch, progress_bar=False, resume=result, rng_seed=seed)
        times.append(time.perf_counter() - t0)
    params = {k: np.asarray(v) for k, v in result.params.items()}
    return params, times


def train_sklearn(x, num_hidden, seconds, lr, batch, seed=0):
    from sklearn.neural_network import BernoulliRBM

    model = BernoulliRBM(n_components=num_hidden, learning_rate=lr, batch_size=batch, n_iter=1, random_state=seed)
    rng = np.random.default_rng(seed)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        order = rng.permutation(len(x))
        for i in range(0, len(x) - batch + 1, batch):
            model.partial_fit(x[order[i:i + batch]])
        times.append(time.perf_counter() - t0)
    params = {"W": model.components_.T.astype(np.float32), "b": model.intercept_visible_.astype(np.float32),
              "c": model.intercept_hidden_.astype(np.float32)}
    return params, times


def evaluate(params, x_train, x_test, num_temperatures, num_chains, seed=0, init="train"):
    """The bracket on log Z and on the held-out mean log-likelihood, and the data bound."""
    import jax.numpy as jnp

    import ebm_ppl

    nv, nh = params["W"].shape
    model = rbm(nv, nh, params["W"], params["b"], params["c"])
    p = {k: jnp.asarray(v) for k, v in params.items()}
    every = jnp.asarray(np.concatenate([x_train, x_test]))
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lz = ebm_ppl.log_partition(model, p, every, method="bidirectional", num_chains=num_chains,
                                   num_temperatures=num_temperatures, rng_seed=seed,
                                   init=jnp.asarray(x_train) if init == "train" else "base")
    seconds = time.perf_counter() - t0
    log_p = np.asarray(ebm_ppl.log_likelihood(model, p, jnp.asarray(x_test), log_z=0.0), np.float64)
    mean_log_p = float(log_p.mean())
    return {
        "log_z_lower": lz.lower, "log_z_lower_se": lz.lower_stderr, "log_z_upper": lz.upper,
        "log_z_upper_se": lz.upper_stderr, "log_z_data_bound": lz.data_bound, "log_z_gap": lz.upper - lz.lower,
        "ll_lower": mean_log_p - lz.upper, "ll_upper": mean_log_p - lz.lower, "ll_midpoint": mean_log_p - lz.estimate,
        "upper_from_exact_draws": bool(lz.upper_is_exact_start), "seconds": seconds,
        "warnings": [str(w.message) for w in caught if issubclass(w.category, ebm_ppl.EstimateWarning)],
    }


def exact_20(x_train, x_test, seconds, quick):
    """784 x 20: exact held-out log-likelihood (hidden states enumerated, visibles summed)."""
    import jax.numpy as jnp

    import ebm_ppl

    params, times = train_ebm_ppl(x_train, 20, seconds, 1e-3, 100)
    model = rbm(784, 20, params["W"], params["b"], params["c"])
    p = {k: jnp.asarray(v) for k, v in params.items()}
    t0 = time.perf_counter()
    lz = ebm_ppl.log_partition(model, p, jnp.asarray(x_train[:1]))
    t_exact = time.perf_counter() - t0
    ll = float(np.mean(np.asarray(ebm_ppl.log_likelihood(model, p, jnp.asarray(x_test), log_z=lz))))
    return {"epochs": len(times), "epoch_seconds": float(np.median(times)), "log_z_exact": lz.estimate,
            "exact_seconds": t_exact, "ll_exact": ll}, params


def figure(params, path, num_samples=32):
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import ebm_ppl

    nv, nh = params["W"].shape
    model = rbm(nv, nh, params["W"], params["b"], params["c"])
    p = {k: jnp.asarray(v) for k, v in params.items()}
    draws = ebm_ppl.sample(model, p, jnp.zeros((1, nv)), num_samples=num_samples, num_chains=num_samples,
                           num_warmup=1000, sampler=ebm_ppl.samplers.BlockGibbs(["h", "v"]))
    fig, axes = plt.subplots(2, 1, figsize=(8, 4.4))
    W = params["W"][:, np.argsort(-np.abs(params["W"]).sum(0))[:32]].T
    tile = lambda imgs: np.concatenate([np.concatenate(list(r), 1) for r in imgs.reshape(2, 16, 28, 28)], 0)  # noqa: E731
    axes[0].imshow(tile(W), cmap="RdBu_r", vmin=-np.abs(W).max(), vmax=np.abs(W).max())
    axes[0].set_title("filters (32 largest of W)")
    axes[1].imshow(tile(np.asarray(draws["v"])[:32]), cmap="gray_r")
    axes[1].set_title("model samples (block Gibbs, 1000 sweeps)")
    for a in axes:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--temperatures", type=int, default=3000)
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ebm-only", default=None, metavar="OPTIMIZER,LR,BATCH",
                        help="only train and evaluate ebm_ppl's 784 x 500 with this setting, e.g. sgd,0.01,20")
    parser.add_argument("--sklearn-only", default=None, metavar="LR,BATCH",
                        help="only train and evaluate scikit-learn's BernoulliRBM with this setting, e.g. 0.01,100 "
                             "(run it at the same time as --ebm-only to share the machine's load fairly)")
    parser.add_argument("--reevaluate", action="store_true",
                        help="only evaluate the saved 784 x 500 model(s) (benchmarks/mnist_rbm_*.npz) "
                             "with --temperatures, appending to the results")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from ebm_ppl.datasets import load_mnist5k

    x_train, x_test = load_mnist5k()
    seconds, K = args.seconds, args.temperatures
    if args.quick:
        seconds, K = 3.0, 20
    args.out = args.out or str(ROOT / "benchmarks" / ("mnist_rbm_quick.json" if args.quick else "mnist_rbm_results.json"))
    results = {"settings": vars(args)}

    def report(name, value):
        results[name] = value
        print(name, json.dumps(value, default=float), flush=True)
        Path(args.out).write_text(json.dumps(results, indent=1, default=float))

    if args.reevaluate:
        results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else results
        for path in sorted((ROOT / "benchmarks").glob("mnist_rbm_*.npz")):
            params = dict(np.load(path))
            report(f"{path.stem}_eval_K{K}", evaluate(params, x_train, x_test, K, args.chains))
        return
    if args.sklearn_only:
        results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else results
        lr, batch = args.sklearn_only.split(",")
        params, times = train_sklearn(x_train, 500, seconds, float(lr), int(batch))
        name = f"sklearn_lr{lr}_batch{batch}"
        report(name + "_training", {"epochs": len(times), "epoch_seconds": times, "total_seconds": float(np.sum(times))})
        report(name + "_eval", evaluate(params, x_train, x_test, K, args.chains))
        return
    if args.ebm_only:
        results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else results
        opt, lr, batch = args.ebm_only.split(",")
        params, times = train_ebm_ppl(x_train, 500, seconds, float(lr), int(batch), optimizer=opt)
        name = f"ebm_ppl_{opt}_lr{lr}_batch{batch}"
        np.savez(ROOT / "benchmarks" / f"mnist_rbm_{name}.npz", **params)
        report(name + "_training", {"epochs": len(times), "epoch_seconds": times, "total_seconds": float(np.sum(times))})
        report(name + "_eval", evaluate(params, x_train, x_test, K, args.chains))
        figure(params, ROOT / "tutorials" / "figures" / f"05_rbm_mnist_{name}.png")
        return
    r20, _ = exact_20(x_train, x_test, 3.0 if args.quick else 60.0, args.quick)
    report("ebm_ppl_784x20_exact", r20)

    params, times = train_ebm_ppl(x_train, 500, seconds, 1e-3, 100)
    np.savez(ROOT / "benchmarks" / "mnist_rbm_ebm_ppl_500.npz", **params)
    report("ebm_ppl_784x500_training", {"epochs": len(times), "epoch_seconds": times,
                                        "total_seconds": float(np.sum(times))})
    report("ebm_ppl_784x500_eval", evaluate(params, x_train, x_test, K, args.chains))
    report("ebm_ppl_784x500_uniform_start", evaluate(params, x_train, x_test, K, args.chains, init="base"))
    if not args.quick:
        figure(params, ROOT / "tutorials" / "figures" / "05_rbm_mnist.png")

    for lr in ((0.05,) if args.quick else (0.01, 0.05, 0.1)):
        for batch in ((100,) if args.quick else (20, 100)):
            p_sk, t_sk = train_sklearn(x_train, 500, seconds, lr, batch)
            name = f"sklearn_lr{lr}_batch{batch}"
            np.savez(ROOT / "benchmarks" / f"mnist_rbm_{name}.npz", **p_sk)
            report(name + "_training", {"epochs": len(t_sk), "epoch_seconds": t_sk,
                                        "total_seconds": float(np.sum(t_sk))})
            report(name + "_eval", evaluate(p_sk, x_train, x_test, K, args.chains))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
