"""Metrics, fixed distribution ports and the live dashboard on a running cluster (conftest.py):
every node's `/metrics` is scraped and parsed with prometheus_client's parser; `--dist-port` is
read back from epmd; the dashboard is opened in headless Chromium (Debian's chromium +
chromium-driver, driven by selenium), a BEAM node is killed with kill -9 and its row must turn
down within the detection time. The tests run in file order: the kill comes last."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from e2e_cluster import wait_for  # noqa: E402 - put on sys.path by conftest
from otp import free_port, unique  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
EX = "'Elixir.DSPEx.Clustering'"
# how long a killed node may take to show as down on the page: nodedown is immediate after
# kill -9 (the connection closes); the page refreshes twice a second; margin for a loaded host
DETECTION_S = 5.0


def scrape(port: int) -> dict[str, object]:
    """GET /metrics on 127.0.0.1:port, parsed: family name -> Metric."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(family, sample_name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    for s in family.samples:
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {sample_name}{labels} in {family.samples!r}")


def test_every_node_serves_prometheus_metrics(ops_cluster) -> None:  # type: ignore[no-untyped-def]
    c = ops_cluster
    beam = c.beams[0]
    before = scrape(c.beam_metrics[beam.name])
    placed_before = (
        sum(s.value for s in before["dspex_placement_decisions"].samples)
        if "dspex_placement_decisions" in before
        else 0
    )
    for _ in range(5):
        ok = beam.eval(f"{EX}:place(#{{work => 1.0}}, [])")
        assert ok[0] == "ok"

    for b in c.beams:
        fams = scrape(c.beam_metrics[b.name])
        # counters are exposed as name_total; the parser names the family without the suffix
        assert fams["dspex_membership_transitions"].type == "counter"
        assert value(fams["dspex_members"], "dspex_members", kind="beam", status="up") == 3
        assert value(fams["dspex_members"], "dspex_members", kind="python", status="up") == 1
        assert value(fams["dspex_member_up"], "dspex_member_up", node=c.agent.name) == 1
        assert fams["dspex_member_phi"].type == "gauge"
        assert fams["dspex_signals_published"].type == "counter"
        assert fams["dspex_beam_memory_bytes"].type == "gauge"
        assert value(fams["dspex_beam_memory_bytes"], "dspex_beam_memory_bytes", type="total") > 0
        # DSPEx.Clustering.State.status/0's numeric fields
        assert value(fams["dspex_state_replication_factor"], "dspex_state_replication_factor") >= 1

    after = scrape(c.beam_metrics[beam.name])
    decisions = after["dspex_placement_decisions"]
    assert sum(s.value for s in decisions.samples) == placed_before + 5
    hist = after["dspex_placement_decision_duration_seconds"]
    assert hist.type == "histogram"
    count = value(hist, "dspex_placement_decision_duration_seconds_count")
    assert count >= 5
    assert value(hist, "dspex_placement_decision_duration_seconds_bucket", le="+Inf") == count
    # the Python agent advised these placements: its load balancer counted and timed them
    py = scrape(c.agent_metrics)
    assert sum(s.value for s in py["dspex_python_placements"].samples) >= 1
    py_hist = py["dspex_python_placement_decision_duration_seconds"]
    assert value(py_hist, "dspex_python_placement_decision_duration_seconds_count") >= 1
    assert value(py["dspex_python_relay_connected"], "dspex_python_relay_connected") == 1
    peers = {s.labels["peer"] for s in py["dspex_python_connections"].samples}
    assert {b.name for b in c.beams} <= peers
    assert {s.labels["node"] for s in py["dspex_anomaly_score"].samples} >= {
        c.beams[0].name
    } or wait_for(lambda: c.beams[0].name in anomaly_nodes(c.agent_metrics), timeout=15)
    # only /metrics is served on the metrics port
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{c.beam_metrics[beam.name]}/other", timeout=5)
    assert err.value.code == 404


def anomaly_nodes(port: int) -> set[str]:
    return {s.labels["node"] for s in scrape(port)["dspex_anomaly_score"].samples}


def test_plain_python_node_serves_metrics(ops_cluster, epmd) -> None:  # type: ignore[no-untyped-def]
    c = ops_cluster
    port = free_port()
    log = c.workdir / "plain.log"
    name = f"{unique('oplain')}@127.0.0.1"
    args = [sys.executable, "-m", "dspex_cluster", "node", "--name", name]
    args += ["--cookie-file", str(c.workdir / "cookie"), "--epmd-port", str(epmd.port)]
    args += ["--join", c.beams[0].name, "--metrics-port", str(port)]
    args += ["--expose", "loaded=loaded_modules"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        wait_for(lambda: b"SIGTERM to stop" in log.read_bytes() or proc.poll() is not None)
        assert proc.poll() is None, log.read_text()
        assert f"metrics at http://127.0.0.1:{port}/metrics" in log.read_text()
        fams = scrape(port)
        peers = {s.labels["peer"] for s in fams["dspex_python_connections"].samples}
        assert c.beams[0].name in peers
        assert "dspex_python_placements" not in fams  # no agents on a plain node
        assert value(fams["dspex_python_processes"], "dspex_python_processes") >= 0
        # a plain node, serving metrics, has not imported the agents' numeric stack
        loaded = c.beams[0].eval(f"erpc:call('{name}', loaded, names, [])")
        loaded = {m.decode() if isinstance(m, bytes) else str(m) for m in loaded}
        assert "prometheus_client" in loaded and "dspex_cluster" in loaded
        assert not {"scipy", "matplotlib", "numpy"} & loaded
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


# -- fixed distribution ports (--dist-port) -------------------------------------------------


def epmd_ports(epmd_port: int) -> dict[str, int]:
    """name -> port, as `epmd -names` lists them."""
    out = subprocess.run(
        ["epmd", "-port", str(epmd_port), "-names"], capture_output=True, text=True, timeout=10
    ).stdout
    ports = {}
    for line in out.splitlines():
        parts = line.split()  # "name NAME at port PORT"
        if len(parts) == 5 and parts[0] == "name":
            ports[parts[1]] = int(parts[4])
    return ports


def test_dist_port_flag_on_python_and_beam_nodes(ops_cluster, epmd) -> None:  # type: ignore[no-untyped-def]
    c = ops_cluster
    py_port, beam_port = free_port(), free_port()
    py_alive, beam_alive = unique("odp"), unique("odb")
    cookie = str(c.workdir / "cookie")
    procs = []
    try:
        log = c.workdir / "dist_py.log"
        args = [sys.executable, "-m", "dspex_cluster", "node", "--name", f"{py_alive}@127.0.0.1"]
        args += ["--cookie-file", cookie, "--epmd-port", str(epmd.port)]
        args += ["--dist-port", str(py_port)]
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT))
        blog = c.workdir / "dist_beam.log"
        env = dict(os.environ, ERL_EPMD_PORT=str(epmd.port))
        bargs = [str(REPO / "beam" / "bin" / "dspex-node"), "--name", f"{beam_alive}@127.0.0.1"]
        bargs += ["--cookie-file", cookie, "--dist-port", str(beam_port)]
        with open(blog, "wb") as out:
            procs.append(subprocess.Popen(bargs, stdout=out, stderr=subprocess.STDOUT, env=env))
        ports = wait_for(
            lambda: (p := epmd_ports(epmd.port)).get(py_alive) and p.get(beam_alive) and p,
            timeout=60,
        )
        assert ports[py_alive] == py_port
        assert ports[beam_alive] == beam_port
        # the Python node answers on that port: a BEAM node connects to it through epmd
        assert c.beams[0].eval(f"net_kernel:connect_node('{py_alive}@127.0.0.1')") is True
        # a bad value is refused with a clear message
        bad = subprocess.run(
            [
                str(REPO / "beam" / "bin" / "dspex-node"),
                "--name",
                "x",
                "--cookie",
                "c",
                "--dist-port",
                "http",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert bad.returncode == 2 and "--dist-port: not a port number" in bad.stderr
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


# -- the live dashboard in a real browser ----------------------------------------------------


def chromium_driver(workdir: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make setup does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1400",
        f"--user-data-dir={workdir / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    # an explicit driver path: selenium-manager never looks for (or downloads) one
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def test_dashboard_shows_a_killed_node_down(ops_cluster) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    c = ops_cluster
    url = f"http://127.0.0.1:{c.dashboard}/"
    with urllib.request.urlopen(url, timeout=5) as r:
        page = r.read().decode()
    for name in [b.name for b in c.beams] + [c.agent.name]:
        assert name in page, f"{name} not named in the rendered page"

    browser = chromium_driver(c.workdir)
    try:
        browser.get(url)
        victim = c.beams[2]

        # read in one script call: the rows are re-rendered twice a second
        def status(node: str) -> str:
            return browser.execute_script(
                'const c = document.querySelector(`tr[data-node="${arguments[0]}"] td.status`);'
                "return c ? c.textContent : '';",
                node,
            )

        def signal_types() -> list[str]:
            return browser.execute_script(
                "return [...document.querySelectorAll('#signals div[data-type]')]"
                ".map((d) => d.dataset.type);"
            )

        wait_for(lambda: all(status(b.name) == "up" for b in c.beams), timeout=10)
        # the stream is live: signals arrive and the pattern filter applies
        wait_for(lambda: len(set(signal_types())) >= 2, timeout=10)
        box = browser.find_element(By.ID, "filter")
        box.clear()
        box.send_keys("cluster.load.*")
        wait_for(
            lambda: (types := signal_types()) and all(t == "cluster.load.report" for t in types),
            timeout=10,
        )

        # a Cognitive Variable is shown and edited through the page, validated by the variable
        var = "Elixir.DSPEx.Clustering.Variable"
        started = c.beams[0].eval(
            f"'{var}':start(<<\"ops.alpha\">>, [{{type, float}}, {{range, {{0.0, 1.0}}}}, "
            "{value, 0.1}])"
        )
        assert started[0] == "ok", started
        row = 'tr[data-variable="ops.alpha"]'

        def set_from_page(text: str) -> str:
            # the row is rebuilt when the value or version changes: type and click in one go
            browser.execute_script(
                "document.getElementById('variable-result').textContent = '';"
                "const r = document.querySelector(arguments[0]);"
                "r.querySelector('input.new-value').value = arguments[1];"
                "r.querySelector('button.set').click();",
                row,
                text,
            )
            return wait_for(
                lambda: (
                    (t := browser.find_element(By.ID, "variable-result").text)
                    and t.startswith("ops.alpha")
                    and t
                ),
                timeout=10,
            )

        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, row), timeout=10)
        assert "version 2" in set_from_page("0.5")
        assert c.beams[1].eval(f"'{var}':get(<<\"ops.alpha\">>)") == ("ok", 0.5, 2)
        wait_for(
            lambda: (
                browser.execute_script(
                    "const v = document.querySelector(arguments[0] + ' td.version');"
                    "return v ? v.textContent : '';",
                    row,
                )
                == "2"
            )
        )
        refused = set_from_page("5.0")  # out of its range: the variable refuses it
        assert "refused" in refused and "invalid_value" in refused
        assert c.beams[1].eval(f"'{var}':get(<<\"ops.alpha\">>)") == ("ok", 0.5, 2)

        os.kill(victim.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: status(victim.name) == "down", timeout=DETECTION_S, every=0.05)
        shown_after = time.monotonic() - killed
        assert all(status(b.name) == "up" for b in c.beams[:2])
        out = REPO / "reports" / "dashboard"
        out.mkdir(parents=True, exist_ok=True)
        time.sleep(1.5)  # let the plots gather another point for the artefact
        assert browser.save_screenshot(str(out / "dashboard_node_down.png"))
        print(f"killed node shown down after {shown_after:.2f} s; screenshot in {out}")
    finally:
        browser.quit()
