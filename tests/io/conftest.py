"""The file-safety tests also use the spectral tests' simulated stores."""

from ..spectral.conftest import _small_store_master, small_sim, small_store  # noqa: F401
