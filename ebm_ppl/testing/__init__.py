"""Reference problems with exact answers, and a facade that writes one model for both
backends: what the test suite and the benchmarks share.

``ebm_ppl.testing.frameworks.framework("pyro" | "numpyro")``, and the problems
:mod:`~ebm_ppl.testing.ising` (3x3 Ising, 512 states: exact log Z, MLE by Newton),
:mod:`~ebm_ppl.testing.lattice` (4x4 two-mode lattice), :mod:`~ebm_ppl.testing.ppca`
(probabilistic PCA in closed form), :mod:`~ebm_ppl.testing.gaussians8` (a mixture of
eight Gaussians and an MLP energy) and :mod:`~ebm_ppl.testing.gaussian4` (a 4-D Gaussian
energy: score matching's closed forms); :mod:`~ebm_ppl.testing.coordinates` has the exact
pseudo-likelihood and ratio-matching objectives (numpy) and their L-BFGS optima. Not imported by ``import ebm_ppl``; each module
imports its framework only when a model is built.
"""
