"""TLS to Postgres: what a libpq TLS failure means, and whether Debezium can read a client key.

Two clients connect to a source with the same TLS settings: this service through libpq
(psycopg, the DSN as given) and the Debezium connector through pgjdbc inside Kafka Connect
(the settings copied into ``database.sslmode`` / ``database.sslrootcert`` /
``database.sslcert`` / ``database.sslkey``, see cdc/mapping/render.py). Files are passed by
path; Connect must be able to read the same paths (here it runs on this host, as root).

Client keys are where the two differ. libpq reads PEM keys only. pgjdbc 42.7.11 (shipped in
the Debezium 3.6.1 plugin) picks a reader by the file name (org.postgresql.ssl.LibPQFactory):
``.p12``/``.pfx`` PKCS#12, ``.key``/``.pem`` PEM (PEMKeyManager: unencrypted PKCS#8,
``-----BEGIN PRIVATE KEY-----``, algorithm RSA unless pemKeyAlgorithm says otherwise), any
other name PKCS#8 DER (a ``.pk8``, the classic pgjdbc format). So the one file both can read
is an unencrypted PKCS#8 PEM RSA key named ``*.key`` or ``*.pem``; `client_key_problems`
checks exactly that (reading only the file's header, never logging it) and names the
conversion otherwise.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

# DER of the rsaEncryption OID (1.2.840.113549.1.1.1) inside a PKCS#8 AlgorithmIdentifier.
_RSA_OID = bytes.fromhex("06092a864886f70d010101")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.S)
_CONVERT = "openssl pkcs8 -topk8 -nocrypt -in {key} -out {new} && chmod 600 {new}"

# Settings libpq applies but Debezium's connector cannot be given: refusing them is safer
# than a connector that silently checks less than this service does.
UNSUPPORTED_DSN_SETTINGS = {
    "sslpassword": "encrypted client keys: libpq reads only encrypted PEM, pgjdbc only encrypted PKCS#8 DER, so "
                   "no one key file serves both; decrypt the key to an unencrypted PKCS#8 PEM file (mode 0600): "
                   + _CONVERT.format(key="client.key", new="client-pkcs8.key"),
    "sslcrl": "certificate revocation lists: Debezium's JDBC driver has no CRL setting, so the connector would "
              "accept a certificate this service refuses; remove sslcrl (or revoke by rotating the server "
              "certificate and CA)",
    "sslcrldir": "certificate revocation lists: Debezium's JDBC driver has no CRL setting; remove sslcrldir",
}


def _pem_new_name(path: Path) -> str:
    return str(path.with_name(path.stem + "-pkcs8.key"))


def client_key_problems(sslkey: str) -> list[tuple[str, str]]:
    """(what is wrong, how to fix it) for a client key that libpq reads but Debezium's pgjdbc
    would not. Empty when the key is usable by both, or when it cannot be read here (libpq
    then reports it at connect time)."""
    path = Path(sslkey)
    try:
        head = path.read_bytes()[:65536]
    except OSError:
        return []
    lower = path.name.lower()
    fix = _CONVERT.format(key=path, new=_pem_new_name(path))
    what_java = "Debezium's JDBC driver (pgjdbc 42.7, inside Kafka Connect)"
    if lower.endswith((".p12", ".pfx")):
        return [(f"client key {path} is PKCS#12: libpq (this service) cannot read it",
                 f"give a PEM key instead: openssl pkcs12 -in {path} -nocerts -nodes | "
                 f"openssl pkcs8 -topk8 -nocrypt -out {_pem_new_name(path)}")]
    block = _PEM_BLOCK.search(head)
    if not lower.endswith((".key", ".pem")):
        if block is not None:
            return [(f"client key {path} is PEM, but {what_java} reads a key file whose name does not end in "
                     ".key or .pem as PKCS#8 DER",
                     f"name the file *.key or *.pem (e.g. a copy or symlink {path.with_suffix('.key')}), "
                     "or convert to unencrypted PKCS#8 PEM: " + fix)]
        return []
    if block is None:
        return [(f"client key {path} is not a PEM file ({what_java} reads *.key/*.pem files as PEM)",
                 "give an unencrypted PKCS#8 PEM key (-----BEGIN PRIVATE KEY-----), e.g. openssl pkcs8 -topk8 "
                 f"-nocrypt -inform DER -in KEY.pk8 -out {_pem_new_name(path)}")]
    label = block.group(1).decode()
    if label == "ENCRYPTED PRIVATE KEY":
        return [(f"client key {path} is encrypted, which {what_java} cannot read from a PEM file",
                 "decrypt it to an unencrypted PKCS#8 PEM file readable only by its owner (mode 0600): "
                 f"openssl pkcs8 -topk8 -nocrypt -in {path} -out {_pem_new_name(path)}")]
    if label != "PRIVATE KEY":
        return [(f"client key {path} is a PEM '{label}' (PKCS#1/SEC1 format); {what_java} reads only "
                 "PKCS#8 (-----BEGIN PRIVATE KEY-----)",
                 "convert it (libpq reads the result too) and point sslkey at the new file: " + fix)]
    try:
        der = base64.b64decode(block.group(2), validate=False)
    except (binascii.Error, ValueError):
        return []
    if _RSA_OID not in der[:64]:
        return [(f"client key {path} is not an RSA key; {what_java} reads PEM keys as RSA",
                 "issue an RSA client key and certificate (e.g. openssl genpkey -algorithm RSA "
                 "-pkeyopt rsa_keygen_bits:2048 -out client.key)")]
    return []


def classify_connect_error(reason: str, params: dict[str, str]) -> tuple[str, str] | None:
    """(what failed, the fix) when a libpq connection error is about TLS, else None.
    `reason` is the libpq message (already scrubbed of secrets), `params` the DSN's settings."""
    mode = params.get("sslmode") or "prefer"
    root = params.get("sslrootcert") or "~/.postgresql/root.crt (libpq's default)"
    host = params.get("host") or "?"
    low = reason.lower()
    if "does not match host name" in low:
        return ("TLS: the server's certificate does not name the host connected to (sslmode=verify-full checks it): "
                + reason.split("failed:", 1)[-1].strip(),
                f"connect with a host name or address the certificate lists instead of {host!r}, or have the "
                "certificate reissued with that name (sslmode=verify-ca skips only this check)")
    if "certificate verify failed" in low or "unknown ca" in low and "alert" not in low:
        return (f"TLS: the server's certificate is not signed by a CA in sslrootcert={root} "
                "(certificate verify failed)",
                "set sslrootcert to the CA certificate (bundle) that signed the server's certificate, e.g. "
                "your provider's CA bundle; both this service and Kafka Connect read that path")
    if "weak sslmode" in low:
        return (f"TLS: {reason.split(':', 1)[-1].strip()}", "use sslmode=verify-full with sslrootcert=system")
    if "server does not support ssl" in low:
        return (f"TLS: the server does not offer TLS, but sslmode={mode} requires it",
                "enable TLS on the server (ssl = on, ssl_cert_file, ssl_key_file in postgresql.conf), or connect "
                "to the endpoint that offers it; lowering sslmode sends the password and data unencrypted")
    if "root certificate file" in low and "does not exist" in low:
        return (f"TLS: the root certificate file for sslmode={mode} does not exist: {root}",
                "download the CA certificate that signed the server's certificate and set sslrootcert to its "
                "absolute path (readable by this service and by Kafka Connect)")
    if "no encryption" in low and "pg_hba.conf" in low:
        return ("TLS: the server accepts this user only over TLS (pg_hba.conf hostssl), but the connection "
                f"was not encrypted (sslmode={mode})",
                "add sslmode=verify-full and sslrootcert=/path/to/ca.crt to the DSN")
    if "requires a valid client certificate" in low or "certificate authentication failed" in low:
        return ("TLS: the server requires a client certificate it trusts: " + reason.split("failed:", 1)[-1].strip(),
                "set sslcert and sslkey (absolute paths) to a certificate the server's ssl_ca_file trusts, whose "
                "CN is the user name (for pg_hba method cert)")
    if ("private key file" in low or "certificate file" in low or "could not load" in low
            or "certificate present" in low):
        return ("TLS: the client certificate or key cannot be used: " + reason.split("failed:", 1)[-1].strip(),
                "sslcert and sslkey must be readable PEM files, the key matching the certificate and mode 0600 "
                "(0640 if owned by root)")
    if "alert" in low and ("unknown ca" in low or "bad certificate" in low or "certificate" in low):
        return ("TLS: the server rejected the client certificate: " + reason.split("failed:", 1)[-1].strip(),
                "use a client certificate signed by a CA in the server's ssl_ca_file")
    if "ssl error" in low and "syscall" not in low:   # SSL SYSCALL error: the network, not TLS
        return ("TLS: the TLS handshake failed: " + reason.split("failed:", 1)[-1].strip(),
                f"check sslmode={mode}, sslrootcert, and the server's ssl settings and certificate")
    return None
