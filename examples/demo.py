"""Compile a small transformer block with mlc, check it against eager, and print its IR.

    python examples/demo.py
"""

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

import mlc


class Block(nn.Module):
    """A GPT-2-style block: LayerNorm, causal self-attention, GELU MLP, residuals."""

    def __init__(self, d: int = 64, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


def main():
    torch.manual_seed(0)
    model = Block().eval()
    x = torch.randn(2, 16, 64)

    compiled = torch.compile(model, backend="mlc")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # attention runs through ATen on purpose; see the README
        got, want = compiled(x), model(x)
        torch.testing.assert_close(got, want)
        print(f"mlc matches eager: max abs difference {(got - want).abs().max().item():.2e}\n")
        (graph,) = mlc.capture(model, x)
    print(graph)


if __name__ == "__main__":
    main()
