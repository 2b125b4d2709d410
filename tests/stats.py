"""Statistical checks shared by the estimator tests."""

import numpy as np


def max_z(samples, target) -> float:
    """Largest ``|mean - target| / standard error`` over components.

    ``samples``: ``(N, ...)`` independent estimates; ``target``: ``(...)``.
    Components whose estimates do not vary beyond rounding (exact estimates) count
    as ``inf`` unless they equal the target to rounding.
    """
    samples = np.asarray(samples, dtype=np.float64)
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), samples.shape[1:])
    mean = samples.mean(axis=0)
    standard_error = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    fixed = standard_error <= 1e-12 * np.maximum(1.0, np.abs(target))
    if not np.allclose(mean[fixed], target[fixed], rtol=1e-9, atol=1e-12):
        return float("inf")
    varying = ~fixed
    if not varying.any():
        return 0.0
    return float(np.max(np.abs(mean[varying] - target[varying]) / standard_error[varying]))
