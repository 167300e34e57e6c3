"""TokenIndex and MixtureSampler on small hand-built token directories (values encode their position)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmpipe.config import ConfigError, parse_params
from lmpipe.mixture import MixtureSampler, TokenIndex

# domain -> (first token value, token count split over files); values are unique across domains
LAYOUT = {"a": (0, [30, 41]), "b": (1000, [50]), "c": (2000, [20, 10, 11]), "z": (3000, [60])}


def build_index(root: Path, layout: dict = LAYOUT, dtype: str = "uint16") -> Path:
    splits: dict = {"train": {}, "val": {}}
    for domain, (base, sizes) in layout.items():
        files, start = [], base
        for k, n in enumerate(sizes):
            rel = f"train/{domain}/part-{k:05d}.bin"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            np.arange(start, start + n, dtype=dtype).tofile(root / rel)
            files.append({"path": rel, "tokens": n})
            start += n
        splits["train"][domain] = {"tokens": sum(sizes), "docs": 1, "files": files}
    index = {"dtype": dtype, "vocab_size": 4000, "eos_id": 0, "tokenizer": "models/tokenizer", "splits": splits}
    (root / "index.json").write_text(json.dumps(index))
    return root


@pytest.fixture
def index(tmp_path) -> TokenIndex:
    return TokenIndex.load(build_index(tmp_path))


def domain_of(window: np.ndarray) -> str:
    return "abcz"[int(window[0]) // 1000]


def take(sampler: MixtureSampler, n: int) -> list[np.ndarray]:
    return [next(sampler) for _ in range(n)]


def test_index_reads_across_file_boundaries(index, tmp_path):
    assert index.domains() == ["a", "b", "c", "z"] and index.tokens("c") == 41 and index.eos_id == 0
    s = index.stream("c")
    np.testing.assert_array_equal(s.read(15, 20), np.arange(2015, 2035))  # spans all three files
    assert s.read(0, 1).dtype == np.int64
    with pytest.raises(IndexError):
        s.read(30, 12)
    assert TokenIndex.load(tmp_path / "index.json").tokens("a") == 71
    with pytest.raises(KeyError, match="available: a, b, c, z"):
        index.stream("nope")


def test_windows_tile_each_domain_and_reshuffle_per_epoch(index):
    # c: 41 tokens, seq_len 4 -> (41 - 1) // 4 = 10 windows starting at 0, 4, ..., 36, each 5 tokens long
    s = MixtureSampler(index, {"c": 1.0}, seq_len=4, seed=3)
    epochs = [take(s, 10) for _ in range(3)]
    for windows in epochs:
        starts = sorted(int(w[0]) - 2000 for w in windows)
        assert starts == list(range(0, 40, 4))  # every window exactly once per epoch
        for w in windows:
            np.testing.assert_array_equal(w, np.arange(w[0], w[0] + 5))
    orders = [[int(w[0]) for w in e] for e in epochs]
    assert orders[0] != orders[1] != orders[2]  # a new order each epoch (10! orders)
    assert orders[0] != sorted(orders[0])


def test_epochs_consumed_hand_checked(index):
    s = MixtureSampler(index, {"a": 1.0, "z": 0.0}, seq_len=10, seed=0)
    assert s.windows == {"a": 7, "z": 5}  # (71 - 1) // 10 and (60 - 1) // 10
    take(s, 17)
    assert s.epochs_consumed() == {"a": pytest.approx(17 / 7), "z": 0.0}
    s2 = MixtureSampler(index, {"a": 1, "b": 1}, seq_len=7, seed=0)  # a: 10 windows, b: 7 windows
    seen = [domain_of(w) for w in take(s2, 200)]
    got = s2.epochs_consumed()
    assert got["a"] == pytest.approx(seen.count("a") / 10) and got["b"] == pytest.approx(seen.count("b") / 7)
    assert s2.windows == {"a": 10, "b": 7}


def test_frequencies_match_weights(index):
    weights = {"a": 5, "b": 3, "c": 2, "z": 0}
    s = MixtureSampler(index, weights, seq_len=8, seed=11)
    assert s.weights == {"a": 0.5, "b": 0.3, "c": 0.2, "z": 0.0}  # normalised, zero kept and reported
    n = 30_000
    counts = {d: 0 for d in "abcz"}
    for w in take(s, n):
        counts[domain_of(w)] += 1
    assert counts["z"] == 0
    expected = {d: n * p for d, p in s.weights.items() if p > 0}
    chi2 = sum((counts[d] - e) ** 2 / e for d, e in expected.items())
    assert chi2 < 13.82, (counts, chi2)  # chi-square, 2 degrees of freedom, p = 0.001


def test_deterministic_given_seed(index):
    w = {"a": 1, "b": 1, "c": 1}
    one, two = (take(MixtureSampler(index, w, 6, seed=5), 50) for _ in range(2))
    other = take(MixtureSampler(index, w, 6, seed=6), 50)
    assert all(np.array_equal(x, y) for x, y in zip(one, two, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(one, other, strict=True))
    # dict order of the weights does not matter
    three = take(MixtureSampler(index, {"c": 1, "b": 1, "a": 1}, 6, seed=5), 50)
    assert all(np.array_equal(x, y) for x, y in zip(one, three, strict=True))


@pytest.mark.parametrize("n_before", [37, 4090])  # 4090 crosses a block of domain choices
def test_resume_continues_identical_sequence(index, n_before):
    w = {"a": 0.6, "b": 0.3, "c": 0.1}
    ref = MixtureSampler(index, w, seq_len=5, seed=9)
    take(ref, n_before)
    state = json.loads(json.dumps(ref.state_dict()))  # survives a JSON checkpoint
    expected = take(ref, 60)
    resumed = MixtureSampler(index, w, seq_len=5, seed=9)
    resumed.load_state_dict(state)
    got = take(resumed, 60)
    assert all(np.array_equal(x, y) for x, y in zip(got, expected, strict=True))
    assert resumed.epochs_consumed() == ref.epochs_consumed()
    with pytest.raises(ValueError, match="seed"):
        MixtureSampler(index, w, seq_len=5, seed=10).load_state_dict(state)
    reweighted = MixtureSampler(index, {"a": 1, "b": 1, "c": 1}, seq_len=5, seed=9)
    with pytest.raises(ValueError, match="weights"):
        reweighted.load_state_dict(state)
    reweighted.load_state_dict(state, strict=False)  # continual pretraining: keep positions, new weights
    assert reweighted.drawn == {d: state["drawn"][d] for d in "abc"}
    # each domain continues where it stopped: its next window is the one the original run took next
    after = take(reweighted, 60)
    for d in "abc":
        want = [x.tolist() for x in expected if domain_of(x) == d]
        got_d = [x.tolist() for x in after if domain_of(x) == d]
        k = min(len(want), len(got_d))
        assert k > 0 and got_d[:k] == want[:k]


def test_data_parallel_ranks_partition_the_sequence(index):
    w = {"a": 1, "b": 1, "c": 1}
    single = take(MixtureSampler(index, w, 4, seed=2), 40)
    r0, r1 = (MixtureSampler(index, w, 4, seed=2, rank=r, world_size=2) for r in (0, 1))
    pairs = [(next(r0), next(r1)) for _ in range(20)]
    interleaved = [x for p in pairs for x in p]
    assert all(np.array_equal(x, y) for x, y in zip(interleaved, single, strict=True))


def test_validation_errors(index):
    with pytest.raises(ValueError, match="non-negative"):
        MixtureSampler(index, {"a": -1, "b": 2}, 4, 0)
    with pytest.raises(ValueError, match=r"\['web'\].*available: a, b, c, z"):
        MixtureSampler(index, {"a": 1, "web": 1}, 4, 0)
    s = MixtureSampler(index, {"a": 1, "web": 1}, 4, 0, missing="ignore")
    assert s.weights == {"a": 1.0}
    with pytest.raises(ValueError, match="positive weight"):
        MixtureSampler(index, {"a": 0, "b": 0}, 4, 0)
    with pytest.raises(ValueError, match="too small"):
        MixtureSampler(index, {"c": 1}, seq_len=41, seed=0)  # 41 tokens < one window of 42
    MixtureSampler(index, {"c": 1}, seq_len=40, seed=0)  # exactly one window fits
    with pytest.raises(ValueError, match="nan"):
        MixtureSampler(index, {"a": float("nan")}, 4, 0)


def test_mixture_params_validated():
    base = {"ingest": {"sources": [{"uri": "x", "domain": "x"}]}}
    p = parse_params({**base, "mixture": {"weights": {"prose": 3, "code": 1}, "missing": "ignore"}})
    assert p.mixture.weights == {"prose": 3, "code": 1}
    with pytest.raises(ConfigError, match="non-negative"):
        parse_params({**base, "mixture": {"weights": {"prose": -1, "code": 1}}})
    with pytest.raises(ConfigError, match="missing"):
        parse_params({**base, "mixture": {"weights": {"prose": 1}, "missing": "skip"}})


def test_module_imports_without_torch(project_root):
    code = "import sys, lmpipe.mixture; assert 'torch' not in sys.modules, 'torch imported eagerly'"
    subprocess.run([sys.executable, "-c", code], cwd=project_root, check=True)


def test_sampler_on_a_real_tokenize_run(tmp_path):
    from lmpipe.documents import Document, ShardWriter, write_manifest
    from lmpipe.executors import LocalExecutor
    from lmpipe.tokenization import tokenize_corpus
    from lmpipe.tokenization_config import TokenizeConfig
    from lmpipe.tokenizer import Encoder

    docs = [Document(f"{d}{i}", f"{d} document number {i}. " * 20, d, "t") for d in ("x", "y") for i in range(30)]
    with ShardWriter(tmp_path / "docs", "part", docs_per_shard=25) as w:
        w.write_all(docs)
    write_manifest(tmp_path / "docs", w.shards)
    tokenize_corpus(TokenizeConfig(vocab_size=300), tmp_path / "docs", tmp_path / "tok", tmp_path / "tk",
                    tmp_path / "held", LocalExecutor(1))
    ix = TokenIndex.load(tmp_path / "tok")
    s = MixtureSampler(ix, {"x": 1, "y": 0}, seq_len=32, seed=0)
    enc = Encoder.load(tmp_path / "tk")
    for win in take(s, 20):
        assert win.max() < ix.vocab_size
        text = enc.decode(win)
        assert "x document number" in text and "y document" not in text
    val = MixtureSampler(ix, {"x": 1, "y": 1}, seq_len=8, seed=0, split="val")
    assert next(val).shape == (9,)
