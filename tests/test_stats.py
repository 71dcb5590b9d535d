"""Paired statistics: intervals from per-seed differences, Holm's correction."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from vlmlab.stats import holm, paired


def test_paired_interval_uses_the_per_seed_differences():
    a = pd.Series([60.0, 70.0, 80.0, 65.0, 75.0], index=range(5))
    b = a - pd.Series([2.0, 3.0, 1.0, 2.0, 2.0], index=range(5))  # a large seed spread, a steady difference
    r = paired(a, b)
    assert r.mean == pytest.approx(2.0) and r.n == 5
    # sd of the differences 0.707, t(0.975, 4) = 2.776: half-width 0.878
    assert r.hi - r.mean == pytest.approx(2.776 * 0.7071 / math.sqrt(5), abs=1e-3)
    assert r.excludes_zero and r.p < 0.01
    # unpaired, the seeds' spread (sd 7.9) would swamp the 2-point difference
    assert not paired(a, b.sample(frac=1, random_state=1).set_axis(b.index)).excludes_zero


def test_paired_keeps_only_common_seeds_and_says_when_there_is_one():
    r = paired(pd.Series([1.0, 2.0], index=[0, 1]), pd.Series([0.0, 5.0], index=[0, 7]))
    assert r.n == 1 and r.mean == 1.0 and math.isnan(r.lo) and "one seed" in str(r)
    with pytest.raises(ValueError, match="same seeds"):
        paired(pd.Series([1.0], index=[0]), pd.Series([1.0], index=[1]))


def test_holm_steps_down_and_keeps_order():
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": float("nan")})
    assert adj["a"] == pytest.approx(0.03) and adj["c"] == pytest.approx(0.06) and adj["b"] == pytest.approx(0.06)
    assert math.isnan(adj["d"])
