"""Write a tiny llama-architecture GGUF model with random weights, for recording and testing llama-bench and
rpc-server without downloading a real model. Its tokens/s say nothing about real models; its output formats are
exactly llama-bench's.

Needs ``gguf`` (gguf-py, the same code as PyPI's ``gguf`` package; scripts/build-llama.sh unpacks the copy the
llama-cpp-python sdist vendors) and numpy:

    PYTHONPATH=$LLAMA_CACHE/py:$LLAMA_CACHE/src/gguf-py python3 scripts/make_tiny_gguf.py OUT.gguf
"""

from __future__ import annotations

import sys

import gguf  # type: ignore[import-not-found]
import numpy as np  # type: ignore[import-not-found]

N_EMBD, N_FF, N_LAYER, N_HEAD, N_HEAD_KV, N_CTX = 64, 128, 2, 4, 2, 2048


def vocab() -> tuple[list[bytes], list[float], list[int]]:
    """A sentencepiece-style vocabulary: the three specials, the 256 byte tokens, a few words."""
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    words = [w.encode() for w in ("\u2581the", "\u2581a", "\u2581cluster", "\u2581node", "\u2581pi", "s", "e")]
    tokens += words
    types += [gguf.TokenType.NORMAL] * len(words)
    scores = [0.0] * len(tokens)
    return tokens, scores, [int(t) for t in types]


def main(path: str) -> None:
    rng = np.random.default_rng(1234)
    tokens, scores, types = vocab()
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("picluster-tiny-random")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def t(name: str, *shape: int) -> None:
        # numpy shapes are ggml's ne reversed: (rows, columns) = (ne1, ne0)
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    t("token_embd.weight", n_vocab, N_EMBD)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    t("output.weight", n_vocab, N_EMBD)
    for i in range(N_LAYER):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        t(f"blk.{i}.attn_q.weight", N_EMBD, N_EMBD)
        t(f"blk.{i}.attn_k.weight", head_dim * N_HEAD_KV, N_EMBD)
        t(f"blk.{i}.attn_v.weight", head_dim * N_HEAD_KV, N_EMBD)
        t(f"blk.{i}.attn_output.weight", N_EMBD, N_EMBD)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        t(f"blk.{i}.ffn_gate.weight", N_FF, N_EMBD)
        t(f"blk.{i}.ffn_up.weight", N_FF, N_EMBD)
        t(f"blk.{i}.ffn_down.weight", N_EMBD, N_FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(sys.argv[1])
