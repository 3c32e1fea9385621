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


def test_a_reader_that_goes_away_is_not_an_error(tmp_path):
    """``nnfit ... | head``: the pipe closes before the command prints; no error is reported
    and the exit status is that of a process stopped by SIGPIPE."""
    import signal
    import subprocess
    import sys

    import numpy as np

    from nnfit.calcium import simulate_recording

    np.save(tmp_path / "rec.npy", simulate_recording(3, 3600, seed=1).traces)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nnfit", "calcium", "estimate", "rec.npy", "--fs", "30"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # before the estimate is done and printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE
    assert err == ""


def test_a_broken_pipe_elsewhere_is_still_an_error(monkeypatch, capsys):
    from nnfit.cli import calcium_exact, main

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(calcium_exact, "estimate_command", broken)
    assert main(["calcium", "estimate", "x.npy", "--fs", "30"]) == 2
    assert "nnfit: error: " in (err := capsys.readouterr().err) and "Broken pipe" in err


def test_ctrl_c_in_a_demo_step_ends_the_demo_as_interrupted(tmp_path, monkeypatch, capsys):
    # a step run through main() reports Ctrl-C as exit code 130; the demo must stop the same
    # way (it raised "the demo step ... failed" with a traceback and exited 1)
    import nnfit.cli as cli
    from nnfit.cli.demo import run_spectral_ifu

    monkeypatch.setattr(cli, "main", lambda argv: 130)
    with pytest.raises(KeyboardInterrupt):
        run_spectral_ifu(tmp_path)
    capsys.readouterr()
