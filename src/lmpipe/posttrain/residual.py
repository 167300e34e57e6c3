"""Stage ``residual``, the instruction residual (Balancing Continual Pre-training and Instruction Fine-tuning):
θ_target + s·(θ_instruct − θ_base).

An instruction-tuned model's difference from its own base carries the instruction-following ability; added to
another continually pretrained checkpoint of the same architecture, it makes that checkpoint an instruct model
without rerunning SFT. Models must share architecture and parameter shapes; the one allowed difference is an
instruct vocabulary that *extends* the base one (chat tokens added by SFT): the added rows are copied from the
instruct model, since target and base have no counterpart for them. The tokenizer (with its chat template) and
generation config come from the instruct model.

In the pipeline (defaults of ``posttrain.residual``, the paper's set-up): base = ``models/pretrain``, instruct =
``models/sft_base`` (stage ``sft_base``: our SFT recipe on pretrain), target = ``models/cpt``. The result is the
cpt model made an instruct model without SFT on it; ``evaluate`` sets it beside ``sft`` (SFT on cpt itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor

ARCH_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "tie_word_embeddings",
)


class ResidualError(ValueError):
    pass


def _load(path: str | Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not an HF model directory (no config.json)")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _check_arch(target: Any, instruct: Any, base: Any) -> None:
    for k in ARCH_KEYS:
        vals = {
            name: getattr(m.config, k, None)
            for name, m in (("target", target), ("instruct", instruct), ("base", base))
        }
        if len(set(map(str, vals.values()))) > 1:
            raise ResidualError(f"instruction residual needs one architecture; config.{k} differs: {vals}")


def add_residual(
    target_dir: str | Path,
    instruct_dir: str | Path,
    base_dir: str | Path,
    out_dir: str | Path,
    scale: float = 1.0,
) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from lmpipe.posttrain.trainer import export

    target, instruct, base = _load(target_dir), _load(instruct_dir), _load(base_dir)
    _check_arch(target, instruct, base)
    t_sd, i_sd, b_sd = target.state_dict(), instruct.state_dict(), base.state_dict()
    if set(t_sd) != set(i_sd) or set(t_sd) != set(b_sd):
        raise ResidualError(
            f"parameter names differ: {sorted(set(t_sd) ^ set(i_sd) | set(t_sd) ^ set(b_sd))[:5]}"
        )
    extra_rows = 0
    if (
        i_sd[next(iter(k for k in i_sd if "embed_tokens" in k))].shape[0]
        > t_sd[next(k for k in t_sd if "embed_tokens" in k)].shape[0]
    ):
        target.resize_token_embeddings(instruct.get_input_embeddings().weight.shape[0], mean_resizing=False)
    merged = {}
    for k, t in t_sd.items():
        i, b = i_sd[k], b_sd[k]
        if t.shape != b.shape:
            raise ResidualError(f"{k}: target {tuple(t.shape)} vs base {tuple(b.shape)}")
        if i.shape == t.shape:
            merged[k] = t + scale * (i - b)
        elif i.shape[1:] == t.shape[1:] and i.shape[0] > t.shape[0]:
            n = t.shape[0]
            merged[k] = torch.cat([t + scale * (i[:n] - b), i[n:]])
            extra_rows = i.shape[0] - n
        else:
            raise ResidualError(f"{k}: instruct {tuple(i.shape)} vs target {tuple(t.shape)}")
    target.load_state_dict(merged)
    target.generation_config = instruct.generation_config
    for attr in ("eos_token_id", "pad_token_id", "bos_token_id"):
        setattr(target.config, attr, getattr(instruct.config, attr, None))
    export(target, AutoTokenizer.from_pretrained(instruct_dir), out_dir)
    delta = sum(float((i_sd[k][: b_sd[k].shape[0]] - b_sd[k]).norm() ** 2) for k in b_sd) ** 0.5
    return {
        "target": str(target_dir),
        "instruct": str(instruct_dir),
        "base": str(base_dir),
        "scale": scale,
        "residual_norm": round(delta, 5),
        "added_vocab_rows": extra_rows,
        "parameters": len(merged),
    }


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage entry (contract ``run(p, io, ex)``): ``posttrain.residual`` target + (instruct − base) → ``io.out``."""
    cfg = p.posttrain.residual
    return add_residual(cfg.target, cfg.instruct, cfg.base, io.out, cfg.scale)
