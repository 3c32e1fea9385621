"""Read a ptychodus product and its diffraction patterns as a DATA-001 source.

`ptychodus <https://github.com/AdvancedPhotonSource/ptychodus>`_ (APS) keeps a reconstruction
in a *product* file (HDF5 ``.h5``/``.hdf5`` or NPZ): scan positions in metres with an index
each, the probe (2-D, or incoherent modes ``(I, H, W)``, or ``(C, I, H, W)`` with orthogonal
probe relaxation), the object (2-D or layers ``(L, H, W)``) with its centre and pixel size in
metres, and metadata. The diffraction patterns, in detector counts, live in a separate file:
ptychodus's NPZ (``patterns``, ``indexes``, ``bad_pixels``) or an HDF5 stack (``/dp`` as
ptychodus and fold_slice write it, CXI ``/entry_1/data_1/data``, ``/exchange/data``,
``/entry/data/data``), whose pattern ``k`` has index ``k``. ptychodus 1.7's HDF5 training-data
file holds both (:func:`read_training_data`).

:func:`read_ptychodus_source` pairs each position with the pattern of the same index (as
ptychodus's reconstructors do) and gives the DATA-001 source arrays:

- ``xcoords``, ``ycoords``: ptychodus's map from metres to object pixels, shifted to nnfit's
  patch convention so that each patch covers the object pixels ptychodus's does
  (:meth:`Product.object_pixel_coordinates`).
- ``probeGuess``: the first coherent and the first incoherent mode (DATA-001 holds one probe;
  ptychodus's PtychoPINN export before 1.7 kept that mode too), scaled to unit power
  ``sum |p|^2 = 1``.
- ``objectGuess``: the first layer, as stored.
- ``diffraction``: ``sqrt(counts) / sqrt(photons)``, with ``photons`` the mean total counts of
  the paired patterns. With the unit-power probe this is the simulator's normalisation
  (``scale = sqrt(photons / sum |probe|^2)``) with the photon dose measured from the data, so
  the forward model of probe and object predicts the amplitudes up to the object's
  transmission. Pixels ptychodus marks bad are set to 0; negative values (dark-subtracted
  data) are clipped to 0; both are counted in the notes.
- ``scan_index``: each pattern's ptychodus index.

Nothing from the files is executed (NPZ members are read without pickles).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnfit import __version__
from nnfit.io import atomic_path, atomic_write_json, file_sha256
from nnfit.io.hdf5 import check_filters, is_hdf5, open_h5
from nnfit.io.lock import run_lock
from nnfit.io.npz import StreamedArray, open_npz, write_npz
from nnfit.ptycho.subset import validate_source

logger = logging.getLogger(__name__)

#: Where HDF5 diffraction files keep their (N, H, W) stack, in the order they are tried.
PATTERN_PATHS = ("/dp", "/entry_1/data_1/data", "/exchange/data", "/entry/data/data")

#: Patterns are converted in blocks of about this many bytes (as float64).
_BLOCK_BYTES = 64 << 20


@dataclass(frozen=True)
class Product:
    """A ptychodus product: positions, probe, object and their geometry (SI units)."""

    path: Path
    indexes: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray
    probe: np.ndarray
    probe_pixel_m: tuple[float, float]
    object: np.ndarray
    object_center_m: tuple[float, float]
    object_pixel_m: tuple[float, float]
    metadata: dict[str, Any] = field(default_factory=dict)

    def object_pixel_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """DATA-001 ``xcoords``, ``ycoords``: where nnfit's patch puts the probe (see Notes).

        Notes
        -----
        ptychodus (1.7) puts the object's centre ``center_x_m`` at pixel index
        ``(cols - 1) / 2``, so the probe's centre lies at index
        ``c = (x_m - center_x_m) / pixel_width_m + (cols - 1) / 2``, and its patch starts at
        column ``c - (W - 1) / 2`` (``Probe.resolve_patch_bounds``). nnfit's patch starts at
        ``xcoords - W // 2`` (:func:`~nnfit.ptycho.simulate.extract_patches`), so
        ``xcoords = c - (W - 1) / 2 + W // 2``: ``c + 1/2`` for an even probe, ``c`` for an
        odd one. For an even probe this is the map in ptychodus's source of November 2025
        (after v1.2), ``(x_m - center_x_m) / pixel_width_m + cols / 2`` with the patch at
        ``x - W / 2``. Likewise for y with rows and H.

        Examples
        --------
        >>> p = Product(Path("p.h5"), np.arange(2), np.array([0.0, 1e-8]), np.zeros(2),
        ...             np.ones((1, 4, 4), complex), (1e-8, 1e-8), np.ones((10, 12), complex),
        ...             (0.0, 0.0), (1e-8, 1e-8))
        >>> [v.tolist() for v in p.object_pixel_coordinates()]
        [[6.0, 7.0], [5.0, 5.0]]
        """
        rows, cols = self.object.shape[-2:]
        h, w = self.probe.shape[-2:]
        (cx, cy), (dx, dy) = self.object_center_m, self.object_pixel_m
        x = (self.x_m - cx) / dx + (cols - 1) / 2 - (w - 1) / 2 + w // 2
        y = (self.y_m - cy) / dy + (rows - 1) / 2 - (h - 1) / 2 + h // 2
        return x, y


# The names each container uses: HDF5 keeps scalars as root attributes and pixel geometry as
# attributes of the arrays; ptychodus's NPZ keeps everything as members.
_H5_NAMES = {
    "probe_pixel": ("probe", "pixel_width_m", "pixel_height_m"),
    "object_pixel": ("object", "pixel_width_m", "pixel_height_m"),
    "object_center": ("object", "center_x_m", "center_y_m"),
}
_NPZ_NAMES = {
    "probe_pixel": ("probe_pixel_width_m", "probe_pixel_height_m"),
    "object_pixel": ("object_pixel_width_m", "object_pixel_height_m"),
    "object_center": ("object_center_x_m", "object_center_y_m"),
}
_ARRAYS = ("probe_position_indexes", "probe_position_x_m", "probe_position_y_m", "probe", "object")
_METADATA = (
    "name",
    "comments",
    "detector_object_distance_m",
    "photon_energy_eV",
    "probe_energy_eV",  # the name before ptychodus 1.7
    "probe_photon_count",
    "exposure_time_s",
    "far_field",
)


def _scalar(value: Any, what: str, path: Path) -> float:
    try:
        out = float(np.asarray(value).reshape(()))
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {what} must be one number; found {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{path}: {what} is {out}; the product needs a finite value")
    return out


def _plain(value: Any) -> Any:
    v = np.asarray(value)
    if v.dtype.kind in "SU":
        return v.astype(str).item() if v.ndim == 0 else v.astype(str).tolist()
    if v.dtype.kind == "O":
        item = v.item() if v.ndim == 0 else None
        return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
    return v.item() if v.ndim == 0 else v.tolist()


def read_product(path: str | os.PathLike[str]) -> Product:
    """Read a ptychodus product file (HDF5 or NPZ, as ptychodus 1.x writes them).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a required dataset or attribute is missing or malformed; the message names it.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"product file not found: {p}")
    if is_hdf5(p):
        import h5py

        with open_h5(p, "r") as f:
            arrays = {k: f[k][()] for k in _ARRAYS if k in f and isinstance(f[k], h5py.Dataset)}
            for k, names in _H5_NAMES.items():
                if names[0] not in f:
                    raise ValueError(f"{p}: no '{names[0]}' dataset; is this a ptychodus product?")
                attrs = f[names[0]].attrs
                for a in names[1:]:
                    if a not in attrs:
                        raise ValueError(
                            f"{p}: the '{names[0]}' dataset has no '{a}' attribute (a "
                            "ptychodus product stores its pixel size and centre there)"
                        )
                arrays[k] = tuple(
                    _scalar(attrs[a], f"{names[0]}.attrs['{a}']", p) for a in names[1:]
                )
            meta = {k: _plain(f.attrs[k]) for k in _METADATA if k in f.attrs}
    else:
        try:
            raw = open_npz(p)
        except ValueError as exc:
            raise ValueError(
                f"{p}: neither HDF5 nor a readable NPZ ({exc}); give a ptychodus product "
                "(.h5, .hdf5 or .npz)"
            ) from None
        arrays = {k: raw[k] for k in _ARRAYS if k in raw}
        for k, names in _NPZ_NAMES.items():
            missing = [n for n in names if n not in raw]
            if missing:
                raise ValueError(
                    f"{p}: no {', '.join(repr(m) for m in missing)}; is this a ptychodus product?"
                )
            arrays[k] = tuple(_scalar(raw[n], repr(n), p) for n in names)
        meta = {k: _plain(raw[k]) for k in _METADATA if k in raw}
    for k in _ARRAYS:
        if k not in arrays:
            raise ValueError(f"{p}: no '{k}'; is this a ptychodus product?")
    return _product(p, arrays, meta)


def _product(p: Path, arrays: dict[str, Any], meta: dict[str, Any]) -> Product:
    idx = np.asarray(arrays["probe_position_indexes"])
    x = np.asarray(arrays["probe_position_x_m"])
    y = np.asarray(arrays["probe_position_y_m"])
    if idx.dtype.kind not in "iu" or idx.ndim != 1:
        raise ValueError(
            f"{p}: probe_position_indexes must be 1-D integers; got {idx.dtype} {idx.shape}"
        )
    for name, v in (("probe_position_x_m", x), ("probe_position_y_m", y)):
        if v.dtype.kind not in "fiu" or v.shape != idx.shape:
            raise ValueError(f"{p}: {name} must be {idx.shape[0]} numbers; got {v.dtype} {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError(f"{p}: {name} has {int((~np.isfinite(v)).sum())} NaN/Inf values")
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"{p}: probe_position_indexes repeats {int(uniq[counts > 1][0])}: each position must "
            "name its own pattern"
        )
    probe = np.asarray(arrays.get("probe"))
    obj = np.asarray(arrays.get("object"))
    if probe.dtype.kind != "c" or probe.ndim not in (2, 3, 4):
        raise ValueError(f"{p}: probe must be complex, 2-D to 4-D; got {probe.dtype} {probe.shape}")
    if obj.dtype.kind != "c" or obj.ndim not in (2, 3):
        raise ValueError(f"{p}: object must be complex, 2-D or 3-D; got {obj.dtype} {obj.shape}")
    for name, (w, h) in (
        ("probe pixel size", arrays["probe_pixel"]),
        ("object pixel size", arrays["object_pixel"]),
    ):
        if not (w > 0 and h > 0):
            raise ValueError(f"{p}: {name} must be positive; got {w:g} x {h:g} m")
    return Product(
        path=p,
        indexes=idx.astype(np.int64),
        x_m=x.astype(np.float64),
        y_m=y.astype(np.float64),
        probe=probe,
        probe_pixel_m=arrays["probe_pixel"],
        object=obj,
        object_center_m=arrays["object_center"],
        object_pixel_m=arrays["object_pixel"],
        metadata=meta,
    )


@dataclass
class Patterns:
    """A diffraction file: an (N, H, W) stack of counts, each pattern with an index."""

    path: Path
    where: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    indexes: np.ndarray
    bad_pixels: np.ndarray | None
    read_rows: Callable[[np.ndarray], np.ndarray]
    notes: tuple[str, ...] = ()


def open_patterns(path: str | os.PathLike[str], data_path: str | None = None) -> Patterns:
    """Open a ptychodus NPZ or an HDF5 (CXI, fold_slice, APS) diffraction file.

    Parameters
    ----------
    path : path-like
        The diffraction file.
    data_path : str, optional
        The HDF5 dataset holding the (N, H, W) stack; default: the one of
        :data:`PATTERN_PATHS` the file has. Not used for NPZ.

    Raises
    ------
    FileNotFoundError, ValueError
        A missing file; no stack, several candidate stacks, a stack that is not (N, H, W) real
        numbers, or an HDF5 filter this installation lacks (named, with the fix).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"diffraction file not found: {p}")
    if not is_hdf5(p):
        if data_path is not None:
            raise ValueError(
                f"--patterns-path (data_path) is for HDF5 files; {p} is not one (a ptychodus "
                "NPZ keeps its stack in 'patterns')"
            )
        try:
            raw = open_npz(p)
        except ValueError as exc:
            raise ValueError(f"{p}: neither HDF5 nor a readable NPZ ({exc})") from None
        if "patterns" not in raw:
            raise ValueError(
                f"{p}: no 'patterns' member (members: {', '.join(sorted(raw)) or 'none'}); a "
                "ptychodus diffraction NPZ has 'patterns' (N, H, W) and 'indexes' (N,)"
            )
        stack = raw["patterns"]
        _check_stack(stack.shape, stack.dtype, f"{p}: patterns")
        n = stack.shape[0]
        idx = np.asarray(raw["indexes"]) if "indexes" in raw else np.arange(n)
        if idx.dtype.kind not in "iu" or idx.shape != (n,):
            raise ValueError(f"{p}: indexes must be {n} integers; got {idx.dtype} {idx.shape}")
        bad = raw.get("bad_pixels")
        return Patterns(
            p, f"{p}: patterns", stack.shape, stack.dtype, idx.astype(np.int64),
            None if bad is None else np.asarray(bad), lambda rows: np.asarray(stack[rows]),
        )  # fmt: skip
    import h5py

    with open_h5(p, "r") as f:
        if data_path is None:
            found = [q for q in PATTERN_PATHS if isinstance(f.get(q), h5py.Dataset)]
            if len(found) != 1:
                which = "none" if not found else ", ".join(found)
                raise ValueError(
                    f"{p}: found {which} of the diffraction stacks nnfit knows "
                    f"({', '.join(PATTERN_PATHS)}); name the (N, H, W) dataset with "
                    "--patterns-path (data_path=)"
                )
            data_path = found[0]
        ds = f.get(data_path)
        if not isinstance(ds, h5py.Dataset):
            raise ValueError(f"{p}: no dataset {data_path}; name the (N, H, W) stack")
        where = f"{p}: {ds.name}"
        _check_stack(ds.shape, ds.dtype, where)
        check_filters(ds, where)
        shape, dtype = ds.shape, ds.dtype
    return Patterns(p, where, shape, dtype, np.arange(shape[0]), None, _h5_rows(p, data_path))


def _h5_rows(path: Path, name: str) -> Callable[[np.ndarray], np.ndarray]:
    """Read given rows (sorted, distinct) of an HDF5 stack, opening the file for each call."""
    where = f"{path}: {name}"

    def read_rows(rows: np.ndarray) -> np.ndarray:
        with open_h5(path, "r") as f:
            try:
                if rows.size and rows[-1] - rows[0] + 1 == rows.size:  # one slice is faster
                    return np.asarray(f[name][int(rows[0]) : int(rows[-1]) + 1])
                return np.asarray(f[name][rows])
            except OSError as exc:  # a damaged chunk: HDF5's message names neither
                raise OSError(f"{where}: cannot read rows {rows[0]}..{rows[-1]} ({exc})") from None

    return read_rows


#: The datasets of ptychodus's HDF5 training-data file (``ptychodus.api.io.save_training_data``).
TRAINING_KEYS = (
    "patterns",
    "bad_pixels",
    "probe",
    "object",
    "probe_position_x_px",
    "probe_position_y_px",
    "object_pixel_width_m",
    "object_pixel_height_m",
)


def is_training_data(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is ptychodus's HDF5 training-data file (patterns and product in one)."""
    if not is_hdf5(path):
        return False
    with open_h5(path, "r") as f:
        return all(k in f for k in TRAINING_KEYS)


def read_training_data(path: str | os.PathLike[str]) -> tuple[Product, Patterns]:
    """Read ptychodus's HDF5 training-data file as a product and its patterns.

    ptychodus 1.7 (``save_training_data``) writes the patterns with their bad pixels already
    filled (``bad_pixels`` says which), the probe's modes at orthogonal-probe-relaxation index
    0, object layer 0, and the positions in object pixels under ptychodus 1.7's convention
    (the object's centre at pixel ``(cols - 1) / 2``), scan indexes being consecutive. The
    product returned puts the object's centre at the origin, as ptychodus's own reader does,
    so :meth:`Product.object_pixel_coordinates` maps the positions back exactly.

    Raises
    ------
    ValueError
        If a dataset is missing or malformed; the message names it.
    """
    import h5py

    p = Path(path)
    with open_h5(p, "r") as f:
        missing = [k for k in TRAINING_KEYS if not isinstance(f.get(k), h5py.Dataset)]
        if missing:
            raise ValueError(
                f"{p}: no {', '.join(missing)}; not a ptychodus training-data file (give the "
                "product and its patterns instead)"
            )
        ds = f["patterns"]
        where = f"{p}: {ds.name}"
        _check_stack(ds.shape, ds.dtype, where)
        check_filters(ds, where)
        shape, dtype = ds.shape, ds.dtype
        small = {k: f[k][()] for k in TRAINING_KEYS if k != "patterns"}
        meta = {
            k: _plain(f[k][()])
            for k in ("detector_object_distance_m", "photon_energy_eV")
            if isinstance(f.get(k), h5py.Dataset)
        }
    n = shape[0]
    obj = np.asarray(small["object"])
    dx = _scalar(small["object_pixel_width_m"], "object_pixel_width_m", p)
    dy = _scalar(small["object_pixel_height_m"], "object_pixel_height_m", p)
    rows, cols = obj.shape[-2:]
    x_px = np.asarray(small["probe_position_x_px"], dtype=np.float64)
    y_px = np.asarray(small["probe_position_y_px"], dtype=np.float64)
    product = _product(
        p,
        {
            "probe_position_indexes": np.arange(x_px.size),
            "probe_position_x_m": (x_px - (cols - 1) / 2) * dx,
            "probe_position_y_m": (y_px - (rows - 1) / 2) * dy,
            "probe": small["probe"],
            "object": obj,
            "probe_pixel": (dx, dy),
            "object_pixel": (dx, dy),
            "object_center": (0.0, 0.0),
        },
        meta,
    )
    if x_px.size != n:
        raise ValueError(f"{p}: {x_px.size} positions for {n} patterns; they must match")
    bad = np.asarray(small["bad_pixels"], dtype=bool)
    notes = (
        (f"diffraction: {int(bad.sum())} pixels ptychodus filled (bad_pixels) kept as filled",)
        if bad.any()
        else ()
    )
    return product, Patterns(
        p, where, shape, dtype, np.arange(n), None, _h5_rows(p, "patterns"), notes
    )


def _check_stack(shape: tuple[int, ...], dtype: np.dtype, where: str) -> None:
    if len(shape) != 3 or dtype.kind not in "fiu":
        raise ValueError(
            f"{where}: expected an (N, H, W) stack of counts (real numbers); got {dtype} {shape}"
        )


def open_ptychodus(
    product: str | os.PathLike[str],
    patterns: str | os.PathLike[str] | None = None,
    data_path: str | None = None,
) -> tuple[Product, Patterns]:
    """Open a product and its patterns, or, with ``patterns=None``, a training-data file.

    Raises
    ------
    ValueError
        ``patterns=None`` for a file that is not ptychodus's training-data file, or
        ``data_path`` without ``patterns``; and whatever :func:`read_product`,
        :func:`open_patterns` and :func:`read_training_data` refuse.
    """
    if patterns is not None:
        return read_product(product), open_patterns(patterns, data_path)
    if data_path is not None:
        raise ValueError(
            "--patterns-path (data_path=) names a dataset in the patterns file; give --patterns"
        )
    if not is_training_data(product):
        raise ValueError(
            f"{product} is not ptychodus's training-data file (which holds the patterns too); "
            "give its patterns with --patterns (patterns=)"
        )
    return read_training_data(product)


@dataclass(frozen=True)
class PtychodusSource:
    """The DATA-001 source arrays read from a product and its patterns.

    ``arrays`` holds everything but ``diffraction``, which ``diffraction`` streams
    (:class:`~nnfit.io.npz.StreamedArray`); ``notes`` says what was converted and how.
    """

    arrays: dict[str, np.ndarray]
    diffraction: StreamedArray
    notes: list[str]
    photons: float


def read_ptychodus_source(
    product: str | os.PathLike[str] | Product,
    patterns: str | os.PathLike[str] | Patterns,
    *,
    data_path: str | None = None,
    on_block: Callable[[int], None] | None = None,
) -> PtychodusSource:
    """Pair a ptychodus product with its diffraction patterns as DATA-001 source arrays.

    Parameters
    ----------
    product : path-like or Product
        The product file (:func:`read_product`).
    patterns : path-like or Patterns
        The diffraction file (:func:`open_patterns`).
    data_path : str, optional
        The HDF5 stack in ``patterns`` when it is not one of :data:`PATTERN_PATHS`.
    on_block : callable, optional
        Called with the number of patterns each block of the photon-count pass read (a
        progress bar's ``update``).

    Returns
    -------
    PtychodusSource
        See the module docstring for each array's rule.

    Raises
    ------
    ValueError
        No position has a pattern; the probe is not the patterns' size; probe and object
        pixels differ; non-finite counts; patterns with no counts at all.
    """
    prod = product if isinstance(product, Product) else read_product(product)
    pats = patterns if isinstance(patterns, Patterns) else open_patterns(patterns, data_path)
    notes: list[str] = []
    row_of = {int(k): i for i, k in enumerate(pats.indexes)}
    if len(row_of) != pats.indexes.size:
        raise ValueError(f"{pats.where}: its indexes repeat; each pattern needs its own")
    order = np.argsort(prod.indexes, kind="stable")
    keep = np.array([int(prod.indexes[i]) in row_of for i in order], dtype=bool)
    pos = order[keep]
    if pos.size == 0:
        raise ValueError(
            f"none of the {prod.indexes.size} positions of {prod.path} has a pattern in "
            f"{pats.path} (position indexes {_span(prod.indexes)}, pattern indexes "
            f"{_span(pats.indexes)}): are these the product and patterns of one scan?"
        )
    rows = np.array([row_of[int(prod.indexes[i])] for i in pos], dtype=np.int64)
    if pos.size < prod.indexes.size:
        notes.append(f"positions: {prod.indexes.size - pos.size} without a pattern dropped")
    if rows.size < pats.shape[0]:
        notes.append(f"patterns: {pats.shape[0] - rows.size} without a position dropped")
    if prod.metadata.get("far_field") is False:
        raise ValueError(
            f"{prod.path}: a near-field product (far_field = False); DATA-001's model is "
            "far-field diffraction"
        )
    probe = _probe_mode(prod, notes)
    h, w = pats.shape[1:]
    if probe.shape != (h, w):
        raise ValueError(
            f"the probe of {prod.path} is {probe.shape[0]}x{probe.shape[1]} but the patterns "
            f"of {pats.path} are {h}x{w}: save the patterns ptychodus assembled (cropped to "
            "the probe's size), not the raw detector frames"
        )
    if not np.allclose(prod.probe_pixel_m, prod.object_pixel_m, rtol=1e-3, atol=0):
        raise ValueError(
            f"{prod.path}: probe pixels {_size(prod.probe_pixel_m)} and object pixels "
            f"{_size(prod.object_pixel_m)} differ; DATA-001's model samples the object on the "
            "probe's grid, so a fixture needs an object at the probe's pixel size"
        )
    power = float(np.sum(np.abs(probe) ** 2))
    if not (power > 0 and math.isfinite(power)):
        raise ValueError(f"{prod.path}: the probe's power is {power:g}; it must be positive")
    probe = probe / math.sqrt(power)
    notes.append(f"probeGuess: scaled to unit power (sum |p|^2 was {power:.6g})")
    obj = prod.object
    if obj.ndim == 3:
        if obj.shape[0] > 1:
            notes.append(f"objectGuess: layer 0 of {obj.shape[0]} (multislice object)")
        obj = obj[0]
    x, y = prod.object_pixel_coordinates()
    notes.append(
        "xcoords, ycoords: (x_m - center_x_m) / pixel_width_m + (cols - 1) / 2 (ptychodus's "
        "pixel under the probe's centre) - (W - 1) / 2 + W // 2 (nnfit's patch start), likewise y"
    )
    notes.extend(pats.notes)
    bad = _bad_pixels(pats, notes)
    step = max(1, _BLOCK_BYTES // (8 * h * w))

    def blocks() -> Iterator[tuple[int, np.ndarray]]:
        for s in range(0, rows.size, step):
            r = rows[s : s + step]
            sort = np.argsort(r, kind="stable")
            got = np.empty((r.size, h, w), dtype=np.float64)
            got[sort] = pats.read_rows(r[sort])
            if bad is not None:
                got[:, bad] = 0.0
            yield s, got

    total, n_neg = 0.0, 0
    for s, blk in blocks():
        finite = np.isfinite(blk)
        if not finite.all():
            i = s + int(np.argwhere(~finite)[0][0])
            raise ValueError(
                f"{pats.where}: {int((~finite).sum())} NaN/Inf counts in this block, first in "
                f"pattern index {int(pats.indexes[rows[i]])}; mask or fix them first"
            )
        n_neg += int(np.count_nonzero(blk < 0))
        total += float(np.clip(blk, 0, None).sum())
        if on_block is not None:
            on_block(blk.shape[0])
    photons = total / rows.size
    if not photons > 0:
        raise ValueError(f"{pats.where}: the paired patterns hold no counts")
    if n_neg:
        notes.append(f"diffraction: {n_neg} negative counts clipped to 0")
    scale = math.sqrt(photons)
    notes.append(
        f"diffraction: sqrt(counts) / {scale:.9g} (photons = {photons:.9g}, the mean total "
        "counts per pattern; with the unit-power probe this is the simulator's normalisation)"
    )

    def amplitudes() -> Iterator[np.ndarray]:
        for _, blk in blocks():
            yield (np.sqrt(np.clip(blk, 0, None)) / scale).astype(np.float32)

    arrays = {
        "probeGuess": probe.astype(np.complex64),
        "objectGuess": np.asarray(obj, dtype=np.complex64),
        "xcoords": np.asarray(x[pos], dtype=np.float64),
        "ycoords": np.asarray(y[pos], dtype=np.float64),
        "scan_index": prod.indexes[pos].astype(np.int64),
    }
    diffraction = StreamedArray((int(rows.size), h, w), np.dtype(np.float32), amplitudes)
    return PtychodusSource(arrays, diffraction, notes, photons)


def _probe_mode(prod: Product, notes: list[str]) -> np.ndarray:
    probe = prod.probe
    if probe.ndim == 4:
        if probe.shape[0] > 1:
            notes.append(
                f"probeGuess: coherent mode 0 of {probe.shape[0]} (the per-position orthogonal "
                "probe relaxation is not kept)"
            )
        probe = probe[0]
    if probe.ndim == 3:
        if probe.shape[0] > 1:
            powers = np.sum(np.abs(probe) ** 2, axis=(1, 2))
            share = float(powers[0] / powers.sum()) if powers.sum() > 0 else float("nan")
            notes.append(
                f"probeGuess: incoherent mode 0 of {probe.shape[0]} ({share:.1%} of the power)"
            )
            logger.warning(
                "%s: the probe has %d incoherent modes; DATA-001 keeps one, mode 0 (%.1f%% of "
                "the power)",
                prod.path,
                probe.shape[0],
                100 * share,
            )
        probe = probe[0]
    return np.asarray(probe)


def _bad_pixels(pats: Patterns, notes: list[str]) -> np.ndarray | None:
    bad = pats.bad_pixels
    if bad is None:
        return None
    if bad.shape != pats.shape[1:]:
        raise ValueError(
            f"{pats.path}: bad_pixels is {bad.shape}, the patterns {pats.shape[1:]}; they must "
            "match"
        )
    mask = bad.astype(bool)
    if mask.any():
        notes.append(f"diffraction: {int(mask.sum())} bad pixels (ptychodus's mask) set to 0")
        return mask
    return None


def _span(idx: np.ndarray) -> str:
    return f"{int(idx.min())}..{int(idx.max())}" if idx.size else "none"


def _size(px: tuple[float, float]) -> str:
    return f"{px[0]:.4g} x {px[1]:.4g} m"


def import_ptychodus(
    product: str | os.PathLike[str] | Product,
    patterns: str | os.PathLike[str] | Patterns | None,
    output: str | os.PathLike[str],
    *,
    data_path: str | None = None,
    overwrite: bool = False,
    on_block: Callable[[int], None] | None = None,
    command: str | None = None,
) -> tuple[Path, Path, dict[str, Any]]:
    """Write a ptychodus product and its patterns as a DATA-001 source NPZ with a JSON sidecar.

    The source is canonical ``(N, H, W)``, members stored uncompressed so that ``nnfit ptycho
    make`` memory-maps it; the patterns are read twice, block by block (the photon count,
    then the amplitudes), never whole. The sidecar (``output`` with ``.json``) records both
    inputs with their SHA-256, every conversion (see the module docstring) and the product's
    metadata. Each file is replaced atomically; the source passes the contract's source
    rules before the sidecar is written.

    Parameters
    ----------
    product, patterns : path-like, or Product and Patterns
        The ptychodus product and its diffraction file, as paths or already opened
        (:func:`open_ptychodus`). ``patterns=None``: ``product`` is ptychodus's HDF5
        training-data file, which holds both (:func:`read_training_data`).
    output : path-like
        The source NPZ to write (its folder is created).
    data_path : str, optional
        The HDF5 stack in ``patterns`` when it is not one of :data:`PATTERN_PATHS`.
    overwrite : bool
        Replace an existing output.
    on_block : callable, optional
        Progress: called with the number of patterns in each block read, over both passes
        (``2 N`` in all).
    command : str, optional
        The command line recorded in the sidecar.

    Returns
    -------
    (Path, Path, dict)
        The source, its sidecar and the sidecar's content.
    """

    out = Path(output)
    meta_path = out.with_suffix(".json")
    if out.suffix != ".npz":
        raise ValueError(f"--out {out}: give a .npz file name, e.g. {out.with_suffix('.npz')}")
    inputs = [product.path if isinstance(product, Product) else Path(product)]
    if patterns is not None:
        inputs.append(patterns.path if isinstance(patterns, Patterns) else Path(patterns))
    for src in inputs:
        if src.exists() and src.resolve() in (out.resolve(), meta_path.resolve()):
            raise ValueError(f"refusing to write over the input {src}")
    if not overwrite:
        for p in (out, meta_path):
            if p.exists():
                raise FileExistsError(
                    f"{p} already exists; pass --overwrite (overwrite=True) to replace it"
                )
    if isinstance(patterns, Patterns):
        pats = patterns
        prod = product if isinstance(product, Product) else read_product(product)
    elif isinstance(product, Product):
        if patterns is None:
            raise ValueError("an opened Product needs its patterns (a path or Patterns)")
        prod, pats = product, open_patterns(patterns, data_path)
    else:
        prod, pats = open_ptychodus(product, patterns, data_path)
    src = read_ptychodus_source(prod, pats, on_block=on_block)

    def counted() -> Iterator[np.ndarray]:
        for blk in src.diffraction.blocks():
            if on_block is not None:
                on_block(blk.shape[0])
            yield blk

    members: dict[str, np.ndarray | StreamedArray] = dict(src.arrays)
    members["diffraction"] = StreamedArray(src.diffraction.shape, src.diffraction.dtype, counted)
    out.parent.mkdir(parents=True, exist_ok=True)
    with run_lock(out.parent / f".{out.name}.lock", what=f"source {out}"):
        with atomic_path(out, suffix=".npz") as tmp:
            write_npz(tmp, members, compress=False)
            validate_source(tmp)  # the rules make applies, before the file takes its name
            source_sha256 = file_sha256(tmp)
        meta = {
            "created": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
            "generator_script": command or f"nnfit.ptycho.import_ptychodus (nnfit {__version__})",
            "product": str(prod.path),
            "product_sha256": file_sha256(prod.path),
            "product_metadata": prod.metadata,
            "patterns": pats.where,
            "patterns_sha256": file_sha256(pats.path),
            "scans": int(src.diffraction.shape[0]),
            "photons_per_pattern": src.photons,
            "transformations": src.notes,
            "source_sha256": source_sha256,
        }
        atomic_write_json(meta_path, meta)
    return out, meta_path, meta
