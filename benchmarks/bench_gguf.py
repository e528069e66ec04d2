"""Loading the packaged SmolLM2 GGUF: describe.llm's one-pass reader against the libraries' ways.

    .venv/bin/python benchmarks/bench_gguf.py [--repeat 3] [--full]

Rows (best of --repeat, seconds, one process, torch threads as set by OMP_NUM_THREADS):
* metadata + tensor table: `describe.llm.read_gguf` (struct, one pass) against `gguf.GGUFReader` (the gguf
  package's public reader) and transformers' own reader (`transformers.integrations.gguf.reader`);
* dequantization of every tensor: describe.llm's whole-tensor Q4_0/Q4_1/Q8_0 against `gguf.quants.dequantize`;
* the whole model + tokenizer: `describe.llm.gguf_llama_model` + `gguf_tokenizer` against transformers'
  `from_pretrained(folder, gguf_file=...)` (only with --full: it takes tens of seconds).
describe.llm keeps a hand-written step only where this shows it at least 2x faster than the library.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="also transformers' from_pretrained (slow)")
    args = parser.parse_args()

    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    from describe.llm import _BLOCK_DEQUANT, SMOLLM2, gguf_llama_model, gguf_tokenizer, read_gguf

    path = Path(SMOLLM2.resolve())
    rows = [("metadata: describe.llm.read_gguf", best(lambda: read_gguf(path), args.repeat)),
            ("metadata: gguf.GGUFReader", best(lambda: GGUFReader(path), args.repeat))]
    try:
        from transformers.integrations.gguf.reader import read_gguf_metadata

        rows.append(("metadata: transformers' reader",
                     best(lambda: read_gguf_metadata(str(path), ("tokenizer.ggml.tokens", "tokenizer.ggml.merges")),
                          args.repeat)))
    except ImportError:
        pass
    g = read_gguf(path)

    def raw(name: str) -> tuple[np.ndarray, GGMLQuantizationType, int, int]:
        info = g.tensors[name]
        q = GGMLQuantizationType(info.ggml_type)
        block, size = GGML_QUANT_SIZES[q]
        return (np.frombuffer(g.buffer, np.uint8, math.prod(info.shape) // block * size, info.offset), q, block,
                size)

    quantized = [n for n in g.tensors if GGMLQuantizationType(g.tensors[n].ggml_type).name in _BLOCK_DEQUANT]

    def ours() -> None:
        for n in quantized:
            data, q, _, size = raw(n)
            _BLOCK_DEQUANT[q.name](data.reshape(-1, size))

    def library() -> None:
        for n in quantized:
            data, q, block, size = raw(n)
            dequantize(data.reshape(-1, g.tensors[n].shape[-1] // block * size), q)

    rows += [(f"dequantize {len(quantized)} tensors: describe.llm", best(ours, args.repeat)),
             (f"dequantize {len(quantized)} tensors: gguf.quants", best(library, args.repeat)),
             ("model + tokenizer: describe.llm", best(lambda: (gguf_llama_model(read_gguf(path)),
                                                               gguf_tokenizer(read_gguf(path))), args.repeat))]
    if args.full:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        rows.append(("model + tokenizer: transformers from_pretrained(gguf_file=)", best(
            lambda: (AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name),
                     AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)), 1)))
    print("| step | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
