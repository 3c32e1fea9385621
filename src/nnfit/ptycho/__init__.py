"""Ptychography dataset fixtures: deterministic, contract-checked NPZ subsets.

- :func:`simulate_dataset` -- a realistic synthetic source with the real key names;
  :func:`forward_amplitude` -- the far-field model its patterns follow.
- :data:`CONTRACT` -- the versioned DATA-001 contract; ``CONTRACT.validate(arrays)``.
- :func:`generate_fixture` -- cut a byte-deterministic fixture plus JSON sidecar.
- :func:`verify_fixture` -- recheck a fixture's hashes, contract and sidecar.
- :func:`import_ptychodus` -- a ptychodus product and its diffraction patterns as a source.
"""

from nnfit.io.npz import encode_npz, open_npz, read_npz, write_npz
from nnfit.ptycho.contract import CONTRACT, DataContract, KeySpec, Violation, resolve_layout
from nnfit.ptycho.ptychodus import import_ptychodus, read_ptychodus_source
from nnfit.ptycho.result import FixtureResult
from nnfit.ptycho.simulate import (
    alignment_residuals,
    extract_patches,
    far_field_intensity,
    forward_amplitude,
    simulate_dataset,
)
from nnfit.ptycho.subset import (
    STRATEGIES,
    ContractViolationError,
    compute_sha256,
    generate_fixture,
    select_subset,
    validate_source,
    validate_subset_size,
)
from nnfit.ptycho.verify import VerifyReport, verify_fixture

__all__ = [
    "CONTRACT",
    "STRATEGIES",
    "ContractViolationError",
    "DataContract",
    "FixtureResult",
    "KeySpec",
    "VerifyReport",
    "Violation",
    "alignment_residuals",
    "compute_sha256",
    "encode_npz",
    "extract_patches",
    "far_field_intensity",
    "forward_amplitude",
    "generate_fixture",
    "import_ptychodus",
    "open_npz",
    "read_npz",
    "read_ptychodus_source",
    "resolve_layout",
    "select_subset",
    "simulate_dataset",
    "validate_source",
    "validate_subset_size",
    "verify_fixture",
    "write_npz",
]
