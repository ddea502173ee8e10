"""What a handler returns: a Response, or text() for the contract's
text/plain bodies. Apart from app.py so that handlers need not import the
application that imports them."""
TEXT = "text/plain; charset=utf-8"


class Response:
    def __init__(self, body="", status=200, content_type=TEXT, headers=()):
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.status = status
        self.content_type = content_type
        self.headers = list(headers)


def text(*lines, status=200, headers=()):
    """A text/plain answer of one or more lines, as the contract's bodies are."""
    return Response("".join(line.rstrip("\n") + "\n" for line in lines), status, headers=headers)
