"""Shared fixtures.

Hub fixtures
------------
`huggingface_hub` reads HF_ENDPOINT (and HF_HOME, HF_HUB_DISABLE_XET, ...) when it is imported,
so this module points them at a local test server before anything imports it:

* ``hub_server`` (session): a `tests.hubserver.HubServer` listening on HF_ENDPOINT.
* ``hub`` (function): the server's `HubState`, emptied before each test. Arrange with
  ``hub.add_token(token, user, role="read"|"write")``, ``hub.create_repo(repo_id, files, private=,
  gated=, repo_type=)``, ``hub.add_commit(...)``, ``hub.grant(repo_id, user)``,
  ``hub.set_fault("500"|"close", match=None)``; inspect with ``hub.files_at``, ``hub.commit_info``,
  ``hub.pull_requests``, ``hub.requested_files``. ``hub.url`` is the endpoint.
* ``upload_dir(repo_id, path, **kw)``: helper to create a repo from a local directory (e.g. a tiny
  model written with ``save_pretrained``); returns the commit sha.

No token is set in the environment and HF_HOME is a fresh temporary directory, so a login
cached on the machine never leaks into tests; pass tokens explicitly or monkeypatch HF_TOKEN.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HUB_PORT = _free_port()
HUB_ENDPOINT = f"http://127.0.0.1:{HUB_PORT}"
_HF_HOME = tempfile.mkdtemp(prefix="maxact-hf-home-")

os.environ["HF_ENDPOINT"] = HUB_ENDPOINT
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
for _var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE", "HF_HUB_OFFLINE",
             "TRANSFORMERS_OFFLINE", "HF_OIDC_RESOURCE", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
    os.environ.pop(_var, None)

if "huggingface_hub" in sys.modules:  # pragma: no cover - guards against a plugin importing it first
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py could set HF_ENDPOINT")

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
from hubserver import HubServer, HubState, read_dir  # noqa: E402


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_HF_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def hub_server():
    server = HubServer(port=HUB_PORT).start()
    yield server
    server.stop()


@pytest.fixture
def hub(hub_server: HubServer, tmp_path_factory: pytest.TempPathFactory) -> HubState:
    """Empty server state (repos, tokens, request log, fault) and an empty HF cache for one test."""
    hub_server.state.reset()
    state = hub_server.state
    cache = Path(_HF_HOME) / "hub"
    shutil.rmtree(cache, ignore_errors=True)
    yield state
    state.set_fault(None)


@pytest.fixture
def upload_dir(hub: HubState):
    """upload_dir(repo_id, local_dir, **create_repo_kwargs) -> commit sha."""

    def _upload(repo_id: str, path: str | Path, **kwargs) -> str:
        return hub.create_repo(repo_id, read_dir(path), **kwargs)

    return _upload
