"""Regression with a likelihood: the resolver of the export arguments and the mixture summaries
of ``Prediction`` (on synthetic per-sample outputs, checked against closed forms, scipy and
brute-force sampling)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from illia_export.artifact.manifest import SCALE_PARAMETERIZATIONS, Likelihood, Manifest, TensorSpec
from illia_export.errors import ExportError, ShapeError, TaskError
from illia_export.exporters.likelihood import resolve_likelihood
from illia_export.runtime.prediction import Prediction

stats = pytest.importorskip("scipy.stats")

# ------------------------------------------------------------------------------------ resolver


def test_resolver_positional_outputs_need_a_scale_kind():
    lk = resolve_likelihood("gaussian", "log_variance", ["output_0", "output_1"], "regression")
    assert (lk.name, lk.mean, lk.scale, lk.scale_kind, lk.df) == (
        "gaussian",
        "output_0",
        "output_1",
        "log_variance",
        None,
    )
    with pytest.raises(ExportError, match="which parameterization.*scale="):
        resolve_likelihood("gaussian", None, ["output_0", "output_1"], "regression")


@pytest.mark.parametrize("kind", SCALE_PARAMETERIZATIONS)
def test_resolver_infers_the_scale_from_named_outputs(kind):
    lk = resolve_likelihood("laplace", None, [kind, "mean"], "regression")
    assert (lk.mean, lk.scale, lk.scale_kind) == ("mean", kind, kind)
    # an explicit scale that agrees is fine, one that does not is refused
    assert resolve_likelihood("laplace", kind, ["mean", kind], "regression").scale == kind
    other = next(k for k in SCALE_PARAMETERIZATIONS if k != kind)
    with pytest.raises(ExportError, match=f"scale={other!r}"):
        resolve_likelihood("laplace", other, ["mean", kind], "regression")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("poisson", "std", ["a", "b"], "regression"), "unknown likelihood 'poisson'"),
        (("gaussian", "std", ["a", "b"], "classification"), "task='regression'"),
        (("gaussian", "std", ["a"], "regression"), "two outputs"),
        (("gaussian", "sigma", ["a", "b"], "regression"), "unknown scale parameterization 'sigma'"),
        ((None, "std", ["a", "b"], "regression"), "needs a likelihood"),
        (("gaussian", None, ["mean", "variance", "std"], "regression"), "several scale names"),
        (("gaussian", "std", ["y", "mean"], "regression"), "'mean' that is not first"),
    ],
)
def test_resolver_errors_are_clear(args, message):
    with pytest.raises(ExportError, match=message):
        resolve_likelihood(*args)


def test_resolver_degrees_of_freedom():
    assert resolve_likelihood("student_t", "std", ["m", "s"], "regression", df=3).df == 3.0
    with pytest.raises(ExportError, match="needs the degrees of freedom"):
        resolve_likelihood("student_t", "std", ["m", "s"], "regression")
    for bad in (0, -1, math.inf, math.nan, "x"):
        with pytest.raises(ExportError, match="df must be"):
            resolve_likelihood("student_t", "std", ["m", "s"], "regression", df=bad)
    with pytest.raises(ExportError, match="takes none"):
        resolve_likelihood("gaussian", "std", ["m", "s"], "regression", df=4)


def test_resolver_checks_shapes_and_none_means_none():
    assert resolve_likelihood(None, None, ["y"], "raw") is None
    with pytest.raises(ExportError, match="one scale per mean"):
        resolve_likelihood(
            "gaussian", "std", ["m", "s"], "regression", output_shapes=[["batch", 1], ["batch", 2]]
        )


def test_manifest_round_trips_the_likelihood():
    m = Manifest(
        format="onnx",
        source="jax",
        inputs=[TensorSpec("input", ["batch", 3])],
        noise=[],
        outputs=[TensorSpec("mean", ["batch", 1]), TensorSpec("log_variance", ["batch", 1])],
        sample_axis=None,
        task="regression",
        likelihood=resolve_likelihood("student_t", None, ["mean", "log_variance"], "regression", df=5),
    )
    back = Manifest.from_json(m.to_json())
    assert (
        back.likelihood
        == m.likelihood
        == Likelihood("student_t", "mean", "log_variance", "log_variance", 5.0)
    )


# ---------------------------------------------------------------------------------- prediction

S, B = 16, 5


def _prediction(name="gaussian", kind="log_variance", df=None, seed=0, s=S, b=B, d=1):
    rng = np.random.default_rng(seed)
    loc = rng.normal(0.0, 1.0, (s, b, d)).astype(np.float32)
    scale = rng.uniform(0.3, 1.5, (s, b, d))
    raw = {
        "std": scale,
        "variance": scale**2,
        "log_variance": np.log(scale**2),
        "softplus_std": np.log(np.expm1(scale)),
    }[kind].astype(np.float32)
    # the scale parameter the runtime sees, after the float32 round trip of the raw output
    back = {
        "std": lambda r: r.astype(np.float64),
        "variance": lambda r: np.sqrt(r.astype(np.float64)),
        "log_variance": lambda r: np.exp(0.5 * r.astype(np.float64)),
        "softplus_std": lambda r: np.log1p(np.exp(r.astype(np.float64))),
    }[kind](raw)
    pred = Prediction(
        {"mean": loc, kind: raw}, task="regression", likelihood=Likelihood(name, "mean", kind, kind, df)
    )
    return pred, loc.astype(np.float64), back


@pytest.mark.parametrize("kind", SCALE_PARAMETERIZATIONS)
@pytest.mark.parametrize(
    ("name", "df", "factor"), [("gaussian", None, 1.0), ("laplace", None, 2.0), ("student_t", 5.0, 5 / 3)]
)
def test_variances_follow_the_closed_forms(kind, name, df, factor):
    pred, loc, scale = _prediction(name, kind, df)
    np.testing.assert_allclose(pred.predicted_scale, scale, rtol=1e-12)
    aleatoric = (factor * scale**2).mean(axis=0)
    epistemic = ((loc - loc.mean(axis=0)) ** 2).mean(axis=0)
    np.testing.assert_allclose(pred.aleatoric_variance, aleatoric, rtol=1e-12)
    np.testing.assert_allclose(pred.epistemic_variance, epistemic, rtol=1e-10)
    np.testing.assert_allclose(pred.predictive_variance, aleatoric + epistemic, rtol=1e-10)
    np.testing.assert_allclose(pred.std, np.sqrt(aleatoric + epistemic), rtol=1e-10)
    np.testing.assert_allclose(pred.mean, loc.mean(axis=0), rtol=1e-12)


def test_single_component_quantiles_are_scipy_ppf():
    pred, loc, scale = _prediction("student_t", "std", df=3.0, s=1)
    q = [0.01, 0.25, 0.5, 0.9]
    want = stats.t(3.0).ppf(np.array(q)[:, None, None]) * scale[0] + loc[0]
    np.testing.assert_allclose(pred.quantiles(q), want, atol=1e-8)
    assert pred.quantiles(0.5).shape == (B, 1)
    assert np.all(np.isneginf(pred.quantiles(0.0))) and np.all(np.isposinf(pred.quantiles(1.0)))


@pytest.mark.parametrize(("name", "df"), [("gaussian", None), ("laplace", None), ("student_t", 4.0)])
def test_mixture_quantiles_invert_the_mixture_cdf_and_match_brute_force_sampling(name, df):
    pred, loc, scale = _prediction(name, "std", df)
    levels = np.array([0.05, 0.5, 0.8, 0.95])
    got = pred.quantiles(levels)
    dist = {"gaussian": stats.norm(), "laplace": stats.laplace(), "student_t": stats.t(df)}[name]
    # exact: the mixture CDF at the returned quantile is the level
    cdf = dist.cdf((got[:, None] - loc[None]) / scale[None]).mean(axis=1)
    np.testing.assert_allclose(cdf, np.broadcast_to(levels[:, None, None], cdf.shape), atol=1e-9)
    # brute force: quantiles of 400k draws from the mixture (pick a component, then draw)
    rng = np.random.default_rng(1)
    n = 400_000
    comp = rng.integers(0, S, size=n)
    draws = loc[comp] + scale[comp] * dist.rvs(size=(n, B, 1), random_state=rng)
    empirical = np.quantile(draws, levels, axis=0)
    # standard error of a sample quantile: sqrt(q(1-q)/n) / density; the density of these
    # mixtures at the quantiles is > 0.05, so 5 SE < 0.05
    density = (dist.pdf((got[:, None] - loc[None]) / scale[None]) / scale[None]).mean(axis=1)
    se = np.sqrt(levels * (1 - levels) / n)[:, None, None] / density
    assert np.all(np.abs(empirical - got) < 5 * se + 1e-3), np.max(np.abs(empirical - got) / se)
    lo, hi = pred.interval(0.9)
    np.testing.assert_allclose(lo, got[0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(hi, got[3], rtol=1e-9, atol=1e-9)
    # the mixture interval is wider than the interval of the means alone (aleatoric noise)
    assert np.all(hi - lo > np.quantile(loc, 0.95, axis=0) - np.quantile(loc, 0.05, axis=0))


@pytest.mark.parametrize(("name", "df"), [("gaussian", None), ("laplace", None), ("student_t", 2.5)])
def test_log_likelihood_is_the_log_of_the_mixture_density(name, df):
    pred, loc, scale = _prediction(name, "variance", df, d=2)
    y = np.random.default_rng(3).normal(size=(B, 2))
    dist = {"gaussian": stats.norm(), "laplace": stats.laplace(), "student_t": stats.t(df)}[name]
    per_sample = (dist.pdf((y[None] - loc) / scale) / scale).prod(axis=-1)  # [S, B]: joint over the 2 outputs
    want = np.log(per_sample.mean(axis=0))
    np.testing.assert_allclose(pred.log_likelihood(y), want, rtol=1e-10)
    with pytest.raises(ShapeError, match="targets must have shape"):
        pred.log_likelihood(np.zeros((B, 3)))


def test_log_likelihood_is_stable_far_in_the_tails():
    pred, loc, scale = _prediction("gaussian", "std")
    y = np.full((B, 1), 1e3)
    ll = pred.log_likelihood(y)
    assert np.all(np.isfinite(ll)) and np.all(ll < -1e4)


def test_student_t_with_df_at_most_2_has_infinite_variance_and_strict_json():
    pred, loc, _ = _prediction("student_t", "std", df=2.0)
    assert np.all(np.isposinf(pred.aleatoric_variance)) and np.all(np.isposinf(pred.std))
    lo, hi = pred.interval(0.9)
    assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    d = json.loads(pred.to_json(), parse_constant=refuse)
    assert d["std"][0] == [None] and d["likelihood"]["df"] == 2.0
    assert "epistemic_variance" in d and "interval_90_lower" in d


def test_without_likelihood_regression_keeps_sample_summaries():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(S, B, 1)).astype(np.float32)
    pred = Prediction({"y": samples, "other": samples}, task="regression")
    np.testing.assert_allclose(pred.std, samples.std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(pred.quantiles(0.2), np.quantile(samples, 0.2, axis=0))
    for what in ("aleatoric_variance", "epistemic_variance", "predictive_variance"):
        with pytest.raises(TaskError, match="no likelihood"):
            getattr(pred, what)
    with pytest.raises(TaskError, match="no likelihood"):
        pred.log_likelihood(samples[0])
    # a likelihood with another task (e.g. task='raw' passed to predict) is ignored
    lk = Likelihood("gaussian", "y", "other", "std")
    raw = Prediction({"y": samples, "other": np.abs(samples)}, task="raw", likelihood=lk)
    np.testing.assert_allclose(raw.std, samples.std(axis=0), rtol=1e-6)
    with pytest.raises(TaskError, match="task is 'raw'"):
        _ = raw.aleatoric_variance


def test_prediction_checks_the_likelihood_outputs():
    samples = np.zeros((2, 3, 1), np.float32)
    with pytest.raises(TaskError, match="'sigma' is not among"):
        Prediction({"y": samples}, task="regression", likelihood=Likelihood("gaussian", "y", "sigma", "std"))
    with pytest.raises(ShapeError, match="has shape"):
        Prediction(
            {"y": samples, "s": np.ones((2, 3, 2), np.float32)},
            task="regression",
            likelihood=Likelihood("gaussian", "y", "s", "std"),
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "student_t", "df": None}, "finite df > 0"),
        ({"name": "student_t", "df": float("inf")}, "df must be a finite number"),
        ({"name": "gaussian", "df": 3.0}, "student_t likelihood only"),
        ({"scale_kind": "sigma"}, "unknown scale parameterization"),
        ({"mean": ""}, "non-empty string"),
        ({"scale": "missing"}, "does not have"),
    ],
)
def test_manifest_refuses_a_malformed_likelihood(fields, message):
    from illia_export.errors import ManifestError

    m = Manifest(
        format="onnx",
        source="jax",
        inputs=[TensorSpec("input", ["batch", 3])],
        noise=[],
        outputs=[TensorSpec("mean", ["batch", 1]), TensorSpec("std", ["batch", 1])],
        sample_axis=None,
        task="regression",
        likelihood=Likelihood("gaussian", "mean", "std", "std"),
    )
    obj = m.to_dict()
    obj["likelihood"].update(fields)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(obj)
