"""Atoms the runtime uses often, created once."""

from __future__ import annotations

from dspex_cluster.etf import Atom

NORMAL = Atom("normal")
KILL = Atom("kill")
KILLED = Atom("killed")
NOPROC = Atom("noproc")
NOCONNECTION = Atom("noconnection")
SHUTDOWN = Atom("shutdown")
TIMEOUT = Atom("timeout")
EXIT = Atom("EXIT")
DOWN = Atom("DOWN")
PROCESS = Atom("process")
GEN_CALL = Atom("$gen_call")
GEN_CAST = Atom("$gen_cast")
ALIAS = Atom("alias")
ERROR = Atom("error")
THROW = Atom("throw")
RETURN = Atom("return")
UNDEF = Atom("undef")
BADARG = Atom("badarg")
OK = Atom("ok")
PYTHON_EXCEPTION = Atom("python_exception")
