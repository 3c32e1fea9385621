"""suite2p plane folders (calcium/suite2p.py): safe settings, neuropil coefficient, spks.npy out."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from nnfit.calcium import run_deconvolution, simulate_recording
from nnfit.calcium.recordings import read_input
from nnfit.calcium.suite2p import read_suite2p, write_spks, write_spks_planes
from nnfit.cli import main

_spec = importlib.util.spec_from_file_location(
    "_safe_pickle_cases", pathlib.Path(__file__).parents[1] / "io" / "test_safe_pickle.py"
)
_cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cases)

KIN = ["--tau-rise", "0.05", "--tau-decay", "0.5", "--lam", "0.5"]


@pytest.fixture
def rec():
    return simulate_recording(5, 1500, seed=7)


def make_plane(folder, rec, *, ops=None, settings=None, spks=False):
    """A plane folder with suite2p's files and dtypes; one extra ROI that is not a cell."""
    folder.mkdir(parents=True)
    f = np.concatenate([rec.traces + 3.0, np.full((1, rec.traces.shape[1]), 9.0)])
    fneu = np.concatenate([np.full_like(rec.traces, 1.5), np.full((1, rec.traces.shape[1]), 2.0)])
    np.save(folder / "F.npy", f.astype(np.float32))
    np.save(folder / "Fneu.npy", fneu.astype(np.float32))
    np.save(folder / "iscell.npy", np.array([[1.0, 0.9]] * rec.traces.shape[0] + [[0.0, 0.2]]))
    if ops is not None:
        np.save(folder / "ops.npy", ops, allow_pickle=True)
    if settings is not None:
        np.save(folder / "settings.npy", settings, allow_pickle=True)
    if spks:
        np.save(folder / "spks.npy", np.ones(f.shape, np.float32))
    return f.astype(np.float32).astype(float), fneu.astype(np.float32).astype(float)


def test_real_ops_give_fs_and_neuropil_coefficient(tmp_path, rec):
    f, fneu = make_plane(tmp_path / "plane0", rec, ops=_cases.suite2p_ops())
    r = read_suite2p(tmp_path / "plane0")
    assert r.fs == 15.0 and r.cell_index.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(r.traces, f[:5] - 0.8 * fneu[:5])
    assert r.provenance["neuropil_factor"] == 0.8
    assert r.provenance["neuropil_factor_from"].endswith("ops.npy")
    assert set(r.provenance["files_sha256"]) == {"F.npy", "Fneu.npy", "iscell.npy", "ops.npy"}
    assert (
        read_suite2p(tmp_path / "plane0", neuropil_factor=0.5).provenance["neuropil_factor"] == 0.5
    )


def test_nan_in_a_rejected_roi_is_no_reason_to_refuse(tmp_path, rec):
    # suite2p leaves NaN in ROIs it rejected; only the cells' traces must be finite
    make_plane(tmp_path / "plane0", rec, ops={"fs": 30.0})
    f = np.load(tmp_path / "plane0" / "F.npy")
    f[-1, 10] = np.nan  # the ROI that is not a cell
    np.save(tmp_path / "plane0" / "F.npy", f)
    assert np.isfinite(read_suite2p(tmp_path / "plane0").traces).all()
    f[2, 30] = np.nan  # a cell
    np.save(tmp_path / "plane0" / "F.npy", f)
    with pytest.raises(
        ValueError, match=r"F\.npy: ROI 2 has NaN/Inf at frame 30 \(1 such value\(s\) in ROIs 0-4\)"
    ):
        read_suite2p(tmp_path / "plane0")


def test_suite2p_1_settings_npy(tmp_path, rec):
    settings = {"fs": 20.0, "extraction": {"neuropil_coefficient": 0.6}, "tau": 1.0}
    f, fneu = make_plane(tmp_path / "p", rec, settings=settings)
    r = read_suite2p(tmp_path / "p")
    assert r.fs == 20.0
    np.testing.assert_array_equal(r.traces, f[:5] - 0.6 * fneu[:5])


def test_defaults_without_settings(tmp_path, rec):
    f, fneu = make_plane(tmp_path / "p", rec)
    r = read_suite2p(tmp_path / "p", fs=30)
    np.testing.assert_array_equal(r.traces, f[:5] - 0.7 * fneu[:5])
    assert r.provenance["neuropil_factor_from"] == "default"


@pytest.mark.parametrize("command", ["deconvolve", "export", "estimate"])
@pytest.mark.parametrize("kind", sorted(_cases.EVIL))
def test_crafted_ops_npy_runs_nothing_exit_2(tmp_path, rec, monkeypatch, capsys, command, kind):
    make_plane(tmp_path / "plane0", rec)
    marker = tmp_path / "pwned"
    _cases.save_evil(tmp_path / "plane0" / "ops.npy", kind, marker)
    monkeypatch.chdir(tmp_path)
    extra = {
        "deconvolve": [*KIN, "--out", "x"],
        "export": ["--out", "x/s"],
        "estimate": ["--json", "x.json"],
    }[command]
    for fs in ([], ["--fs", "30"]):
        assert main(["calcium", command, "plane0", *fs, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("nnfit: error: ") and err.count("\n") == 1, err
        assert "ops.npy: refusing to load" in err and "never runs code" in err, err
        assert not marker.exists()
        assert not (tmp_path / "x").exists() and not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_crafted_ops_npy_in_a_real_process(run_cli, tmp_path, rec):
    make_plane(tmp_path / "plane0", rec)
    marker = tmp_path / "pwned"
    _cases.save_evil(tmp_path / "plane0" / "ops.npy", "os.system", marker)
    proc = run_cli("calcium", "deconvolve", "plane0", "--fs", "30", "--out", "x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "refusing to load posix.system" in proc.stderr
    assert not marker.exists() and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_write_suite2p_spks(tmp_path, rec, monkeypatch, capsys):
    f, fneu = make_plane(tmp_path / "plane0", rec, ops={"fs": 30.0, "neucoeff": 0.7}, spks=True)
    own = (tmp_path / "plane0" / "spks.npy").read_bytes()
    monkeypatch.chdir(tmp_path)
    args = ["calcium", "deconvolve", "plane0", *KIN, "--plot-cells", "0", "--write-suite2p"]
    assert main([*args, "--out", "a"]) == 2
    assert (
        "spks.npy exists (suite2p's deconvolution or an earlier --write-suite2p); pass --overwrite"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "a").exists()
    assert (tmp_path / "plane0" / "spks.npy").read_bytes() == own
    assert main([*args, "--out", "a", "--overwrite"]) == 0
    spks = np.load(tmp_path / "plane0" / "spks.npy", allow_pickle=False)
    assert spks.dtype == np.float32 and spks.shape == f.shape
    ref = run_deconvolution(f[:5] - 0.7 * fneu[:5], 30.0, 0.05, 0.5, 0.5)
    np.testing.assert_array_equal(spks[:5], ref.astype(np.float32))
    np.testing.assert_array_equal(spks[5], 0.0)  # not a cell: not deconvolved
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["written_back"] == [str((tmp_path / "plane0" / "spks.npy").resolve())] or run[
        "written_back"
    ][0].endswith("spks.npy")
    assert run["input_provenance"]["neuropil_factor"] == 0.7
    assert not list((tmp_path / "plane0").glob(".spks*"))


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["fista", "exact"])
def test_write_suite2p_twice_names_the_first_run(tmp_path, rec, monkeypatch, capsys, solver):
    make_plane(tmp_path / "plane0", rec, ops={"fs": 30.0, "neucoeff": 0.7})
    monkeypatch.chdir(tmp_path)
    args = ["calcium", "deconvolve", "plane0", *KIN, "--solver", solver, "--plot-cells", "0"]
    assert main([*args, "--write-suite2p", "--out", "a"]) == 0
    spks = tmp_path / "plane0" / "spks.npy"
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert list(run["spks_sha256"]) == [str(spks.resolve())]
    capsys.readouterr()
    assert main([*args, "--write-suite2p", "--out", "a"]) == 2
    err = capsys.readouterr().err
    assert (
        "spks.npy exists (written by the earlier --write-suite2p into a); pass --overwrite" in err
    )
    # another output folder, or the file changed since: who wrote it is not known
    assert main([*args, "--write-suite2p", "--out", "b"]) == 2
    assert "(suite2p's deconvolution or an earlier --write-suite2p)" in capsys.readouterr().err
    np.save(spks, np.zeros((2, 2), np.float32))
    assert main([*args, "--write-suite2p", "--out", "a"]) == 2
    assert "(suite2p's deconvolution or an earlier --write-suite2p)" in capsys.readouterr().err
    assert main([*args, "--write-suite2p", "--out", "a", "--overwrite"]) == 0


def test_write_spks_checks(tmp_path):
    (tmp_path / "p").mkdir()
    np.save(tmp_path / "p" / "F.npy", np.zeros((4, 10), np.float32))
    with pytest.raises(ValueError, match="2 spike trains for 3 ROI rows"):
        write_spks(tmp_path / "p", np.zeros((2, 10)), [0, 1, 2])
    with pytest.raises(ValueError, match=r"ROI rows in 0\.\.3"):
        write_spks(tmp_path / "p", np.zeros((1, 10)), [4])
    path = write_spks(tmp_path / "p", np.ones((2, 10)), [3, 1])
    out = np.load(path)
    assert out[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda d: np.save(d / "iscell.npy", np.ones((3, 2))), "iscell.npy has 3 rows, F.npy 6"),
        (lambda d: np.save(d / "Fneu.npy", np.ones((6, 10))), "Fneu.npy has shape (6, 10)"),
        (lambda d: np.save(d / "ops.npy", {"fs": 0.0}, allow_pickle=True), "fs in "),
        (
            lambda d: np.save(d / "ops.npy", {"fs": 30.0, "neucoeff": 2.0}, allow_pickle=True),
            "neucoeff in",
        ),
        (lambda d: np.save(d / "ops.npy", [1, 2], allow_pickle=True), "expected a pickled dict"),
        (lambda d: np.save(d / "F.npy", np.array([{"a": 1}] * 6)), "F.npy: not a plain numeric"),
    ],
)
def test_bad_plane_one_line_exit_2(tmp_path, rec, monkeypatch, capsys, break_it, message):
    make_plane(tmp_path / "plane0", rec, ops={"fs": 30.0})
    break_it(tmp_path / "plane0")
    monkeypatch.chdir(tmp_path)
    assert main(["calcium", "deconvolve", "plane0", *KIN, "--out", "x", "--write-suite2p"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnfit: error:") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists() and not (tmp_path / "plane0" / "spks.npy").exists()


def test_suite2p_folder_reads_every_plane(tmp_path, rec, monkeypatch, capsys):
    rec2 = simulate_recording(3, 1500, seed=8)
    f0, n0 = make_plane(tmp_path / "suite2p" / "plane0", rec, ops={"fs": 30.0, "neucoeff": 0.7})
    f1, n1 = make_plane(tmp_path / "suite2p" / "plane1", rec2, ops={"fs": 30.0, "neucoeff": 0.7})
    make_plane(tmp_path / "suite2p" / "combined", rec, ops={"fs": 30.0})  # not read
    r = read_input(tmp_path / "suite2p")
    np.testing.assert_array_equal(r.traces, np.r_[f0[:5] - 0.7 * n0[:5], f1[:3] - 0.7 * n1[:3]])
    assert r.cell_index.tolist() == [0, 1, 2, 3, 4, 6, 7, 8]  # rows in the planes' concatenation
    assert r.roi_ids.tolist()[4:6] == ["plane0/4", "plane1/0"]
    assert [pl["folder"] for pl in r.provenance["planes"]] == ["plane0", "plane1"]
    assert r.provenance["planes"][1]["rows"] == [6, 10] and r.provenance["n_rois"] == 10
    monkeypatch.chdir(tmp_path)
    args = ["calcium", "deconvolve", "suite2p", *KIN, "--plot-cells", "0", "--write-suite2p"]
    assert main([*args, "--out", "a"]) == 0
    for plane, (f, fneu, n) in {"plane0": (f0, n0, 5), "plane1": (f1, n1, 3)}.items():
        spks = np.load(tmp_path / "suite2p" / plane / "spks.npy")
        assert spks.shape == f.shape
        ref = run_deconvolution(f[:n] - 0.7 * fneu[:n], 30.0, 0.05, 0.5, 0.5)
        np.testing.assert_array_equal(spks[:n], ref.astype(np.float32))
        np.testing.assert_array_equal(spks[n], 0.0)
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert len(run["written_back"]) == 2 and run["input_provenance"]["planes"][0]["cells"] == 5
    assert main([*args, "--out", "b"]) == 2  # spks.npy now in every plane
    assert "plane0/spks.npy exists" in capsys.readouterr().err


def test_suite2p_folder_with_unequal_planes_is_refused(tmp_path, rec):
    make_plane(tmp_path / "s2p" / "plane0", rec, ops={"fs": 30.0})
    make_plane(tmp_path / "s2p" / "plane1", simulate_recording(2, 1499, seed=1), ops={"fs": 30.0})
    with pytest.raises(ValueError, match=r"plane0: 1500 frames at 30 Hz, plane1: 1499 frames"):
        read_input(tmp_path / "s2p")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty has no F\.npy"):
        read_input(tmp_path / "empty")


def test_combined_folder_with_zero_padded_planes_is_refused(tmp_path, rec):
    # suite2p's combined gives a plane with fewer frames zeros in F and Fneu at its end
    folder = tmp_path / "suite2p" / "combined"
    make_plane(folder, rec, ops={"fs": 30.0})
    assert read_suite2p(folder).shape == (5, 1500)  # planes of equal length: nothing padded
    f, fneu = np.load(folder / "F.npy"), np.load(folder / "Fneu.npy")
    f[3:, -7:] = 0.0
    fneu[3:, -7:] = 0.0
    np.save(folder / "F.npy", f)
    np.save(folder / "Fneu.npy", fneu)
    with pytest.raises(ValueError, match=r"combined: 2 ROI\(s\) end in frames that are 0 in both"):
        read_suite2p(folder)
    with pytest.raises(ValueError, match=r"row 3: its last 7 frames\), the padding suite2p"):
        read_input(folder)


def test_a_plane_without_cells_adds_none(tmp_path, rec):
    # a flyback plane, or one whose every ROI was rejected, leaves the other planes readable
    f0, n0 = make_plane(tmp_path / "suite2p" / "plane0", rec, ops={"fs": 30.0})
    make_plane(tmp_path / "suite2p" / "plane1", rec, ops={"fs": 30.0})
    np.save(tmp_path / "suite2p" / "plane1" / "iscell.npy", np.zeros((6, 2)))
    r = read_input(tmp_path / "suite2p")
    np.testing.assert_array_equal(r.traces, f0[:5] - 0.7 * n0[:5])
    assert [pl["cells"] for pl in r.provenance["planes"]] == [5, 0]
    np.save(tmp_path / "suite2p" / "plane0" / "iscell.npy", np.zeros((6, 2)))
    with pytest.raises(ValueError, match=r"no plane's iscell\.npy marks a ROI as a cell"):
        read_input(tmp_path / "suite2p")


def test_write_spks_planes_changes_no_plane_unless_it_can_write_all(tmp_path, rec):
    root = tmp_path / "suite2p"
    make_plane(root / "plane0", rec, ops={"fs": 30.0})
    make_plane(root / "plane1", rec, ops={"fs": 30.0}, spks=True)
    r = read_input(root)
    spikes = np.ones(r.shape)
    with pytest.raises(ValueError, match=r"plane1/spks\.npy exist\(s\)"):
        write_spks_planes(root, spikes, r.cell_index, r.provenance["planes"])
    assert not (root / "plane0" / "spks.npy").exists()
    planes = [*r.provenance["planes"][:1], {**r.provenance["planes"][1], "n_rois": 2}]
    with pytest.raises(ValueError, match=r"5 spike trains for 5 ROI rows in 0\.\.1"):
        write_spks_planes(root, spikes, r.cell_index, planes, overwrite=True)
    assert not (root / "plane0" / "spks.npy").exists()  # plane 1's error: plane 0 untouched
    assert sorted(q.name for q in root.rglob("*") if q.is_file() and "tmp" in q.name) == []
    written = write_spks_planes(root, spikes, r.cell_index, r.provenance["planes"], overwrite=True)
    assert [np.load(q)[:5].sum() for q in written] == [7500.0, 7500.0]
