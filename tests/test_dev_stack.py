"""dev/stack.py's free ports: below the kernel's ephemeral range where there is room."""

from __future__ import annotations

import socket

import pytest

from dev import stack


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_ports_come_from_below_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "_ephemeral_range", lambda: (32768, 60999))
    ports = [stack.free_port() for _ in range(20)]
    assert all(1024 <= port < 32768 and bindable(port) for port in ports)
    assert len(set(ports)) == len(ports)  # never handed out twice


def test_one_port_below_the_range_is_room_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "_ephemeral_range", lambda: (1025, 65535))
    monkeypatch.setattr(stack, "_handed_out", set())
    if not bindable(1024):
        pytest.skip("port 1024 is in use here")
    assert stack.free_port() == 1024


def test_a_range_starting_low_leaves_the_choice_to_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stack, "_ephemeral_range", lambda: (1024, 65535))
    port = stack.free_port()
    assert 1024 <= port <= 65535 and bindable(port)


@pytest.mark.e2e
def test_a_child_that_cannot_start_says_why(tmp_path) -> None:
    """The error of a stack whose authz refuses its config ends with what authz wrote."""
    broken = stack.Stack(tmp_path, {"rules": [], "unknown_key": 1}, stack.Ports())
    with pytest.raises(RuntimeError) as caught:
        broken.start(timeout_s=20)
    message = str(caught.value)
    assert message.startswith("process exited with 2 before")
    assert "the last lines of authz.log:" in message
    assert "unknown_key: unknown key" in message
    assert all(proc.poll() is not None for proc in broken.procs.values())  # all stopped
