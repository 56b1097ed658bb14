#!/usr/bin/env bash
# The RBM and MALA benchmarks, the time to the first update, chain-sweeps per second at
# 784x500 (MNIST-5k), the full-MNIST throughput (60,000 images, 784x500) and the device
# scaling, on a GPU machine, in one go (about 10 minutes on one GPU):
#   bash benchmarks/gpu.sh            # installs jax[cuda12] + torch (CUDA) + ebm_ppl, runs, prints figures and card
#   bash benchmarks/gpu.sh --dry-run  # no install, toy sizes, on CPU: checks the script itself (tests/test_parallel.py)
# Run from the repository root. Prints the card (nvidia-smi) and each benchmark's lines.
# rbm_pcd.py runs with --cores 0 here: on a GPU the device does the work, and pinning the
# host process to one core (its CPU default) would only slow the dispatch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [[ "${1:-}" == "--dry-run" ]]; then
  echo "card: none (dry run on CPU: $(nproc) cores)"
  export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""
  export PYTHONPATH="$PWD:$PWD/backends${PYTHONPATH:+:$PYTHONPATH}"
  $PY benchmarks/rbm_pcd.py --size digits --runs 1 --epochs 1 --backends numpyro,pyro --cores 0
  $PY benchmarks/first_update.py --runs 1
  $PY benchmarks/mala_neural.py --runs 1 --epochs 1 --backends numpyro,pyro
  $PY benchmarks/scaling.py --size toy --runs 1 --epochs 1 --backends numpyro --devices 1,2
  echo "dry run done"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "card: nvidia-smi not found"
$PY -m pip install -q -U "jax[cuda12]" torch pyro-ppl numpyro optax scikit-learn
$PY -m pip install -q -e ".[dev]" || $PY -m pip install -q -e .
export PYTHONPATH="$PWD:$PWD/backends${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))"
$PY benchmarks/first_update.py --runs 3 --platform default
$PY benchmarks/rbm_pcd.py --size mnist5k --runs 5 --backends numpyro,pyro --cores 0
$PY benchmarks/rbm_pcd.py --size mnist60k --runs 3 --epochs 1 --backends numpyro,pyro --cores 0
$PY benchmarks/mala_neural.py --runs 5 --backends numpyro,pyro
N=$($PY -c "import jax; print(jax.device_count())")
$PY benchmarks/scaling.py --size large --backends numpyro --devices "$(seq -s, 1 "$N")"
