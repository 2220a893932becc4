"""A LLaMA-architecture decoder with a static KV cache: the decode workload of tests, bench and
``examples/generate.py``.

One call is one decode step: ``model(tokens, pos)`` takes the next token of each sequence
(``[batch, 1]``) and its position as a one-element tensor, writes the new keys and values into
the preallocated caches (module buffers, ``index_copy_`` at ``pos``), attends over the whole
cache with a length mask (``arange(max_seq) <= pos``), and returns the logits. Because the
position is a tensor and the cache has a fixed size, every step has the same shapes: one
compiled graph serves all positions.

Each layer: RMSNorm, the q projection and one fused k/v projection, rotary embeddings at the
position (cos/sin tables indexed by ``pos``), the cache writes, grouped-query SDPA over the
cache, the output projection, RMSNorm and a SwiGLU MLP. Weights are random (seeded).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import RMSNorm, rotate_half


class DecodeLayer(nn.Module):
    def __init__(self, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, max_seq=64, batch=1):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.attention_norm = RMSNorm(d_model)
        self.wq = nn.Linear(d_model, d_model, bias=False)
        self.wkv = nn.Linear(d_model, 2 * n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)
        self.ffn_norm = RMSNorm(d_model)
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        shape = (batch, n_kv_heads, max_seq, self.head_dim)
        self.register_buffer("k_cache", torch.zeros(shape), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape), persistent=False)

    def forward(self, x, pos, cos, sin, mask):
        B = x.shape[0]
        h = self.attention_norm(x)
        q = self.wq(h).view(B, 1, self.n_heads, self.head_dim).transpose(1, 2)
        k, v = self.wkv(h).view(B, 1, 2, self.n_kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        self.k_cache.index_copy_(2, pos, k)
        self.v_cache.index_copy_(2, pos, v)
        y = F.scaled_dot_product_attention(q, self.k_cache, self.v_cache, attn_mask=mask, enable_gqa=True)
        x = x + self.wo(y.transpose(1, 2).reshape(B, 1, -1))
        f = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1(f)) * self.w3(f))


class Decoder(nn.Module):
    """Embedding, ``layers`` decode layers, RMSNorm and the LM head; ``forward(tokens, pos)``."""

    def __init__(self, vocab=256, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, layers=2, max_seq=64, batch=1):
        super().__init__()
        self.max_seq = max_seq
        self.embed = nn.Embedding(vocab, d_model)
        self.layers = nn.ModuleList(DecodeLayer(d_model, n_heads, n_kv_heads, d_ff, max_seq, batch)
                                    for _ in range(layers))
        self.norm = RMSNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        head_dim = d_model // n_heads
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        angles = torch.outer(torch.arange(max_seq).float(), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, tokens, pos):
        x = self.embed(tokens)
        cos, sin = self.cos[pos].to(x.dtype), self.sin[pos].to(x.dtype)  # [1, head_dim]: at the position
        mask = (torch.arange(self.max_seq, device=tokens.device) <= pos).view(1, 1, 1, -1)
        for layer in self.layers:
            x = layer(x, pos, cos, sin, mask)
        return self.lm_head(self.norm(x))

    def reset(self):
        for layer in self.layers:
            layer.k_cache.zero_()
            layer.v_cache.zero_()


def build(seed: int = 0, dtype: torch.dtype = torch.float32, **sizes) -> Decoder:
    """A decoder in eval mode with seeded random weights (the same for the same arguments)."""
    torch.manual_seed(seed)
    return Decoder(**sizes).to(dtype).eval()


def weight_bytes(model: nn.Module, int8: bool = False) -> int:
    """Bytes of the weights one step reads: every parameter but the embedding (which reads one
    row per token). ``int8``: the matrices as int8 with one fp32 scale per output row, as
    ``quantize="int8-weight"`` stores them (vectors stay as they are)."""
    total = 0
    for n, p in model.named_parameters():
        if n.startswith("embed."):
            continue
        total += p.numel() + 4 * p.shape[0] if int8 and p.dim() == 2 else p.numel() * p.element_size()
    return total


def floor_bytes(model: Decoder, batch: int = 1, int8: bool = False) -> int:
    """The memory floor of one decode step: every weight and both caches read once, the new
    token's keys and values written, the embedding row read and the logits written."""
    caches = sum(b.numel() * b.element_size() for n, b in model.named_buffers() if n.endswith("_cache"))
    layer = model.layers[0]
    new_kv = len(model.layers) * 2 * batch * layer.n_kv_heads * layer.head_dim * layer.k_cache.element_size()
    d_model, vocab = model.embed.weight.shape[1], model.lm_head.weight.shape[0]
    item = model.embed.weight.element_size()
    return weight_bytes(model, int8) + caches + new_kv + batch * (d_model + vocab) * item


def greedy(model: nn.Module, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding: the prompt fed one token per step, then ``steps`` tokens generated;
    returns the generated tokens ``[batch, steps]``. ``model`` may be compiled."""
    out, tok = [], _token(prompt, 0)
    for pos in range(prompt.shape[1] + steps - 1):
        logits = model(tok, torch.tensor([pos], device=prompt.device))
        if pos + 1 < prompt.shape[1]:
            tok = _token(prompt, pos + 1)
        else:
            tok = logits[:, -1].argmax(-1, keepdim=True)
            out.append(tok)
    return torch.cat(out, dim=1)


def _token(prompt: torch.Tensor, k: int) -> torch.Tensor:
    # A fresh [batch, 1] tensor: the slice's strides differ from a generated token's, and Dynamo
    # would compile the step again for them (a size-1 slice counts as contiguous, so
    # .contiguous() keeps them).
    return prompt[:, k:k + 1].clone(memory_format=torch.contiguous_format)
