"""``netlet keygen`` and ``netlet certs``, the command group and its seam for commands."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from netlet.cli import main
from netlet.cli._main import NetletGroup
from netlet.transport import load_key


def netlet_exe() -> str:
    beside = Path(sys.executable).parent / "netlet"
    found = str(beside) if beside.exists() else shutil.which("netlet")
    if found is None:
        pytest.fail("the netlet console script is not installed (pip install -e '.[dev]')")
    return found


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The group installs a log handler when it runs; take it away after each test."""
    logger = logging.getLogger("netlet")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


# -- the group ---------------------------------------------------------------


def test_version_and_help() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.startswith("netlet, version ")
    result = invoke("--help")
    assert result.exit_code == 0
    assert "keygen" in result.output
    assert "certs" in result.output
    for args in (["keygen"], ["certs"], ["certs", "init"], ["certs", "node"]):
        result = invoke(*args, "--help")
        assert result.exit_code == 0, result.output
        assert "Usage: netlet " + " ".join(args) in result.output


def test_every_registered_command_loads() -> None:
    ctx = click.Context(main)
    names = main.list_commands(ctx)
    assert {"certs", "keygen"} <= set(names)
    for name in names:
        cmd = main.get_command(ctx, name)
        assert isinstance(cmd, click.Command)
        assert cmd.short_help != "(unavailable)", name


def test_lazy_command_seam() -> None:
    @click.group(cls=NetletGroup)
    def group() -> None:
        pass

    assert isinstance(group, NetletGroup)
    group.add_lazy_command("keygen", "netlet.cli._keygen:keygen")
    group.add_lazy_command("ghost", "netlet.no_such_module:ghost")
    with pytest.raises(ValueError, match="already registered"):
        group.add_lazy_command("keygen", "netlet.cli._keygen:keygen")
    with pytest.raises(ValueError, match="module:attribute"):
        group.add_lazy_command("bad", "netlet.cli._keygen")

    runner = CliRunner()
    listed = runner.invoke(group, ["--help"])
    assert listed.exit_code == 0
    assert "keygen" in listed.output
    assert "ghost" in listed.output
    # A command whose module cannot be imported explains itself and fails...
    ghost = runner.invoke(group, ["ghost"])
    assert ghost.exit_code == 1
    assert "netlet ghost is unavailable" in ghost.output
    assert "netlet.no_such_module" in ghost.output
    # ...while the others still run.
    assert runner.invoke(group, ["keygen", "--help"]).exit_code == 0


def test_verbose_sets_up_rich_logging_only_when_run() -> None:
    from rich.logging import RichHandler

    logger = logging.getLogger("netlet")
    # Another test may have run the CLI in this process already: start from clean.
    for h in [h for h in logger.handlers if isinstance(h, RichHandler)]:
        logger.removeHandler(h)
    assert not any(isinstance(h, RichHandler) for h in logger.handlers)
    for flags, level in (([], logging.WARNING), (["-v"], logging.INFO), (["-vv"], logging.DEBUG)):
        assert invoke(*flags, "keygen", "--help").exit_code == 0
        ours = [h for h in logger.handlers if isinstance(h, RichHandler)]
        assert len(ours) == 1  # replaced, not piled up
        assert logger.level == level


def test_importing_the_cli_configures_nothing() -> None:
    code = (
        "import logging, sys, netlet.cli\n"
        "netlet = logging.getLogger('netlet')\n"
        "assert all(type(h) is logging.NullHandler for h in netlet.handlers), netlet.handlers\n"
        "assert not logging.getLogger().handlers\n"
        "assert 'cryptography' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- keygen ------------------------------------------------------------------


def test_keygen_writes_a_private_loadable_key(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    result = invoke("keygen", path)
    assert result.exit_code == 0, result.output
    key = load_key(path)
    assert len(key) == 32
    assert mode(path) == 0o600
    assert str(path) in result.output
    assert "--key" in result.output
    assert key.hex() not in result.output


def test_keygen_defaults_to_netlet_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert invoke("keygen").exit_code == 0
    assert len(load_key(tmp_path / "netlet.key")) == 32


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "netlet.key"
    assert invoke("keygen", path).exit_code == 0
    before = path.read_bytes()
    result = invoke("keygen", path)
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert "--force" in result.output
    assert path.read_bytes() == before

    result = invoke("keygen", path, "--force")
    assert result.exit_code == 0, result.output
    assert path.read_bytes() != before
    assert mode(path) == 0o600


def test_keygen_force_tightens_permissions_and_does_not_follow_links(tmp_path: Path) -> None:
    loose = tmp_path / "loose.key"
    loose.write_text("not a key\n")
    loose.chmod(0o644)
    assert invoke("keygen", loose, "--force").exit_code == 0
    assert mode(loose) == 0o600
    assert len(load_key(loose)) == 32

    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me\n")
    link = tmp_path / "link.key"
    link.symlink_to(target)
    assert invoke("keygen", link).exit_code == 1  # exists (as a link)
    assert invoke("keygen", link, "--force").exit_code == 0
    assert not link.is_symlink()
    assert target.read_text() == "keep me\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_keygen_reports_an_unwritable_place(tmp_path: Path) -> None:
    result = invoke("keygen", tmp_path / "missing-dir" / "netlet.key")
    assert result.exit_code == 1
    assert "cannot write a key" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("path", ["", "newdir/"])
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_keygen_refuses_a_path_that_names_no_file(tmp_path: Path, path: str, force: list[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # "" with --force was a ValueError traceback; "newdir/" wrote a file named newdir.
    monkeypatch.chdir(tmp_path)
    result = invoke("keygen", path, *force)
    assert result.exit_code == 2, result.output
    assert "names no file" in result.output
    assert list(tmp_path.iterdir()) == []


def test_keygen_console_script(tmp_path: Path) -> None:
    path = tmp_path / "real.key"
    done = subprocess.run(
        [netlet_exe(), "keygen", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert mode(path) == 0o600
    assert load_key(path).hex() not in done.stdout + done.stderr
    again = subprocess.run(
        [netlet_exe(), "keygen", str(path)], capture_output=True, text=True, timeout=60
    )
    assert again.returncode != 0
    assert "Error:" in again.stderr
    assert "--force" in again.stderr


# -- certs -------------------------------------------------------------------


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_init_and_node(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    result = invoke("certs", "init", "--dir", d)
    assert result.exit_code == 0, result.output
    assert mode(d / "ca.key") == 0o600
    ca = load_cert(d / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.subject == ca.issuer

    result = invoke("certs", "node", "web1", "--dir", d, "--host", "10.1.2.3",
                    "--host", "web1.example.org", "--host", "::1")
    assert result.exit_code == 0, result.output
    assert mode(d / "web1.key") == 0o600
    node = load_cert(d / "web1.pem")
    node.verify_directly_issued_by(ca)
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3", "::1"]
    assert san.get_values_for_type(x509.DNSName) == ["web1.example.org"]
    eku = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not node.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert "web1" in node.subject.rfc4514_string()
    assert node.not_valid_after_utc <= ca.not_valid_after_utc


def test_certs_node_default_hosts(tmp_path: Path) -> None:
    assert invoke("certs", "init", "--dir", tmp_path).exit_code == 0
    assert invoke("certs", "node", "n", "--dir", tmp_path).exit_code == 0
    san = load_cert(tmp_path / "n.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


def test_certs_node_needs_a_ca(tmp_path: Path) -> None:
    result = invoke("certs", "node", "n", "--dir", tmp_path)
    assert result.exit_code == 1
    assert "no CA" in result.output
    assert "netlet certs init" in result.output
    assert list(tmp_path.iterdir()) == []


def test_certs_refuse_to_overwrite_without_force(tmp_path: Path) -> None:
    assert invoke("certs", "init", "--dir", tmp_path).exit_code == 0
    ca_before = (tmp_path / "ca.pem").read_bytes()
    result = invoke("certs", "init", "--dir", tmp_path)
    assert result.exit_code == 1
    assert "--force" in result.output
    assert (tmp_path / "ca.pem").read_bytes() == ca_before

    assert invoke("certs", "node", "n", "--dir", tmp_path).exit_code == 0
    node_before = (tmp_path / "n.pem").read_bytes()
    result = invoke("certs", "node", "n", "--dir", tmp_path)
    assert result.exit_code == 1
    assert "already exist" in result.output
    assert (tmp_path / "n.pem").read_bytes() == node_before

    result = invoke("certs", "node", "n", "--dir", tmp_path, "--force")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "n.pem").read_bytes() != node_before
    assert mode(tmp_path / "n.key") == 0o600

    result = invoke("certs", "init", "--dir", tmp_path, "--force")
    assert result.exit_code == 0
    assert "no longer trusted" in result.output
    assert (tmp_path / "ca.pem").read_bytes() != ca_before


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "ca", ""])
def test_certs_node_rejects_bad_names(tmp_path: Path, name: str) -> None:
    assert invoke("certs", "init", "--dir", tmp_path).exit_code == 0
    result = invoke("certs", "node", name, "--dir", tmp_path)
    assert result.exit_code == 1
    assert "bad node name" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.key", "ca.pem"]


def test_certs_node_rejects_bad_hosts(tmp_path: Path) -> None:
    assert invoke("certs", "init", "--dir", tmp_path).exit_code == 0
    result = invoke("certs", "node", "n", "--dir", tmp_path, "--host", "not a host")
    assert result.exit_code == 1
    assert "neither an IP address nor" in result.output
    assert not (tmp_path / "n.pem").exists()


def test_certs_node_rejects_a_broken_ca(tmp_path: Path) -> None:
    assert invoke("certs", "init", "--dir", tmp_path).exit_code == 0
    (tmp_path / "ca.key").write_text("garbage\n")
    result = invoke("certs", "node", "n", "--dir", tmp_path)
    assert result.exit_code == 1
    assert "CA key" in result.output
    assert "Traceback" not in result.output


def test_certs_without_cryptography_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import now fails
    result = invoke("certs", "init", "--dir", tmp_path)
    assert result.exit_code == 1
    assert "pip install netlet[certs]" in result.output
    assert not os.path.exists(tmp_path / "ca.key")


def test_certs_console_script(tmp_path: Path) -> None:
    exe = netlet_exe()
    for args in (["certs", "init", "--dir", str(tmp_path)],
                 ["certs", "node", "n1", "--dir", str(tmp_path)]):
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.key", "ca.pem", "n1.key", "n1.pem"]
    missing = subprocess.run(
        [exe, "certs", "node", "n2", "--dir", str(tmp_path / "nowhere")],
        capture_output=True, text=True, timeout=60,
    )
    assert missing.returncode != 0
    assert "netlet certs init" in missing.stderr
