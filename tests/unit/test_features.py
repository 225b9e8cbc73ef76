"""RandomFourierFeatures' optional linear part (``linear``): layout, width, state round trip."""

from __future__ import annotations

import numpy as np
import pytest

from ocld.learners.features import RandomFourierFeatures
from ocld.learners.registry import component_from_state


def test_linear_part_appends_scaled_inputs_and_a_bias_column():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 4))
    plain = RandomFourierFeatures(n_components=16, scale=0.5, seed=2)
    lin = RandomFourierFeatures(n_components=16, scale=0.5, seed=2, linear=0.1)
    Zp, Zl = plain.transform(X), lin.transform(X)
    assert Zp.shape == (50, 16) and plain.n_features_out == 16
    assert Zl.shape == (50, 16 + 4 + 1) and lin.n_features_out == 21
    np.testing.assert_array_equal(Zl[:, :16], Zp)  # the Fourier part is unchanged
    np.testing.assert_allclose(Zl[:, 16:20], 0.1 * X, rtol=0, atol=0)
    np.testing.assert_array_equal(Zl[:, 20], np.full(50, 0.1))
    np.testing.assert_array_equal(lin.learn_transform(X), Zl)  # no running statistics


def test_linear_state_round_trip_is_bitwise_and_keeps_the_width():
    X = np.random.default_rng(4).normal(size=(20, 3))
    fm = RandomFourierFeatures(n_components=8, seed=5, linear=0.3)
    Z = fm.transform(X)
    back = component_from_state(fm.to_state())
    assert isinstance(back, RandomFourierFeatures) and back.linear == 0.3
    assert back.n_features_out == 8 + 3 + 1
    np.testing.assert_array_equal(back.transform(X), Z)


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_linear_must_be_non_negative(bad):
    with pytest.raises(ValueError, match="linear must be >= 0"):
        RandomFourierFeatures(linear=bad)
