"""Attacks on an experiment's outputs directory from the sandbox the agent works in.

A filesystem-mode run copies the agent's workspace into ``run-<k>/workspace``
on the host. Everything about that workspace comes from the sandbox: links the
code planted (to a host directory, to a host file), fifos and sockets, names
and sizes. The host must write only regular files, only below the run's
directory, never through a link, never wait on a fifo, and say what it left out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai_server import ScriptedOpenAIServer, ScriptedReply
from session_servers import own_session_server

from sandlot.experiment import load_config, run_experiment
from sandlot.experiment.outputs import _create, safe_name

PLANT = """\
mkdir -p sub && echo inside > sub/inner.txt && echo fine > ok.txt &&
ln -s {outside} escape && ln -s {outside}/victim.txt pw && ln -s ../../.. up &&
mkfifo pipe && python -c "import socket; socket.socket(socket.AF_UNIX).bind('sock')"
"""


@pytest.fixture(scope="module")
def sessions_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("experiment-attack-sessions") / "server"
    with own_session_server(folder, 3.0):
        yield folder


@pytest.mark.timeout(60)  # a read of the fifo used to wait 120 s, then end the session
def test_links_fifos_and_sockets_in_the_workspace_are_skipped_and_reported(
    sessions_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("host data")

    def agent(body: dict[str, Any]) -> str | ScriptedReply:
        if body["messages"][-1]["role"] == "user":
            return ScriptedReply.calls(("exec", {"command": PLANT.format(outside=outside)}))
        return "planted"

    with ScriptedOpenAIServer(agent) as server:
        path = tmp_path / "attack.yaml"
        path.write_text(
            "name: attack\ntask: plant links\n"
            "environment: {sandbox: {isolation: bubblewrap, memory_mb: 512}}\n"
            "execution: {type: filesystem}\n"
            f'harness: {{lm: {{model: m, base_url: "{server.base_url}", max_retries: 0}}}}\n'
            f"outputs: {{dir: {tmp_path / 'out'}}}\n"
        )
        result = run_experiment(load_config(path))
    [run] = result.runs
    assert run.status == "answered", run
    saved = Path(run.run_dir) / "workspace"
    found = sorted(str(p.relative_to(saved)) for p in saved.rglob("*"))
    assert found == ["ok.txt", "sub", "sub/inner.txt"]
    assert not any(p.is_symlink() for p in saved.rglob("*"))
    assert (saved / "ok.txt").read_text() == "fine\n"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_text() == "host data"
    skipped = json.loads((Path(run.run_dir) / "summary.json").read_text())["extra"]
    assert sorted(skipped["workspace"]["skipped"]) == [
        "escape: a link, not a file or directory",
        "pipe: a fifo, not a file or directory",
        "pw: a link, not a file or directory",
        "sock: a socket, not a file or directory",
        "up: a link, not a file or directory",
    ]
    # Everything the run wrote is below the outputs directory.
    assert {p.name for p in tmp_path.iterdir()} == {"outside", "out", "attack.yaml"}


@pytest.mark.parametrize(
    "name", ["..", ".", "", "../x", "a/b", "/etc/passwd", "a\\b", "nul\0", "x" * 256, None, 7]
)
def test_a_forged_name_is_never_a_path_on_the_host(name: Any) -> None:
    assert safe_name(name) is None


def test_a_file_is_created_new_and_never_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep")
    os.symlink(target, tmp_path / "link.txt")
    with pytest.raises(OSError):
        _create(tmp_path / "link.txt", b"overwrite")
    (tmp_path / "exists.txt").write_text("first")
    with pytest.raises(FileExistsError):
        _create(tmp_path / "exists.txt", b"second")
    assert target.read_text() == "keep" and (tmp_path / "exists.txt").read_text() == "first"
    _create(tmp_path / "new.txt", b"data")
    assert (tmp_path / "new.txt").read_bytes() == b"data"
