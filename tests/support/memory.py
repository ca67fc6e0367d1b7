"""What an object keeps alive: for tests that a cache holds no token or answer."""

from __future__ import annotations

import gc
import types


def texts_held_by(root: object, skip: object = None) -> list[str]:
    """Every str and bytes (as latin-1) reachable from ``root``'s own objects, not
    following ``skip`` (something shared, such as a key set) or classes, modules and
    functions."""
    seen: set[int] = {id(skip)} if skip is not None else set()
    pending: list[object] = [root]
    texts = []
    while pending:
        obj = pending.pop()
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType):
            continue
        seen.add(id(obj))
        if isinstance(obj, str):
            texts.append(obj)
        elif isinstance(obj, bytes):
            texts.append(obj.decode("latin-1"))
        else:
            pending.extend(gc.get_referents(obj))
    return texts
