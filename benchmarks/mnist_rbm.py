"""Bernoulli RBMs on MNIST-5k: ebm_ppl's PCD against scikit-learn at an equal training budget,
every model evaluated by the same bracketed log-likelihood estimator.

1. 784 x 500 RBM, NumPyro backend, the update scikit-learn's ``BernoulliRBM`` makes: PCD-1
   with as many persistent chains as examples per batch (``PCD(num_chains=100, num_steps=1)``),
   ``BlockGibbs(["h", "v"])``, plain SGD (``optax.sgd(0.01)``) on the batch-mean gradient,
   minibatches of 100, W ~ N(0, 0.01²), hidden biases 0, visible biases at the training
   images' base rates (``--ebm-recipe`` changes optimizer, learning rate and batch).
2. scikit-learn's ``BernoulliRBM`` (500 hidden units) at each learning rate in
   {0.01, 0.05, 0.1} and batch size in {20, 100} (one ``partial_fit`` per minibatch,
   epochs of shuffled minibatches).
3. Every 784 x 500 model: ``log_partition(method="bidirectional", init=x_train)`` — forward
   AIS from a base-rate start (a stochastic lower bound on log Z) and reverse AIS from long
   runs started at the training images (an approximate stochastic upper bound; the 500
   hidden units are summed out of the weights analytically) — the rigorous data bound
   log Σ_{5000 images} p̃(x), and the held-out mean log-likelihood bracket
   [log p̃ − upper, log p̃ − lower]. sklearn's parameters map onto the same energy
   (W = components_.T, b = intercept_visible_, c = intercept_hidden_); the Bernoulli(0.5)
   base measures of the ebm_ppl model add the constant 1284 log 0.5 to log p̃ and to log Z
   alike, so the log-likelihood is the same.
4. The same bidirectional AIS again from the uniform base (``init="base"``) on every
   784 x 500 model: the two starts need not agree (a forward estimate above the other
   start's reverse side shows that side was no upper bound), and an AIS side below the
   data bound is recorded as an ``EstimateWarning``. ``summarize`` combines the two into
   one conservative bracket per model (the ``summary`` entry of the results).
5. A 784 x 20 RBM (ebm_ppl, same recipe, 60 s) with its exact held-out log-likelihood.
6. The figure ``tutorials/figures/05_rbm_mnist.png``: filters and model samples.

The training budget. Every contender runs in a fresh process of its own and trains whole
epochs until its budget of ``--seconds`` is spent; the budget is checked after each epoch,
so a contender may overshoot by up to one epoch (both its CPU and wall seconds are
reported, in total and per epoch). ebm_ppl's budget includes building the model and its
first call's tracing and compiling (several seconds).

- ``--clock cpu`` (default): each contender is single-threaded (``OMP_NUM_THREADS``,
  ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` = 1 and
  ``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"``, set
  in the contender's environment before numpy or jax is imported) and the budget is its
  own process CPU time (``time.process_time``, every thread of the process). Other jobs on
  the machine then slow a contender's wall clock but not its budget, so the comparison does
  not depend on load, and ``--jobs 2`` may run two contenders at once on two cores. On a
  quiet core, CPU time equals wall time: the budget is then a single-core wall-clock
  budget.
- ``--clock wall``: the budget is wall-clock time (``time.perf_counter``), threading as
  the libraries choose (``OMP_NUM_THREADS=1``); fair only when every contender sees the
  same load (run them one at a time on a quiet machine).

Every model is also evaluated from the uniform base (``init="base"``), and the results
end with a ``summary``: per model, the two brackets combined (:func:`summarize`), because
the base-rate bracket alone can be wrong (on the ebm_ppl model of the committed results,
forward AIS from the uniform base lay above both of its sides).

Run (38 minutes with two jobs on the shared 2-core machine under other jobs' load, about
25 on a quiet one; results in ``benchmarks/mnist_rbm_results.json``):

    python benchmarks/mnist_rbm.py --clock cpu --seconds 180 --temperatures 500 --jobs 2

``--quick`` runs everything at toy sizes (a smoke test); ``--only "ebm_ppl;sklearn:0.01,100"``
runs some contenders; ``--reevaluate --temperatures K`` evaluates the saved models again
with K temperatures.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def rbm(num_visible, num_hidden, W0, b0, c0, offsets=None):
    """A Bernoulli RBM, log p̃ = vᵀWh + bᵀv + cᵀh (Bernoulli(0.5) base measures).

    ``offsets=(μ, λ)``: the same family written with centered units (Montavon & Müller
    2012; Melchior, Fischer & Wiskott 2016), log p̃ = (v − μ)ᵀW(h − λ) + bᵀv + cᵀh with fixed
    offsets (μ the training images' mean, λ = 0.5): an ordinary RBM (:func:`uncenter`), but
    the gradient in these coordinates is better conditioned."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    import ebm_ppl

    if offsets is not None:
        mu, lam = (jnp.asarray(o, jnp.float32) for o in offsets)

    def model(v):
        W = numpyro.param("W", jnp.asarray(W0))
        b = numpyro.param("b", jnp.asarray(b0))
        c = numpyro.param("c", jnp.asarray(c0))
        with numpyro.plate("data", v.shape[0]):
            v = numpyro.sample("v", dist.Bernoulli(0.5).expand([num_visible]).to_event(1), obs=v)
            h = numpyro.sample("h", dist.Bernoulli(0.5).expand([num_hidden]).to_event(1))
            pair = ((v @ W) * h) if offsets is None else (((v - mu) @ W) * (h - lam))
            ebm_ppl.factor("rbm", pair.sum(-1) + (v * b).sum(-1) + (h * c).sum(-1))

    return model


def uncenter(params, mu, lam):
    """The ordinary RBM parameters of a centered one (the constant μᵀWλ cancels in p̃ / Z)."""
    W = np.asarray(params["W"], np.float64)
    return {"W": W.astype(np.float32), "b": (np.asarray(params["b"]) - W @ lam).astype(np.float32),
            "c": (np.asarray(params["c"]) - mu @ W).astype(np.float32)}


def base_rate_logits(x):
    p = (x.sum(0) + 1.0) / (x.shape[0] + 2.0)
    return np.log(p) - np.log1p(-p)


def _log(cpu, wall, cpu0, wall0):
    """Training log: per-epoch and total CPU and wall seconds (totals include the first call's compile)."""
    return {"epochs": len(cpu), "cpu_seconds": float(np.sum(cpu)), "wall_seconds": float(np.sum(wall)),
            "epoch_cpu_seconds": cpu, "epoch_wall_seconds": wall,
            "median_epoch_cpu_seconds": float(np.median(cpu)), "median_epoch_wall_seconds": float(np.median(wall)),
            "process_cpu_seconds_at_start": cpu0, "threads": os.environ.get("OMP_NUM_THREADS"),
            "xla_flags": os.environ.get("XLA_FLAGS")}


def _train(epoch, seconds, clock):
    """Run whole epochs until ``clock`` (time.process_time or time.perf_counter) has advanced
    by ``seconds`` since the call; returns the training log."""
    cpu, wall = [], []
    cpu0, start = time.process_time(), clock()
    while clock() - start < seconds:
        c0, w0 = time.process_time(), time.perf_counter()
        epoch()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return _log(cpu, wall, cpu0, start)


def make_optimizer(name, lr):
    """``sgd``, ``adam`` or ``momentumM`` (SGD with momentum M, e.g. ``momentum0.5``)."""
    import optax

    if name == "adam":
        return optax.adam(lr)
    if name.startswith("momentum"):
        return optax.sgd(lr, momentum=float(name[len("momentum"):] or 0.9))
    if name == "sgd":
        return optax.sgd(lr)
    raise ValueError(f"unknown optimizer {name!r}: sgd, adam or momentumM")


def parse_recipe(recipe):
    """``OPTIMIZER,LR,BATCH[,rb][,centered]`` -> (optimizer, lr, batch, {"rao_blackwell", "centered"})."""
    parts = recipe.split(",")
    flags = set(parts[3:])
    if len(parts) < 3 or not flags <= {"rb", "centered"}:
        raise ValueError(f"--ebm-recipe {recipe!r}: expected OPTIMIZER,LR,BATCH[,rb][,centered]")
    return parts[0], float(parts[1]), int(parts[2]), {"rao_blackwell": "rb" in flags, "centered": "centered" in flags}


def train_ebm_ppl(x, num_hidden, seconds, lr, batch, seed=0, optimizer="sgd", clock=time.perf_counter,
                  rao_blackwell=False, centered=False):
    """PCD-1 (chains = ``batch``), ``BlockGibbs(["h", "v"])``, whole epochs until ``clock``
    has advanced by ``seconds`` (the first call's tracing and compiling included).
    ``rao_blackwell``: ``PCD(rao_blackwell=True)``, the hidden layer's conditional means in
    both phases' gradients (as scikit-learn's update); ``centered``: the model of
    :func:`rbm` with ``offsets`` (the returned parameters are the ordinary RBM's)."""
    import jax.numpy as jnp

    import ebm_ppl

    state = {"result": None}

    def epoch():
        if state["result"] is None:  # building the model and the first call's compile count too
            W0 = (0.01 * np.random.default_rng(seed).standard_normal((x.shape[1], num_hidden))).astype(np.float32)
            b0, c0 = base_rate_logits(x).astype(np.float32), np.zeros(num_hidden, np.float32)
            state["model"] = rbm(x.shape[1], num_hidden, W0, b0, c0, offsets=(mu, lam) if centered else None)
            state["data"] = jnp.asarray(x)
            state["opt"] = make_optimizer(optimizer, lr)
        state["result"] = ebm_ppl.fit_unnormalized(
            state["model"], state["data"], ebm_ppl.PCD(num_chains=batch, num_steps=1, rao_blackwell=rao_blackwell),
            ebm_ppl.samplers.BlockGibbs(["h", "v"]), optimizer=state["opt"], num_epochs=1, batch_size=batch,
            progress_bar=False, resume=state["result"], rng_seed=seed)

    mu, lam = x.mean(0), np.full(num_hidden, 0.5)
    log = _train(epoch, seconds, clock)
    params = {k: np.asarray(v) for k, v in state["result"].params.items()}
    return (uncenter(params, mu, lam) if centered else params), log


def train_sklearn(x, num_hidden, seconds, lr, batch, seed=0, clock=time.perf_counter):
    """scikit-learn's BernoulliRBM: epochs of shuffled minibatches (one ``partial_fit`` each)
    until ``clock`` has advanced by ``seconds``."""
    from sklearn.neural_network import BernoulliRBM

    model = BernoulliRBM(n_components=num_hidden, learning_rate=lr, batch_size=batch, n_iter=1, random_state=seed)
    rng = np.random.default_rng(seed)

    def epoch():
        order = rng.permutation(len(x))
        for i in range(0, len(x) - batch + 1, batch):
            model.partial_fit(x[order[i:i + batch]])

    log = _train(epoch, seconds, clock)
    params = {"W": model.components_.T.astype(np.float32), "b": model.intercept_visible_.astype(np.float32),
              "c": model.intercept_hidden_.astype(np.float32)}
    return params, log


def evaluate(params, x_train, x_test, num_temperatures, num_chains, seed=0, init="train"):
    """The bracket on log Z and on the held-out mean log-likelihood, and the data bound."""
    import jax.numpy as jnp

    import ebm_ppl

    nv, nh = params["W"].shape
    model = rbm(nv, nh, params["W"], params["b"], params["c"])
    p = {k: jnp.asarray(v) for k, v in params.items()}
    every = jnp.asarray(np.concatenate([x_train, x_test]))
    c0, t0 = time.process_time(), time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lz = ebm_ppl.log_partition(model, p, every, method="bidirectional", num_chains=num_chains,
                                   num_temperatures=num_temperatures, rng_seed=seed,
                                   init=jnp.asarray(x_train) if init == "train" else "base")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    with warnings.catch_warnings():  # log_z=0 gives log p̃(x), which may well exceed 0: no warning due
        warnings.simplefilter("ignore", ebm_ppl.EstimateWarning)
        log_p = np.asarray(ebm_ppl.log_likelihood(model, p, jnp.asarray(x_test), log_z=0.0), np.float64)
    mean_log_p = float(log_p.mean())
    return {
        # the raw sides (LogZ.forward / reverse: LogZ.lower / upper widen them by 2 standard errors)
        "log_z_lower": lz.forward, "log_z_lower_se": lz.lower_stderr, "log_z_upper": lz.reverse,
        "log_z_upper_se": lz.upper_stderr, "log_z_data_bound": lz.data_bound, "log_z_gap": lz.reverse - lz.forward,
        "ll_lower": mean_log_p - lz.reverse, "ll_upper": mean_log_p - lz.forward, "ll_midpoint": mean_log_p - lz.estimate,
        "upper_from_exact_draws": bool(lz.upper_is_exact_start), "seconds": seconds, "cpu_seconds": cpu,
        "warnings": [str(w.message) for w in caught if issubclass(w.category, ebm_ppl.EstimateWarning)],
    }


def exact_20(x_train, x_test, seconds, clock):
    """784 x 20: exact held-out log-likelihood (hidden states enumerated, visibles summed)."""
    import jax.numpy as jnp

    import ebm_ppl

    params, log = train_ebm_ppl(x_train, 20, seconds, 0.01, 100, clock=clock)
    model = rbm(784, 20, params["W"], params["b"], params["c"])
    p = {k: jnp.asarray(v) for k, v in params.items()}
    c0, t0 = time.process_time(), time.perf_counter()
    lz = ebm_ppl.log_partition(model, p, jnp.asarray(x_train[:1]))
    t_exact, c_exact = time.perf_counter() - t0, time.process_time() - c0
    ll = float(np.mean(np.asarray(ebm_ppl.log_likelihood(model, p, jnp.asarray(x_test), log_z=lz))))
    return {"epochs": log["epochs"], "cpu_seconds": log["cpu_seconds"], "wall_seconds": log["wall_seconds"],
            "median_epoch_cpu_seconds": log["median_epoch_cpu_seconds"], "log_z_exact": lz.estimate,
            "exact_seconds": t_exact, "exact_cpu_seconds": c_exact, "ll_exact": ll}, params


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


CONTENDERS = ["exact20", "ebm_ppl"] + [f"sklearn:{lr},{batch}" for lr in (0.01, 0.05, 0.1) for batch in (20, 100)]
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                 "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


def run_contender(spec, args, x_train, x_test, seconds, K, clock):
    """Train and evaluate one contender in this process: {result name: value}."""
    out = {}
    if spec == "exact20":
        r20, _ = exact_20(x_train, x_test, 3.0 if args.quick else 60.0, clock)
        out["ebm_ppl_784x20_exact"] = r20
    elif spec == "ebm_ppl":
        opt, lr, batch, flags = parse_recipe(args.ebm_recipe)
        params, log = train_ebm_ppl(x_train, 500, seconds, lr, batch, optimizer=opt, clock=clock, **flags)
        np.savez(ROOT / "benchmarks" / "mnist_rbm_ebm_ppl_500.npz", **params)
        out["ebm_ppl_784x500_training"] = dict(log, recipe=args.ebm_recipe)
        out["ebm_ppl_784x500_eval"] = evaluate(params, x_train, x_test, K, args.chains)
        out["ebm_ppl_784x500_uniform_start"] = evaluate(params, x_train, x_test, K, args.chains, init="base")
        if not args.quick:
            figure(params, ROOT / "tutorials" / "figures" / "05_rbm_mnist.png")
    elif spec.startswith("sklearn:"):
        lr, batch = spec.split(":")[1].split(",")
        params, log = train_sklearn(x_train, 500, seconds, float(lr), int(batch), clock=clock)
        name = f"sklearn_lr{lr}_batch{batch}"
        np.savez(ROOT / "benchmarks" / f"mnist_rbm_{name}.npz", **params)
        out[name + "_training"] = log
        out[name + "_eval"] = evaluate(params, x_train, x_test, K, args.chains)
        out[name + "_uniform_start"] = evaluate(params, x_train, x_test, K, args.chains, init="base")
    else:
        raise ValueError(f"unknown contender {spec!r}; expected one of {CONTENDERS}")
    return out


def combine(runs):
    """``(mean log p̃, lower, upper)`` of log Z from evaluations of one model (see
    :func:`summarize`): the largest forward estimate or the data bound below, the largest of
    all estimates above."""
    mean_log_p = runs[0]["ll_upper"] + runs[0]["log_z_lower"]
    lower = max([r["log_z_lower"] for r in runs] + [runs[0]["log_z_data_bound"]])
    upper = max([r["log_z_upper"] for r in runs] + [lower])
    return mean_log_p, lower, upper


def summarize(results):
    """Per 784 x 500 contender, both AIS brackets (base-rate and uniform start) combined.

    Each forward AIS is a stochastic lower bound on log Z (P(estimate > log Z + t) <= e^-t)
    and the data bound a rigorous one, so the largest of the three is kept; each reverse AIS
    is an approximate upper bound (its chains start from long runs, not exact draws) and is
    contradicted when it lies below a forward estimate, so the upper side kept is the largest
    of all four numbers. The held-out bracket [mean log p̃ − upper, mean log p̃ − lower] is
    then the conservative one. Models evaluated again with ``--reevaluate --temperatures K``
    get an entry of their own, suffixed ``_K{K}``."""
    out = {}
    for name in results:
        again = re.fullmatch(r"mnist_rbm_(.+)_eval(_K\d+)", name)  # from --reevaluate
        if not (name.endswith("_eval") or again) or name.startswith("ebm_ppl_784x20"):
            continue
        stem, key = (name[:-len("_eval")], "") if not again else (again[1], again[2])
        other = f"mnist_rbm_{stem}_uniform_start{key}" if again else stem + "_uniform_start"
        runs = [results[name]] + ([results[other]] if other in results else [])
        if again:
            stem = stem.replace("ebm_ppl_500", "ebm_ppl_784x500")
        mean_log_p, lower, upper = combine(runs)
        train = results.get(stem + "_training", {})
        out[stem + key] = {
            "temperatures": int(key[2:]) if key else results.get("settings", {}).get("temperatures"),
            "epochs": train.get("epochs"), "cpu_seconds": train.get("cpu_seconds"),
            "wall_seconds": train.get("wall_seconds"), "median_epoch_cpu_seconds": train.get("median_epoch_cpu_seconds"),
            "mean_log_p_tilde": mean_log_p, "log_z_lower": lower, "log_z_upper": upper,
            "log_z_data_bound": runs[0]["log_z_data_bound"], "ll_lower": mean_log_p - upper,
            "ll_upper": mean_log_p - lower, "starts": len(runs),
            "reverse_below_other_forward": any(r["log_z_upper"] < lower - 3 * r["log_z_upper_se"] for r in runs),
            "warnings": sum(len(r["warnings"]) for r in runs)}
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0, help="training budget of each contender")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu: single-threaded contenders, budget in process CPU seconds (robust to load); "
                             "wall: budget in wall-clock seconds (default threading)")
    parser.add_argument("--temperatures", type=int, default=500)
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ebm-recipe", default="sgd,0.01,100", metavar="OPTIMIZER,LR,BATCH[,rb][,centered]",
                        help="ebm_ppl's optimizer (sgd, adam or momentumM), learning rate and batch size; "
                             "',rb' adds PCD(rao_blackwell=True), ',centered' the centered parametrization "
                             "(rbm with offsets)")
    parser.add_argument("--only", default=None,
                        help="';'-separated contenders to run (default all: " + ";".join(CONTENDERS) + "); "
                             "with --reevaluate, parts of the saved models' names, e.g. 'ebm_ppl;lr0.01_batch100'")
    parser.add_argument("--jobs", type=int, default=1,
                        help="contenders run at once (each its own process; with --clock cpu the budgets "
                             "are CPU seconds, so running two on two cores does not change them)")
    parser.add_argument("--contender", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reevaluate", action="store_true",
                        help="only evaluate the saved 784 x 500 model(s) (benchmarks/mnist_rbm_*.npz) "
                             "with --temperatures, appending to the results")
    parser.add_argument("--summarize", action="store_true",
                        help="only add the combined brackets (see summarize) to the results in --out")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    seconds, K = args.seconds, args.temperatures
    if args.quick:
        seconds, K = 3.0, 20
    default_out = "mnist_rbm_quick.json" if args.quick else "mnist_rbm_results.json"
    args.out = args.out or str(ROOT / "benchmarks" / default_out)

    if args.contender is not None:  # one contender, in a process of its own; the result on the last line
        from ebm_ppl.datasets import load_mnist5k

        x_train, x_test = load_mnist5k()
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        out = run_contender(args.contender, args, x_train, x_test, seconds, K, clock)
        print("RESULT " + json.dumps(out, default=float), flush=True)
        return

    path = Path(args.out)
    keep = path.exists() and (args.only or args.reevaluate or args.summarize)
    results = json.loads(path.read_text()) if keep else {}
    if not args.summarize:
        results["settings" if not args.only else f"settings_{args.only}"] = dict(
            vars(args), single_thread_env=SINGLE_THREAD if args.clock == "cpu" else None)

    def report(name, value):
        results[name] = value
        print(name, json.dumps(value, default=float), flush=True)
        path.write_text(json.dumps(results, indent=1, default=float))

    if args.summarize:
        results = json.loads(path.read_text())
        report("summary", summarize(results))
        return
    if args.reevaluate:
        from ebm_ppl.datasets import load_mnist5k

        x_train, x_test = load_mnist5k()
        for npz in sorted((ROOT / "benchmarks").glob("mnist_rbm_*.npz")):
            if args.only and not any(stem in npz.stem for stem in args.only.split(";")):
                continue
            params = dict(np.load(npz))
            report(f"{npz.stem}_eval_K{K}", evaluate(params, x_train, x_test, K, args.chains))
            report(f"{npz.stem}_uniform_start_K{K}", evaluate(params, x_train, x_test, K, args.chains, init="base"))
        return
    contenders = args.only.split(";") if args.only else CONTENDERS
    if args.quick and not args.only:
        contenders = ["exact20", "ebm_ppl", "sklearn:0.05,100"]
    env = dict(os.environ, **(SINGLE_THREAD if args.clock == "cpu" else {"OMP_NUM_THREADS": "1"}))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "backends"), env.get("PYTHONPATH", "")])
    base = [sys.executable, str(Path(__file__).resolve()), "--clock", args.clock, "--seconds", str(args.seconds),
            "--temperatures", str(args.temperatures), "--chains", str(args.chains), "--ebm-recipe", args.ebm_recipe]
    base += ["--quick"] if args.quick else []
    pending, running = list(contenders), []
    while pending or running:
        while pending and len(running) < args.jobs:
            spec = pending.pop(0)
            proc = subprocess.Popen(base + ["--contender", spec], env=env, stdout=subprocess.PIPE, text=True)
            running.append((spec, proc))
            print(f"started {spec} (pid {proc.pid})", flush=True)
        time.sleep(1.0)
        for spec, proc in list(running):
            if proc.poll() is None:
                continue
            running.remove((spec, proc))
            lines = [ln for ln in proc.stdout.read().splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                report(f"failed_{spec}", {"returncode": proc.returncode})
                continue
            for name, value in json.loads(lines[-1][len("RESULT "):]).items():
                report(name, value)
    report("summary", summarize(results))


if __name__ == "__main__":
    main()
