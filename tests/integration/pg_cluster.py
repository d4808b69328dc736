"""Throwaway Postgres clusters for the TLS and least-privilege tests: a private data folder
on its own port, TLS on with a CA and certificates generated here by the openssl CLI, and
`hostssl` lines only in pg_hba.conf, so no TCP connection without TLS is accepted.

The test's own admin connection uses the cluster's Unix socket (trust), so it never needs
the certificates. Private keys are 0600 (the server's owned by `postgres`, the clients' by
the user running the tests, as libpq insists); nothing here is world-readable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cdc.core.settings import Settings

HBA_TLS_ONLY = """\
local all all trust
hostssl all cdc_cert 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 scram-sha-256
hostssl all all 127.0.0.2/32 scram-sha-256
"""


@dataclass
class Certs:
    dir: Path
    ca: Path                  # the CA that signed the server and client certificates
    wrong_ca: Path            # a CA that signed nothing the server presents
    client_cert: Path         # CN=cdc_cert, signed by `ca`
    client_key: Path          # its key, unencrypted PKCS#8 PEM ("BEGIN PRIVATE KEY"), RSA
    client_key_pkcs1: Path    # the same key as traditional PKCS#1 PEM ("BEGIN RSA PRIVATE KEY")


@dataclass
class Cluster:
    port: int
    root: Path
    socket_dir: Path
    certs: Certs

    @property
    def admin_dsn(self) -> str:
        """Superuser over the Unix socket (trust): no TLS, no password."""
        return f"host={self.socket_dir} port={self.port} user=postgres dbname=postgres"

    def tls_dsn(self, user: str, *, host: str = "127.0.0.1", sslmode: str = "verify-full",
                rootcert: Path | None = None, dbname: str = "postgres") -> str:
        root = rootcert or self.certs.ca
        return f"postgresql://{user}@{host}:{self.port}/{dbname}?sslmode={sslmode}&sslrootcert={root}"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, a second CA."""
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    ext = d / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    for ca in ("ca", "wrong_ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
                 "-days", "2", "-subj", f"/CN=cdc test {ca}", cwd=d)
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "server.ext", cwd=d)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "client.key", cwd=d)
    _openssl("rsa", "-in", "client.key", "-traditional", "-out", "client_pkcs1.key", cwd=d)
    _openssl("req", "-new", "-key", "client.key", "-out", "client.csr", "-subj", "/CN=cdc_cert", cwd=d)
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "client.crt", "-days", "2", cwd=d)
    for f in d.iterdir():
        os.chmod(f, 0o600)
    return Certs(dir=d, ca=d / "ca.crt", wrong_ca=d / "wrong_ca.crt", client_cert=d / "client.crt",
                 client_key=d / "client.key", client_key_pkcs1=d / "client_pkcs1.key")


@contextmanager
def tls_cluster(settings: Settings, port: int) -> Iterator[Cluster]:
    """initdb + start a cluster with ssl=on, wal_level=logical and TLS-only pg_hba; stop and
    delete it afterwards."""
    from cdc.stack.components import postgres_bin_dir
    from cdc.stack.process import port_in_use
    assert not port_in_use("127.0.0.1", port), f"port {port} is taken"
    bindir = postgres_bin_dir(settings)
    root = Path(tempfile.mkdtemp(prefix=f"cdc-tls-pg-{port}-", dir="/var/tmp" if os.geteuid() == 0 else None))
    os.chmod(root, 0o700)
    certs = make_certs(root / "client-certs")          # stays with the test's user
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data, server, sock = root / "data", root / "server", root / "sock"
    for d in (data, server, sock):
        d.mkdir(mode=0o700)
    shutil.copy(certs.dir / "server.crt", server)
    shutil.copy(certs.dir / "server.key", server)
    shutil.copy(certs.ca, server / "ca.crt")
    if as_pg:                                           # the server runs as postgres
        os.chmod(root, 0o711)                           # postgres may traverse root, not list it
        for p in (data, server, *server.iterdir(), sock):
            shutil.chown(p, "postgres", "postgres")
    try:
        subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True, cwd="/")
        (data / "pg_hba.conf").write_text(HBA_TLS_ONLY)
        opts = (f"-c port={port} -c listen_addresses=127.0.0.1,127.0.0.2 -c unix_socket_directories={sock} "
                "-c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10 -c ssl=on "
                f"-c ssl_cert_file={server / 'server.crt'} -c ssl_key_file={server / 'server.key'} "
                f"-c ssl_ca_file={server / 'ca.crt'} -c password_encryption=scram-sha-256")
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "server.log"),
                        "-o", opts, "start"], check=True, capture_output=True, cwd="/")
        yield Cluster(port=port, root=root, socket_dir=sock, certs=certs)
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, cwd="/")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def plain_cluster(settings: Settings, port: int, options: str = "", initdb_args: tuple[str, ...] = ()
                  ) -> Iterator[Cluster]:
    """initdb + start a cluster with wal_level=logical, trust on loopback (no TLS), extra server
    `options` (e.g. "-c max_slot_wal_keep_size=2MB") and initdb_args (e.g. --wal-segsize=1);
    stop and delete it afterwards. Cluster.certs is None here."""
    from cdc.stack.components import postgres_bin_dir
    from cdc.stack.process import port_in_use
    assert not port_in_use("127.0.0.1", port), f"port {port} is taken"
    bindir = postgres_bin_dir(settings)
    root = Path(tempfile.mkdtemp(prefix=f"cdc-pg-{port}-", dir="/var/tmp" if os.geteuid() == 0 else None))
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data, sock = root / "data", root / "sock"
    for d in (data, sock):
        d.mkdir(mode=0o700)
    if as_pg:
        os.chmod(root, 0o711)
        for p in (data, sock):
            shutil.chown(p, "postgres", "postgres")
    try:
        subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        *initdb_args], check=True, capture_output=True, cwd="/")
        opts = (f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sock} "
                f"-c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10 {options}")
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "server.log"),
                        "-o", opts, "start"], check=True, capture_output=True, cwd="/")
        yield Cluster(port=port, root=root, socket_dir=sock, certs=None)  # type: ignore[arg-type]
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, cwd="/")
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- helpers for mirrors of these clusters

def cli(registry_file: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`cdc ARGS` on the test's own registry; secrets only ever through `env`, never argv."""
    import sys
    full_env = {**os.environ, "CDC_REGISTRY_PATH": str(registry_file), **(env or {})}
    return subprocess.run([sys.executable, "-m", "cdc.cli", *args], capture_output=True, text=True, env=full_env,
                          timeout=300)


def wait_in_sync_with(c, name: str, dsn: str, timeout: float = 180.0) -> float:
    """Like syncing.wait_in_sync, for a mirror of another source: Postgres read through `dsn`,
    the mirror as Pinot's own code builds it (syncing.mirror_target_rows)."""
    import time

    from cdc.mirrors import service
    from cdc.mirrors import state as mirror_state
    from cdc.postgres import catalog
    from syncing import mirror_target_rows
    spec = service.get_mirror(c, name).spec
    t0, last = time.monotonic(), {}
    while time.monotonic() - t0 < timeout:
        with catalog.connect(dsn) as conn:
            info = catalog.introspect(conn, spec.schema_name, spec.table_name)
            expected = mirror_state.postgres_rows(conn, info, spec.key_columns)
        last = mirror_state.diff(expected, mirror_target_rows(c, name))
        if expected and not (last["missing"] or last["extra"] or last["differing"]):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"mirror {name} not equal to Postgres after {timeout}s: {last}")


def objects_of(c, source: str, admin_dsn: str) -> dict:
    """Everything a mirror of `source` can create, in the stack and in the cluster. Only this
    source's objects: other tests create and remove their own concurrently on the same stack."""
    import psycopg

    from cdc.clients.kafka import KafkaAdmin
    from cdc.core import names
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        slots = sorted(r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots"))
        pubs = sorted(r[0] for r in conn.execute("SELECT pubname FROM pg_publication"))
    mine = (names.topic_prefix(source) + ".", names.flat_topic(source + "_"))
    topics = sorted(t for t in KafkaAdmin(c.settings.kafka_bootstrap).topics() if t.startswith(mine))
    jobs = sorted(j.id for j in c.jobmanager.jobs() if j.state not in ("CANCELED", "FINISHED", "FAILED")
                  and j.name.startswith(names.flink_pipeline(source + "_")))
    return {"connector": names.connector_name(source) in c.connect.list_connectors(), "jobs": jobs,
            "slots": slots, "publications": pubs, "topics": topics,
            "source_row": c.registry.get_source(source) is not None,
            "mirrors": [m.name for m in c.registry.list_mirrors(source=source)],
            "secret_file": (c.settings.state_dir / "secrets" / f"{source}.properties").exists()}
