"""Reading data pickles without running their code: every pickle the project reads goes through `load`.

A pickle is a program: its GLOBAL opcodes import any callable and REDUCE calls it, so a planted `data_batch_1`
or a downloaded test set could run anything at `pickle.load`. `load` admits only the names that plain data needs
(numpy arrays, dtypes and scalars, sets, bytes); a pickle that names anything else is refused before the name is
imported, so nothing it asks for runs. Containers, numbers, strings and bytes need no names at all.
"""
from __future__ import annotations

import pickle
from pathlib import Path

from checks import BadInput

# (module, name) pairs a plain data pickle may import; numpy 2 writes numpy._core, numpy 1 and Python 2 numpy.core
ALLOWED = {
    *((core, name) for core in ("numpy.core.multiarray", "numpy._core.multiarray")
      for name in ("_reconstruct", "scalar")),          # an ndarray's skeleton and numpy scalars
    ("numpy.core.numeric", "_frombuffer"),               # protocol-5 arrays
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),                               # bytes in protocol 2 (str -> bytes, latin-1)
    *((builtins, name) for builtins in ("builtins", "__builtin__")  # protocol 2 names Python 2's module
      for name in ("set", "frozenset", "bytearray", "complex")),
}


class NotPlainData(BadInput, pickle.UnpicklingError):
    """A pickle that names a callable outside ALLOWED: it could run code, so it was not loaded."""


class PlainDataUnpickler(pickle.Unpickler):
    """The C unpickler (same speed as `pickle.load`) whose imports are limited to ALLOWED."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise NotPlainData(f"{module}.{name}")
        return super().find_class(module, name)


def load(path: str | Path, encoding: str = "latin1"):
    """The object pickled in `path`, when it is plain data (containers, numbers, strings, bytes, numpy arrays);
    `encoding` decodes Python 2 strings, as `pickle.load` does. Anything else raises NotPlainData naming the file."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return PlainDataUnpickler(f, encoding=encoding).load()
        except NotPlainData as refused:
            raise NotPlainData(
                f"{path} is not a plain data pickle: it asks to import {refused}, which could run code, so it was "
                f"not loaded. Data pickles hold only arrays, lists, dicts, numbers and strings; get this file "
                f"again from a source you trust.") from None


def text_keys(mapping: dict) -> dict:
    """`mapping` with bytes keys decoded (b'data' -> 'data'): pickles written from Python 3 bytes dicts and from
    str dicts read alike."""
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in mapping.items()}
