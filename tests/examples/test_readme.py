"""The README's quick start runs as printed: its server, then its client, as two processes."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"


def _quick_start_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Quick start"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_quick_start_server_and_client_run_as_printed(
        server_process: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server, client = _quick_start_blocks()[:2]
    assert "tcp://127.0.0.1:7000" in server
    assert "asyncio.run(main())" in client
    # The printed port may be taken on a test machine: only the port changes.
    server = server.replace("tcp://127.0.0.1:7000", "tcp://127.0.0.1:0")
    server = server.replace("    node.wait()", "    print(node.address, flush=True)\n"
                                              "    node.wait()")
    srv = server_process(server)
    client = client.replace("tcp://127.0.0.1:7000", srv.address)
    script = tmp_path / "client.py"
    script.write_text(client)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["18"]
