"""Shared fixtures."""

import jax
import pytest


@pytest.fixture
def x64():
    """Global float64 for one test.

    Not the thread-local ``jax.enable_x64`` context: JAX casts callback outputs by
    the x64 setting of the thread that runs the callback, not always the caller's.
    """
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
