"""Nothing touches the network: the session-wide guard in conftest, and offline errors that read well."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from conftest import NetworkBlocked


@pytest.fixture
def probe(_no_network):
    """The guard's record of refused attempts; the attempts a test makes on purpose are forgotten after it."""
    before = len(_no_network)
    yield _no_network
    del _no_network[before:]


def test_guard_refuses_outbound_connections(probe):
    before = len(probe)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        with pytest.raises(NetworkBlocked):
            sock.connect(("10.255.255.1", 80))
        with pytest.raises(NetworkBlocked):
            sock.connect_ex(("10.255.255.1", 443))
    with pytest.raises(NetworkBlocked):  # name lookups are refused too, so DNS never leaves the machine
        socket.create_connection(("guard-probe.invalid", 443), timeout=0.5)
    if socket.has_ipv6:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock6, pytest.raises(NetworkBlocked):
            sock6.connect(("2001:db8::1", 80, 0, 0))
    assert len(probe) > before  # the guard records what it refused


def test_guard_allows_loopback_and_unix_sockets(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        accepted = []
        thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
        thread.start()
        with socket.create_connection(("localhost", port), timeout=5) as client:
            client.sendall(b"ping")
        thread.join(5)
        assert accepted and accepted[0].recv(4) == b"ping"
        accepted[0].close()
    if hasattr(socket, "AF_UNIX"):
        path = str(tmp_path / "s.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(path)
            server.listen(1)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(path)


def test_offline_environment_is_set():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert os.environ.get("HF_DATASETS_OFFLINE") == "1"


def test_unknown_hub_backbone_offline_is_one_clear_line():
    from core.backbones import BackboneError, load_backbone

    with pytest.raises(BackboneError) as caught:
        load_backbone("freeze-lab-tests/no-such-model-anywhere")
    message = str(caught.value)
    assert "\n" not in message
    assert "no-such-model-anywhere" in message and "offline" in message


def test_unknown_hub_data_set_offline_is_one_clear_line():
    from core.config import TaskConfig
    from core.data import DataError, load_task

    with pytest.raises(DataError) as caught:
        load_task("topic", TaskConfig(train="freeze-lab-tests/no-such-data-set"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("hub data set 'freeze-lab-tests/no-such-data-set'")
    assert "offline" in message
