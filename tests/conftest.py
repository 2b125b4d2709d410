"""Shared fixtures."""

import gc

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


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
    """Drops JAX's compiled executables after each test module.

    One pytest process runs every module; without this, the compiled code of the
    unrolled training loops piles up (the suite's RSS passed 6 GB by a third of it).
    """
    yield
    jax.clear_caches()
    gc.collect()
