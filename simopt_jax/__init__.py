"""Simulator optimisation: hybrid gradients and AutoSimulate.

Holds the parametric scene distributions, the shape grammar, hypergradient
estimators and outer loops. Built on ``render`` (its finite-difference estimators
live in ``render.finite_diff``); never imports ``lido_jax``. Nothing is public yet:
see the project's issues.
"""
