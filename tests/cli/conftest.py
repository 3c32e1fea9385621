"""The command-line tests use the spectral tests' simulated stores."""

from ..spectral.conftest import (  # noqa: F401
    _built_store_master,
    _small_store_master,
    built_store,
    small_sim,
    small_store,
)
