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
- :mod:`lido_jax.initialization`: the detector and patch network, median votes and
  back-projection into ``z_0`` (sec. 3); :mod:`lido_jax.init_training` trains them
  (``python -m lido_jax train-init``) and pairs detections with the truth.
- :mod:`lido_jax.network`: the prediction network of Table 5, its targets and loss;
  :mod:`lido_jax.training`: its two training sources and the resumable training run
  (``python -m lido_jax train``).
- :mod:`lido_jax.refine`: the refinement loop (sec. 4.2), one ``lax.scan``, any
  in-loop renderer.
- :mod:`lido_jax.pretrained`: the committed networks (``python -m lido_jax pretrain``
  retrains them).
- :mod:`lido_jax.compare`: LiDO, GBO and Simplex from the same ``z_0`` (Tables 1-2,
  Fig. 5, LiDO-R); :mod:`lido_jax.demo`: ``python -m lido_jax demo``.
"""
