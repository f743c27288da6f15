"""Build hook for the optional compiled fast paths; all metadata lives in pyproject.toml.

A C source placed under python/dspex_cluster/**/_*.c with a matching entry in EXTENSIONS is built
by `make setup` (pip install -e .) with the machine's compiler. The pure-Python code stays the
reference implementation and the fallback when no compiler is present.
"""

from setuptools import Extension, setup

EXTENSIONS: list[Extension] = [
    # the External Term Format fast path; dspex_cluster.etf falls back to pure.py without it
    Extension(
        "dspex_cluster.etf._cetf",
        ["python/dspex_cluster/etf/_cetf.c"],
        extra_compile_args=["-O2", "-Wall", "-Wno-missing-braces"],
        optional=True,
    ),
]

setup(ext_modules=EXTENSIONS)
