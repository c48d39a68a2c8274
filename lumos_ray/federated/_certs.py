"""Certificates and keys for a local test federation (``lumos federate certs``).

A private CA signs the SuperLink's server certificate (SANs: the given hosts/IPs), so
SuperNodes and ``flwr run`` verify the SuperLink with ``ca.crt``; 127.0.0.1 and localhost
are always among the SANs (the Control API that ``flwr run`` reaches is loopback-only).
Optional per-site EC key pairs (OpenSSH format, NIST P-384) let the SuperLink
authenticate SuperNodes: the public keys are registered with ``flwr supernode
register``, each SuperNode signs with its private key. For production, use
certificates from your own PKI.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

__all__ = ["CertPaths", "generate_certs", "supernode_key_paths"]


class CertPaths(dict):
    """Paths of what :func:`generate_certs` wrote (a dict, JSON-friendly)."""


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write a certificate, or a private key as a file that is ``0600`` from its first
    byte (temp file created ``0600``, renamed over ``path``): written first and
    chmod'ed after, a key was readable by every local user for a moment, and a file
    opened in that moment stays readable through its descriptor."""
    if private:
        from lumos_ray._files import write_private_text

        write_private_text(path, data.decode("ascii"))  # PEM / OpenSSH text
    else:
        path.write_bytes(data)


def supernode_key_paths(out_dir: str | Path, site: str) -> tuple[Path, Path]:
    d = Path(out_dir)
    return d / f"supernode-{site}.key", d / f"supernode-{site}.pub"


def generate_certs(
    out_dir: str | Path,
    *,
    hosts: list[str] | None = None,
    supernodes: list[str] | None = None,
    days: int = 30,
    overwrite: bool = False,
) -> CertPaths:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    from lumos_ray.errors import ConfigError

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    if (out / "ca.crt").exists() and not overwrite:
        raise ConfigError(f"{out} already holds certificates; pass --overwrite to replace")
    # Loopback is always a SAN: the Control API listens on 127.0.0.1 only, and `flwr
    # run` on the SuperLink's machine verifies the same certificate there.
    hosts = list(dict.fromkeys([*(hosts or []), "127.0.0.1", "localhost"]))
    now = dt.datetime.now(dt.UTC)
    pem = serialization.Encoding.PEM

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lumos federation CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    srv_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def key_pem(k: Any) -> bytes:
        return k.private_bytes(
            pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )

    _write(out / "ca.crt", ca_cert.public_bytes(pem))
    _write(out / "ca.key", key_pem(ca_key), private=True)
    _write(out / "server.pem", srv_cert.public_bytes(pem))
    _write(out / "server.key", key_pem(srv_key), private=True)
    paths = CertPaths(
        dir=str(out),
        ca_cert=str(out / "ca.crt"),
        server_cert=str(out / "server.pem"),
        server_key=str(out / "server.key"),
        hosts=hosts,
        supernodes={},
    )
    for site in supernodes or []:
        key = ec.generate_private_key(ec.SECP384R1())
        priv_path, pub_path = supernode_key_paths(out, site)
        _write(
            priv_path,
            key.private_bytes(
                pem, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            ),
            private=True,
        )
        _write(
            pub_path,
            key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            ),
        )
        paths["supernodes"][site] = {"private_key": str(priv_path), "public_key": str(pub_path)}
    return paths
