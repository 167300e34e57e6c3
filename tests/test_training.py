"""Lightning training on real text: learns, exports an HF model, and resumes exactly after kill -9."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from lmpipe.mixing.config import MixtureConfig
from lmpipe.training.config import ModelConfig, TrainConfig
from lmpipe.training.data import GlobalBatches, mixture_samplers
from lmpipe.training.resume import prepare_checkpoint_dir
from lmpipe.training.trainer import train

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
SEQ = 64
EOS = "<|endoftext|>"


def _write_tokens(
    root: Path, tokenizer_dir: Path, train_ids: np.ndarray, val_ids: np.ndarray, vocab: int, eos_id: int
) -> None:
    """A token dir in the tokenize stage's layout (index.json + raw uint16 files), one domain."""
    splits = {}
    for split, ids in (("train", train_ids), ("val", val_ids)):
        rel = f"{split}/prose/000.bin"
        (root / split / "prose").mkdir(parents=True)
        ids.astype(np.uint16).tofile(root / rel)
        splits[split] = {
            "prose": {"tokens": len(ids), "docs": 1, "files": [{"path": rel, "tokens": len(ids)}]}
        }
    index = {
        "dtype": "uint16",
        "vocab_size": vocab,
        "eos_id": eos_id,
        "tokenizer": str(tokenizer_dir),
        "splits": splits,
    }
    (root / "index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def shakespeare(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """tinyshakespeare → a 512-token byte-level BPE (trained here) → train/val token files (90/10 by position)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = (shared_data / "tinyshakespeare" / "input.txt").read_text()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [text],
        trainers.BpeTrainer(
            vocab_size=512, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    root = tmp_path_factory.mktemp("shakespeare")
    tok_dir = root / "tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS).save_pretrained(tok_dir)
    ids = np.array(tok.encode(text).ids, dtype=np.int64)
    cut = int(len(ids) * 0.9)
    _write_tokens(root / "tokens", tok_dir, ids[:cut], ids[cut:], tok.get_vocab_size(), tok.token_to_id(EOS))
    return {
        "root": root,
        "tokens": root / "tokens",
        "tokenizer": tok_dir,
        "train": ids[:cut],
        "val": ids[cut:],
        "vocab": tok.get_vocab_size(),
    }


def _unigram_cross_entropy(train_ids: np.ndarray, val_ids: np.ndarray, vocab: int) -> float:
    """Nats/token of the best context-free model (train frequencies, add-one smoothed) on the val tokens."""
    counts = Counter(train_ids.tolist())
    total = len(train_ids) + vocab
    return -sum(math.log((counts.get(t, 0) + 1) / total) for t in val_ids.tolist()) / len(val_ids)


SMALL_MODEL = ModelConfig(d_model=64, n_layers=2, n_heads=4, max_seq_len=SEQ)
WEIGHTS = MixtureConfig(weights={"prose": 1.0})


@pytest.fixture(scope="module")
def trained(shakespeare: dict) -> dict:
    cfg = TrainConfig(
        seq_len=SEQ,
        batch_size=16,
        max_steps=150,
        lr=5e-3,
        val_every=50,
        val_batches=8,
        ckpt_every=50,
        schedule={"kind": "cosine", "warmup_steps": 10, "min_ratio": 0.1},
    )
    root = shakespeare["root"] / "run"
    stats = train(
        SMALL_MODEL,
        cfg,
        mixture_samplers(shakespeare["tokens"], WEIGHTS, SEQ, 7),
        vocab_size=shakespeare["vocab"],
        ckpt_dir=root / "ckpt",
        log_dir=root / "live",
        export_dir=root / "model",
        tokenizer_dir=shakespeare["tokenizer"],
        seed=7,
        progress=False,
    )
    return {"stats": stats, "root": root, "cfg": cfg}


def test_training_beats_the_unigram_baseline(shakespeare: dict, trained: dict) -> None:
    unigram = _unigram_cross_entropy(shakespeare["train"], shakespeare["val"], shakespeare["vocab"])
    val = trained["stats"]["val_loss"]
    assert trained["stats"]["steps"] == 150
    assert val < unigram - 0.6, f"val loss {val:.3f} not clearly below the unigram baseline {unigram:.3f}"


def test_logged_lr_follows_the_schedule(trained: dict) -> None:
    rows = (trained["root"] / "live" / "plots" / "metrics" / "train" / "lr.tsv").read_text().splitlines()[1:]
    lr = {int(s): float(v) for s, v in (r.split("\t") for r in rows)}
    assert sorted(lr) == list(range(1, 151))  # one row per optimizer step, keyed by steps completed
    # step k ran with the LR of 0-based step k-1: warmup 10 steps to 5e-3, cosine to 5e-4 at 150
    assert lr[1] == 0.0 and lr[6] == pytest.approx(2.5e-3)
    assert lr[81] == pytest.approx(5e-4 + 4.5e-3 * 0.5 * (1 + math.cos(math.pi * 70 / 140)), rel=1e-6)


def test_export_loads_with_auto_classes_and_generates(shakespeare: dict, trained: dict) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = trained["root"] / "model"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    # the exported weights score held-out text as well as the trained model did (loss computed here by hand)
    val = torch.from_numpy(shakespeare["val"][: 8 * (SEQ + 1)].reshape(8, SEQ + 1))
    with torch.no_grad():
        logits = model(input_ids=val[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), val[:, 1:].reshape(-1))
    assert loss.item() < _unigram_cross_entropy(
        shakespeare["train"], shakespeare["val"], shakespeare["vocab"]
    )
    prompt = tok("ROMEO:\n", return_tensors="pt")
    gen = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    assert gen.shape[1] == prompt["input_ids"].shape[1] + 20
    assert tok.decode(gen[0]).startswith("ROMEO:\n")


def test_continual_pretraining_starts_from_init_from(shakespeare: dict, trained: dict) -> None:
    """A second run from the exported model (infinite schedule, no re-warm) starts where the first one ended."""
    root = shakespeare["root"] / "continued"
    cfg = TrainConfig(
        init_from=str(trained["root"] / "model"),
        seq_len=SEQ,
        batch_size=16,
        max_steps=4,
        lr=1e-3,
        val_every=100,
        val_batches=2,
        ckpt_every=100,
        schedule={
            "kind": "infinite",
            "warmup_steps": 0,
            "cooldown_steps": 0,
            "const_ratio": 0.5,
            "min_ratio": 0.05,
            "decay_fraction": 0.5,
        },
    )
    stats = train(
        SMALL_MODEL,
        cfg,
        mixture_samplers(shakespeare["tokens"], WEIGHTS, SEQ, 8),
        vocab_size=shakespeare["vocab"],
        ckpt_dir=root / "ckpt",
        log_dir=root / "live",
        export_dir=None,
        seed=8,
        progress=False,
    )
    first = (root / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1]
    lrs = (root / "live" / "plots" / "metrics" / "train" / "lr.tsv").read_text().splitlines()[1:]
    # the first step already scores like the trained model (a fresh one starts near ln 512 = 6.2)
    assert float(first.split("\t")[1]) < trained["stats"]["val_loss"] + 0.5
    assert float(lrs[0].split("\t")[1]) == pytest.approx(5e-4)  # const_ratio · lr from the first step
    assert stats["steps"] == 4


def test_sampler_position_after_prefetch(shakespeare: dict) -> None:
    """The state recorded after batch n restarts a sampler exactly at batch n + 1, whatever was drawn since."""
    make = mixture_samplers(shakespeare["tokens"], WEIGHTS, SEQ, 3)
    ref = [b for _, b in zip(range(6), GlobalBatches(make, 4), strict=False)]
    batches = GlobalBatches(make, 4)
    it = iter(batches)
    for _ in range(5):  # training consumed 3, the loader prefetched 2 more
        next(it)
    resumed = iter(GlobalBatches(make, 4, resume=batches.state_after(3)))
    for want in ref[3:]:
        got = next(resumed)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # two data-parallel ranks split each global batch between them
    r0, r1 = (next(iter(GlobalBatches(make, 2, rank=r, world_size=2)))[0] for r in (0, 1))
    assert torch.equal(torch.stack([r0[0], r1[0], r0[1], r1[1]]), ref[0][0])


def test_checkpoint_of_another_run_is_discarded(tmp_path: Path) -> None:
    assert prepare_checkpoint_dir(tmp_path, "run-a") is None
    (tmp_path / "latest.ckpt").write_bytes(b"x")
    assert prepare_checkpoint_dir(tmp_path, "run-a") == tmp_path / "latest.ckpt"
    assert prepare_checkpoint_dir(tmp_path, "run-b") is None  # params or data changed: start over
    assert not (tmp_path / "latest.ckpt").exists()


def test_checkpoints_load_without_pickle_and_a_planted_one_is_refused(
    shakespeare: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resume reads checkpoints with weights_only=True only (ours and Lightning's reads); a crafted pickle put
    in place of latest.ckpt is refused naming it, and its code never runs."""
    from lmpipe.safeio import UnsafeFileError
    from tests.test_safeio import plant

    cfg = TrainConfig(
        seq_len=SEQ,
        batch_size=4,
        max_steps=3,
        val_every=3,
        val_batches=1,
        ckpt_every=3,
        schedule={"kind": "wsd", "warmup_steps": 1},
    )

    def run() -> dict:
        return train(
            SMALL_MODEL,
            cfg,
            mixture_samplers(shakespeare["tokens"], WEIGHTS, SEQ, 5),
            vocab_size=shakespeare["vocab"],
            ckpt_dir=tmp_path / "ckpt",
            log_dir=None,
            export_dir=None,
            seed=5,
            progress=False,
        )

    run()
    ckpt = tmp_path / "ckpt" / "latest.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain types and tensors only
    assert state["global_step"] == 3 and set(state["rng_states"]) >= {"python", "numpy", "torch"}

    loads: list[dict] = []
    real_load = torch.load

    def recording_load(*args: object, **kwargs: object) -> object:
        loads.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    assert run()["resumed_from_step"] == 3
    assert len(loads) >= 2 and all(kw.get("weights_only") is True for kw in loads)  # ours, then Lightning's
    monkeypatch.undo()

    marker = tmp_path / "PWNED"
    for kind in ("torch-zip", "pickle"):
        plant(kind, ckpt, marker)
        with pytest.raises(UnsafeFileError, match=r"latest\.ckpt: refused"):
            run()
        assert not marker.exists()


RUN = textwrap.dedent("""
    import json, sys
    from lmpipe.mixing.config import MixtureConfig
    from lmpipe.training.config import ModelConfig, TrainConfig
    from lmpipe.training.data import mixture_samplers
    from lmpipe.training.trainer import train
    a = json.loads(sys.argv[1])
    cfg = TrainConfig(**a["train"])
    stats = train(ModelConfig(**a["model"]), cfg,
                  mixture_samplers(a["tokens"], MixtureConfig(weights={"prose": 1.0}), cfg.seq_len, 11),
                  vocab_size=a["vocab"], ckpt_dir=a["out"] + "/ckpt", log_dir=a["out"] + "/live",
                  export_dir=None, seed=11, progress=False)
    print("STATS " + json.dumps(stats))
""")


def run_like_the_child(spec: dict, out: Path, seed: int = 11) -> dict:
    """What the RUN script does, in this process (the uninterrupted reference run needs no kill)."""
    cfg = TrainConfig(**spec["train"])
    return train(
        ModelConfig(**spec["model"]),
        cfg,
        mixture_samplers(spec["tokens"], WEIGHTS, cfg.seq_len, seed),
        vocab_size=spec["vocab"],
        ckpt_dir=out / "ckpt",
        log_dir=out / "live",
        export_dir=None,
        seed=seed,
        progress=False,
    )


def _losses(run_dir: Path, split: str = "train") -> list[tuple[int, float]]:
    rows = (run_dir / "live" / "plots" / "metrics" / split / "loss.tsv").read_text().splitlines()[1:]
    return [(int(s), float(v)) for s, v in (r.split("\t") for r in rows)]


@pytest.mark.e2e
def test_kill_9_and_resume_matches_an_uninterrupted_run(shakespeare: dict, tmp_path: Path) -> None:
    spec = {
        "tokens": str(shakespeare["tokens"]),
        "vocab": shakespeare["vocab"],
        "model": SMALL_MODEL.model_dump(),
        "train": {
            "seq_len": SEQ,
            "batch_size": 8,
            "grad_accum": 2,
            "max_steps": 40,
            "lr": 5e-3,
            "ckpt_every": 10,
            "val_every": 10,
            "val_batches": 2,
            "threads": 1,
            "schedule": {"kind": "wsd", "warmup_steps": 5},
        },
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-c", RUN, json.dumps({**spec, "out": str(out)})]

    full = tmp_path / "full"
    run_like_the_child(spec, full)  # in-process: the same call as RUN, without a second interpreter start-up

    crash = tmp_path / "crash"
    proc = subprocess.Popen(cmd(crash), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = crash / "ckpt" / "latest.ckpt"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < killed_at < 40

    done = subprocess.run(cmd(crash), check=True, env=env, capture_output=True, text=True, timeout=300)
    stats = json.loads(done.stdout.split("STATS ", 1)[1])
    assert stats["resumed_from_step"] == killed_at and stats["steps"] == 40
    want, got = _losses(full), _losses(crash)
    assert [s for s, _ in want] == list(range(1, 41))
    assert got == want  # step for step, bit for bit
    # validation, including the one at the checkpoint the run was killed after, matches too
    assert [s for s, _ in _losses(full, "val")] == [10, 20, 30, 40]
    assert _losses(crash, "val") == _losses(full, "val")
