"""A private CA per cluster, so `--tls` runs are real TLS without touching any trust store.

Clients trust the cluster by pointing at `ca.pem` (the `ca_file` of the cluster info); a client
that does not is refused, exactly as against a real deployment with an unknown CA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TLSFiles:
    ca_file: Path  # the CA certificate clients must trust
    cert_file: Path  # server certificate chain
    key_file: Path  # server private key
    pem_file: Path  # chain + key in one file (HAProxy's `crt`)


def make_tls(directory: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TLSFiles:
    """Write a fresh CA and a server certificate for `names` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="sioscale test CA")
    cert = ca.issue_cert(*names)
    files = TLSFiles(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.crt",
        key_file=directory / "server.key",
        pem_file=directory / "server.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca_file))
    cert.private_key_pem.write_to_path(str(files.key_file))
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    files.cert_file.write_bytes(chain)
    files.pem_file.write_bytes(chain + cert.private_key_pem.bytes())
    files.key_file.chmod(0o600)
    files.pem_file.chmod(0o600)
    return files
