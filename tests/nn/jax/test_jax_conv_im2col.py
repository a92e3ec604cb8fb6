"""The portable (export) convolution equals lax.conv_general_dilated on random configurations."""

from __future__ import annotations

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from illia_export.nn.jax import conv2d_im2col


@st.composite
def configs(draw):
    groups = draw(st.sampled_from([1, 2]))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    return groups, cin, cout, (kh, kw), stride, padding, dilation


@settings(max_examples=12, deadline=None)
@given(configs(), st.integers(0, 2**31 - 1))
def test_im2col_matches_lax_conv(config, seed):
    groups, cin, cout, kernel, stride, padding, dilation = config
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, cin, 7, 6)).astype(np.float32)
    w = rng.standard_normal((cout, cin // groups, *kernel)).astype(np.float32)
    expected = jax.lax.conv_general_dilated(
        x, w, stride, [(p, p) for p in padding], rhs_dilation=dilation,
        dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups,
    )
    got = conv2d_im2col(x, w, stride, padding, dilation, groups)
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)
