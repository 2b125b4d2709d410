"""Scene understanding with Learning Direct Optimization (LiDO).

Built on ``render``; never imports ``simopt_jax``. Modules:

- :mod:`lido_jax.latents`: the LV sets, flat vectors with bounds for optimisers,
  standardised encodings for networks, perturbation and clipping.
- :mod:`lido_jax.generator`: the stochastic scene generator (App. A) and observed
  images; :mod:`lido_jax.dataset`: datasets on disk (``python -m lido_jax dataset``).
- :mod:`lido_jax.likelihood`: the robust pixel likelihood (sec. 4.1).
- :mod:`lido_jax.metrics`: every metric of sec. 4.4, Table 1's median improvement
  and the Wilcoxon test.
- :mod:`lido_jax.baselines`: GBO (TNC) and Simplex (Nelder-Mead) fitting LV sets in
  the paper's order.

The initialisation and LiDO networks and the refinement loop are not written yet.
"""
