"""JSON-constrained decoding: a byte-level JSON prefix automaton and the vocabulary masks it allows.

``response_format={"type": "json_object"}`` must yield text that ``json.loads`` accepts and that is an object.
At each step a request's automaton state says which tokens keep the output a prefix of valid JSON; every
other token's logit is set to -inf before sampling, so temperature, top-p and seeds work as usual on what
is left, and end-of-sequence is allowed only once the top-level object is closed (then it is the only
choice). The automaton reads bytes, so a token that holds part of a UTF-8 character works inside strings.

Masks depend only on the automaton state, which repeats constantly ("inside a string, two levels deep"),
so each state's mask is computed once by walking a trie of the vocabulary's byte strings, pruning a
subtree at the first byte that breaks the grammar, and cached. Inside strings, where almost every token is
allowed, only the tokens holding a quote, backslash or control byte are walked.

A few limits keep a small model from wandering: whitespace runs outside strings hold at most
``MAX_NEWLINES`` line breaks and the indentation pretty-printing needs at that depth (models under a
constraint otherwise tend to emit endless newlines), numbers at most ``MAX_DIGITS`` digits per part, and
at most ``MAX_DEPTH`` containers nest (bounded nesting keeps the number of distinct states, and so of
cached masks, finite).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

MAX_NEWLINES = 2  # per whitespace run outside strings: small models under a constraint loop on newlines
INDENT = 4  # spaces/tabs allowed per run: INDENT per open container (pretty-printed JSON), plus one
MAX_DEPTH = 16
MAX_DIGITS = 16  # per part of a number: small models otherwise repeat a digit until max_tokens
MASK_CACHE = 512  # masks kept per vocabulary (one bool per token each)

# modes of the automaton
ROOT, VALUE, OBJ_FIRST, OBJ_KEY, COLON, AFTER, ARR_FIRST, STR, STR_ESC, STR_U, NUM, LIT, DONE = range(13)
# (mode, open containers as '{'/'[' chars, mode detail, whitespace run as newlines << 8 | blanks). The detail: STR/STR_ESC whether
# the string is a key, STR_U (is key, hex digits left), NUM (number part, digits in that part), LIT the rest
State = tuple[int, str, Any, int]

_WS = frozenset(b" \t\n\r")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = frozenset(b'"\\/bfnrt')
_DIGITS = frozenset(b"0123456789")
# number grammar: (sub-state, byte class) -> next sub-state; sub-states that may end a number
_NUM: dict[tuple[str, str], str] = {
    ("minus", "0"): "zero", ("minus", "d"): "int",
    ("int", "0"): "int", ("int", "d"): "int", ("int", "."): "dot", ("int", "e"): "e",
    ("zero", "."): "dot", ("zero", "e"): "e",
    ("dot", "0"): "frac", ("dot", "d"): "frac",
    ("frac", "0"): "frac", ("frac", "d"): "frac", ("frac", "e"): "e",
    ("e", "0"): "exp", ("e", "d"): "exp", ("e", "+"): "esign",
    ("esign", "0"): "exp", ("esign", "d"): "exp", ("exp", "0"): "exp", ("exp", "d"): "exp",
}  # fmt: skip
_NUM_END = frozenset({"zero", "int", "frac", "exp"})
_LITERALS = {ord("t"): b"rue", ord("f"): b"alse", ord("n"): b"ull"}

START: State = (ROOT, "", None, 0)


def _num_class(b: int) -> str:
    if b == 0x30:
        return "0"
    if b in _DIGITS:
        return "d"
    if b in (0x65, 0x45):  # e E
        return "e"
    if b == 0x2D:  # '-' is a sign only after the exponent marker
        return "+"
    return chr(b) if b < 128 else ""


def _after_value(stack: str) -> State:
    return (AFTER, stack, None, 0) if stack else (DONE, "", None, 0)


def _start_value(stack: str, b: int) -> State | None:
    if b in (0x7B, 0x5B):  # { [
        if len(stack) >= MAX_DEPTH:
            return None
        return (OBJ_FIRST, stack + "{", None, 0) if b == 0x7B else (ARR_FIRST, stack + "[", None, 0)
    if b == 0x22:
        return (STR, stack, False, 0)
    if b == 0x2D:
        return (NUM, stack, ("minus", 0), 0)
    if b in _DIGITS:
        return (NUM, stack, ("zero" if b == 0x30 else "int", 1), 0)
    if b in _LITERALS:
        return (LIT, stack, _LITERALS[b], 0)
    return None


def step(s: State, b: int) -> State | None:
    """The state after byte ``b``, or None when ``b`` cannot continue valid JSON from ``s``."""
    mode, stack, sub, ws = s
    if mode == STR:
        if b == 0x22:
            return (COLON, stack, None, 0) if sub else _after_value(stack)
        if b == 0x5C:
            return (STR_ESC, stack, sub, 0)
        return None if b < 0x20 else s
    if mode == STR_ESC:
        if b in _ESCAPES:
            return (STR, stack, sub, 0)
        return (STR_U, stack, (sub, 4), 0) if b == 0x75 else None
    if mode == STR_U:
        key, left = sub
        if b not in _HEX:
            return None
        return (STR, stack, key, 0) if left == 1 else (STR_U, stack, (key, left - 1), 0)
    if mode == NUM:
        part, digits = sub
        nxt = _NUM.get((part, _num_class(b)))
        if nxt is not None:
            run = digits + 1 if nxt == part else int(b in _DIGITS)
            return (NUM, stack, (nxt, run), 0) if run <= MAX_DIGITS else None
        if part not in _NUM_END:
            return None
        return step(_after_value(stack), b)  # the number ended: this byte belongs to what follows
    if mode == LIT:
        if b != sub[0]:
            return None
        return (LIT, stack, sub[1:], 0) if len(sub) > 1 else _after_value(stack)
    if mode == DONE:
        return None  # nothing after the top-level value: the next token must be end-of-sequence
    if b in _WS:
        if mode == ROOT:
            return None
        newlines, blanks = ws >> 8, ws & 0xFF  # the run so far
        if b in (0x0A, 0x0D):
            newlines, blanks = newlines + 1, 0  # indentation restarts on each line
        else:
            blanks += 1
        if newlines > MAX_NEWLINES or blanks > INDENT * len(stack) + 1:
            return None
        return (mode, stack, sub, newlines << 8 | blanks)
    if mode == ROOT:  # json_object: the top-level value is an object
        return (OBJ_FIRST, "{", None, 0) if b == 0x7B else None
    if mode == VALUE:
        return _start_value(stack, b)
    if mode == ARR_FIRST:
        return _after_value(stack[:-1]) if b == 0x5D else _start_value(stack, b)
    if mode in (OBJ_FIRST, OBJ_KEY):
        if b == 0x22:
            return (STR, stack, True, 0)
        return _after_value(stack[:-1]) if b == 0x7D and mode == OBJ_FIRST else None
    if mode == COLON:
        return (VALUE, stack, None, 0) if b == 0x3A else None
    # AFTER: a value inside a container is complete
    top = stack[-1]
    if b == 0x2C:
        return (OBJ_KEY if top == "{" else VALUE, stack, None, 0)
    if (b == 0x7D and top == "{") or (b == 0x5D and top == "["):
        return _after_value(stack[:-1])
    return None


def feed(s: State, data: bytes) -> State | None:
    for b in data:
        nxt = step(s, b)
        if nxt is None:
            return None
        s = nxt
    return s


def is_complete(s: State) -> bool:
    return s[0] == DONE


def _byte_level_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-printable-character table, used by byte-level BPE vocabularies."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {b: b for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in table.items()}


_SP_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def vocabulary_bytes(tok: Any, size: int) -> list[bytes | None]:
    """The bytes each token id stands for (None: special, added or out-of-tokenizer ids)."""
    pieces = tok.convert_ids_to_tokens(list(range(min(size, len(tok)))))
    special = set(tok.all_special_ids) | set(getattr(tok, "added_tokens_decoder", {}) or {})
    decoder = getattr(getattr(tok, "backend_tokenizer", None), "decoder", None)
    byte_level = type(decoder).__name__ == "ByteLevel"
    inverse = _byte_level_decoder() if byte_level else {}
    out: list[bytes | None] = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            out.append(None)
        elif byte_level and all(c in inverse for c in piece):
            out.append(bytes(inverse[c] for c in piece))
        elif m := _SP_BYTE.fullmatch(piece):  # SentencePiece byte fallback
            out.append(bytes([int(m.group(1), 16)]))
        elif not byte_level and piece.startswith("▁"):  # SentencePiece word start
            out.append(piece.replace("▁", " ").encode())
        else:
            out.append(tok.decode([i]).encode())
    return out + [None] * (size - len(out))


class _Trie:
    """The vocabulary's byte strings as a trie: ``children[node][byte] -> node``, ``ends[node]`` token ids."""

    def __init__(self, entries: list[tuple[int, bytes]]) -> None:
        self.children: list[dict[int, int]] = [{}]
        self.ends: list[list[int]] = [[]]
        for tid, data in entries:
            node = 0
            for b in data:
                nxt = self.children[node].get(b)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][b] = nxt
                    self.children.append({})
                    self.ends.append([])
                node = nxt
            self.ends[node].append(tid)

    def allowed(self, state: State) -> list[int]:
        out: list[int] = []
        todo = [(0, state)]
        while todo:
            node, s = todo.pop()
            out.extend(self.ends[node])
            for b, child in self.children[node].items():
                nxt = step(s, b)
                if nxt is not None:
                    todo.append((child, nxt))
        return out


class JSONVocabulary:
    """Per-state allowed-token masks for one tokenizer. ``token_bytes[i]`` is None for special tokens."""

    def __init__(self, token_bytes: list[bytes | None], eos_ids: set[int], size: int) -> None:
        import torch

        self.size, self.eos_ids = size, sorted(eos_ids)
        usable = [
            (i, b) for i, b in enumerate(token_bytes) if b and i < size
        ]  # empty tokens make no progress
        self.trie = _Trie(usable)
        special = [(i, b) for i, b in usable if any(x == 0x22 or x == 0x5C or x < 0x20 for x in b)]
        self.string_trie = _Trie(special)
        self.plain_string = torch.zeros(size, dtype=torch.bool)  # tokens that stay inside any string
        self.plain_string[
            [i for i, b in usable if not any(x == 0x22 or x == 0x5C or x < 0x20 for x in b)]
        ] = True
        self.eos_only = torch.zeros(size, dtype=torch.bool)
        self.eos_only[self.eos_ids] = True
        self._masks: OrderedDict[State, Any] = OrderedDict()
        self.token_bytes = token_bytes

    def start(self) -> State:
        return START

    def mask(self, state: State) -> Any:
        """Bool tensor over the vocabulary: True where the token may come next."""
        if state[0] == DONE:
            return self.eos_only
        hit = self._masks.get(state)
        if hit is not None:
            self._masks.move_to_end(state)
            return hit
        import torch

        if state[0] == STR:
            m = self.plain_string.clone()
            m[self.string_trie.allowed(state)] = True
        else:
            m = torch.zeros(self.size, dtype=torch.bool)
            m[self.trie.allowed(state)] = True
        if not bool(m.any()):  # a dead end (depth limit): end rather than emit invalid JSON
            m = self.eos_only
        self._masks[state] = m
        if len(self._masks) > MASK_CACHE:
            self._masks.popitem(last=False)
        return m

    def advance(self, state: State, token: int) -> State:
        """The state after emitting ``token`` (which the mask allowed)."""
        data = self.token_bytes[token] if token < len(self.token_bytes) else None
        nxt = feed(state, data) if data else None
        return nxt if nxt is not None else (DONE, "", None, 0)


class SchemaConstraint:
    """``json_schema`` response formats: the schema compiled to a regular expression and a token index over
    the same vocabulary by ``outlines-core`` (a well-kept Rust library; our automaton above does not know
    schemas). States are the index's ints; masks are cached per state like ``JSONVocabulary``'s."""

    def __init__(self, schema: dict, token_bytes: list[bytes | None], eos_id: int, size: int) -> None:
        import json

        import torch

        try:
            from outlines_core import Index, Vocabulary
            from outlines_core.json_schema import build_regex_from_schema
        except ImportError as exc:  # pragma: no cover - outlines-core is a declared dependency
            raise ValueError("response_format.json_schema needs the outlines-core package") from exc
        by_bytes: dict[bytes, list[int]] = {}
        for i, b in enumerate(token_bytes[:size]):
            if b and i != eos_id:
                by_bytes.setdefault(b, []).append(i)
        try:
            regex = build_regex_from_schema(json.dumps(schema), WHITESPACE)
            self.index = Index(regex, Vocabulary(eos_id, by_bytes))
        except (ValueError, TypeError, RuntimeError) as exc:  # outlines-core reports an unusable schema so
            raise ValueError(f"response_format.json_schema.schema: {exc}") from None
        self.size, self.eos_id, self.torch = size, eos_id, torch
        self._masks: OrderedDict[int, Any] = OrderedDict()

    def start(self) -> int:
        return int(self.index.get_initial_state())

    def mask(self, state: int) -> Any:
        hit = self._masks.get(state)
        if hit is None:
            hit = self.torch.zeros(self.size, dtype=self.torch.bool)
            hit[[t for t in self.index.get_allowed_tokens(state) if t < self.size]] = True
            self._masks[state] = hit
            if len(self._masks) > MASK_CACHE:
                self._masks.popitem(last=False)
        return hit

    def advance(self, state: int, token: int) -> int:
        nxt = None if token == self.eos_id else self.index.get_next_state(state, token)
        return state if nxt is None else int(nxt)


# outlines-core's whitespace between JSON tokens: a short run (json_object's limits need a pushdown state)
WHITESPACE = r"[ \n]{0,2}"
