"""Loading files that may come from elsewhere without running code from them.

A pickle can name any importable callable, and unpickling calls it: a
crafted checkpoint or ``.npy`` file executes arbitrary code when it is
loaded with ``torch.load(..., weights_only=False)`` or
``np.load(..., allow_pickle=True)``. Every file a user may have downloaded
(model checkpoints, backbone weights, training checkpoints, the authors'
``.mat`` models, VPR-Bench ground truth) is read through this module or
through scipy (``.mat``: a data format, no pickle):

* :func:`load_torch_file`: ``torch.load(weights_only=True)``, which only
  rebuilds tensors, numbers, strings, lists, tuples and dicts, plus the
  numpy array and dtype constructors (:data:`NUMPY_SAFE_GLOBALS`) so that
  checkpoints written before repro stored its numpy state as tensors still
  load. Anything else fails with a :class:`~repro.errors.WeightsError`
  before a single foreign object is built.
* :func:`load_object_npy`: a ``.npy`` file whose object array (VPR-Bench's
  ``ground_truth_new.npy``: rows ``[query_index, [ref indices]]``) is read
  by a restricted unpickler that accepts numpy's array constructors only,
  and whose content must then be integers, lists of integers or integer
  arrays.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from repro.errors import DatasetError, WeightsError

__all__ = ["NUMPY_SAFE_GLOBALS", "load_torch_file", "load_object_npy", "UnsafeFileError"]


class UnsafeFileError(pickle.UnpicklingError):
    """A pickle names a global outside the allow-list (raised before it is called)."""


def _numeric_dtype_classes() -> list:
    # np.dtype(...) pickles as the dtype's class in numpy 2 (numpy.dtypes.Int64DType, ...)
    return sorted({type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"}, key=lambda t: t.__name__)


# The constructors numpy's own pickles use for arrays, scalars and dtypes.
# None of them can call back into arbitrary code: an object array's elements
# are unpickled under the same allow-list.
NUMPY_SAFE_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np._core.multiarray.scalar,
                      *_numeric_dtype_classes()]

_NUMPY_ALLOWED = {("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
                  ("numpy", "ndarray"), ("numpy", "dtype")} | {("numpy.dtypes", t.__name__)
                                                             for t in _numeric_dtype_classes()}


def load_torch_file(path, what: str = "checkpoint", map_location="cpu", hint: str = ""):
    """``torch.load`` with ``weights_only=True`` (tensors, numbers, strings,
    containers, numpy arrays): no code in the file can run.

    Raises:
        WeightsError: the file is missing, not a torch file, or holds other
            objects (the message names the first offending global, and
            ``hint`` says what to do about it).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} not found: {path}")
    try:
        with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # noqa: BLE001 - a damaged file: the message below still says what happened
            names = []
        names = [n for n in names if n not in {f"{g.__module__}.{g.__name__}" for g in NUMPY_SAFE_GLOBALS}]
        detail = f"it names {', '.join(names[:3])}" if names else str(exc).splitlines()[0][:200]
        raise WeightsError(
            f"{path}: refused to load this {what}: it holds objects other than tensors, numbers, strings, "
            f"lists and dicts ({detail}), and loading those would run code from the file. Files written by "
            f"repro load safely; {hint or 'use a file written by repro, or a plain state dict of tensors.'}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - zip, EOF and storage errors: the file is damaged or not torch's
        raise WeightsError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})") from None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "numpy.core.multiarray":  # numpy 1.x's name of the same module
            module = "numpy._core.multiarray"
        if (module, name) in _NUMPY_ALLOWED:
            return super().find_class(module, name)
        raise UnsafeFileError(f"the pickle names {module}.{name}, which is not a numpy array constructor")


def _check_integers(value, where: str) -> None:
    """Only integers, lists/tuples of them and integer/object arrays of them (recursively)."""
    if isinstance(value, (bool, np.bool_)):
        raise DatasetError(f"{where}: expected integers, found a boolean")
    if isinstance(value, (int, np.integer)):
        return
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            for v in value.ravel():
                _check_integers(v, where)
        elif not (np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)):
            raise DatasetError(f"{where}: expected integer arrays, found one of dtype {value.dtype}")
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_integers(v, where)
        return
    if isinstance(value, (float, np.floating)):  # whole-valued floats are checked by the caller
        return
    raise DatasetError(f"{where}: expected integers or lists of integers, found {type(value).__name__}")


def load_object_npy(path) -> np.ndarray:
    """A ``.npy`` file, object arrays included, without unpickling anything but
    numpy arrays; the content must be integers or lists of them.

    Raises:
        DatasetError: not a ``.npy`` file, a pickle naming anything but
            numpy's array constructors (nothing in it is called), or
            content other than integers.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                shape, fortran, dtype = np.lib.format._read_array_header(f, version)
            if dtype != object:
                f.seek(0)
                return np.lib.format.read_array(f, allow_pickle=False)
            data = f.read()
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable .npy file ({exc})") from None
    try:
        arr = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except UnsafeFileError as exc:
        raise DatasetError(f"{path}: refused to load: {exc}; a ground-truth file holds only numbers and lists "
                           "of numbers, and unpickling anything else could run code from the file") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pickle data
        raise DatasetError(f"{path}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
        raise DatasetError(f"{path}: the object array does not match its header (shape {list(shape)})")
    _check_integers(arr, str(path))
    return arr
