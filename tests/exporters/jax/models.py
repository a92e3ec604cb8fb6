"""Tiny Flax-NNX models for the JAX export tests (also importable as CLI factories)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from illia_export.nn.jax import LSTM, BatchEnsembleLinear, Conv1d, Conv2d, Linear


class MLP(nnx.Module):
    """Linear -> ReLU -> ... -> Linear."""

    def __init__(self, sizes=(12, 16, 5), seed: int = 0):
        r = nnx.Rngs(params=seed, sample=seed + 1)
        self.layers = nnx.List([Linear(a, b, rngs=r) for a, b in zip(sizes[:-1], sizes[1:])])

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


class CNN(nnx.Module):
    """Conv2d(1->4, 3, pad 1) ReLU Conv2d(4->4, 3, stride 2, groups 2) ReLU Linear(4*3*3 -> 3); NCHW 7x7 input."""

    def __init__(self, seed: int = 0):
        r = nnx.Rngs(params=seed, sample=seed + 1)
        self.conv1 = Conv2d(1, 4, 3, padding=1, rngs=r)
        self.conv2 = Conv2d(4, 4, 3, stride=2, groups=2, rngs=r)
        self.fc = Linear(4 * 3 * 3, 3, rngs=r)

    def __call__(self, x):
        h = jax.nn.relu(self.conv1(x))
        h = jax.nn.relu(self.conv2(h))
        return self.fc(h.reshape((h.shape[0], -1)))


class Seq(nnx.Module):
    """Bayesian LSTM (with its Bayesian Embedding: padding_idx, max_norm); returns (y, (h, c))."""

    def __init__(self, seed: int = 0):
        r = nnx.Rngs(params=seed, sample=seed + 1)
        self.lstm = LSTM(20, 4, 5, 3, padding_idx=0, max_norm=1.0, rngs=r)

    def __call__(self, tokens):
        return self.lstm(tokens)


class Mixed(nnx.Module):
    """Conv1d -> plain nnx.Linear -> BatchEnsembleLinear (2 members) -> Bayesian Linear."""

    def __init__(self, seed: int = 0):
        r = nnx.Rngs(params=seed, sample=seed + 1)
        self.conv = Conv1d(2, 3, 3, padding=1, dilation=1, rngs=r)
        self.dense = nnx.Linear(3 * 6, 8, rngs=r)
        self.ensemble = BatchEnsembleLinear(nnx.Linear(8, 8, rngs=r), rngs=r, num_members=2)
        self.head = Linear(8, 3, rngs=r)

    def __call__(self, x):
        h = jax.nn.relu(self.conv(x))
        h = jnp.tanh(self.dense(h.reshape((h.shape[0], -1))))
        return self.head(jax.nn.relu(self.ensemble(h)))


class EnsembleOnly(nnx.Module):
    """No Bayesian layer at all: BatchEnsembleLinear on a plain nnx.Linear."""

    def __init__(self, seed: int = 0):
        r = nnx.Rngs(seed)
        self.ensemble = BatchEnsembleLinear(nnx.Linear(4, 3, rngs=r), rngs=r, num_members=2, init="random_sign")

    def __call__(self, x):
        return self.ensemble(x)


def make_mlp(hidden: int = 16, seed: int = 0) -> MLP:
    """CLI factory: ``tests.exporters.jax.models:make_mlp``."""
    return MLP((12, hidden, 5), seed=seed)


def make_seq(seed: int = 0) -> Seq:
    """Factory for the CLI tests: the token model (Embedding + LSTM)."""
    return Seq(seed)


class DropMLP(nnx.Module):
    """Plain nnx MC-dropout model: Linear -> ReLU -> Dropout(0.3) -> Linear."""

    def __init__(self, seed: int = 0):
        r = nnx.Rngs(params=seed, dropout=seed + 1)
        self.fc = nnx.Linear(12, 16, rngs=r)
        self.drop = nnx.Dropout(0.3, rngs=r)
        self.head = nnx.Linear(16, 5, rngs=r)

    def __call__(self, x):
        return self.head(self.drop(jax.nn.relu(self.fc(x))))


def make_drop_mlp(seed: int = 0) -> DropMLP:
    """CLI factory: ``tests.exporters.jax.models:make_drop_mlp`` (sampled with ``--mc-dropout``)."""
    return DropMLP(seed)
