"""A 784 x 500 Bernoulli RBM on the full binarized MNIST (60,000 training images), NumPyro
backend, trained for a budget of process CPU seconds in one thread, evaluated on the 10,000
test images.

The model, the single-thread environment, the bidirectional evaluation and the data bound
are those of ``benchmarks/mnist_rbm.py`` (imported from it). The recipe (``--recipe``,
comma-separated ``key=value``):

- ``k``: Gibbs sweeps per update of the persistent chains (``PCD(num_steps=k)``);
- ``chains``, ``batch``: persistent chains and examples per update;
- ``lr``: the initial learning rate of SGD on the batch-mean gradient; ``decay=linear``
  lowers it linearly to 0 over the ``epochs`` of the schedule (``decay=none`` keeps it);
- ``epochs``: the schedule's length (training stops there, or at the CPU budget
  ``--seconds`` if that comes first; the log says which);
- ``mom0``, ``mom``, ``momswitch``: momentum ``mom0`` for the first ``momswitch`` of the
  schedule, then ``mom`` (Hinton 2010, "A practical guide to training RBMs");
- ``wd``: L2 weight decay on W only;
- ``centered=1``: the centered parametrization of ``mnist_rbm.rbm`` (offsets: the training
  images' mean and 0.5; Melchior, Fischer & Wiskott 2016); ``rb=1``: Rao-Blackwellized
  hidden statistics (``PCD(rao_blackwell=True)``).

The schedules are optax schedules of the optimizer's update count (``optax.inject_hyperparams``
with callables): pure functions evaluated inside the compiled update, so one compiled update
serves every epoch and a resumed fit continues them from the saved count. (Until issue 25's
ninth session they were set between epochs through an ``init`` that read Python state; ebm_ppl
compiles ``init`` once, so those runs kept the first epoch's learning rate 0.003 and momentum
0.5 throughout: the recipe they recorded was not the one that ran. The per-epoch log now
records the learning rate and momentum read back from the optimizer state.)

The default recipe (learning rate 0.003 decayed to 0 over 175 epochs, momentum 0.5 then 0.9,
weight decay 1e-4; about 900 CPU s) is the one of the committed model; the same recipe at
learning rate 0.01 ended about 0.8 nats worse by the outside check at 10,000 temperatures.
The models committed before the schedule fix (results/mnist60k_lr0.01/,
results/mnist60k_constant_lr0.003/) ran at a constant learning rate and momentum 0.5, and
were 8–10 nats worse (README, "Full MNIST").

Runs (``--trial``: a short run, its snapshots scored by the cheap forward AIS of
``mnist60k_check.py`` — with 1,000 temperatures it overestimated sharp models by tens
of nats, so compare trials by the data bound as well; the full run saves snapshots every ``--snapshot-every`` CPU seconds
and evaluates the final model by ``log_partition(method="bidirectional")``):

    python benchmarks/mnist60k_rbm.py --seconds 600 --trial --recipe lr=0.01,epochs=100 --name t1
    nice -n 10 python benchmarks/mnist60k_rbm.py --seconds 1500 --recipe ... --snapshot-every 150
    python benchmarks/mnist60k_rbm.py --evaluate --name main      # the final evaluation
    python benchmarks/mnist60k_rbm.py --rbms --seconds 3600        # the peer library rbms
    python benchmarks/mnist60k_rbm.py --curve                      # snapshots -> figure

Data: MNIST by Yann LeCun and Corinna Cortes (CC BY-SA 3.0), binarized at pixel > 127.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_rbm import SINGLE_THREAD, base_rate_logits, evaluate, figure, rbm, uncenter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SNAPS = RESULTS / "mnist60k_snapshots"
DEFAULT = {"k": 1, "chains": 100, "batch": 100, "lr": 0.003, "decay": "linear", "epochs": 175, "mom0": 0.5,
           "mom": 0.9, "momswitch": 0.02, "wd": 0.0001, "centered": 0, "rb": 0}


def parse_recipe(text):
    recipe = dict(DEFAULT)
    for part in filter(None, (text or "").split(",")):
        key, value = part.split("=")
        if key not in DEFAULT:
            raise ValueError(f"--recipe: unknown key {key!r}; known: {sorted(DEFAULT)}")
        recipe[key] = type(DEFAULT[key])(value)
    return recipe


def schedules(recipe, total_updates):
    """(learning rate, momentum) as optax schedules of the update count: linear decay of the
    learning rate to 0 over ``total_updates`` (``decay=linear``), momentum ``mom0`` for the
    first ``momswitch`` of them, then ``mom``."""
    import jax.numpy as jnp

    lr0, linear = recipe["lr"], recipe["decay"] == "linear"
    switch = recipe["momswitch"] * total_updates

    def learning_rate(count):
        return lr0 * jnp.maximum(0.0, 1.0 - count / total_updates) if linear else lr0 + 0.0 * count

    def momentum(count):
        return jnp.where(count < switch, recipe["mom0"], recipe["mom"])

    return learning_rate, momentum


def make_optimizer(recipe, total_updates):
    """SGD with momentum (+ L2 decay on W) on the schedules of :func:`schedules`."""
    import optax

    def sgd(learning_rate, momentum):
        parts = [optax.trace(decay=momentum), optax.scale_by_learning_rate(learning_rate)]
        if recipe["wd"] > 0:
            mask = lambda p: {k: k == "W" for k in p}  # noqa: E731
            parts.insert(0, optax.masked(optax.add_decayed_weights(recipe["wd"]), mask))
        return optax.chain(*parts)

    learning_rate, momentum = schedules(recipe, total_updates)
    return optax.inject_hyperparams(sgd)(learning_rate=learning_rate, momentum=momentum)


def in_effect(result, tree):
    """(learning rate, momentum) of the last update, read back from the fit's optimizer state
    (ebm_ppl keeps it as the leaves of NumPyro's wrapper state, optax's state last; ``tree``:
    the structure of optax's state)."""
    import jax

    leaves = list(result.state.optimizer_state)[-tree.num_leaves:]
    hyper = jax.tree_util.tree_unflatten(tree, leaves).hyperparams
    return float(hyper["learning_rate"]), float(hyper["momentum"])


def train(x, recipe, seconds, seed=0, snapshot_every=None, name=None, wall_limit=None, nh=500):
    """The recipe's ``epochs`` whole epochs (the schedules' length), stopping earlier if the
    process has spent ``seconds`` CPU seconds in this call (the model's construction and the
    first compile included) or ``wall_limit`` wall-clock seconds (a loaded machine); snapshots
    of the (uncentered) parameters every ``snapshot_every`` CPU seconds. Returns (params, log);
    the log's ``stopped_by`` says what ended training."""
    import jax
    import jax.numpy as jnp

    import ebm_ppl

    mu, lam = x.mean(0), np.full(nh, 0.5)
    cpu0 = time.process_time()
    W0 = (0.01 * np.random.default_rng(seed).standard_normal((x.shape[1], nh))).astype(np.float32)
    b0, c0 = base_rate_logits(x).astype(np.float32), np.zeros(nh, np.float32)
    if recipe["centered"]:  # the same initial RBM, in centered coordinates
        b0, c0 = (b0 + W0 @ lam).astype(np.float32), (c0 + mu @ W0).astype(np.float32)
    model = rbm(x.shape[1], nh, W0, b0, c0, offsets=(mu, lam) if recipe["centered"] else None)
    data = jnp.asarray(x)
    opt = make_optimizer(recipe, recipe["epochs"] * (x.shape[0] // recipe["batch"]))
    opt_tree = jax.tree_util.tree_structure(jax.eval_shape(opt.init, {"W": W0, "b": b0, "c": c0}))
    est = ebm_ppl.PCD(num_chains=recipe["chains"], num_steps=recipe["k"], rao_blackwell=bool(recipe["rb"]))
    sampler = ebm_ppl.samplers.BlockGibbs(["h", "v"])
    result, epochs, snaps, next_snap = None, [], [], snapshot_every
    wall0 = time.perf_counter()

    def stop():
        if len(epochs) >= recipe["epochs"]:
            return "epochs"
        if time.process_time() - cpu0 >= seconds:
            return "cpu budget"
        return "wall limit" if wall_limit and time.perf_counter() - wall0 >= wall_limit else None

    def params_now():
        p = {k: np.asarray(v) for k, v in result.params.items()}
        return uncenter(p, mu, lam) if recipe["centered"] else p

    while not stop():
        result = ebm_ppl.fit_unnormalized(model, data, est, sampler, optimizer=opt, num_epochs=1,
                                          batch_size=recipe["batch"], progress_bar=False, resume=result,
                                          rng_seed=seed)
        spent = time.process_time() - cpu0
        lr, mom = in_effect(result, opt_tree)  # the last update's, as the optimizer state holds them
        epochs.append({"cpu": spent, "lr_in_effect": lr, "mom_in_effect": mom})
        print(f"epoch {len(epochs)} cpu {spent:.0f} lr {lr:.4g} mom {mom:.3g}", flush=True)
        if snapshot_every and name and spent >= next_snap:
            SNAPS.mkdir(parents=True, exist_ok=True)
            np.savez(SNAPS / f"{name}_cpu{int(spent):05d}.npz", epochs=len(epochs), cpu_seconds=spent,
                     **params_now())
            snaps.append(spent)
            next_snap += snapshot_every
    log = {"epochs": len(epochs), "cpu_seconds": time.process_time() - cpu0, "epoch_log": epochs, "stopped_by": stop(),
           "cpu_budget": seconds, "wall_limit": wall_limit, "wall_seconds": time.perf_counter() - wall0,
           "recipe": recipe, "threads": os.environ.get("OMP_NUM_THREADS"), "xla_flags": os.environ.get("XLA_FLAGS")}
    return params_now(), log


def cheap_score(params, x_train, x_test, temperatures=1000, chains=100):
    """The held-out estimate of the independent forward AIS (mnist60k_check.py), cheap settings."""
    from mnist60k_check import check

    return check(params, x_train, x_test, temperatures, chains)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3600.0, help="CPU-second cap on training (the recipe's epochs end it first when they fit)")
    parser.add_argument("--recipe", default="")
    parser.add_argument("--name", default="main")
    parser.add_argument("--trial", action="store_true", help="short run: snapshots scored by cheap AIS")
    parser.add_argument("--snapshot-every", type=float, default=600.0)
    parser.add_argument("--wall-limit", type=float, default=None,
                        help="also stop after this many wall-clock seconds")
    parser.add_argument("--evaluate", action="store_true", help="evaluate results/mnist60k_rbm500.npz")
    parser.add_argument("--temperatures", type=int, default=10000)
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--rbms", action="store_true", help="train the peer library rbms (--peer-python)")
    parser.add_argument("--peer-python", default=sys.executable,
                        help="a Python whose environment has rbms and torch (e.g. a separate venv)")
    parser.add_argument("--curve", action="store_true",
                        help="evaluate every snapshot (--temperatures) and draw the figures")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    env = dict(os.environ, **SINGLE_THREAD)
    if args.rbms:
        sys.exit(run_rbms(args, env))
    if not args.child:  # re-run in a single-threaded environment of its own
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "backends"), env.get("PYTHONPATH", "")])
        sys.exit(subprocess.call([sys.executable, __file__, *sys.argv[1:], "--child"], env=env))
    from ebm_ppl.datasets import load_mnist

    x_train, x_test = load_mnist("train"), load_mnist("test")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.evaluate:
        evaluate_final(args, x_train, x_test)
        return
    if args.curve:
        curve(args, x_train, x_test)
        return
    recipe = parse_recipe(args.recipe)
    params, log = train(x_train, recipe, args.seconds, snapshot_every=args.snapshot_every, name=args.name,
                        wall_limit=args.wall_limit)
    out_dir = SNAPS if args.trial else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{args.name}_final" if args.trial else "mnist60k_rbm500"
    np.savez(out_dir / f"{stem}.npz", **params)
    (out_dir / f"{stem}_train.json").write_text(json.dumps(log, indent=1, default=float))
    if args.trial:
        score = cheap_score(params, x_train, x_test)
        print("TRIAL", args.name, json.dumps({"recipe": args.recipe, "epochs": log["epochs"],
                                              "cpu": log["cpu_seconds"], "ll": score["held_out_ll"],
                                              "log_z_se": score["log_z_se"]}), flush=True)


def run_rbms(args, env):
    """Train rbms (``mnist60k_rbms_peer.py``) in ``--peer-python``; skipped with a message
    when that Python cannot import rbms."""
    probe = subprocess.run([args.peer_python, "-c", "import rbms, torch"], env=env, capture_output=True)
    if probe.returncode:
        print(f"rbms is not installed for {args.peer_python}: the rbms comparison is skipped "
              "(pip install rbms torch into a separate environment and pass --peer-python)")
        return 0
    cmd = [args.peer_python, str(ROOT / "benchmarks" / "mnist60k_rbms_peer.py"), "--seconds", str(args.seconds),
           "--recipe", json.dumps(parse_recipe(args.recipe)), "--snapshot-every", str(args.snapshot_every),
           "--out", str(SNAPS)] + (["--wall-limit", str(args.wall_limit)] if args.wall_limit else [])
    return subprocess.call(cmd, env=env)


def curve(args, x_train, x_test):
    """Every snapshot of the main run and of rbms, evaluated by the same estimator
    (``mnist_rbm.evaluate``: bidirectional AIS, base-rate start, ``--temperatures``), into
    ``results/mnist60k_curve.json``; the figure of held-out log-likelihood against CPU
    seconds, and filters and samples of both final models."""
    path = RESULTS / "mnist60k_curve.json"
    done = json.loads(path.read_text()) if path.exists() else {}

    def point(z, who, cpu_seconds, epochs):  # one model, evaluated as every point of the curve is
        ev = evaluate({k: z[k] for k in ("W", "b", "c")}, x_train, x_test, args.temperatures, args.chains)
        return {**ev, "eval_cpu_seconds": ev["cpu_seconds"], "who": who, "cpu_seconds": float(cpu_seconds),
                "epochs": int(epochs), "temperatures": args.temperatures}

    for npz in sorted(SNAPS.glob("*_cpu*.npz")):
        key = f"{npz.stem}_K{args.temperatures}"
        if key in done or not npz.stem.startswith((args.name + "_", "rbms_")):
            continue
        z = dict(np.load(npz))
        who = "rbms" if npz.stem.startswith("rbms_") else "ebm_ppl"
        done[key] = point(z, who, z["cpu_seconds"], z["epochs"])
        print(key, done[key]["ll_midpoint"], flush=True)
        path.write_text(json.dumps(done, indent=1, default=float))
    final, log = RESULTS / "mnist60k_rbm500.npz", RESULTS / "mnist60k_rbm500_train.json"
    key = f"committed_K{args.temperatures}"
    if final.exists() and log.exists() and key not in done:  # the committed model, a run of its own
        train_log = json.loads(log.read_text())
        done[key] = point(dict(np.load(final)), "ebm_ppl, committed model", train_log["cpu_seconds"],
                          train_log["epochs"])
        path.write_text(json.dumps(done, indent=1, default=float))
    plot_curve(done, RESULTS / "mnist60k_curve.png")
    last_rbms = max(SNAPS.glob("rbms_cpu*.npz"), default=None)
    for who, src in (("ebm_ppl", RESULTS / "mnist60k_rbm500.npz"), ("rbms", last_rbms)):
        if src is not None and Path(src).exists():
            z = dict(np.load(src))
            figure({k: z[k] for k in ("W", "b", "c")}, RESULTS / f"mnist60k_{who}_filters_samples.png")


def plot_curve(done, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for who, style in (("ebm_ppl", "o-"), ("rbms", "s--"), ("ebm_ppl, committed model", "*")):
        pts = sorted((r["cpu_seconds"] / 60, r["ll_lower"], r["ll_upper"]) for r in done.values() if r["who"] == who)
        if not pts:
            continue
        t, a, b = map(np.asarray, zip(*pts))
        lo, hi = np.minimum(a, b), np.maximum(a, b)  # a reverse side below the forward one inverts a bracket
        mid = (lo + hi) / 2
        label = {"ebm_ppl": "ebm_ppl, snapshots of a run", "rbms": "rbms, snapshots"}.get(who, who)
        ax.errorbar(t, mid, yerr=[mid - lo, hi - mid], fmt=style, capsize=3, label=f"{label} (bars: the bracket)")
    ax.set_xlabel("training CPU minutes (one thread)")
    ax.set_ylabel("held-out log-likelihood (nats, 10,000 test images)")
    ax.set_title("784 x 500 RBM, full binarized MNIST (LeCun & Cortes, CC BY-SA 3.0)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def evaluate_final(args, x_train, x_test):
    """Bidirectional AIS from the base-rate start (init=x_train: mnist_rbm.evaluate) on the test set."""
    params = dict(np.load(RESULTS / "mnist60k_rbm500.npz"))
    train_log = json.loads((RESULTS / "mnist60k_rbm500_train.json").read_text())
    ev = evaluate(params, x_train, x_test, args.temperatures, args.chains)
    out = {"held_out_ll": ev["ll_midpoint"], "held_out_bracket": [ev["ll_lower"], ev["ll_upper"]],
           "evaluation": ev, "temperatures": args.temperatures, "eval_chains": args.chains,
           "epochs": train_log["epochs"], "cpu_seconds": train_log["cpu_seconds"], "recipe": train_log["recipe"],
           "data": "ebm_ppl.datasets.load_mnist (MNIST, LeCun & Cortes, CC BY-SA 3.0; binarized at > 127)"}
    (RESULTS / "mnist60k_rbm500.json").write_text(json.dumps(out, indent=1, default=float))
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
