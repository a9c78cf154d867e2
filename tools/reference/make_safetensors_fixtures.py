#!/usr/bin/env python3
"""Writes the safetensors fixtures of tests/model with the official
`safetensors` library (numpy front end; bfloat16 from ml_dtypes), the
independent reference for src/hf/safetensors.c.

    .venv-ref/bin/python tools/reference/make_safetensors_fixtures.py tests/fixtures/model

  st_basic.safetensors   F32, BF16, F16, a 0-d F32, and I64/F64 tensors
                         (for the unsupported-dtype error), with metadata
  sharded/               model.safetensors.index.json and two shards, as
                         transformers' save_pretrained lays them out

The values are exact in their dtypes; tests/hf/test_safetensors.c
spells the same values as C literals.
"""
import json
import os
import sys

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

BF16 = ml_dtypes.bfloat16


def basic():
    return {
        "f32": np.array([[0.0, -1.5, 3.25], [0.001, 123456.789, -7.0]], dtype=np.float32),
        "bf16": np.array([[1.0, -2.0, 3.140625], [65280.0, 2.0**-130, -np.inf]], dtype=BF16),
        "f16": np.array([0.5, -65504.0, 2.0**-14, 2.0**-24, np.inf, np.nan], dtype=np.float16),
        "scalar": np.array(7.5, dtype=np.float32),
        "i64": np.array([1, 2], dtype=np.int64),
        "f64": np.array([0.25], dtype=np.float64),
    }


def shards():
    embed = np.arange(6, dtype=np.float32).reshape(3, 2) * 0.5 - 1.0
    return [
        ("model-00001-of-00002.safetensors",
         {"model.embed_tokens.weight": embed, "model.norm.weight": np.array([1.0, 0.5], dtype=BF16)}),
        ("model-00002-of-00002.safetensors",
         {"lm_head.weight": -embed}),
    ]


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/model"
    save_file(basic(), os.path.join(outdir, "st_basic.safetensors"),
              metadata={"format": "pt", "note": "peso fixture"})
    sdir = os.path.join(outdir, "sharded")
    os.makedirs(sdir, exist_ok=True)
    weight_map, total = {}, 0
    for name, tensors in shards():
        save_file(tensors, os.path.join(sdir, name), metadata={"format": "pt"})
        for k, v in tensors.items():
            weight_map[k] = name
            total += v.nbytes
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(sdir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
