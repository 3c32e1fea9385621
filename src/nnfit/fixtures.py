"""The former name of :mod:`nnfit.ptycho`, kept so that existing imports keep working."""

import warnings

from nnfit.ptycho import *  # noqa: F403
from nnfit.ptycho import __all__  # noqa: F401

warnings.warn(
    "nnfit.fixtures is now nnfit.ptycho; import from nnfit.ptycho instead",
    DeprecationWarning,
    stacklevel=2,
)
