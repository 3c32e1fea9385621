import pytest

from nnfit import __version__
from nnfit.cli import build_parser


def test_version_and_help(run_cli):
    out = run_cli("--version", check=True)
    assert out.stdout.strip() == f"nnfit {__version__}"
    helptext = run_cli("--help", check=True).stdout
    for group in ("calcium", "spectral", "ptycho", "demo"):
        assert group in helptext


@pytest.mark.parametrize("group", ["calcium", "spectral", "ptycho", "cube", "fixture"])
def test_every_group_has_help(group):
    parser = build_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([group, "--help"])
    assert exc.value.code == 0


def test_missing_group_is_an_error(run_cli):
    proc = run_cli()
    assert proc.returncode == 2
    assert "required" in proc.stderr


@pytest.mark.slow
def test_demo_writes_every_capability_output(run_cli, tmp_path):
    """`make demo` runs `nnfit demo`: every capability writes its results and figures."""
    proc = run_cli("demo", "--out", tmp_path / "demo", check=True)
    expected = [
        "calcium/spikes.npy",
        "calcium/summary.csv",
        "calcium/cells.png",
        "ptycho/minimal_dataset_v1.npz",
        "ptycho/minimal_dataset_v1.json",
        "spectral/cube.h5",
        "spectral/prefit_overlay.png",
        "spectral/fit_dashboard.png",
        "spectral/ifu/cube.fits",
        "spectral/maps/maps.fits",
        "spectral/maps/maps.png",
    ]
    for rel in expected:
        assert (tmp_path / "demo" / rel).stat().st_size > 0, rel
    assert "correlation of inferred with simulated spikes" in proc.stdout
    assert "OK: all 10 checks passed" in proc.stdout
    assert "exact fit" in proc.stdout
