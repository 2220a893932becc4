"""A small model zoo: the tests check mlc against eager on these, and bench/ times them.

Each ``ModelSpec`` builds a fresh module and example inputs from a seed, so two builds give
equal modules (one for eager, one to compile). Sizes are keyword arguments: the defaults are
tiny so that the test suite stays fast on a laptop CPU; bench/ passes larger ones.
Every model returns a single tensor, so ``out.float().square().mean()`` is a training loss
(the classifier returns its cross-entropy loss itself).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

# --- models ---------------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self, d_in=32, d_hidden=64, d_out=10):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_hidden)
        self.fc3 = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.fc3(F.gelu(self.fc2(F.relu(self.fc1(x)))))


class GPT2Block(nn.Module):
    """Pre-norm transformer block as in GPT-2: causal attention through SDPA, GELU-tanh MLP."""

    def __init__(self, d_model=32, n_heads=4):
        super().__init__()
        self.n_heads = n_heads
        self.ln_1 = nn.LayerNorm(d_model)
        self.c_attn = nn.Linear(d_model, 3 * d_model)
        self.c_proj = nn.Linear(d_model, d_model)
        self.ln_2 = nn.LayerNorm(d_model)
        self.c_fc = nn.Linear(d_model, 4 * d_model)
        self.mlp_proj = nn.Linear(4 * d_model, d_model)

    def attention(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class RMSNorm(nn.Module):
    """RMSNorm written out, as in the LLaMA reference code (computed in float32)."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaBlock(nn.Module):
    """LLaMA-style block: RMSNorm (hand-written before attention, ``nn.RMSNorm`` before the MLP),
    rotary embeddings (cos/sin tables, rotate-half), grouped-query attention written out
    (matmul, causal mask, softmax), SwiGLU MLP ``w2(silu(w1 x) * w3 x)``."""

    def __init__(self, d_model=32, n_heads=4, n_kv_heads=2, d_ff=64, max_seq=64):
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.attention_norm = RMSNorm(d_model)
        self.wq = nn.Linear(d_model, n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, d_model, bias=False)
        self.ffn_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        angles = torch.outer(torch.arange(max_seq).float(), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def rope(self, x, T):
        cos, sin = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)
        return x * cos + rotate_half(x) * sin

    def attention(self, x):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.rope(q, T), self.rope(k, T)
        groups = self.n_heads // self.n_kv_heads
        k = k.repeat_interleave(groups, dim=1)
        # The same repetition written as expand + reshape, as some implementations do it.
        v = v[:, :, None].expand(B, self.n_kv_heads, groups, T, self.head_dim).reshape(B, self.n_heads, T, -1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        probs = scores.masked_fill(mask, float("-inf")).float().softmax(dim=-1).type_as(q)
        y = (probs @ v).transpose(1, 2).reshape(B, T, -1)
        return self.wo(y)

    def forward(self, x):
        h = x + self.attention(self.attention_norm(x))
        f = self.ffn_norm(h)
        return h + self.w2(F.silu(self.w1(f)) * self.w3(f))


class ConvBlock(nn.Module):
    """Conv2d + BatchNorm2d + ReLU + max pooling, twice, then global average pooling and a linear head."""

    def __init__(self, c_in=3, c=8, n_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, 2 * c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * c)
        self.head = nn.Linear(2 * c, n_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.bn2(self.conv2(x)))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class EmbeddingClassifier(nn.Module):
    """Token embeddings, mean over the sequence, a linear classifier; returns the cross-entropy loss."""

    def __init__(self, vocab=50, d_model=16, n_classes=5):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, tokens, targets):
        h = torch.tanh(self.proj(self.embed(tokens).mean(dim=1)))
        return F.cross_entropy(self.head(h), targets)


class BertLayer(nn.Module):
    """BERT encoder layer: post-LN (norm after each residual add), exact (erf) GELU, and attention
    written out as in Hugging Face's eager BERT, with the padding mask added to the scores as
    ``(1 - mask) * finfo.min``."""

    def __init__(self, d_model=16, n_heads=2, d_ff=32):
        super().__init__()
        self.n_heads = n_heads
        self.query, self.key, self.value = (nn.Linear(d_model, d_model) for _ in range(3))
        self.attn_out = nn.Linear(d_model, d_model)
        self.attn_norm = nn.LayerNorm(d_model, eps=1e-12)
        self.intermediate = nn.Linear(d_model, d_ff)
        self.output = nn.Linear(d_ff, d_model)
        self.out_norm = nn.LayerNorm(d_model, eps=1e-12)

    def attention(self, x, mask):
        B, T, C = x.shape
        q, k, v = (f(x).view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
                   for f in (self.query, self.key, self.value))
        scores = q @ k.transpose(-1, -2) / math.sqrt(C // self.n_heads)
        scores = scores + (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        y = scores.softmax(dim=-1) @ v
        return self.attn_out(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, x, mask):
        h = self.attn_norm(x + self.attention(x, mask))
        return self.out_norm(h + self.output(F.gelu(self.intermediate(h))))


class ResNetBlock(nn.Module):
    """ResNet basic block: conv-bn-relu-conv-bn, plus the input (through a strided 1x1 conv and
    batch norm when the shape changes), then relu. Train mode uses batch statistics."""

    def __init__(self, c_in=8, c=8, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c, 1, stride=stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ViTBlock(nn.Module):
    """A small ViT: patch tokens from a stride-``patch`` convolution (as in Hugging Face's and
    timm's ViT), a class token and learned position embeddings, one pre-LN transformer block
    (SDPA attention, exact GELU MLP), a final norm and a linear head on the class token."""

    def __init__(self, c_in=3, hw=8, patch=4, d_model=16, n_heads=2, d_ff=32, n_classes=10):
        super().__init__()
        self.n_heads = n_heads
        self.embed = nn.Conv2d(c_in, d_model, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (hw // patch) ** 2 + 1, d_model) * 0.02)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-6)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-6)
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.norm = nn.LayerNorm(d_model, eps=1e-6)
        self.head = nn.Linear(d_model, n_classes)

    def attention(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, images):
        x = self.embed(images).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls.expand(x.shape[0], -1, -1), x), dim=1) + self.pos
        x = x + self.attention(self.norm1(x))
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(self.norm(x[:, 0]))


# --- specs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """How to build one zoo model and its inputs.

    ``make_inputs(batch, dtype, gen, **sizes)`` returns the inputs; floating ones take ``dtype``.
    ``fallbacks`` are the ATen ops that run as mlc fallbacks (forward or backward);
    ``ops`` are mlc ops its forward IR must contain; ``dynamic_fallbacks`` are the ops that
    also fall back under ``dynamic=True``, where every input size is a symbol.
    """

    name: str
    make_model: Callable[..., nn.Module]
    make_inputs: Callable[..., tuple]
    fallbacks: frozenset[str] = frozenset()
    ops: frozenset[str] = frozenset()
    dynamic_fallbacks: frozenset[str] = frozenset()

    def build(self, batch: int = 2, dtype: torch.dtype = torch.float32, seed: int = 0, train: bool = False,
              **sizes) -> tuple[nn.Module, tuple]:
        """A fresh module (in ``dtype``, train or eval mode) and inputs, both from ``seed``.

        ``sizes`` go to the model's constructor where it takes them, and to ``make_inputs``
        (``d_model=64, seq=128``); the defaults of both agree.
        """
        takes = inspect.signature(self.make_model).parameters
        torch.manual_seed(seed)
        model = self.make_model(**{k: v for k, v in sizes.items() if k in takes}).to(dtype).train(train)
        gen = torch.Generator().manual_seed(seed + 1)
        return model, self.make_inputs(batch, dtype, gen, **sizes)


def _features(batch, dtype, gen, d_in=32, **_):
    return (torch.randn(batch, d_in, generator=gen).to(dtype),)


def _sequence(batch, dtype, gen, d_model=32, seq=8, **_):
    return (torch.randn(batch, seq, d_model, generator=gen).to(dtype),)


def _images(batch, dtype, gen, c_in=3, hw=8, **_):
    return (torch.randn(batch, c_in, hw, hw, generator=gen).to(dtype),)


def _tokens(batch, dtype, gen, vocab=50, n_classes=5, seq=6, **_):
    return (torch.randint(0, vocab, (batch, seq), generator=gen), torch.randint(0, n_classes, (batch,), generator=gen))


def _padded_sequence(batch, dtype, gen, d_model=16, seq=4, **_):
    """Hidden states and an attention mask (1 for tokens, 0 for padding, as in Hugging Face):
    sequence ``i`` has ``seq - i % (seq // 2 + 1)`` tokens, so the first is full and others padded."""
    lengths = torch.tensor([seq - i % (seq // 2 + 1) for i in range(batch)])
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    return torch.randn(batch, seq, d_model, generator=gen).to(dtype), mask


def _feature_maps(batch, dtype, gen, c_in=8, hw=8, **_):
    return _images(batch, dtype, gen, c_in=c_in, hw=hw)


MODELS: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec("mlp", MLP, _features, ops=frozenset({"mm", "add", "relu", "gelu"})),
    # SDPA becomes mlc's attention ops, forward and backward (see mlc/frontend/decompositions.py).
    ModelSpec("gpt2_block", GPT2Block, _sequence,
              ops=frozenset({"mm", "var", "mean", "rsqrt", "gelu", "permute", "slice", "attention"})),
    # Attention written by hand: in a training forward (``ops`` is checked on one) it is
    # mlc's attention ops already (mlc/frontend/hand_attention.py), the backward's too.
    ModelSpec("llama_block", LlamaBlock, _sequence,
              ops=frozenset({"mm", "mean", "rsqrt", "silu", "cat", "neg", "slice", "where", "attention_scores",
                             "attention"})),
    # Convolution and max pooling have no mlc ops yet.
    ModelSpec("conv_block", ConvBlock, _images,
              fallbacks=frozenset({"aten.convolution.default", "aten.convolution_backward.default",
                                   "aten.max_pool2d_with_indices.default",
                                   "aten.max_pool2d_with_indices_backward.default"}),
              ops=frozenset({"var", "mean", "relu", "mm"})),
    # The embedding's backward is a scatter-add (index_put with accumulate), which mlc has no op for.
    ModelSpec("embedding_classifier", EmbeddingClassifier, _tokens, fallbacks=frozenset({"aten.index_put.default"}),
              ops=frozenset({"embedding", "mean", "mm", "tanh", "amax", "gather"})),
    ModelSpec("bert_layer", BertLayer, _padded_sequence,
              ops=frozenset({"mm", "var", "mean", "rsqrt", "gelu", "attention_scores", "attention"})),
    ModelSpec("resnet_block", ResNetBlock, _feature_maps,
              fallbacks=frozenset({"aten.convolution.default", "aten.convolution_backward.default"}),
              ops=frozenset({"var", "mean", "rsqrt", "relu", "add"})),
    ModelSpec("vit_block", ViTBlock, _images,
              fallbacks=frozenset({"aten.convolution.default", "aten.convolution_backward.default"}),
              ops=frozenset({"mm", "permute", "cat", "var", "rsqrt", "gelu", "select", "attention"}),
              # With the image size a symbol H, the patch tokens number (H//4)**2 + 1; that this
              # broadcasts against the 5 position embeddings holds only under Dynamo's guard
              # ((H//4)**2 + 1 == 5), which mlc does not read, so the add runs through ATen.
              dynamic_fallbacks=frozenset({"aten.add.Tensor"})),
]}
