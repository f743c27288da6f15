"""deploy/: the Kubernetes manifest and the systemd units, checked by exercising them.

Kubernetes (no cluster here): the objects are parsed and cross-checked (headless Services,
StatefulSets naming them, selectors, probes, the cookie secret); the SRV records a headless
Service publishes for the BEAM StatefulSet's pods are served by a real dnsmasq, and the
application's own DNS strategy, configured from the manifest's environment, must propose exactly
the node names the pods are given; the agents must join those names; every container's
arguments must be accepted by the launcher or the CLI. systemd (no init here): the units pass
`systemd-analyze verify`, and their ExecStart commands, with the instance and host filled in,
run a BEAM node and a Python agent node that find each other and stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from e2e_cluster import wait_for
from otp import free_port, unique

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NAMESPACE = "dspex-test"


def manifest() -> list[dict]:  # type: ignore[type-arg]
    return [
        d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "dspex-cluster.yaml").read_text())
    ]


def kind_of(docs: list[dict], kind: str) -> dict[str, dict]:  # type: ignore[type-arg]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_env(container: dict, pod: str) -> dict[str, str]:  # type: ignore[type-arg]
    """The container's environment for pod `pod` ($(VAR) expanded as Kubernetes does)."""
    env = {"POD_NAME": pod, "POD_NAMESPACE": NAMESPACE}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
    return env


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], text)


def pods(sts: dict) -> list[tuple[str, dict[str, str], list[str]]]:  # type: ignore[type-arg]
    """(pod name, env, args) for each replica of a StatefulSet."""
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    out = []
    for i in range(sts["spec"]["replicas"]):
        pod = f"{sts['metadata']['name']}-{i}"
        env = pod_env(container, pod)
        out.append((pod, env, [expand(a, env) for a in container["args"]]))
    return out


def arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_kubernetes_objects_fit_together() -> None:
    docs = manifest()
    services, sets = kind_of(docs, "Service"), kind_of(docs, "StatefulSet")
    assert set(sets) == {"dspex-beam", "dspex-agent"}
    assert sets["dspex-beam"]["spec"]["replicas"] == 3
    assert sets["dspex-agent"]["spec"]["replicas"] == 2
    for name, sts in sets.items():
        svc = services[sts["spec"]["serviceName"]]
        assert svc["spec"]["clusterIP"] == "None", f"{name}: its Service is not headless"
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert sts["spec"]["selector"]["matchLabels"] == labels == svc["spec"]["selector"]
        (c,) = sts["spec"]["template"]["spec"]["containers"]
        assert c["readinessProbe"]["exec"]["command"] == ["docker/entrypoint.sh", "health"]
        assert {p["containerPort"] for p in c["ports"]} >= {4369, 9100, 9568}
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["cookie"] == "/run/secrets"  # the entrypoint's default cookie file
    assert any(p["name"] == "epmd" for p in services["dspex-beam"]["spec"]["ports"])


def test_dns_discovery_finds_the_names_the_pods_take(tmp_path: Path) -> None:
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq not installed (make setup installs dnsmasq-base)")
    sets = kind_of(manifest(), "StatefulSet")
    beams = pods(sets["dspex-beam"])
    names = {arg(args, "--name") for _, _, args in beams}
    env = beams[0][1]
    assert env["DSPEX_DNS_TYPE"] == "srv" and arg(beams[0][2], "--discovery") == "dns"
    # what Kubernetes publishes for a headless Service's port named epmd: one SRV per pod
    service = sets["dspex-beam"]["spec"]["serviceName"]
    records = [
        f"--srv-host={env['DSPEX_DNS_QUERY']},{pod}.{service}.{NAMESPACE}.svc.cluster.local,4369"
        for pod, _, _ in beams
    ]
    port = free_port()
    dnsmasq = subprocess.Popen(
        [
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--local=/cluster.local/",
            "--pid-file=",
            "--log-facility=/dev/null",
            f"--port={port}",
            *records,
        ],
    )
    try:
        ebin = REPO / "beam" / "_build" / "dev" / "lib" / "dspex_cluster" / "ebin"
        script = (
            'opts = [query: System.fetch_env!("DSPEX_DNS_QUERY"), '
            'basename: System.fetch_env!("DSPEX_DNS_BASENAME"), '
            'type: String.to_atom(System.fetch_env!("DSPEX_DNS_TYPE")), '
            f"nameservers: [{{{{127, 0, 0, 1}}, {port}}}]]\n"
            "{:ok, s} = DSPEx.Clustering.Discovery.Dns.init(opts)\n"
            "{:ok, nodes, _} = DSPEx.Clustering.Discovery.Dns.discover(s)\n"
            "Enum.each(nodes, &IO.puts/1)\n"
        )
        found: set[str] = set()

        def discover() -> bool:
            done = subprocess.run(
                ["elixir", "-pa", str(ebin), "-e", script],
                env=dict(os.environ, **env),
                capture_output=True,
                text=True,
                timeout=60,
            )
            found.clear()
            found.update(done.stdout.split())
            return found == names

        wait_for(discover, timeout=30, every=0.5)
    finally:
        dnsmasq.kill()
        dnsmasq.wait(timeout=5)
    # the agents join exactly those nodes
    for _, _, args in pods(sets["dspex-agent"]):
        assert set(arg(args, "--join").split(",")) == names


def test_container_arguments_are_accepted(tmp_path: Path) -> None:
    """Each pod's and each compose service's arguments get past the argument parsing of the
    launcher or the CLI (they then stop at the missing cookie file, before any network)."""
    sets = kind_of(manifest(), "StatefulSet")
    missing = str(tmp_path / "no-cookie")
    cases = [args for sts in sets.values() for _, _, args in pods(sts)[:1]]
    compose = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())["services"]
    # one per kind: the compose services of a kind differ only in names
    cases += list({s["command"][0]: s["command"] for s in compose.values()}.values())
    for args in cases:
        if args[0] == "beam":
            argv = [str(REPO / "beam" / "bin" / "dspex-node"), *args[1:]]
        else:
            argv = [sys.executable, "-m", "dspex_cluster", "agent-node", *args[1:]]
        argv += ["--cookie-file", missing]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "unknown argument" not in done.stderr and "unrecognized" not in done.stderr
        assert "invalid" not in done.stderr.lower(), done.stderr
        assert "no-cookie" in done.stderr or "cookie" in done.stderr.lower(), done.stderr


# -- systemd ------------------------------------------------------------------------------------


def unit(path: Path) -> dict[str, list[str]]:
    """A unit file's [Service] settings: key -> values (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_units_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    for path in sorted((DEPLOY / "systemd").glob("*.service")):
        # the install paths of the README, pointed at this checkout
        text = path.read_text().replace("/opt/dspex", str(REPO))
        copy = tmp_path / path.name.replace("@", "@test")
        copy.write_text(text)
        done = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(copy)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{path.name}: {done.stderr}"
        assert "Unknown" not in done.stderr and "Invalid" not in done.stderr, done.stderr


def test_systemd_exec_start_runs_both_kinds_of_node(epmd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cookie = tmp_path / "cookie"
    cookie.write_text(unique("cookie"))
    cookie.chmod(0o600)
    beam_alive, py_alive = unique("sdb"), unique("sdp")
    metrics = {beam_alive: free_port(), py_alive: free_port()}
    env_files = {
        beam_alive: f"DSPEX_METRICS_PORT={metrics[beam_alive]}\nDSPEX_DIST_PORT={free_port()}\n",
        py_alive: (
            f"DSPEX_JOIN={beam_alive}@127.0.0.1\nDSPEX_METRICS_PORT={metrics[py_alive]}\n"
            f"DSPEX_DASHBOARD_PORT={free_port()}\nDSPEX_DIST_PORT={free_port()}\n"
        ),
    }
    procs = []
    try:
        for name, alive in (
            ("dspex-beam@.service", beam_alive),
            ("dspex-agent@.service", py_alive),
        ):
            s = unit(DEPLOY / "systemd" / name)
            env: dict[str, str] = {}
            for line in s.get("Environment", []):
                env.update(kv.split("=", 1) for kv in shlex.split(line))
            # systemd: EnvironmentFile= settings override Environment= ones
            env |= dict(line.split("=", 1) for line in env_files[alive].splitlines())
            (exec_start,) = s["ExecStart"]
            command = (
                exec_start.replace("%i", alive)
                .replace("%H", "127.0.0.1")
                .replace("/opt/dspex", str(REPO))
                .replace("/etc/dspex/cookie", str(cookie))
            )
            command = re.sub(r"\$\{(\w+)\}", lambda m, env=env: env[m.group(1)], command)
            run_env = dict(os.environ, **env, ERL_EPMD_PORT=str(epmd.port))
            argv = shlex.split(command)
            if argv[0].endswith("/.venv/bin/python"):
                argv[0] = sys.executable  # this checkout's interpreter
            log = open(tmp_path / f"{alive}.log", "wb")  # noqa: SIM115
            procs.append((subprocess.Popen(argv, env=run_env, stdout=log, stderr=log), log))
        scrape = f"http://127.0.0.1:{metrics[beam_alive]}/metrics"
        wait_for(lambda: 'dspex_members{kind="python",status="up"} 1' in _get(scrape), timeout=90)
        assert "dspex_python_relay_connected 1.0" in wait_for(
            lambda: _get(f"http://127.0.0.1:{metrics[py_alive]}/metrics"), timeout=30
        )
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # the units' KillSignal
        codes = []
        for p, log in procs:
            try:
                codes.append(p.wait(timeout=30))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait(timeout=5))
            log.close()
    assert codes == [0, 0], codes


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode()
    except OSError:
        return ""
