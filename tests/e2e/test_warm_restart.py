"""Warm restart: an agent node killed with kill -9 and started again with the same --state-dir
places as it did before the kill (its load balancer's learned node speeds come back)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from beam_app import COOKIE  # noqa: E402
from e2e_cluster import AgentNodeProcess, connect, wait_for  # noqa: E402
from otp import unique  # noqa: E402

pytestmark = pytest.mark.otp

FAKE = [f"w{i}@h" for i in range(4)]
SPEEDS = (1.0, 3.0, 0.5, 2.0)


def _candidates() -> str:
    return (
        "["
        + ", ".join(
            f"#{{node => '{n}', kind => beam, status => up, cpu => {0.1 * i}}}"
            for i, n in enumerate(FAKE)
        )
        + "]"
    )


def _advise_sequence(beam, py: str, n: int = 30) -> list[str]:  # type: ignore[no-untyped-def]
    """n advise calls from the BEAM node, works 0.5..2.5, fixed candidate maps."""
    expr = (
        f"Cands = {_candidates()}, "
        f"[element(2, gen_server:call({{dspex_load_balancer, '{py}'}}, "
        f"{{advise, #{{work => 0.5 + (K rem 5) * 0.5}}, [], Cands}}, 5000)) "
        f"|| K <- lists:seq(0, {n - 1})]"
    )
    return [str(a) for a in beam.eval(expr)]


def test_a_killed_agent_node_restarts_warm_and_places_as_before(  # type: ignore[no-untyped-def]
    beams, epmd, tmp_path
) -> None:
    cookie_file = tmp_path / "cookie"
    cookie_file.write_text(COOKIE)
    cookie_file.chmod(0o600)
    state_dir = tmp_path / "state"
    py = AgentNodeProcess(f"{unique('wpy')}@127.0.0.1", epmd.port, [beams[0].name], cookie_file)
    py.args += ["--state-dir", str(state_dir)]
    py.start()
    try:
        connect(beams[:1], py.name)
        beam = beams[0]
        # 40 outcomes teach the balancer the fake nodes' speeds
        ms = [round(1000.0 / SPEEDS[k % 4] * (1 + 0.01 * k)) for k in range(40)]
        outcomes = ", ".join(
            f"gen_server:call({{dspex_load_balancer, '{py.name}'}}, {{placement_outcome, "
            f"'{FAKE[k % 4]}', #{{work => 1.0}}, {ms[k]}}})"
            for k in range(40)
        )
        beam.eval(f"[{outcomes}], ok")

        def checkpointed() -> bool:
            path = next(state_dir.glob("*/dspex_load_balancer.json"), None)
            return path is not None and json.loads(path.read_text())["model"]["_obs"] == 40

        wait_for(checkpointed, timeout=20.0)  # every 5 s when something was learned
        saved = next(state_dir.glob("*/dspex_load_balancer.json"))
        before = _advise_sequence(beam, py.name)
        assert set(before) <= set(FAKE) and len(set(before)) > 1
        py.kill9()
        t0 = time.monotonic()
        py.start()
        connect(beams[:1], py.name)
        after = _advise_sequence(beam, py.name)
        warm_s = time.monotonic() - t0
        assert after == before, (before, after)
        assert saved.exists()
        print(f"warm restart: same placements {warm_s:.2f} s after the restart began")
        # (that a cold balancer places this sequence differently is checked in-process:
        # tests/cluster/test_warm_agents.py, without a third node start here)
    finally:
        py.stop()
