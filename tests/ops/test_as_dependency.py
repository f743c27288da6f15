"""The BEAM application as a path dependency of another Mix project: a host project made here
depends on beam/ by path, compiles it and starts with it. In library mode
(`config :dspex_cluster, mode: :library`) it connects to nobody by itself, although a node of the
same cluster is registered with the same epmd; configured with `discovery: [:epmd]`, the same
host connects to that node."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from beam_app import COOKIE, start_app_node
from otp import unique

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.otp, pytest.mark.slow]

MIX_EXS = """
defmodule HostApp.MixProject do
  use Mix.Project

  def project do
    [app: :host_app, version: "0.1.0", elixir: "~> 1.14",
     deps: [{:dspex_cluster, path: "%(beam)s"}]]
  end

  def application, do: [extra_applications: [:logger], mod: {HostApp, []}]
end
"""

HOST_APP = """
defmodule HostApp do
  use Application

  @impl true
  def start(_type, _args), do: Supervisor.start_link([], strategy: :one_for_one, name: HostApp.Sup)
end
"""

# waits a few discovery intervals (2 s in the development profile), then reports
PROBE = """
Process.sleep(4_500)
started = Enum.map(Application.started_applications(), &elem(&1, 0))
IO.puts("started=#{:dspex_cluster in started and :host_app in started}")
IO.puts("members=#{length(DSPEx.Clustering.members())}")
IO.puts("strategies=#{length(DSPEx.Clustering.NodeDiscovery.options_from_config()[:strategies])}")
IO.puts("nodes=#{Enum.join(Node.list(), ",")}")
"""


def host_project(root: Path) -> Path:
    project = root / "host_app"
    (project / "lib").mkdir(parents=True, exist_ok=True)
    (project / "config").mkdir(exist_ok=True)
    (project / "mix.exs").write_text(MIX_EXS % {"beam": REPO / "beam"})
    (project / "lib" / "host_app.ex").write_text(HOST_APP)
    (project / "config" / "config.exs").write_text(
        "import Config\nconfig :dspex_cluster, mode: :library\nconfig :logger, level: :warning\n"
    )
    # run-time configuration: the second run turns discovery on without a recompilation
    (project / "config" / "runtime.exs").write_text(
        "import Config\n"
        'if d = System.get_env("HOST_DISCOVERY"),\n'
        "  do: config(:dspex_cluster, discovery: [String.to_atom(d)])\n"
    )
    return project


def run_host(project: Path, epmd_port: int, **env: str) -> dict[str, str]:
    done = subprocess.run(
        [
            "elixir",
            "--name",
            f"{unique('host')}@127.0.0.1",
            "--cookie",
            COOKIE,
            "-S",
            "mix",
            "run",
            "-e",
            PROBE,
        ],
        cwd=project,
        env=dict(os.environ, MIX_ENV="dev", ERL_EPMD_PORT=str(epmd_port), **env),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def test_path_dependency_library_mode(epmd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = start_app_node(epmd.port, COOKIE, "odep")
    try:
        project = host_project(tmp_path)
        quiet = run_host(project, epmd.port)
        assert quiet["started"] == "true"
        assert quiet["strategies"] == "0"
        assert other.name not in quiet["nodes"], "library mode discovered a node by itself"
        assert quiet["members"] == "1"
        # the same host, now configured to discover through epmd
        found = run_host(project, epmd.port, HOST_DISCOVERY="epmd")
        assert found["strategies"] == "1"
        assert other.name in found["nodes"].split(",")
    finally:
        other.stop()
