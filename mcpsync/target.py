"""Loading a ``Server`` from a command-line TARGET: ``package.module:attr`` or ``file.py[:attr]``."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

from .errors import ConfigError, DefinitionError
from .server import Server

DEFAULT_ATTRS = ("server", "app", "mcp")


def load_target(target: str) -> Server:
    """Import TARGET and return its ``Server``. Raises ``ConfigError`` with a one-line reason."""
    path, _, attr = target.partition(":")
    if ":" in attr:
        raise ConfigError("TARGET", f"{target!r} has more than one ':'")
    if path.endswith(".py") or os.sep in path or "/" in path:
        module = _load_file(path)
    else:
        try:
            module = importlib.import_module(path)
        except ImportError as exc:
            raise ConfigError("TARGET", f"cannot import {path!r}: {exc}") from None
        except DefinitionError as exc:
            raise ConfigError("TARGET", f"{path}: {exc}") from None
    names = (attr,) if attr else DEFAULT_ATTRS
    for name in names:
        obj: Any = getattr(module, name, None)
        if obj is None:
            continue
        if not isinstance(obj, Server) and callable(obj):
            obj = obj()
        if isinstance(obj, Server):
            return obj
        raise ConfigError("TARGET", f"{path}:{name} is a {type(obj).__name__}, not an mcpsync.Server")
    raise ConfigError("TARGET", f"{path} has no attribute {' or '.join(repr(n) for n in names)}")


def _load_file(path: str) -> Any:
    if not os.path.isfile(path):
        raise ConfigError("TARGET", f"no such file: {path}")
    name = "_mcpsync_target_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError("TARGET", f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)  # let the file import its siblings
    try:
        spec.loader.exec_module(module)
    except DefinitionError as exc:  # a tool, resource or prompt that cannot be registered
        raise ConfigError("TARGET", f"{path}: {exc}") from None
    return module
