"""docker/: the compose file is valid for docker-compose (Debian's, `config`, which needs no
engine) and wired as the README says — three BEAM and two Python *agent* nodes from one image
and its entrypoint, fixed distribution ports, healthchecks, metrics and dashboard ports
published; the Dockerfile exposes and sets what the entrypoint uses. The entrypoints themselves
run in tests/netns/test_docker_entrypoints.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def docker_compose_config(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-f", str(folder / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=folder,
    )


def test_compose_file_passes_docker_compose_config(tmp_path: Path) -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("Debian's docker-compose is not installed (make setup does)")
    folder = tmp_path / "docker"
    shutil.copytree(DOCKER, folder)
    (folder / "cookie").write_text("not-a-real-cookie\n")
    done = docker_compose_config(folder)
    assert done.returncode == 0, done.stderr
    # the check is a real one: an unknown key in a service is refused
    broken = (
        (folder / "docker-compose.yml")
        .read_text()
        .replace("    hostname: beam2\n", "    hostname: beam2\n    hostnme: typo\n")
    )
    (folder / "docker-compose.yml").write_text(broken)
    refused = docker_compose_config(folder)
    assert refused.returncode != 0 and "hostnme" in refused.stderr


def test_compose_has_three_beam_and_two_agent_nodes_wired_together() -> None:
    services = compose()["services"]
    kinds = {name: s["command"][0] for name, s in services.items()}
    beams = sorted(n for n, k in kinds.items() if k == "beam")
    agents = sorted(n for n, k in kinds.items() if k == "agent")
    assert len(beams) == 3 and len(agents) == 2 and len(services) == 5
    for name, s in services.items():
        cmd = s["command"]
        assert s["hostname"] == name
        assert flag(cmd, "--name") == f"{name}@{name}"
        assert s["secrets"] == ["cookie"]
        assert s["healthcheck"]["test"] == ["CMD", "docker/entrypoint.sh", "health"]
        published = {p.split(":")[1]: p.split(":")[0] for p in s["ports"]}
        assert "9568" in published, f"{name}: metrics port not published"
        if name in beams:
            assert flag(cmd, "--discovery") == "epmd"
            assert flag(cmd, "--hosts").split(",") == beams
        else:
            assert "8080" in published, f"{name}: dashboard port not published"
            joins = flag(cmd, "--join").split(",")
            assert sorted(j.split("@")[0] for j in joins) == beams
    host_ports = [p.split(":")[0] for s in services.values() for p in s["ports"]]
    assert len(host_ports) == len(set(host_ports)), "two services publish one host port"


def test_dockerfile_and_entrypoint_agree() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    entry = (DOCKER / "entrypoint.sh").read_text()
    assert 'ENTRYPOINT ["docker/entrypoint.sh"]' in text
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK)
    exposed = set(re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split())  # type: ignore[union-attr]
    defaults = dict(re.findall(r"(DSPEX_\w+_PORT):-(\d+)", entry))
    assert {"4369", *defaults.values()} <= exposed
    env = dict(re.findall(r"(DSPEX_\w+_PORT)=(\d+)", text))
    assert env == defaults
    assert "make release" in text and "HEALTHCHECK" in text
    # the entrypoint's shell is valid
    assert subprocess.run(["sh", "-n", str(DOCKER / "entrypoint.sh")]).returncode == 0
    usage = subprocess.run([str(DOCKER / "entrypoint.sh"), "bogus"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr
