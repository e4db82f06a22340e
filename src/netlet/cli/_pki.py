"""A private certificate authority for netlet nodes: make a CA, issue node certificates.

Certificates use EC P-256 keys signed with ECDSA-SHA256, which every OpenSSL
that Python's ``ssl`` module links against accepts. A node certificate carries
SubjectAltNames for the hosts given and the extended key usages serverAuth and
clientAuth, so one file serves both ends of a mutual-TLS connection. The
extensions also satisfy ``VERIFY_X509_STRICT`` (the default from Python 3.13).

Files in the certificate directory::

    ca.pem   ca.key          the CA certificate (give it to every node) and key
    NAME.pem NAME.key        a node certificate and key, one pair per node

Keys are unencrypted PEM written with mode 0600: whoever can read ``ca.key``
can issue certificates the whole cluster will trust. Existing files are never
replaced unless asked (``force``); a replacement is written beside the target
and renamed over it, so it never follows a symlink and always gets fresh
permissions.

``cryptography`` is optional (``pip install netlet[certs]``) and imported only
when a certificate is made. Nothing here prints or parses arguments; the
``netlet certs`` command (``_certs.py``) does that.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from netlet.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "DEFAULT_HOSTS",
    "CertFiles",
    "check_node_name",
    "init_ca",
    "issue_node",
    "make_ca",
    "make_node_cert",
]

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
CA_DAYS = 3650
NODE_DAYS = 825
_SKEW = dt.timedelta(minutes=5)
"""Certificates start a little in the past so a node with a slow clock accepts them."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_INSTALL_HINT = "making certificates needs the cryptography package: pip install netlet[certs]"


@dataclass(frozen=True, slots=True)
class CertFiles:
    """Where a certificate and its key were written."""

    cert: Path
    key: Path


def _require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise ConfigError(_INSTALL_HINT) from None


# -- building certificates (no I/O) ---------------------------------------


def _new_key() -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise ConfigError(f"a certificate must be valid for at least one day, not {days}")
    now = dt.datetime.now(dt.UTC)
    return now - _SKEW, now + dt.timedelta(days=days)


def make_ca(common_name: str = "netlet private CA", days: int = CA_DAYS) -> tuple[bytes, bytes]:
    """Make a self-signed CA; returns ``(cert_pem, key_pem)``."""
    _require_cryptography()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "netlet"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    start, end = _validity(days)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


def _general_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for host in hosts:
        text = host.strip().strip("[]")
        if not text:
            raise ConfigError("an empty host name cannot go in a certificate")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text)))
            continue
        except ValueError:
            pass
        if not text.isascii() or any(c.isspace() or c in "/:@" for c in text):
            raise ConfigError(
                f"{host!r} is neither an IP address nor an ASCII DNS name "
                "(give internationalised names in their xn-- form)"
            )
        names.append(x509.DNSName(text.lower()))
    if not names:
        raise ConfigError("a node certificate needs at least one host")
    return list(dict.fromkeys(names))  # drop repeats, keep order


def check_node_name(name: str) -> str:
    """A node name becomes a file name: letters, digits, ``.``, ``_``, ``-``; not ``ca``."""
    if not _NAME.match(name) or name.lower() == "ca":
        raise ConfigError(
            f"bad node name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, and not 'ca'"
        )
    return name


def make_node_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    name: str,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = NODE_DAYS,
) -> tuple[bytes, bytes]:
    """Issue a node certificate signed by the CA; returns ``(cert_pem, key_pem)``.

    The certificate names the node in its CN, lists ``hosts`` (IP addresses or
    DNS names) as SubjectAltNames and may be used as server and as client.
    """
    _require_cryptography()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    check_node_name(name)
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError:
        raise ConfigError("the CA certificate is not a PEM certificate") from None
    try:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        ca_key = load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError("the CA key is not an unencrypted PEM private key") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the CA key is not an EC key made by netlet certs init")
    if ca_key.public_key() != ca_cert.public_key():
        raise ConfigError("the CA key does not belong to the CA certificate")
    try:
        is_ca = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ConfigError("the CA certificate is not a CA (no basicConstraints CA:TRUE)")

    key = _new_key()
    start, end = _validity(days)
    end = min(end, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "netlet"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(_general_names(hosts)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


# -- files ---------------------------------------------------------------


def _refuse_existing(paths: Iterable[Path], force: bool) -> None:
    if force:
        return
    existing = [str(p) for p in paths if os.path.lexists(p)]
    if len(existing) == 1:
        raise ConfigError(f"{existing[0]} already exists; pass --force to replace it")
    if existing:
        raise ConfigError(f"{' and '.join(existing)} already exist; pass --force to replace them")


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write a new file with ``mode``; with ``force`` replace atomically (never through a link)."""
    if not force:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            raise ConfigError(f"{path} already exists; pass --force to replace it") from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _prepare_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {directory}: {e.strerror}") from None
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory")


def init_ca(
    directory: str | os.PathLike[str], *, force: bool = False, days: int = CA_DAYS,
    common_name: str = "netlet private CA",
) -> CertFiles:
    """Make ``ca.pem`` and ``ca.key`` in ``directory`` (created if missing)."""
    d = Path(directory)
    files = CertFiles(d / CA_CERT, d / CA_KEY)
    _refuse_existing((files.cert, files.key), force)
    cert_pem, key_pem = make_ca(common_name, days)
    _prepare_dir(d)
    _write(files.key, key_pem, 0o600, force)
    _write(files.cert, cert_pem, 0o644, force)
    return files


def issue_node(
    directory: str | os.PathLike[str], name: str, hosts: Sequence[str] = DEFAULT_HOSTS, *,
    force: bool = False, days: int = NODE_DAYS,
) -> CertFiles:
    """Make ``NAME.pem`` and ``NAME.key`` in ``directory``, signed by the CA found there."""
    d = Path(directory)
    check_node_name(name)
    ca_cert, ca_key = d / CA_CERT, d / CA_KEY
    missing = [str(p) for p in (ca_cert, ca_key) if not p.is_file()]
    if missing:
        raise ConfigError(
            f"no CA in {d}: {' and '.join(missing)} missing; "
            f"run `netlet certs init --dir {d}` first"
        )
    files = CertFiles(d / f"{name}.pem", d / f"{name}.key")
    _refuse_existing((files.cert, files.key), force)
    try:
        ca_cert_pem, ca_key_pem = ca_cert.read_bytes(), ca_key.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the CA in {d}: {e.strerror}") from None
    cert_pem, key_pem = make_node_cert(ca_cert_pem, ca_key_pem, name, hosts, days)
    _write(files.key, key_pem, 0o600, force)
    _write(files.cert, cert_pem, 0o644, force)
    return files
