"""Reading data pickles without running their code: every pickle the project reads goes through `load`.

A pickle is a program: its GLOBAL opcodes import any callable and REDUCE calls it, so a planted `data_batch_1`
or a downloaded test set could run anything at `pickle.load`. `load` admits only the names that plain data needs
(numpy arrays, dtypes and scalars, bytes); a pickle that names anything else is refused before the name is
imported, so nothing it asks for runs. Containers, numbers, strings and bytes need no names at all.

An admitted name can still be asked for memory: an array of a billion elements is a pickle of 30 bytes. So every
call and every array's state is weighed first (`PlainDataUnpickler.weigh`): nothing a file builds may take more
bytes than the file holds (plus SLACK), which a real array, whose bytes are in the file, never needs; and the file
is read into memory first, so that a length a pickle claims is never allocated unread.
"""
from __future__ import annotations

import io
import math
import pickle
from collections import Counter
from pathlib import Path

import numpy as np

from .checks import BadInput

SLACK = 1 << 20  # bytes an object may take beyond the file's own size: headers, small arrays of a tiny pickle
# (module, name) pairs a plain data pickle may import; numpy 2 writes numpy._core, numpy 1 and Python 2 numpy.core
ALLOWED = {
    *((core, name) for core in ("numpy.core.multiarray", "numpy._core.multiarray")
      for name in ("_reconstruct", "scalar")),          # an ndarray's skeleton and numpy scalars
    ("numpy.core.numeric", "_frombuffer"),               # protocol-5 arrays
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),                               # bytes in protocol 2 (str -> bytes, latin-1)
}  # all that CIFAR-10's batches and the course's test files (dicts of arrays, lists, numbers, strings) need


class NotPlainData(BadInput, pickle.UnpicklingError):
    """A pickle that names a callable outside ALLOWED (it could run code) or asks for more memory than its file
    could hold: it was not loaded."""


class PlainDataUnpickler(pickle._Unpickler):
    """Python's own unpickler, whose imports are limited to ALLOWED and whose calls and array states are weighed
    against `budget` bytes before they run (the C unpickler calls without a hook; these pickles are few large
    arrays, so the Python one reads them as fast)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, budget: int, **options):
        super().__init__(file, **options)
        self.budget = budget

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise NotPlainData(f"it asks to import {module}.{name}, outside the few names plain data needs (an "
                               f"imported name could run code)")
        return super().find_class(module, name)

    def weigh(self, nbytes: int, what: str) -> None:
        if nbytes > self.budget:
            raise NotPlainData(f"it asks for {what} of {nbytes:,} bytes, more than the file could hold")

    def weigh_call(self, func, args: tuple) -> None:
        """Refuse a call that would allocate beyond the budget: an array's shape times its item size, any dtype
        wider than the budget."""
        for arg in args:
            if isinstance(arg, np.dtype):
                self.weigh(arg.itemsize, "an item")
        if isinstance(func, type) and issubclass(func, np.ndarray):
            self.weigh_array(args[0] if args else (), args[1] if len(args) > 1 else float)
        if getattr(func, "__name__", "") == "_reconstruct" and len(args) == 3:  # (subtype, shape, dtype)
            self.weigh_array(args[1], args[2])

    def weigh_array(self, shape, dtype) -> None:
        dtype = np.dtype(dtype) if not isinstance(dtype, np.dtype) else dtype
        if dtype.hasobject:
            raise NotPlainData("it holds an array of Python objects, not of numbers")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not all(isinstance(n, int) and n >= 0 for n in shape):
            raise NotPlainData(f"it holds an array of shape {shape!r}")
        self.weigh(math.prod(shape) * dtype.itemsize, "an array")

    def load_reduce(self):
        self.weigh_call(self.stack[-2], self.stack[-1])
        super().load_reduce()

    def load_newobj(self):
        self.weigh_call(self.stack[-2], self.stack[-1])  # cls.__new__(cls, *args)
        super().load_newobj()

    def load_newobj_ex(self):
        self.weigh_call(self.stack[-3], self.stack[-2])
        super().load_newobj_ex()

    def _instantiate(self, klass, args):
        self.weigh_call(klass, tuple(args))
        super()._instantiate(klass, args)

    def load_build(self):
        inst, state = self.stack[-2], self.stack[-1]
        if isinstance(inst, np.ndarray):  # ndarray.__setstate__((version,) shape, dtype, fortran, data)
            if not isinstance(state, tuple) or len(state) not in (4, 5):
                raise NotPlainData("it holds an array whose state is not an array's")
            self.weigh_array(*state[-4:-2])
        super().load_build()

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def load(path: str | Path, encoding: str = "latin1", fix: str = "get it again"):
    """The object pickled in `path`, when it is plain data (containers, numbers, strings, bytes, numpy arrays of
    numbers) that fits the file's size; `encoding` decodes Python 2 strings, as `pickle.load` does. Otherwise
    NotPlainData naming the file and what it asked for, or BadInput (unreadable) ending with `fix`."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as error:  # a folder, no permission, a link to nowhere
        raise BadInput(f"{path} cannot be read as a file ({error.strerror or type(error).__name__}); {fix}") from None
    try:
        return PlainDataUnpickler(io.BytesIO(content), len(content) + SLACK, encoding=encoding).load()
    except NotPlainData as refused:
        raise NotPlainData(
            f"{path} is not a plain data pickle: {refused}, so it was not loaded. Data pickles hold only arrays, "
            f"lists, dicts, numbers and strings; get this file again from a source you trust.") from None
    # cut short, empty, random bytes, another format: the unpickler's many errors, one fault
    except Exception as error:  # noqa: BLE001
        reason = str(error)[:80] or ("the data ends too soon" if isinstance(error, EOFError) else "no message")
        raise BadInput(f"{path} is not a readable pickle ({type(error).__name__}: {reason}): "
                       f"it is cut short, empty or of another format; {fix}") from None


def text_keys(mapping: dict, origin: str | Path = "a pickle", fix: str = "keep one of them") -> dict:
    """`mapping` with bytes keys decoded (b'data' -> 'data'): pickles written from Python 3 bytes dicts and from
    str dicts read alike. A key present both ways (b'data' and 'data') raises BadInput naming `origin`, ending with
    `fix`: which one is meant cannot be told."""
    keys = {key: key.decode("latin1") if isinstance(key, bytes) else key for key in mapping}
    both = sorted(str(text) for text, count in Counter(keys.values()).items() if count > 1)
    if both:
        raise BadInput(f"{origin} holds the key {both[0]!r} twice, as bytes and as text: which one is meant cannot "
                       f"be told; {fix}")
    return {keys[key]: value for key, value in mapping.items()}
