"""``.npy`` and ``.npz`` files are checked against their declared sizes before allocating."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from nnfit.cli import main
from nnfit.io.arrays import MEMORY_BUDGET_ENV, load_npy, read_npy_header


def _lying_npy(path, shape=(100000, 100000)):
    """A .npy whose header declares ``shape`` float64 in front of 4 values (a few bytes)."""
    np.save(path, np.zeros((2, 2)))
    raw = path.read_bytes()
    text = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}"
    block = b"\x93NUMPY\x01\x00" + (118).to_bytes(2, "little") + text.encode().ljust(117) + b"\n"
    assert len(raw[:128]) == len(block) == 128
    path.write_bytes(block + raw[128:])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (
            lambda p: (
                np.savez(p.with_suffix(".tmp.npz"), a=np.ones(3))
                or p.with_suffix(".tmp.npz").rename(p)
            ),
            "is an .npz archive",
        ),
        (lambda p: p.write_bytes(b"hello world, not numpy"), "not a .npy file"),
        (_lying_npy, r"header declares float64 \(100000, 100000\)"),
        (
            lambda p: p.write_bytes(np.lib.format.magic(1, 0) + b"\x10\x00{'descr': garbage"),
            "damaged .npy header",
        ),
        (
            lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
            r"object \(pickled\)",
        ),
    ],
)
def test_bad_npy_files_are_clear_errors(tmp_path, make, message):
    p = tmp_path / "x.npy"
    make(p)
    with pytest.raises(ValueError, match=message) as exc:
        load_npy(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


def test_header_within_the_file_and_budget(tmp_path, monkeypatch):
    p = tmp_path / "x.npy"
    np.save(p, np.ones((30, 40)))
    assert read_npy_header(p)[:3] == ((30, 40), False, np.dtype("<f8"))
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "1000")
    with pytest.raises(ValueError, match="more than the memory budget"):
        load_npy(p)
    assert load_npy(p, mmap_mode="r").shape == (30, 40)  # a map allocates nothing
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "1e9")
    assert load_npy(p).sum() == 1200


@pytest.mark.parametrize(
    "argv",
    [
        ["calcium", "deconvolve", "{p}", "--fs", "30", "--out", "{d}/o", "--no-progress"],
        [
            "calcium",
            "deconvolve",
            "{p}",
            "--fs",
            "30",
            "--solver",
            "fista",
            "--tau-rise",
            "0.05",
            "--tau-decay",
            "0.5",
            "--lam",
            "0.5",
            "--out",
            "{d}/o",
            "--no-progress",
        ],
        ["calcium", "export", "{p}", "--fs", "30", "--out", "{d}/o"],
        ["calcium", "estimate", "{p}", "--fs", "30"],
    ],
)
@pytest.mark.parametrize("kind", ["empty", "npz", "lying"])
def test_calcium_commands_refuse_bad_npy_in_one_line(tmp_path, capsys, argv, kind):
    p = tmp_path / "rec.npy"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "npz":
        np.savez(tmp_path / "r.npz", a=np.ones((2, 50)))
        (tmp_path / "r.npz").rename(p)
    else:
        _lying_npy(p)
    assert main([a.format(p=p, d=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnfit: error:") and "rec.npy" in err[0], err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_calcium_kernel_length_is_limited(tmp_path, capsys):
    p = tmp_path / "rec.npy"
    np.save(p, np.random.default_rng(0).normal(size=(2, 300)))
    for solver in ([], ["--solver", "fista"]):
        argv = [
            "calcium",
            "deconvolve",
            str(p),
            "--fs",
            "30",
            "--tau-rise",
            "0.05",
            "--tau-decay",
            "1e9",
            "--lam",
            "0.5",
            *solver,
            "--out",
            str(tmp_path / "o"),
        ]
        assert main(argv) == 2
        assert "needs a kernel of" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_zip_bomb_in_a_ptycho_source_is_refused(tmp_path, capsys, monkeypatch):
    src = tmp_path / "bomb.npz"
    big = np.zeros((200, 512, 512), np.float32)  # 210 MB that deflates to ~0.2 MB
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("diff3d.npy", "w") as fh:
        np.lib.format.write_array(fh, big)
    del big
    assert src.stat().st_size < 2e6
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "50e6")
    out = tmp_path / "fx.npz"
    assert main(["ptycho", "make", "--source", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bomb.npz (uncompressed members) needs 0.21 GB" in err[0], err
    assert not out.exists()
