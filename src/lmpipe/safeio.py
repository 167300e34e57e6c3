"""Files that may come from a shared remote (DVC cache, S3), loaded without running code from them.

``pickle.load`` and ``torch.load(weights_only=False)`` execute whatever the file tells them to, so a checkpoint
or model file pulled from a shared remote would be trusted code. Instead:

- training checkpoints hold only tensors and plain Python types and load with ``weights_only=True``
  (:func:`load_checkpoint`);
- the filter's models (n-gram LM, eval n-gram index, toxicity classifier) are ``.npz`` archives of plain
  arrays, with any structure as JSON in one array (:func:`save_npz` / :func:`load_npz`, ``allow_pickle=False``).

Anything that would need pickle is refused with :class:`UnsafeFileError` naming the file.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same model gives the same bytes (and hash)


class UnsafeFileError(ValueError):
    """A file that could only be loaded by unpickling (running code from it), or not in the expected format."""


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """A ``torch.save``/Lightning checkpoint, loaded with ``weights_only=True`` (memory-mapped when zip format)."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        why = next(
            (ln.strip() for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[-1] if lines else ""
        )
        raise UnsafeFileError(
            f"{path}: refused, it is not a plain tensors-and-types checkpoint and loading it could run code "
            f"from the file ({why}); delete it to start over"
        ) from None


def json_array(obj: Any) -> np.ndarray:
    """``obj`` as UTF-8 JSON in a uint8 array: structure (words, ids, settings) stored beside plain arrays."""
    return np.frombuffer(json.dumps(obj, ensure_ascii=False, sort_keys=True).encode(), dtype=np.uint8)


def from_json_array(arr: np.ndarray) -> Any:
    return json.loads(arr.tobytes().decode())


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Deflated ``.npz`` (readable by ``np.load``), written atomically with deterministic bytes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{name}.npy", _ZIP_EPOCH), buf.getvalue(), zipfile.ZIP_DEFLATED)
    os.replace(tmp, path)


def load_npz(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` written by :func:`save_npz` (or ``np.savez``), never unpickling anything."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            odd = [n for n in z.zip.namelist() if not n.endswith(".npy")]
            if odd:
                raise ValueError(f"members that are not .npy arrays: {odd[:3]}")
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        why = str(e).split(". ")[0]  # numpy goes on to suggest allow_pickle=True: not here
        raise UnsafeFileError(f"{path}: refused, not a plain-array .npz archive ({why})") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise UnsafeFileError(f"{path}: not the expected archive, arrays {missing} missing")
    return arrays
