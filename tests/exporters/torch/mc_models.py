"""Small models people run MC dropout on, for the matrix of test_mc_dropout_models.py.

Written as the libraries write them (timm itself cannot be imported here: it imports
torchvision): AWD-style LockedDropout (``bernoulli_`` when ``self.training``), timm's DropPath
(``x.new_empty(shape).bernoulli_(keep)`` then ``div_``) and its fused attention
(``F.scaled_dot_product_attention(dropout_p=attn_drop.p if self.training else 0)``), and
transformers' BERT built from a config (no downloads).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F


class LockedDropout(nn.Module):
    """One mask per sequence, shared over time (AWD-LSTM; batch-first as fastai's RNNDropout)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or not self.p:
            return x
        mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - self.p)
        return x * mask / (1 - self.p)


class LockedGRU(nn.Module):
    """Float (already embedded) tokens [B, T, D] -> locked dropout -> GRU -> BatchNorm head."""

    def __init__(self, dim: int = 6, hidden: int = 12, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(dim, hidden)
        self.drop_in = LockedDropout(0.3)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True)
        self.drop_out = LockedDropout(0.25)
        self.norm = nn.BatchNorm1d(hidden)
        self.head = nn.Linear(hidden, classes)
        with torch.no_grad():
            self.norm.running_mean.uniform_(-0.2, 0.2)
            self.norm.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        h, _ = self.rnn(self.drop_in(torch.tanh(self.inp(x))))
        return self.head(self.norm(self.drop_out(h)[:, -1]))


def drop_path(x, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True):
    """timm.layers.drop.drop_path, verbatim semantics."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)


class Attention(nn.Module):
    """timm's ViT attention (fused path)."""

    def __init__(self, dim: int, heads: int, attn_drop: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, drop_path_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, attn_drop=0.1)
        self.drop_path1 = DropPath(drop_path_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(0.1), nn.Linear(2 * dim, dim))
        self.drop_path2 = DropPath(drop_path_rate)

    def forward(self, x):
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class TinyViT(nn.Module):
    """Patches [B, N, P] -> linear embedding + cls token -> 2 blocks with stochastic depth -> head."""

    def __init__(self, patch: int = 12, num: int = 4, dim: int = 16, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(patch, dim)
        self.cls = nn.Parameter(0.1 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.1 * torch.randn(1, num + 1, dim))
        self.blocks = nn.Sequential(Block(dim, 2, 0.1), Block(dim, 2, 0.2))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


class EmbedsClassifier(nn.Module):
    """A transformers classifier fed ``inputs_embeds`` [B, T, H] (float): the token-id input with a
    dynamic sequence length is another branch's work (h-seqdims); the lead switches these tests
    to ``input_ids`` once it is merged."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs_embeds):
        return self.model(inputs_embeds=inputs_embeds).logits


def tiny_bert(hidden_dropout: float, attention_dropout: float, attn_implementation: str) -> nn.Module:
    os.environ.setdefault("USE_TF", "0")  # transformers would import TensorFlow (seconds) when it is installed
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
        max_position_embeddings=16, num_labels=3, hidden_dropout_prob=hidden_dropout,
        attention_probs_dropout_prob=attention_dropout, attn_implementation=attn_implementation,
    )
    return EmbedsClassifier(BertForSequenceClassification(config))


def train_style(model: nn.Module) -> nn.Module:
    """What users do for MC dropout: ``model.train()``, normalization layers back in eval."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model
