"""The Python API documents itself: every public class, function, method and property of the
packages a user imports has a docstring, `help(dspex_cluster)` lists the API (no lazy
`__getattr__` hiding it), and the package ships `py.typed`."""

from __future__ import annotations

import importlib
import inspect
import pydoc
from pathlib import Path

import dspex_cluster

PUBLIC_MODULES = [
    "dspex_cluster",
    "dspex_cluster.runtime",
    "dspex_cluster.agents",
    "dspex_cluster.cluster",
    "dspex_cluster.signals",
    "dspex_cluster.etf",
]


def public_names(module: object) -> list[str]:
    """`__all__`, else what the module itself defines under a public name."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__  # type: ignore[attr-defined]
    ]


def undocumented() -> list[str]:
    missing: list[str] = []
    seen: set[int] = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in public_names(module):
            obj = getattr(module, name)
            if id(obj) in seen or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            seen.add(id(obj))
            if not (obj.__doc__ or "").strip():
                missing.append(f"{module_name}.{name}")
            if not inspect.isclass(obj):
                continue
            for attr, value in vars(obj).items():
                if attr.startswith("_"):
                    continue
                fn = (
                    value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                )
                if (inspect.isfunction(fn) or isinstance(value, property)) and not (
                    (fn.__doc__ or "").strip()
                ):
                    missing.append(f"{module_name}.{name}.{attr}")
    return missing


def test_every_public_class_and_method_has_a_docstring() -> None:
    assert undocumented() == []


def test_help_shows_the_api() -> None:
    assert "__getattr__" not in vars(dspex_cluster)  # nothing is resolved lazily
    text = pydoc.render_doc(dspex_cluster, renderer=pydoc.plaintext)
    for name in ("Node", "GenServer", "Supervisor", "ChildSpec", "Process", "Atom", "Pid"):
        assert f"class {name}" in text, name
    for method in ("serve_forever", "join", "expose", "rpc"):
        assert method in text, method


def test_py_typed_is_shipped() -> None:
    assert (Path(dspex_cluster.__file__).parent / "py.typed").is_file()
