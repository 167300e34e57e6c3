"""Read packed token files and sample training windows from a weighted mixture of domains.

``TokenIndex`` maps ``data/tokens/index.json`` (written by :mod:`lmpipe.tokenization`): each domain of a
split is one contiguous token stream, the concatenation of its files in index order, read through
``np.memmap`` (nothing is loaded up front; the OS pages in only the windows used).

``MixtureSampler`` draws one window of ``seq_len + 1`` tokens per step (input ``w[:-1]``, target ``w[1:]``).
Windows tile a domain's stream at stride ``seq_len``, so consecutive windows share one token and every token
is a target exactly once per epoch. Randomness is counter-based, a pure function of
``(seed, step block)`` for the domain choices and ``(seed, domain, epoch)`` for the window order within a
domain. So the whole position is two numbers per domain plus the step counter: ``state_dict()`` is
tiny, JSON-friendly, and ``load_state_dict()`` continues the identical sequence. ``epochs_consumed()``
counts passes per domain, so repeated data (a small domain with a big weight) is visible.

Weights may change during training (online reweighting, :mod:`lmpipe.mixing.reweight`) through a
:class:`WeightSchedule`: "from global step s on, weights w". The domain of step s is the inverse CDF of the
current weights at one counter-based uniform draw, so a schedule entry changes the choices from its step on and
nothing before it; with no entry the choices are exactly those of ``Generator.choice`` with the fixed weights.
The RS2 baseline sampler is :class:`lmpipe.mixing.rs2.RS2Sampler`.

Training reads it through :mod:`lmpipe.training.data` (global batches sliced per rank); this module does
not import torch.

Kept as one module past ~400 lines on purpose: the index's stream layout, the window arithmetic and the
counter-based draws together define which tokens step s reads, and the resume contract (``state_dict``) is
only checkable with all three in view.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from lmpipe.mixing.config import MixtureConfig

INDEX = "index.json"
TUNED = "best_mixture.yaml"  # the tune stage's winner, a params fragment ``{mixture: {weights: ...}}``
STATE_VERSION = 1
_BLOCK = 4096  # domain choices are drawn this many steps at a time from a generator keyed by the block number


class DomainStream:
    """One domain's tokens of one split: its files, memory-mapped lazily, read as one stream."""

    def __init__(self, paths: list[Path], counts: list[int], dtype: np.dtype) -> None:
        pairs = [(p, n) for p, n in zip(paths, counts, strict=True) if n > 0]  # np.memmap rejects empty files
        self.paths = [p for p, _ in pairs]
        self.counts = [n for _, n in pairs]
        self.dtype = np.dtype(dtype)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])
        self._maps: list[np.memmap] | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        # pickling a memmap copies its data; workers re-map on first read instead
        return {**self.__dict__, "_maps": None}

    def maps(self) -> list[np.memmap]:
        if self._maps is None:
            maps = []
            for p, n in zip(self.paths, self.counts, strict=True):
                expect = n * self.dtype.itemsize
                if not p.exists() or p.stat().st_size != expect:
                    size = p.stat().st_size if p.exists() else "missing"
                    raise ValueError(f"{p}: expected {expect} bytes ({n} {self.dtype.name} tokens), found {size}")
                maps.append(np.memmap(p, dtype=self.dtype, mode="r", shape=(n,)))
            self._maps = maps
        return self._maps

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` as int64, crossing file boundaries as needed."""
        end = start + length
        if start < 0 or end > len(self):
            raise IndexError(f"tokens [{start}, {end}) outside a stream of {len(self)}")
        maps = self.maps()
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        parts = []
        while start < end:
            lo = start - int(self.offsets[i])
            take = min(end, int(self.offsets[i + 1])) - start
            parts.append(maps[i][lo : lo + take])
            start += take
            i += 1
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return out.astype(np.int64)


class TokenIndex:
    """``index.json`` of a token directory: dtype, vocab, EOS id, and per split/domain token files."""

    def __init__(self, root: Path, meta: dict[str, Any]) -> None:
        self.root = root
        self.meta = meta
        self.dtype = np.dtype(meta["dtype"])
        self.vocab_size: int = meta["vocab_size"]
        self.eos_id: int = meta["eos_id"]
        self.tokenizer: str = meta["tokenizer"]
        self.splits: dict[str, dict[str, dict[str, Any]]] = meta["splits"]

    @classmethod
    def load(cls, path: str | Path) -> TokenIndex:
        """``path``: the token directory or its ``index.json``."""
        path = Path(path)
        file = path / INDEX if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"{file} not found: run the tokenize stage first")
        return cls(file.parent, json.loads(file.read_text()))

    @classmethod
    def merge(cls, indexes: list[TokenIndex]) -> TokenIndex:
        """One view over several token directories packed with the same tokenizer (e.g. continual pretraining:
        new synthetic domains plus replay of the original ones). File paths become absolute paths into their own
        directory, so nothing is copied; a domain present in two indexes of one split is an error."""
        if not indexes:
            raise ValueError("merge needs at least one token index")
        first = indexes[0]
        for other in indexes[1:]:
            for key in ("dtype", "vocab_size", "eos_id"):
                a, b = first.meta[key], other.meta[key]
                if a != b:
                    raise ValueError(f"token indexes {first.root} and {other.root} differ in {key}: {a!r} vs {b!r} "
                                     "(were they packed with the same tokenizer?)")
        splits: dict[str, dict[str, dict[str, Any]]] = {}
        owner: dict[tuple[str, str], Path] = {}
        for idx in indexes:
            for split, domains in idx.splits.items():
                for domain, info in domains.items():
                    if (split, domain) in owner:
                        raise ValueError(f"domain {domain!r} ({split}) is in both {owner[split, domain]} and {idx.root}")
                    owner[split, domain] = idx.root
                    files = [{**f, "path": str((idx.root / f["path"]).absolute())} for f in info["files"]]
                    splits.setdefault(split, {})[domain] = {**info, "files": files}
        meta = {**first.meta, "splits": splits, "merged_from": [str(i.root) for i in indexes]}
        return cls(first.root, meta)

    def domains(self, split: str = "train") -> list[str]:
        return sorted(self._split(split))

    def tokens(self, domain: str, split: str = "train") -> int:
        return int(self._split(split)[domain]["tokens"])

    def stream(self, domain: str, split: str = "train") -> DomainStream:
        doms = self._split(split)
        if domain not in doms:
            raise KeyError(f"domain {domain!r} not in split {split!r} of {self.root}; available: {', '.join(sorted(doms))}")
        files = doms[domain]["files"]
        return DomainStream([self.root / f["path"] for f in files], [int(f["tokens"]) for f in files], self.dtype)

    def _split(self, split: str) -> dict[str, dict[str, Any]]:
        if split not in self.splits:
            raise KeyError(f"split {split!r} not in {self.root / INDEX}; available: {', '.join(sorted(self.splits))}")
        return self.splits[split]


def normalize_weights(
    weights: Mapping[str, float], available: list[str], missing: Literal["error", "ignore"] = "error"
) -> dict[str, float]:
    """Validate and normalise to sum 1 (sorted by domain). Zero weights are kept (and never sampled)."""
    bad = {d: w for d, w in weights.items() if not (isinstance(w, int | float) and math.isfinite(w) and w >= 0)}
    if bad:
        raise ValueError(f"mixture weights must be finite and non-negative; got {bad}")
    absent = sorted(set(weights) - set(available))
    if absent and missing == "error":
        raise ValueError(
            f"mixture weights name domain(s) {absent} absent from the token index; available: "
            f"{', '.join(available)} (set mixture.missing: ignore to drop them)"
        )
    kept = {d: float(w) for d, w in sorted(weights.items()) if d in available}
    total = sum(kept.values())
    if total <= 0:
        raise ValueError(f"mixture weights need a positive weight on an available domain; got {dict(weights)}")
    return {d: w / total for d, w in kept.items()}


class WeightSchedule:
    """Sorted ``(from_step, weights)`` entries shared by a sampler and whatever updates it (a training callback).

    Entries are only appended, at steps the sampler has not drawn yet (checked), so the weights of every step
    are fixed once drawn: a resumed run that replays the same entries draws the same sequence."""

    def __init__(self, entries: list[tuple[int, dict[str, float]]] | None = None) -> None:
        self.entries: list[tuple[int, dict[str, float]]] = []
        self._steps: list[int] = []
        self.sampler_step: Any = None  # callable -> the live sampler's next step (set by the sampler)
        for step, w in entries or []:
            self.add(step, w)

    def add(self, from_step: int, weights: Mapping[str, float]) -> None:
        if self.entries and from_step < self.entries[-1][0]:
            raise ValueError(f"schedule entries must come in step order: {from_step} after {self.entries[-1][0]}")
        live = self.sampler_step() if self.sampler_step is not None else 0
        if from_step < live:
            raise RuntimeError(f"weights from step {from_step} arrive after the sampler drew step {live - 1}")
        entry = (int(from_step), {d: float(w) for d, w in sorted(weights.items())})
        if self.entries and self.entries[-1][0] == entry[0]:
            self.entries[-1] = entry
        else:
            self.entries.append(entry)
            self._steps.append(entry[0])

    def replace(self, entries: list[tuple[int, dict[str, float]]]) -> None:
        """Restore saved entries (in place: the sampler keeps its reference)."""
        self.entries = [(int(s), {d: float(w) for d, w in sorted(dict(w).items())}) for s, w in entries]
        self._steps = [s for s, _ in self.entries]

    def at(self, step: int) -> tuple[int, dict[str, float]] | None:
        """The entry in force at ``step`` as (index, weights), or None before the first entry."""
        i = bisect.bisect_right(self._steps, step) - 1
        return (i, self.entries[i][1]) if i >= 0 else None

    def as_list(self) -> list[list[Any]]:
        return [[s, dict(w)] for s, w in self.entries]


def _domain_key(domain: str) -> int:
    return int.from_bytes(hashlib.blake2b(domain.encode(), digest_size=4).digest(), "big")


class RankStrided:
    """Iteration shared by the window samplers: each global step ``_advance()`` picks ``(domain, window)``;
    this rank's step comes ``rank`` places into each group of ``world_size`` steps."""

    rank: int
    world_size: int
    seq_len: int
    streams: dict[str, DomainStream]

    def _place(self, index: TokenIndex, weights: Mapping[str, float], seq_len: int, seed: int, split: str,
               missing: Literal["error", "ignore"], rank: int, world_size: int) -> None:
        """The set-up every window sampler shares: checked arguments and the normalised weights."""
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1; got {seq_len}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size; got rank={rank}, world_size={world_size}")
        self.index, self.seq_len, self.seed, self.split = index, seq_len, int(seed), split
        self.rank, self.world_size = rank, world_size
        self.weights = normalize_weights(weights, index.domains(split), missing)

    def _advance(self) -> tuple[str, int]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        for _ in range(self.rank):
            self._advance()
        domain, window = self._advance()
        for _ in range(self.world_size - self.rank - 1):
            self._advance()
        return self.streams[domain].read(window * self.seq_len, self.seq_len + 1)


class MixtureSampler(RankStrided):
    """Infinite iterator of ``seq_len + 1``-token windows from a weighted mixture of domains.

    ``rank``/``world_size`` (data parallel): every rank walks the same global sequence and keeps steps
    ``rank, rank + world_size, ...``, so ranks never share a window and the state stays the global one.
    """

    def __init__(
        self,
        index: TokenIndex,
        weights: Mapping[str, float],
        seq_len: int,
        seed: int,
        split: str = "train",
        *,
        missing: Literal["error", "ignore"] = "error",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self._place(index, weights, seq_len, seed, split, missing, rank, world_size)
        self.streams = {d: index.stream(d, split) for d in self.weights}
        self.windows = {d: max(0, (len(s) - 1) // seq_len) for d, s in self.streams.items()}
        short = {d: len(self.streams[d]) for d, w in self.weights.items() if w > 0 and self.windows[d] == 0}
        if short:
            raise ValueError(f"domain(s) too small for one window of {seq_len + 1} tokens: {short} tokens")
        self._active = [d for d, w in self.weights.items() if w > 0]
        self._cdf_base = self._cdf(self.weights)
        self.schedule: WeightSchedule | None = None
        self._cdf_cache: tuple[int, np.ndarray] | None = None
        self.step = 0  # global steps taken (all ranks)
        self.drawn = dict.fromkeys(self.weights, 0)  # windows taken per domain (all ranks)
        self._block: tuple[int, np.ndarray] | None = None
        self._perms: dict[str, tuple[int, np.ndarray]] = {}

    @classmethod
    def from_config(
        cls, index: TokenIndex, cfg: MixtureConfig, seq_len: int, seed: int, split: str = "train", **kw: Any
    ) -> MixtureSampler:
        return cls(index, cfg.weights, seq_len, seed, split, missing=cfg.missing, **kw)

    def use_schedule(self, schedule: WeightSchedule) -> None:
        """Draw from ``schedule``'s weights from its entries' steps on (weights of inactive domains must be 0)."""
        self.schedule = schedule
        schedule.sampler_step = lambda: self.step
        self._cdf_cache = None

    def current_weights(self) -> dict[str, float]:
        """The weights the next step is drawn with."""
        hit = self.schedule.at(self.step) if self.schedule is not None else None
        return dict(self.weights) if hit is None else {d: hit[1].get(d, 0.0) for d in self.weights}

    # ------------------------------------------------------------------ sampling
    def _cdf(self, weights: Mapping[str, float]) -> np.ndarray:
        p = np.array([float(weights.get(d, 0.0)) for d in self._active], dtype=np.float64)
        extra = {d: w for d, w in weights.items() if w > 0 and d not in self._active}
        if extra or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
            raise ValueError(f"scheduled weights {dict(weights)} must be finite, non-negative, positive somewhere "
                             f"and only on the sampler's domains {self._active}")
        cdf = np.cumsum(p / p.sum())  # as Generator.choice builds it, so a fixed mixture draws the same as choice()
        return cdf / cdf[-1]

    def _uniforms(self, block: int) -> np.ndarray:
        if self._block is None or self._block[0] != block:
            self._block = (block, np.random.default_rng([self.seed, 1, block]).random(_BLOCK))
        return self._block[1]

    def _cdf_at(self, step: int) -> np.ndarray:
        hit = self.schedule.at(step) if self.schedule is not None else None
        if hit is None:
            return self._cdf_base
        if self._cdf_cache is None or self._cdf_cache[0] != hit[0]:
            self._cdf_cache = (hit[0], self._cdf(hit[1]))
        return self._cdf_cache[1]

    def _perm(self, domain: str, epoch: int) -> np.ndarray:
        cached = self._perms.get(domain)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, 2, _domain_key(domain), epoch])
            cached = self._perms[domain] = (epoch, rng.permutation(self.windows[domain]))
        return cached[1]

    def _advance(self) -> tuple[str, int]:
        """Take the next global step: (domain, window number); updates the position."""
        block, offset = divmod(self.step, _BLOCK)
        u = self._uniforms(block)[offset]
        domain = self._active[int(np.searchsorted(self._cdf_at(self.step), u, side="right"))]
        epoch, pos = divmod(self.drawn[domain], self.windows[domain])
        window = int(self._perm(domain, epoch)[pos])
        self.drawn[domain] += 1
        self.step += 1
        return domain, window

    # ------------------------------------------------------------------ position and reporting
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "drawn": dict(self.drawn),
            "seed": self.seed,
            "seq_len": self.seq_len,
            "split": self.split,
            "weights": dict(self.weights),
            "world_size": self.world_size,
            "schedule": self.schedule.as_list() if self.schedule is not None else [],
        }

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Continue from ``state``. ``strict`` refuses a state from a differently configured sampler (the
        sequence would silently differ); ``strict=False`` keeps the per-domain positions of shared domains,
        e.g. to re-weight a continued run."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"sampler state version {state.get('version')!r} != {STATE_VERSION}")
        mine = self.state_dict()
        diffs = {}
        for k in ("seed", "seq_len", "split", "world_size"):
            if state[k] != mine[k]:
                diffs[k] = (state[k], mine[k])
        if set(state["weights"]) != set(self.weights) or any(
            not math.isclose(state["weights"][d], w, rel_tol=1e-9, abs_tol=1e-12) for d, w in self.weights.items()
            if d in state["weights"]
        ):
            diffs["weights"] = (state["weights"], self.weights)
        if diffs and strict:
            detail = "; ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diffs.items())
            raise ValueError(f"sampler state does not match this sampler ({detail}); pass strict=False to adapt")
        self.step = int(state["step"])
        self.drawn = {d: int(state["drawn"].get(d, 0)) for d in self.weights}
        self._block = None
        self._perms = {}
        saved = state.get("schedule") or []
        if saved:  # a reweighted run: its entries so far (a callback may already hold these and later ones)
            if self.schedule is None:
                self.use_schedule(WeightSchedule())
            assert self.schedule is not None
            if len(saved) > len(self.schedule.entries):
                self.schedule.replace(saved)
        self._cdf_cache = None

    def epochs_consumed(self) -> dict[str, float]:
        """Passes over each domain's windows so far (1.0 = every window once; > 1 means repeats)."""
        return {d: (self.drawn[d] / self.windows[d] if self.windows[d] else 0.0) for d in self.weights}


def tuned_mixture(mixture: MixtureConfig, path: str | Path) -> MixtureConfig:
    """``mixture`` with its weights replaced by the tune stage's winner read from ``path`` (a params fragment)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mixture.from_tune is set but {path} does not exist: run the tune stage first "
                                "(dvc repro tune); it writes the file once a trial completes")
    frag = yaml.safe_load(path.read_text()) or {}
    weights = (frag.get("mixture") or {}).get("weights") if isinstance(frag, dict) else None
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"{path}: expected a mapping mixture.weights (domain: weight), got {frag!r}")
    return type(mixture).model_validate({**mixture.model_dump(), "weights": weights})  # validated like params
