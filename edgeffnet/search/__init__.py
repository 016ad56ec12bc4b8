"""Choosing for the device: the seed's two steps, measured instead of counted.

`search` (step 1): a grid of alpha, beta, gamma at phi=1 under alpha*beta^2*gamma^2 ~= 2, each candidate
built, verified and timed on the target, ranked by the MnasNet objective ACC x (LAT/T)^w.
`fit` (step 2): with the coefficients fixed, the largest phi whose measured latency meets a budget.

Modules: grid (the candidates), harness (build and time one spec: the one place that calls edgeffnet's
Python API), evaluators (where accuracy comes from; train: the built-in trainer, torch-side), objective
(ranking, Pareto front), trials (the resumable search loop and its files), fit (phi under a budget),
plots and console (what is drawn and printed).
"""
