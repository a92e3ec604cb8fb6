"""Every random draw of a PyTorch model becomes a standard-normal input (capture v2).

While a model runs under :class:`DrawMode`, torch's random functions are intercepted (a
``TorchFunctionMode``): each draw takes the next standard-normal tensor ``z`` instead of using
torch's generator, and the graph transforms it into the distribution the call asked for:

==========================================  =========================================
call                                        in-graph transform of ``z``
==========================================  =========================================
``randn``, ``randn_like``                   ``z``                      (``affine``)
``normal``, ``Tensor.normal_``              ``mean + std * z``         (``affine``)
``rand``, ``rand_like``, ``Tensor.uniform_`` ``low + (high-low) Φ(z)`` (``uniform``)
``bernoulli``, ``Tensor.bernoulli_``        ``Φ(z) < p``               (``bernoulli``)
``F.dropout`` / ``dropout1d/2d/3d``,        mask ``Φ(z) >= p``, / (1-p) (``dropout``)
``torch.dropout`` / ``feature_dropout`` (+_)
``F.scaled_dot_product_attention``          reference maths, mask on the weights (``dropout``)
(``dropout_p > 0``)
``Tensor.exponential_``, ``F.gumbel_softmax``, ``-log Φ(z)``, Gumbel ``-log(-log Φ(z))``,
``torch.multinomial``                       Gumbel-max / top-k (``uniform``; :mod:`.transforms`)
==========================================  =========================================

Random functions outside this table (``randint``, ``poisson``, ``geometric_``, ...) raise an
:class:`ExportError` naming the module that called them, the op and what to do. In a vectorized capture the mode also
runs ``F.linear`` / ``F.conv1d`` / ``F.conv2d`` with weights that carry a leading sample axis
(the result of ``mu + sigma * z`` with ``z: [S, *shape]``) as one batched product per sample
block of the folded batch, which is what lets foreign Bayesian layers vectorize unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from illia_export.errors import ExportError
from illia_export.exporters.torch import transforms as tf

_SQRT_HALF = 1.0 / math.sqrt(2.0)

#: Random functions the mode refuses (a clear error instead of a draw baked into the graph).
_UNSUPPORTED = {
    torch.randint: "randint",
    torch.randint_like: "randint_like",
    torch.randperm: "randperm",
    torch.poisson: "poisson",
    torch.Tensor.random_: "Tensor.random_",
    torch.Tensor.geometric_: "Tensor.geometric_",
    torch.Tensor.log_normal_: "Tensor.log_normal_",
    torch.Tensor.cauchy_: "Tensor.cauchy_",
    torch.rrelu: "rrelu",
    F.rrelu: "rrelu",
}


def phi(z: torch.Tensor) -> torch.Tensor:
    """The standard normal CDF Φ(z): a standard-normal input becomes a uniform on (0, 1)."""
    return 0.5 * (1.0 + torch.erf(z * _SQRT_HALF))


@dataclass(frozen=True)
class DrawCall:
    """One intercepted call: which transform it needs and the shape of its standard-normal input."""

    op: str
    transform: str  # manifest NOISE_TRANSFORMS
    kind: str  # manifest NOISE_KINDS: "dropout" for dropout masks, "draw" otherwise
    shape: tuple[int, ...]
    target: Any = None  # the tensor an in-place draw fills (or None)
    like: Any = None  # the tensor a *_like draw takes its shape from (or None)
    p: float | None = None  # the drop probability of a dropout-like draw (manifest ``dropout``)


#: torch's own dropout functions (``_VF``): (input, p, train); the feature variants mask channels.
_TORCH_DROPOUT = {
    torch.dropout: False,
    torch.dropout_: False,
    torch.feature_dropout: True,
    torch.feature_dropout_: True,
    torch.alpha_dropout: False,
    torch.alpha_dropout_: False,
    torch.feature_alpha_dropout: True,
    torch.feature_alpha_dropout_: True,
}
_ALPHA = (F.alpha_dropout, F.feature_alpha_dropout, torch.alpha_dropout, torch.alpha_dropout_,
          torch.feature_alpha_dropout, torch.feature_alpha_dropout_)


def _size_arg(args: Sequence[Any], kwargs: dict) -> tuple[int, ...]:
    size = kwargs.get("size")
    if size is None:
        size = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else args
    return tuple(size)


def _feature_mask_shape(x: torch.Tensor, spatial: int) -> tuple[int, ...]:
    """Dropout1d/2d/3d zero whole channels: one mask value per (example, channel)."""
    lead = x.shape[: x.dim() - spatial]
    return (*lead, *([1] * spatial))


def classify(func: Callable, args: Sequence[Any], kwargs: dict) -> DrawCall | None:
    """The :class:`DrawCall` of a torch call, None when the call draws nothing.

    Raises:
        ExportError: the call draws from a distribution the mode cannot express (the caller adds
            the module's path).
    """
    if func in (torch.randn, torch.rand):
        name = "randn" if func is torch.randn else "rand"
        return DrawCall(name, "affine" if name == "randn" else "uniform", "draw", _size_arg(args, kwargs))
    if func in (torch.randn_like, torch.rand_like):
        name = "randn_like" if func is torch.randn_like else "rand_like"
        return DrawCall(
            name, "affine" if name == "randn_like" else "uniform", "draw", tuple(args[0].shape), like=args[0]
        )
    if func is torch.normal:
        mean = args[0] if args else kwargs.get("mean")
        std = args[1] if len(args) > 1 else kwargs.get("std", 1.0)
        if isinstance(mean, torch.Tensor) or isinstance(std, torch.Tensor):
            shape = torch.broadcast_shapes(
                tuple(mean.shape) if isinstance(mean, torch.Tensor) else (),
                tuple(std.shape) if isinstance(std, torch.Tensor) else (),
            )
        else:
            shape = tuple(args[2] if len(args) > 2 else kwargs["size"])
        return DrawCall("normal", "affine", "draw", tuple(shape))
    if func is torch.Tensor.normal_:
        return DrawCall("Tensor.normal_", "affine", "draw", tuple(args[0].shape), args[0])
    if func is torch.Tensor.uniform_:
        return DrawCall("Tensor.uniform_", "uniform", "draw", tuple(args[0].shape), args[0])
    if func in (torch.bernoulli, torch.Tensor.bernoulli_, torch.Tensor.bernoulli):
        inplace = func is torch.Tensor.bernoulli_
        name = "Tensor.bernoulli_" if inplace else "bernoulli"
        prob = args[1] if len(args) > 1 and not isinstance(args[1], torch.Generator) else kwargs.get("p")
        prob = 0.5 if prob is None and inplace else prob
        drop = round(1.0 - float(prob), 12) if isinstance(prob, (int, float)) else None
        return DrawCall(name, "bernoulli", "draw", tuple(args[0].shape), args[0] if inplace else None, p=drop)
    if func in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout) or (
        func in _TORCH_DROPOUT
    ):
        p, training = _dropout_args(args, kwargs)
        if not training or p == 0.0:
            return None
        x = args[0]
        spatial = {F.dropout1d: 1, F.dropout2d: 2, F.dropout3d: 3}.get(func)
        if func is F.feature_alpha_dropout or _TORCH_DROPOUT.get(func):
            spatial = x.dim() - 2
        shape = tuple(x.shape) if spatial is None else _feature_mask_shape(x, spatial)
        name = f"torch.{func.__name__}" if func in _TORCH_DROPOUT else func.__name__
        return DrawCall(name, "dropout", "dropout", shape, p=p)
    if func is F.scaled_dot_product_attention:
        bound = tf.sdpa_args(args, kwargs)
        p = float(bound["dropout_p"])
        if not p:
            return None
        return DrawCall("scaled_dot_product_attention", "dropout", "dropout", tf.sdpa_mask_shape(bound), p=p)
    if func is torch.Tensor.exponential_:
        return DrawCall("Tensor.exponential_", "uniform", "draw", tuple(args[0].shape), args[0])
    if func is F.gumbel_softmax:
        return DrawCall("gumbel_softmax", "uniform", "draw", tuple(tf.gumbel_softmax_args(args, kwargs)["logits"].shape))
    if func in (torch.multinomial, torch.Tensor.multinomial):
        weights, num, replacement = tf.multinomial_args(args, kwargs)
        if not replacement and num > weights.shape[-1]:
            return None  # torch raises its own error
        return DrawCall("multinomial", "uniform", "draw", tf.multinomial_shape(weights, num, replacement))
    if func in _UNSUPPORTED:
        raise ExportError(
            f"draws from torch.{_UNSUPPORTED[func]}, which illia-export cannot turn into a standard-normal noise "
            "input (supported: randn, rand, normal, uniform_, normal_, bernoulli, exponential_, multinomial, "
            "dropout, attention dropout, gumbel_softmax). Draw with one of those (e.g. a uniform turned into the "
            "distribution you need), or keep this module out of the sampled modules (mc_dropout=[...] without it)"
        )
    return None


def _dropout_args(args: Sequence[Any], kwargs: dict) -> tuple[float, bool]:
    p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
    training = args[2] if len(args) > 2 else kwargs.get("training", kwargs.get("train", True))
    return float(p), bool(training)


def apply(call: DrawCall, func: Callable, args: Sequence[Any], kwargs: dict, z: torch.Tensor) -> Any:
    """The value the intercepted call returns, computed from the standard-normal input `z`."""
    if call.op in ("randn", "randn_like", "rand", "rand_like"):
        ref = args[0] if call.op.endswith("_like") else None
        dtype = kwargs.get("dtype") or (ref.dtype if ref is not None else torch.get_default_dtype())
        value = z if call.transform == "affine" else phi(z)
        return value.to(dtype)
    if call.op == "normal":
        mean = args[0] if args else kwargs.get("mean", 0.0)
        std = args[1] if len(args) > 1 else kwargs.get("std", 1.0)
        return mean + std * z
    if call.op == "Tensor.normal_":
        mean = args[1] if len(args) > 1 else kwargs.get("mean", 0.0)
        std = args[2] if len(args) > 2 else kwargs.get("std", 1.0)
        return _fill(call.target, mean + std * z)
    if call.op == "Tensor.uniform_":
        low = args[1] if len(args) > 1 else kwargs.get("from", 0.0)
        high = args[2] if len(args) > 2 else kwargs.get("to", 1.0)
        return _fill(call.target, low + (high - low) * phi(z))
    if call.op in ("bernoulli", "Tensor.bernoulli_"):
        src = args[0]
        p = args[1] if len(args) > 1 and not isinstance(args[1], torch.Generator) else kwargs.get("p")
        if call.op == "Tensor.bernoulli_":
            prob = 0.5 if p is None else p
        else:
            prob = src if p is None else p
        value = (phi(z) < prob).to(src.dtype)
        return _fill(call.target, value)
    if call.op == "scaled_dot_product_attention":
        return tf.sdpa(tf.sdpa_args(args, kwargs), z)
    if call.transform == "dropout":
        return _dropout(func, args, kwargs, z)
    if call.op == "Tensor.exponential_":
        return _fill(call.target, tf.exponential(args[0], args, kwargs, z))
    if call.op == "gumbel_softmax":
        return tf.gumbel_softmax(tf.gumbel_softmax_args(args, kwargs), z)
    if call.op == "multinomial":
        return tf.multinomial(*tf.multinomial_args(args, kwargs), z)
    raise AssertionError(f"no transform for {call.op}")


def _fill(target: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    """In-place draws return the drawn value and leave the target as it was.

    Writing into the target cannot be captured (``buf.data.normal_()`` fills an untracked
    alias, and a sampled value ``[S, ...]`` does not fit the target). Code that uses the return
    value (bayesian-torch: ``eps = self.eps_weight.data.normal_()``) is captured exactly; code
    that ignores it and reads the target later would lose the draw, which the exporter reports
    as an unused noise input (the family registry adapts such libraries, e.g. blitz).
    """
    del target
    return value


def _dropout(func: Callable, args: Sequence[Any], kwargs: dict, z: torch.Tensor) -> torch.Tensor:
    x = args[0]
    p, _ = _dropout_args(args, kwargs)
    keep = (phi(z) >= p).to(x.dtype)
    if func in _ALPHA:
        alpha = -1.7580993408473766  # -scale * alpha of SELU
        a = ((1.0 - p) * (1.0 + p * alpha**2)) ** -0.5
        b = -a * alpha * p
        return a * (x * keep + alpha * (1.0 - keep)) + b
    if p >= 1.0:
        return x * 0.0
    return x * keep / (1.0 - p)


# --------------------------------------------------------------------------- sampled weights
def _linear_sampled(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` with weights ``[S, out, in]`` on a sample-major folded batch ``[S*B, ..., in]``."""
    num_samples = w.shape[0]
    lead = x.shape[1:-1]
    xs = x.reshape(num_samples, -1, x.shape[-1])
    y = torch.bmm(xs, w.transpose(1, 2))
    if b is not None:
        y = y + (b.unsqueeze(1) if b.dim() == 2 else b)  # sampled [S, out] or shared [out]
    return y.reshape(-1, *lead, w.shape[1])


def _conv_sampled(func, args: Sequence[Any], kwargs: dict) -> torch.Tensor:
    """``F.conv1d/2d`` with weights carrying a sample axis, via im2col + batched matmul."""
    from illia_export.nn.torch.conv import conv2d_sampled

    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    bound = dict(defaults, **dict(zip(names, args)), **kwargs)
    x, w, b = bound["input"], bound["weight"], bound["bias"]
    if isinstance(bound["padding"], str):
        raise ExportError("a convolution with sampled weights and padding='same'/'valid' is not supported")
    num_samples, out_ch = w.shape[0], w.shape[1]
    if b is None:
        b = w.new_zeros(num_samples, out_ch)
    elif b.dim() == 1:
        b = b.unsqueeze(0).expand(num_samples, out_ch)

    def pair(v, n):
        v = list(v) if isinstance(v, (tuple, list)) else [v] * n
        return v

    if func is F.conv1d:
        out = conv2d_sampled(
            x.unsqueeze(2),
            w.unsqueeze(3),
            b,
            [1, w.shape[-1]],
            [1, pair(bound["stride"], 1)[0]],
            [0, pair(bound["padding"], 1)[0]],
            [1, pair(bound["dilation"], 1)[0]],
            int(bound["groups"]),
        )
        return out.squeeze(2)
    return conv2d_sampled(
        x,
        w,
        b,
        list(w.shape[-2:]),
        pair(bound["stride"], 2),
        pair(bound["padding"], 2),
        pair(bound["dilation"], 2),
        int(bound["groups"]),
    )


_WEIGHT_RANK = {F.linear: 2, F.conv1d: 3, F.conv2d: 4}


# ------------------------------------------------------------------------------ the modes
class ModuleTracker:
    """Knows which module is running (global forward hooks), to name draws after their module."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.paths = {id(m): p for p, m in model.named_modules()}
        self.stack: list[str] = []
        self._handles: list[Any] = []

    def __enter__(self) -> ModuleTracker:
        from torch.nn.modules import module as nn_module

        def pre(module, _inputs):
            self.stack.append(self.paths.get(id(module), self.stack[-1] if self.stack else ""))

        def post(module, _inputs, _output):
            if self.stack:
                self.stack.pop()

        self._handles = [
            nn_module.register_module_forward_pre_hook(pre),
            nn_module.register_module_forward_hook(post, always_call=True),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else ""


@dataclass
class RecordedDraw:
    """A draw seen while recording: where it happened and what it needs."""

    module: str
    call: DrawCall


class DrawMode(TorchFunctionMode):
    """Intercepts random draws (see the module docstring).

    Args:
        feed: the standard-normal tensors to use, one per draw in call order; or None to
            *record*: draws then come from `generator` and are listed in :attr:`recorded`.
        reshape: per draw, an optional function turning the fed tensor into the shape the
            call needs (a vectorized capture folds ``[S, B, ...]`` per-example noise to
            ``[S*B, ...]``).
        sampled_weights: run F.linear / F.conv with a leading sample axis on the weight as
            batched products (vectorized captures).
        tracker: names the module of each recorded draw.
    """

    def __init__(
        self,
        feed: Sequence[torch.Tensor] | None = None,
        reshape: Sequence[Callable[[torch.Tensor], torch.Tensor] | None] | None = None,
        sampled_weights: bool = False,
        tracker: ModuleTracker | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.feed = list(feed) if feed is not None else None
        self.reshape = list(reshape) if reshape is not None else None
        self.sampled_weights = sampled_weights
        self.tracker = tracker
        self.generator = generator
        self.recorded: list[RecordedDraw] = []
        self.used = 0

    def _inside(self, func, args: Sequence[Any], kwargs: dict) -> Any:
        """Run a Python-level torch function with this mode active *inside* it.

        A mode handles a call with itself switched off, so the draws inside
        ``F.multi_head_attention_forward`` (its attention dropout: ``F.dropout`` or SDPA) would
        reach torch's generator unseen. The function re-dispatches on ``has_torch_function``,
        so that check is switched off in ``torch.nn.functional`` for the call (the only
        function of that module that uses it is this one's guard), and the mode re-entered.
        """
        saved = F.has_torch_function
        F.has_torch_function = lambda *_: False
        try:
            with self:
                return func(*args, **kwargs)
        finally:
            F.has_torch_function = saved

    def _where(self) -> str:
        path = self.tracker.current if self.tracker is not None else ""
        return f"module {path!r}" if path else "the model's forward"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.multi_head_attention_forward:
            return self._inside(func, args, kwargs)
        if self.sampled_weights and func in _WEIGHT_RANK:
            w = args[1] if len(args) > 1 else kwargs.get("weight")
            if isinstance(w, torch.Tensor) and w.dim() == _WEIGHT_RANK[func] + 1:
                if func is F.linear:
                    b = args[2] if len(args) > 2 else kwargs.get("bias")
                    return _linear_sampled(args[0], w, b)
                return _conv_sampled(func, args, kwargs)
        try:
            call = classify(func, args, kwargs)
        except ExportError as exc:
            raise ExportError(f"{self._where()} {exc}") from None
        if call is None:
            return func(*args, **kwargs)
        if self.feed is None:
            z = torch.randn(call.shape, generator=self.generator)
            self.recorded.append(RecordedDraw(self.tracker.current if self.tracker else "", call))
        else:
            if self.used >= len(self.feed):
                raise ExportError(
                    f"{self._where()} made more random draws than when it was first run "
                    f"({len(self.feed)}): the number of draws depends on the data, which a graph "
                    "with a fixed list of noise inputs cannot express"
                )
            z = self.feed[self.used]
            fix = self.reshape[self.used] if self.reshape is not None else None
            if fix is not None:
                z = fix(z)
            self.used += 1
        ref = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if ref is not None and z.device != ref.device:
            z = z.to(ref.device)
        return apply(call, func, args, kwargs, z)
