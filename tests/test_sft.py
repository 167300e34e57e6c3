"""SFT through TRL: assistant-only loss, packing without crossing examples, loss falls on real data, kill -9 resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmpipe.posttrain.config import PosttrainConfig
from lmpipe.tiny import build_tiny_model
from tests.killresume import curve, train_killed_and_straight


def _chats(n: int = 6) -> list[dict]:
    out = []
    for i in range(n):
        turns = [
            {"role": "user", "content": f"What is {i} plus {i}? Reply briefly."},
            {"role": "assistant", "content": f"It is {2 * i}."},
        ]
        if i % 2:
            turns += [
                {"role": "user", "content": "And doubled?"},
                {"role": "assistant", "content": f"{4 * i}"},
            ]
        out.append({"id": f"c{i}", "messages": turns})
    return out


def _setup(tmp_path: Path, chats: list[dict], **sft) -> tuple[PosttrainConfig, Path]:
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in chats))
    ev = tmp_path / "eval.jsonl"
    ev.write_text(
        json.dumps({"id": "e", "question": "In which city is The Brax Observatory based?", "answer": "X"})
        + "\n"
    )
    texts = [m["content"] for c in chats for m in c["messages"]] * 3
    model = build_tiny_model(tmp_path / "base", texts=texts, vocab_size=400)
    post = PosttrainConfig.model_validate(
        {
            "data": {"sft": [{"path": str(data)}], "eval_sets": [{"path": str(ev)}], "max_length": 128},
            "sft": {"train": {"max_steps": 4, "lr": 1e-3, "batch_size": 4, "save_steps": 2, **sft}},
        }
    )
    return post, model


def _trainer(post: PosttrainConfig, model_dir: Path, out: Path, packing: bool, batch: int):
    from lmpipe.posttrain.sft import make_trainer, prepare
    from lmpipe.posttrain.trainer import load_model

    torch.manual_seed(0)
    model, tok, _ = load_model(model_dir)
    rows, _ = prepare(post.data, tok)
    post = post.model_copy(deep=True)
    post.sft.train.batch_size = batch
    return make_trainer(model, tok, rows, post, out, 0, packing=packing), rows


def test_prompt_tokens_contribute_nothing(tmp_path):
    torch.set_num_threads(1)
    post, model_dir = _setup(tmp_path, _chats())
    trainer, rows = _trainer(post, model_dir, tmp_path / "ck", packing=False, batch=6)
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    model.train()
    # independent expectation: mean NLL over assistant tokens only, from the full logits and our masks
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits.float(), -1)
    want, n = 0.0, 0
    by_ids = {tuple(r["input_ids"]): r["assistant_masks"] for r in rows}
    for b in range(batch["input_ids"].shape[0]):
        ids = batch["input_ids"][b][batch["attention_mask"][b].bool()].tolist()
        mask = by_ids[tuple(ids)]
        for t in range(1, len(ids)):
            if mask[t]:
                want -= logp[b, t - 1, ids[t]].item()
                n += 1
    assert 0 < n < int(batch["attention_mask"].sum())
    # the final norm's output at position t feeds only the prediction of token t+1
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["h"] = output

    handle = model.model.norm.register_forward_hook(keep)
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    handle.remove()
    assert loss.item() == pytest.approx(want / n, rel=1e-5)
    grad = captured["h"].grad.abs().sum(-1)  # [batch, seq]
    for b in range(batch["input_ids"].shape[0]):
        ids = batch["input_ids"][b][batch["attention_mask"][b].bool()].tolist()
        mask = by_ids[tuple(ids)] + [0] * (batch["input_ids"].shape[1] - len(ids))
        predicts_assistant = torch.tensor(mask[1:] + [0], dtype=torch.bool)
        assert torch.all(grad[b][~predicts_assistant] == 0)  # exactly zero, not small
        assert torch.all(grad[b][predicts_assistant] > 0)


def test_packed_and_unpacked_losses_agree(tmp_path):
    torch.set_num_threads(1)
    post, model_dir = _setup(tmp_path, _chats())
    post.data.max_length = 512  # one packed row holds all six chats
    plain, _ = _trainer(post, model_dir, tmp_path / "a", packing=False, batch=6)
    packed, _ = _trainer(post, model_dir, tmp_path / "b", packing=True, batch=1)
    b1 = next(iter(plain.get_train_dataloader()))
    b2 = next(iter(packed.get_train_dataloader()))
    assert b1["input_ids"].shape[0] == 6 and b2["input_ids"].shape[0] == 1  # all six chats in one packed row
    assert (b2["position_ids"] == 0).sum() == 6
    plain.model.eval()
    packed.model.eval()
    with torch.no_grad():
        l1 = plain.compute_loss(plain.model, dict(b1)).item()
        l2 = packed.compute_loss(packed.model, dict(b2)).item()
        # control: the same packed row with positions that do not restart lets attention cross chats
        crossing = dict(b2, position_ids=torch.arange(b2["input_ids"].shape[1])[None])
        crossing = {
            k: v for k, v in crossing.items() if not k.startswith(("cu_seq", "max_length", "seq_idx"))
        }
        l3 = packed.compute_loss(packed.model, crossing).item()
    assert l2 == pytest.approx(l1, rel=1e-5, abs=1e-6)
    assert abs(l3 - l1) > 1e-3


def test_sft_loss_falls_on_alpaca_seed_tasks(tmp_path, shared_data):
    from lmpipe.posttrain.data import read_source
    from lmpipe.posttrain.sft import train_sft

    torch.set_num_threads(1)
    seed = shared_data / "alpaca" / "seed_tasks.jsonl"
    texts = [m["content"] for c in read_source(_src(seed)).kept for m in c.messages]
    model_dir = build_tiny_model(tmp_path / "base", texts=texts, vocab_size=1000, hidden=64)
    ev = tmp_path / "eval.jsonl"
    ev.write_text(
        json.dumps({"id": "e", "question": "In which city is The Brax Observatory based?", "answer": "X"})
        + "\n"
    )
    post = PosttrainConfig.model_validate(
        {
            "data": {
                "sft": [{"path": str(seed), "format": "alpaca_seed"}],
                "eval_sets": [{"path": str(ev)}],
                "max_length": 192,
            },
            "sft": {"train": {"max_steps": 30, "lr": 3e-3, "batch_size": 4, "save_steps": 100}},
        }
    )
    stats = train_sft(
        post, model_dir, tmp_path / "out", tmp_path / "ck", tmp_path / "data", tmp_path / "live", 0
    )
    curve = [
        float(x.split("\t")[1])
        for x in (tmp_path / "live/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]
    ]
    assert len(curve) == 30
    first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
    assert last < first - 0.5, (first, last)  # measured: 6.86 -> 6.13 over 30 steps
    d = stats["data"]
    assert d["in"] == d["kept"] + sum(d["rejected"].values()) and d["rejected"].get("over_length", 0) > 0
    assert (tmp_path / "out" / "config.json").is_file() and (tmp_path / "out" / "tokenizer.json").is_file()


def _src(path):
    from lmpipe.posttrain.config import InstructSource

    return InstructSource(path=str(path), format="alpaca_seed")


@pytest.mark.e2e
def test_sft_resumes_after_kill_9(tmp_path):
    post, _ = _setup(tmp_path, _chats(24), max_steps=12, save_steps=4, batch_size=2)
    runs = {}
    for name in ("killed", "straight"):
        d = tmp_path / name
        d.mkdir()
        (d / "post.json").write_text(post.model_dump_json())
        build_tiny_model(
            d / "base", texts=[m["content"] for c in _chats(24) for m in c["messages"]] * 3, vocab_size=400
        )
        runs[name] = d
    killed = runs["killed"]
    stats = train_killed_and_straight(
        "sft", killed, runs["straight"], "checkpoint-4", timeout=300, settle=1.0
    )
    assert stats["resumed_from"] in {"checkpoint-4", "checkpoint-8"} and stats["steps"] == 12
    a, b = curve(killed, "loss"), curve(runs["straight"], "loss")
    assert [s for s, _ in a] == list(range(1, 13))  # the curve continues: every step once
    assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-4)
    from safetensors.torch import load_file

    wa, wb = (
        load_file(killed / "out/model.safetensors"),
        load_file(runs["straight"] / "out/model.safetensors"),
    )
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert diff < 1e-5, diff


def test_training_attends_per_chat_exactly_and_gives_sdpa_back(tmp_path):
    """Packed training runs per-chat causal attention (no N×N mask); its loss equals the unpacked batch's."""
    from transformers import TrainerCallback

    from lmpipe.posttrain.varlen import NAME, packed_attention_callback

    torch.set_num_threads(1)
    post, model_dir = _setup(tmp_path, _chats())
    post.data.max_length = 512
    plain, _ = _trainer(post, model_dir, tmp_path / "a", packing=False, batch=6)
    packed, _ = _trainer(post, model_dir, tmp_path / "b", packing=True, batch=1)
    b1 = next(iter(plain.get_train_dataloader()))
    b2 = next(iter(packed.get_train_dataloader()))
    plain.model.eval()
    packed.model.eval()
    switch = packed_attention_callback()
    with torch.no_grad():
        l1 = plain.compute_loss(plain.model, dict(b1)).item()  # one padded row per chat, sdpa
        switch.on_train_begin(None, None, None, model=packed.model)
        # all six chats in one row, per-chat attention
        l2 = packed.compute_loss(packed.model, dict(b2)).item()
        switch.on_train_end(None, None, None, model=packed.model)
    assert l2 == pytest.approx(l1, rel=1e-5, abs=1e-6)

    seen = []

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kw):
            seen.append(model.config._attn_implementation)

    packed.model.train()
    packed.add_callback(Probe())
    packed.train()
    assert seen and set(seen) == {NAME}
    assert packed.model.config._attn_implementation == "sdpa"  # generation and the exported model keep sdpa
