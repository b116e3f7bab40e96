import contextlib
import socket
import threading

import pytest
from dagster_ray import RayResource

from curation_pipeline.compute import address as address_module
from curation_pipeline.resources import ComputeResource

H2_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # an empty HTTP/2 SETTINGS frame: what a gRPC server greets with


@contextlib.contextmanager
def _listener(answer: bytes | None):
    """A loopback port whose server answers each connection with ``answer`` once it has read the client's greeting
    (None: says nothing), as a gRPC server (Ray's GCS, its Ray Client server), a web page or a silent one would."""
    head = socket.socket()
    head.bind(("127.0.0.1", 0))
    head.listen()
    held = []

    def serve():
        while True:
            try:
                conn, _ = head.accept()
            except OSError:
                return
            held.append(conn)
            with contextlib.suppress(OSError):
                conn.recv(64)
                if answer is not None:
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield head.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            head.shutdown(socket.SHUT_RDWR)
        head.close()
        for conn in held:
            conn.close()


@pytest.fixture
def client_address():
    """A ``ray://`` address on loopback where a gRPC server answers, as a head's Ray Client server would."""
    with _listener(H2_SETTINGS) as port:
        yield f"ray://127.0.0.1:{port}"


def _closed_port() -> int:
    with socket.socket() as probe:  # a loopback port nothing listens on once this closes
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_connection_whose_server_died_at_start_is_tried_afresh(monkeypatch, client_address):
    calls = []

    def flaky(self, context):
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionAbortedError("Starting Ray client server failed")
        return "connected"

    monkeypatch.setattr(RayResource, "connect", flaky)
    assert ComputeResource(engine="ray", address=client_address).connect(None) == "connected"
    assert len(calls) == 3


def test_it_gives_up_after_three_tries_and_other_errors_are_not_retried(monkeypatch, client_address):
    calls = []

    def broken(self, context):
        calls.append(1)
        raise ConnectionAbortedError("down")

    monkeypatch.setattr(RayResource, "connect", broken)
    # a cluster that asks for a token this process lacks times out alike: the error names the likely cause
    with pytest.raises(ConnectionAbortedError, match=rf"down \(a Ray server answers at {client_address}.*"
                                                     r"Ray Client port \(10001\).*RAY_AUTH_MODE and RAY_AUTH_TOKEN"):
        ComputeResource(engine="ray", address=client_address).connect(None)
    assert len(calls) == 3

    monkeypatch.setattr(RayResource, "connect", lambda self, context: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(ValueError):
        ComputeResource(engine="ray", address=client_address).connect(None)


def test_a_head_address_where_nothing_listens_fails_at_once_naming_it(monkeypatch):
    """``ray.init`` retried such an address 20 times, about 41 s each, and the resource's tries and dagster-ray's
    again: a mistyped ``<head>:6379`` held each shard's run about 41 minutes, saying nothing. A TCP connection to
    the port tells first; Ray is never asked."""
    import ray

    port = _closed_port()
    monkeypatch.setattr(RayResource, "connect", lambda self, context: pytest.fail("Ray was asked to connect"))
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init ran"))
    with pytest.raises(ConnectionError, match=rf"no Ray cluster answers at 127\.0\.0\.1:{port} \(compute address, "
                                              r"\$CURATION_RAY_ADDRESS\): ConnectionRefusedError"):
        ComputeResource(engine="ray", address=f"127.0.0.1:{port}").connect(None)


def test_a_ray_client_address_where_nothing_listens_fails_at_once_not_blamed_on_a_token(monkeypatch):
    """Ray Client's own tries took about 96 s, then the resource's message guessed at a missing auth token."""
    import ray

    port = _closed_port()
    monkeypatch.setattr(RayResource, "connect", lambda self, context: pytest.fail("Ray was asked to connect"))
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init ran"))
    with pytest.raises(ConnectionError) as raised:
        ComputeResource(engine="ray", address=f"ray://127.0.0.1:{port}").connect(None)
    said = str(raised.value)
    assert said.startswith(f"no Ray cluster answers at ray://127.0.0.1:{port} (compute address, "
                           "$CURATION_RAY_ADDRESS): ConnectionRefusedError"), said
    assert "Ray Client server listens on 10001" in said and "TOKEN" not in said, said


@pytest.mark.parametrize("address,endpoint", [
    ("10.0.0.5:6379", ("10.0.0.5", 6379)), ("head", ("head", 6379)), ("[fd00::5]:6380", ("fd00::5", 6380)),
    ("fd00::5", ("fd00::5", 6379)), ("auto", None), ("local", None), ("", None),
    ("ray://head:10001", ("head", 10001)), ("ray://head", ("head", 10001)),
    ("RAY://[fd00::5]:10002", ("fd00::5", 10002)),
    ("ray://head:10001/", ("head", 10001)), ("ray://", None), ("anyscale://cluster", None),
])
def test_a_gcs_or_ray_client_address_is_probed(address, endpoint):
    from curation_pipeline.compute.address import head_endpoint

    assert head_endpoint(address) == endpoint


def test_a_head_that_answers_is_joined(monkeypatch):
    with _listener(H2_SETTINGS) as port:
        monkeypatch.setattr(RayResource, "connect", lambda self, context: "connected")
        assert ComputeResource(engine="ray", address=f"127.0.0.1:{port}").connect(None) == "connected"


def test_a_connection_error_built_with_other_arguments_still_names_the_token(monkeypatch, client_address):
    class Refused(ConnectionError):
        def __init__(self, host, port):
            super().__init__(f"refused by {host}:{port}")

    monkeypatch.setattr(RayResource, "connect", lambda self, context: (_ for _ in ()).throw(Refused("h", 1)))
    with pytest.raises(ConnectionError, match=r"refused by h:1 \(a Ray server answers.*RAY_AUTH_TOKEN") as raised:
        ComputeResource(engine="ray", address=client_address).connect(None)
    assert isinstance(raised.value.__cause__, Refused)


@pytest.mark.parametrize("answer, said", [(b"HTTP/1.0 400 Bad request version ('HTTP/2.0')\r\n\r\n",
                                           "it answered \"HTTP/1.0 400 Bad request version ('HTTP/2.0')\""),
                                          (None, "it took the connection but answered nothing")],
                         ids=["dashboard", "silent"])
def test_a_port_where_something_else_answers_fails_at_once_naming_ray_s_ports(monkeypatch, answer, said):
    """The dashboard's 8265 typed for the head's address: the TCP connection was made, and Ray waited on it for half
    an hour or more (a silent listener: for good). Ray's servers are gRPC: one HTTP/2 greeting tells."""
    import ray

    monkeypatch.setattr(address_module, "PROBE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(RayResource, "connect", lambda self, context: pytest.fail("Ray was asked to connect"))
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init ran"))
    with _listener(answer) as port:
        for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
            with pytest.raises(ConnectionError) as raised:
                ComputeResource(engine="ray", address=address).connect(None)
            message = str(raised.value)
            assert f"no Ray cluster answers at {address}" in message and said in message
            assert "the dashboard is 8265, the GCS 6379 (a bare head address), Ray Client 10001 (ray://)" in message
