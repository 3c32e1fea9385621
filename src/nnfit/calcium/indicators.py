"""Kinetics presets for common calcium indicators, and the prior they give the estimate.

Naming an indicator (``deconvolve(..., indicator="GCaMP6s")``, ``--indicator``) makes its
preset a prior on the estimate: the decay is still estimated from the data, then held within
:attr:`Indicator.decay_range` (the preset's decay divided and multiplied by
:data:`PRIOR_SPAN`), so a recording the estimator misreads cannot come out with a decay the
indicator does not have, and one it reads right is not touched; the rise is estimated freely
(the presets' rises are far from the fitted ones, below). For the preset's kinetics as they
are, pass them as ``tau_rise`` and ``tau_decay`` (one fixed kernel for every session). The
values are the double-exponential time constants of CaLab 0.3.0's simulator presets
(``calab.presets``), the CaTune project's own companion, whose kernel is the one nnfit uses
(``exp(-t / tau_decay) - exp(-t / tau_rise)``); each cites the paper that characterised the
indicator. ``tests/calcium/test_indicators.py`` checks them against the installed CaLab.

Kinetics of real recordings spread around these values (cell type, expression level,
temperature, neuropil subtraction and firing pattern all move them), and on the ground-truth
datasets the presets score well below the kinetics estimated from the data (their rises are
several times longer than the fitted ones; docs/calcium/estimation.rst): estimate where the
recording allows it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["INDICATORS", "PRIOR_SPAN", "Indicator", "indicator_kinetics", "indicator_record"]

#: the decay a named indicator allows: its preset's decay divided or multiplied by at most this.
#: Wide, because one indicator's decay varies with preparation, temperature and cell type: fitted
#: to the true spike times of two GCaMP6f datasets here it is 1.1x (mouse V1, 60 Hz) and 4.7x
#: (zebrafish, 30 Hz) the preset's 0.6 s (docs/calcium/ground-truth.rst)
PRIOR_SPAN = 5.0


@dataclass(frozen=True)
class Indicator:
    """One preset: the kernel's time constants (seconds) and where they come from."""

    name: str
    tau_rise: float
    tau_decay: float
    reference: str

    @property
    def decay_range(self) -> tuple[float, float]:
        """Decays (seconds) an estimate for this indicator may take: ``tau_decay`` / or x
        :data:`PRIOR_SPAN`.

        Examples
        --------
        >>> indicator_kinetics("GCaMP6s").decay_range
        (0.36, 9.0)
        """
        return (self.tau_decay / PRIOR_SPAN, self.tau_decay * PRIOR_SPAN)

    def at_bound(self, tau_decay: float) -> bool:
        """Whether a decay held within :attr:`decay_range` stopped at one of its ends: the data
        and the indicator disagree (a wrong name, or a recording the estimator misreads).

        Examples
        --------
        >>> ind = indicator_kinetics("GCaMP6s")
        >>> ind.at_bound(0.36), ind.at_bound(1.2)
        (True, False)
        """
        lo, hi = self.decay_range
        return not lo * (1 + 1e-9) < tau_decay < hi * (1 - 1e-9)


#: Presets by canonical name (look them up with :func:`indicator_kinetics`, which also takes
#: other spellings such as ``"gcamp8f"`` or ``"OGB1"``).
INDICATORS: dict[str, Indicator] = {
    ind.name: ind
    for ind in (
        Indicator(
            "GCaMP6f",
            0.1,
            0.6,
            "Chen et al. (2013), Nature 499, 295-300. https://doi.org/10.1038/nature12354",
        ),
        Indicator(
            "GCaMP6m",
            0.15,
            0.9,
            "Chen et al. (2013), Nature 499, 295-300. https://doi.org/10.1038/nature12354",
        ),
        Indicator(
            "GCaMP6s",
            0.4,
            1.8,
            "Chen et al. (2013), Nature 499, 295-300. https://doi.org/10.1038/nature12354",
        ),
        Indicator(
            "jGCaMP8f",
            0.05,
            0.3,
            "Zhang et al. (2023), Nature 615, 884-891. https://doi.org/10.1038/s41586-023-05828-9",
        ),
        Indicator(
            "OGB-1",
            0.05,
            1.5,
            "Stosiek et al. (2003), PNAS 100, 7319-7324. https://doi.org/10.1073/pnas.1232232100",
        ),
    )
}


def _key(name: str) -> str:
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return key[1:] if key.startswith("jgcamp") else key


_BY_KEY = {_key(name): ind for name, ind in INDICATORS.items()}


def indicator_kinetics(name: str) -> Indicator:
    """The preset for an indicator name (case, ``j`` prefix and punctuation ignored).

    Parameters
    ----------
    name : str
        E.g. ``"GCaMP6s"``, ``"gcamp6s"``, ``"jGCaMP8f"``, ``"GCaMP8f"``, ``"OGB-1"``.

    Returns
    -------
    Indicator
        ``name`` (canonical), ``tau_rise``, ``tau_decay`` (seconds) and ``reference``.

    Raises
    ------
    ValueError
        For a name without a preset; the message lists the presets.

    Examples
    --------
    >>> ind = indicator_kinetics("gcamp6s")
    >>> ind.name, ind.tau_rise, ind.tau_decay
    ('GCaMP6s', 0.4, 1.8)
    """
    if not isinstance(name, str):
        raise ValueError(f"indicator must be a name such as 'GCaMP6s'; got {name!r}")
    ind = _BY_KEY.get(_key(name))
    if ind is None:
        raise ValueError(
            f"no kinetics preset for indicator {name!r}; presets: {', '.join(INDICATORS)} "
            "(or give tau_rise and tau_decay, or let them be estimated from the data)"
        )
    return ind


def indicator_record(name: str) -> dict[str, object]:
    """What ``run.json`` records of a named indicator: ``{"indicator": {name, tau_rise, ...}}``.

    ``used_as`` says how the run used it: the prior of the estimate, its decay held within
    ``decay_range_s``.

    Examples
    --------
    >>> rec = indicator_record("OGB1")["indicator"]
    >>> rec["name"], rec["decay_range_s"]
    ('OGB-1', [0.3, 7.5])
    """
    ind = indicator_kinetics(name)
    lo, hi = ind.decay_range
    return {
        "indicator": {
            "name": ind.name,
            "tau_rise": ind.tau_rise,
            "tau_decay": ind.tau_decay,
            "reference": ind.reference,
            "used_as": "prior: kinetics estimated from the data, the decay within decay_range_s",
            "decay_range_s": [lo, hi],
        }
    }
