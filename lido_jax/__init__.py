"""Scene understanding with Learning Direct Optimization (LiDO).

Holds the stochastic scene generator, the initialisation and LiDO networks, the
refinement loop and the GBO/Simplex baselines and metrics. Built on ``render``;
never imports ``simopt_jax``. Nothing is public yet: see the project's issues.
"""
