"""The models bench/run.py measures, each at three sizes.

``bench`` is the size of the full table; ``quick`` the size of ``run.py --quick``; ``check``
a size small enough for mlc's kernels to run in Triton's CPU interpreter (a few seconds),
where the full bench checks them. Zoo models come from ``mlc.testing.models``; whole
GPT-2, LLaMA and BERT models are built from ``transformers`` configs with random weights
when that package is installed.

``build_case(name, size)`` returns ``(module, inputs)`` in eval mode, the same for the same
arguments in any process (seeded), so a worker process can rebuild the eager reference.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from mlc.testing import decode
from mlc.testing.models import MODELS

F16, F32 = torch.float16, torch.float32


@dataclass(frozen=True)
class Case:
    name: str
    sizes: dict  # "bench", "quick", "check" -> keyword arguments (with "dtype")
    hf: bool = False  # needs transformers
    decode: bool = False  # a decode step of mlc.testing.decode: inputs (tokens, position)
    describe: dict = field(default_factory=dict)  # size name -> a short description for the table


def _zoo(name, quick, bench, describe):
    return Case(name, {"quick": quick, "bench": bench, "check": quick}, describe={"bench": describe})


_BLOCK_QUICK = dict(batch=2, seq=16, d_model=64, n_heads=4, dtype=F32)
_BLOCK_BENCH = dict(batch=8, seq=512, d_model=768, n_heads=12, dtype=F16)

ZOO = [
    _zoo("mlp", dict(batch=32, d_in=64, dtype=F32), dict(batch=512, d_in=1024, dtype=F32), "b512 d1024 fp32"),
    _zoo("gpt2_block", _BLOCK_QUICK, _BLOCK_BENCH, "b8 s512 d768 fp16"),
    _zoo("llama_block", dict(_BLOCK_QUICK, n_kv_heads=2, d_ff=128, max_seq=16),
         dict(_BLOCK_BENCH, n_kv_heads=4, d_ff=2048, max_seq=512), "b8 s512 d768 gqa12/4 fp16"),
    _zoo("bert_layer", dict(_BLOCK_QUICK, d_ff=128), dict(_BLOCK_BENCH, d_ff=3072), "b8 s512 d768 padded fp16"),
    _zoo("vit_block", dict(batch=2, hw=16, patch=4, d_model=64, n_heads=4, d_ff=128, dtype=F32),
         dict(batch=8, hw=224, patch=16, d_model=768, n_heads=12, d_ff=3072, dtype=F16), "b8 224px/16 d768 fp16"),
    _zoo("resnet_block", dict(batch=2, c_in=16, c=16, hw=8, dtype=F32),
         dict(batch=16, c_in=64, c=64, hw=56, dtype=F32), "b16 64ch 56x56 fp32"),
    _zoo("conv_block", dict(batch=2, hw=8, dtype=F32), dict(batch=16, hw=32, dtype=F32), "b16 32x32 fp32"),
    _zoo("embedding_classifier", dict(batch=4, dtype=F32), dict(batch=64, seq=128, vocab=1000, dtype=F32),
         "b64 s128 vocab 1000"),
]

# Whole models: GPT-2 small and BERT-base as released (12 layers, width 768, their vocabularies),
# and a LLaMA-architecture model (RMSNorm, RoPE, SwiGLU, grouped-query attention) of the same
# depth and width; random weights.
_HF_QUICK = dict(batch=2, seq=16, layers=2, hidden=64, heads=4, ffn=128, vocab=256, dtype=F32)
HF = [
    Case("hf_gpt2", {"quick": _HF_QUICK, "check": _HF_QUICK,
                     "bench": dict(batch=1, seq=512, layers=12, hidden=768, heads=12, ffn=3072, vocab=50257,
                                   dtype=F16)},
         hf=True, describe={"bench": "GPT2LMHeadModel (gpt2 small) b1 s512 fp16"}),
    Case("hf_llama", {"quick": dict(_HF_QUICK, kv_heads=2), "check": dict(_HF_QUICK, kv_heads=2),
                      "bench": dict(batch=1, seq=512, layers=12, hidden=768, heads=12, kv_heads=4, ffn=2048,
                                    vocab=32000, dtype=F16)},
         hf=True, describe={"bench": "LlamaForCausalLM 12x768 gqa12/4 b1 s512 fp16"}),
    Case("hf_bert", {"quick": _HF_QUICK, "check": _HF_QUICK,
                     "bench": dict(batch=4, seq=512, layers=12, hidden=768, heads=12, ffn=3072, vocab=30522,
                                   dtype=F16)},
         hf=True, describe={"bench": "BertModel (bert-base) b4 s512 padded fp16"}),
]

# One greedy decode step of a LLaMA-architecture model over a static KV cache, at position
# max_seq / 2 (the cache is read whole, under a length mask).
_DECODE_QUICK = dict(batch=1, layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, vocab=256, max_seq=32,
                     dtype=F32)
DECODE = [
    Case("llama_decode", {"quick": _DECODE_QUICK, "check": _DECODE_QUICK,
                          "bench": dict(batch=1, layers=4, d_model=1024, n_heads=16, n_kv_heads=4, d_ff=2816,
                                        vocab=32000, max_seq=1024, dtype=F16)},
         decode=True, describe={"bench": "4x1024 gqa16/4 decode, cache 1024, b1 fp16"}),
]

CASES = {c.name: c for c in ZOO + DECODE + HF}


def have_transformers() -> bool:
    return importlib.util.find_spec("transformers") is not None


class _HFWrapper(nn.Module):
    """A Hugging Face model as a function of (input_ids, attention_mask) returning one tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _hf_model(name: str, s: dict) -> nn.Module:
    import transformers as tf

    if name == "hf_gpt2":
        cfg = tf.GPT2Config(n_layer=s["layers"], n_embd=s["hidden"], n_head=s["heads"], n_inner=s["ffn"],
                            vocab_size=s["vocab"], n_positions=max(1024, s["seq"]))
        return tf.GPT2LMHeadModel(cfg)
    if name == "hf_llama":
        cfg = tf.LlamaConfig(num_hidden_layers=s["layers"], hidden_size=s["hidden"], num_attention_heads=s["heads"],
                             num_key_value_heads=s["kv_heads"], intermediate_size=s["ffn"], vocab_size=s["vocab"],
                             max_position_embeddings=max(2048, s["seq"]))
        return tf.LlamaForCausalLM(cfg)
    cfg = tf.BertConfig(num_hidden_layers=s["layers"], hidden_size=s["hidden"], num_attention_heads=s["heads"],
                        intermediate_size=s["ffn"], vocab_size=s["vocab"], max_position_embeddings=max(512, s["seq"]))
    return tf.BertModel(cfg, add_pooling_layer=False)


def build_case(name: str, size: str) -> tuple[nn.Module, tuple]:
    """``(module, inputs)`` of case ``name`` at ``size`` ("bench", "quick" or "check"), in eval mode."""
    case = CASES[name]
    sizes = dict(case.sizes[size])
    dtype = sizes.pop("dtype")
    if case.decode:
        model = decode.build(dtype=dtype, **sizes)
        tokens = torch.randint(0, sizes["vocab"], (sizes["batch"], 1), generator=torch.Generator().manual_seed(1))
        return model, (tokens, torch.tensor([sizes["max_seq"] // 2]))
    if not case.hf:
        model, inputs = MODELS[name].build(dtype=dtype, **sizes)
        return model.eval(), inputs
    torch.manual_seed(0)
    model = _HFWrapper(_hf_model(name, sizes)).to(dtype).eval()
    gen = torch.Generator().manual_seed(1)
    batch, seq = sizes["batch"], sizes["seq"]
    ids = torch.randint(0, sizes["vocab"], (batch, seq), generator=gen)
    # Every other sequence is padded to three quarters of its length (only BERT reads the mask
    # for padding; the causal models get all ones).
    mask = torch.ones(batch, seq, dtype=torch.long)
    if name == "hf_bert":
        mask[1::2, 3 * seq // 4:] = 0
    return model, (ids, mask)


def describe(name: str, size: str) -> str:
    case = CASES[name]
    if size in case.describe:
        return case.describe[size]
    s = case.sizes[size]
    return " ".join(f"{k}={v}" for k, v in s.items() if k != "dtype") + f" {str(s['dtype']).split('.')[-1]}"
