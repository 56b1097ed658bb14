"""How fast a fit honours Ctrl-C (SIGINT), on the 784 x 500 RBM of ``rbm_pcd.py --size large``.

A fit of PCD-1 with BlockGibbs(["h", "v"]) (``--chains`` chains, minibatches of
``--batch``) is compiled first (a 2-update fit with the same objects), then a long fit
is started and SIGINT sent to the process after ``--after`` seconds. Prints the time
from the signal to the KeyboardInterrupt reaching the caller (the latency), the updates
done and the seconds per update; with ``--check`` the fit is resumed from ``err.result``
for a few more updates and compared bit for bit with one uninterrupted fit.

Run: ``python benchmarks/interrupt_latency.py [--backend numpyro|pyro] [--after 3] [--repeat 3]``.
"""

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import rbm_model, synthetic_binary  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpyro", choices=["numpyro", "pyro"])
    parser.add_argument("--visible", type=int, default=784)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--after", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()

    import ebm_ppl

    x = synthetic_binary(2000, args.visible)
    if args.backend == "pyro":
        import pyro
        import torch

        data = torch.as_tensor(x)
        opt = pyro.optim.Adam({"lr": 1e-3})
        clear = pyro.clear_param_store
    else:
        import jax.numpy as jnp
        import optax

        data = jnp.asarray(x)
        opt = optax.adam(1e-3)
        clear = lambda: None  # noqa: E731
    # Pyro: a new model object per fit (pyro.param keeps the init tensor as the parameter's
    # storage, so a fit would change a shared init value); NumPyro: one (compiled once)
    shared = rbm_model(args.backend, args.visible, args.hidden)[0]
    make = (lambda: rbm_model("pyro", args.visible, args.hidden)[0]) if args.backend == "pyro" else (lambda: shared)
    kw = dict(estimator=ebm_ppl.PCD(args.chains, 1), sampler=ebm_ppl.samplers.BlockGibbs(["h", "v"]),
              optimizer=opt, batch_size=args.batch, progress_bar=False)
    start = time.perf_counter()
    clear()
    ebm_ppl.fit_unnormalized(make(), data, num_steps=2, **kw)
    print(f"{args.backend}: {args.visible} x {args.hidden} RBM, {args.chains} chains, batch {args.batch}; "
          f"first fit (compilation) {time.perf_counter() - start:.2f} s")
    for run in range(args.repeat):
        clear()
        sent = []
        timer = threading.Timer(args.after, lambda: (sent.append(time.perf_counter()),
                                                     os.kill(os.getpid(), signal.SIGINT)))
        start = time.perf_counter()
        timer.start()
        try:
            ebm_ppl.fit_unnormalized(make(), data, num_steps=10**7, **kw)
            raise SystemExit("the fit ended before the interrupt")
        except KeyboardInterrupt as err:
            latency = time.perf_counter() - sent[0]
            result = err.result
        timer.join()
        n = result.state.num_updates
        per_update = (sent[0] - start) / max(n, 1)
        print(f"  run {run}: latency {latency * 1e3:7.1f} ms after {n} updates "
              f"(~{per_update * 1e3:.2f} ms/update)")
    if args.check:
        more = 20
        rest = ebm_ppl.fit_unnormalized(make(), data, num_steps=more, resume=result, **kw)
        clear()
        whole = ebm_ppl.fit_unnormalized(make(), data, num_steps=n + more, **kw)
        same = all(np.array_equal(np.asarray(_np(rest.params[k])), np.asarray(_np(whole.params[k])))
                   for k in rest.params)
        print(f"  resumed {n} + {more} == one fit of {n + more}, bit for bit: {same}")


def _np(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


if __name__ == "__main__":
    main()
