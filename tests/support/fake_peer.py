"""A stand-in for the active node, for a standby's sync to read from: a TLS
HTTP/1.1 server (the pair's server certificate; the client's is not asked
for) answering each path as the test says, including the hostile answers the
sync must survive: an empty or malformed manifest, one too big to hold (made
as it is sent), one trickled a byte at a time.

In a thread:   peer = FakePeer(server_pem).start(); peer.routes["/manifest"] = ...
As a process:  python3 fake_peer.py --pem server.pem --address A --port P MODE
(MODE: huge=<MiB>, stream=<MiB> (the same with no Content-Length) or
trickle=<seconds>; for a peer inside a namespace, or a measurement).
"""
import http.server
import json
import socket
import ssl
import threading
import time


class Answer:
    """status; body: bytes, or an iterable of chunks sent as made; length:
    the Content-Length to announce (bytes: their length; None and an iterable:
    none, the end of the body is the connection's close); pause: seconds
    before each chunk."""

    def __init__(self, body, status=200, length=None, pause=0.0):
        self.body, self.status, self.pause = body, status, pause
        self.length = len(body) if isinstance(body, (bytes, bytearray)) else length


def manifest(instances, active_node=1):
    return json.dumps({"active_node": active_node, "topology": {}, "instances": instances}
                      ).encode()


def huge_manifest(mebibytes):
    """A manifest of about `mebibytes` MiB: one long string, made 1 MiB at a
    time as it is sent (the server holds no more than that)."""
    head, tail = b'{"active_node": 1, "instances": {}, "padding": "', b'"}'
    size = mebibytes << 20

    def chunks():
        yield head
        block = b"x" * (1 << 20)
        left = size - len(head) - len(tail)
        while left > 0:
            yield block[:left]
            left -= len(block)
        yield tail
    return Answer(chunks(), length=size)


def trickled(body, pause):
    """body one byte at a time, `pause` seconds apart, under a true Content-Length."""
    return Answer((body[n:n + 1] for n in range(len(body))), length=len(body), pause=pause)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.seen.append(self.path)
        answer = self.server.routes.get(self.path)
        if callable(answer):
            answer = answer()
        if answer is None:
            answer = Answer(b"Not Found\n", 404)
        elif isinstance(answer, bytes):
            answer = Answer(answer)
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            if answer.length is None:
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(answer.length))
            self.end_headers()
            chunks = [answer.body] if isinstance(answer.body, (bytes, bytearray)) else \
                answer.body
            for chunk in chunks:
                if answer.pause:
                    time.sleep(answer.pause)
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:  # the standby hung up: what it should do
            self.close_connection = True

    def log_message(self, *args):
        pass


class FakePeer(http.server.ThreadingHTTPServer):
    """routes: {path: bytes, Answer, or a function returning one}; seen: the
    paths asked for, in order."""
    daemon_threads = True

    def __init__(self, server_pem, address="127.0.0.1", port=0):
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        super().__init__((address, port), _Handler)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(server_pem)
        self.routes, self.seen = {}, []

    def get_request(self):
        sock, address = super().get_request()
        sock.settimeout(30)
        return self.context.wrap_socket(sock, server_side=True), address

    def holds(self, instance, certificates=None, crt_lists=None):
        """Serve an instance's certificates and crt-lists ({name: bytes}) at
        the URLs the active node's API has them; the instance's manifest entry."""
        import hashlib

        entry = {}
        for key, folder, named in (("certificates", "certificates", certificates),
                                   ("crt-lists", "crt-lists", crt_lists)):
            for name, body in (named or {}).items():
                self.routes["/instances/%s/%s/%s" % (instance, folder, name)] = body
                entry.setdefault(key, {})[name] = hashlib.sha256(body).hexdigest()
        return entry

    @property
    def port(self):
        return self.server_address[1]

    def start(self):
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pem", required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("mode", help="huge=<MiB>, stream=<MiB> or trickle=<seconds>")
    arguments = parser.parse_args(argv)
    peer = FakePeer(arguments.pem, arguments.address, arguments.port)
    kind, _, value = arguments.mode.partition("=")
    if kind in ("huge", "stream"):
        def answer():
            sent = huge_manifest(int(value))
            if kind == "stream":
                sent.length = None
            return sent
        peer.routes["/manifest"] = answer
    else:
        peer.routes["/manifest"] = lambda: trickled(manifest({}) + b" " * 1000, float(value))
    print("listening", flush=True)
    peer.serve_forever(0.05)


if __name__ == "__main__":
    main()
