import numpy as np
import pytest

from nnfit.validate import as_float_array, check_int, check_real


def test_check_real_ranges():
    assert check_real("fs", 30, low=0, low_inclusive=False) == 30.0
    with pytest.raises(ValueError, match=r"fs must be > 0; got 0"):
        check_real("fs", 0, low=0, low_inclusive=False)
    with pytest.raises(ValueError, match=r"lam must be >= 0"):
        check_real("lam", -0.1, low=0)
    with pytest.raises(ValueError, match=r"tau must be finite"):
        check_real("tau", float("inf"))
    with pytest.raises(ValueError, match=r"must be a real number"):
        check_real("tau", "0.5")
    with pytest.raises(ValueError, match=r"must be a real number"):
        check_real("tau", True)


def test_check_int():
    assert check_int("max_iters", np.int64(3), low=1) == 3
    with pytest.raises(ValueError, match=r"max_iters must be >= 1; got 0"):
        check_int("max_iters", 0, low=1)
    with pytest.raises(ValueError, match=r"must be an integer"):
        check_int("max_iters", 2.5)


def test_as_float_array_rejects_bad_arrays():
    with pytest.raises(ValueError, match=r"traces must be 1-D or 2-D; got 3-D"):
        as_float_array("traces", np.zeros((2, 2, 2)), ndim=(1, 2))
    with pytest.raises(ValueError, match=r"traces is empty"):
        as_float_array("traces", np.zeros((0,)))
    with pytest.raises(ValueError, match=r"real numeric array"):
        as_float_array("traces", np.array(["a"]))
    with pytest.raises(ValueError, match=r"real numeric array"):
        as_float_array("traces", np.array([1 + 2j]))
    with pytest.raises(ValueError, match=r"real numeric array"):
        as_float_array("traces", np.array([True]))
    with pytest.raises(ValueError, match=r"2 NaN/Inf value\(s\), first at index \(0, 1\)"):
        as_float_array("traces", [[0.0, np.nan], [np.inf, 1.0]])
