"""One more training run of a 784 x 500 MNIST-5k contender at another seed, evaluated at 2000
temperatures from both AIS starts (the replicates behind the README's comparison).

Uses ``mnist_rbm.py``'s own training and evaluation functions, with its default recipes:
ebm_ppl NumPyro PCD-1, 100 chains, ``BlockGibbs(["h", "v"])``, ``optax.sgd(0.01)``,
batch 100; scikit-learn's ``BernoulliRBM`` at its best setting there (lr 0.01, batch 100).
Each run trains for 180 CPU seconds, single-threaded (set the environment as
``mnist_rbm.py --clock cpu`` does; the command below does it), then evaluates.

    env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        python benchmarks/mnist_rbm_replicate.py ebm_ppl 1

Results are added to ``benchmarks/mnist_rbm_replicates.json`` under ``"{who}_seed{seed}"``,
with the combined bracket of :func:`mnist_rbm.summarize`.
"""

import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnist_rbm as M  # noqa: E402

OUT = Path(__file__).resolve().parent / "mnist_rbm_replicates.json"


def combined(evals):
    """The conservative bracket of both starts (:func:`mnist_rbm.combine`)."""
    mean_log_p, lower, upper = M.combine(evals)
    return {"ll_lower": mean_log_p - upper, "ll_upper": mean_log_p - lower, "log_z_lower": lower,
            "log_z_upper": upper, "warnings": sum(len(e["warnings"]) for e in evals)}


def main(who, seed, seconds=180.0, temperatures=2000):
    from ebm_ppl.datasets import load_mnist5k

    x_train, x_test = load_mnist5k()
    if who == "sklearn":
        params, log = M.train_sklearn(x_train, 500, seconds, 0.01, 100, seed=seed, clock=time.process_time)
    elif who == "ebm_ppl":
        params, log = M.train_ebm_ppl(x_train, 500, seconds, 0.01, 100, seed=seed, optimizer="sgd",
                                      clock=time.process_time)
    else:
        raise ValueError(f"who must be ebm_ppl or sklearn, got {who!r}")
    evals = {init: M.evaluate(params, x_train, x_test, temperatures, 100, init=init) for init in ("train", "base")}
    res = {"epochs": log["epochs"], "cpu_seconds": log["cpu_seconds"],
           "median_epoch_cpu_seconds": log["median_epoch_cpu_seconds"], "temperatures": temperatures,
           "base_rate_start": evals["train"], "uniform_start": evals["base"],
           "combined": combined([evals["train"], evals["base"]])}
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[f"{who}_seed{seed}"] = res
    OUT.write_text(json.dumps(results, indent=1, default=float))
    print(who, seed, json.dumps(res["combined"], default=float))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
