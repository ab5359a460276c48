"""The in-sandbox `servo` package (SPEC §6.2): relays Ochothon CLI commands
to the portal through servo's Unix socket. Standard library only, Python 3.8+.

    from servo import servo

    with servo(verbose=True) as proxy:
        js = proxy('ls')                     # dict parsed from the portal's JSON
        js = proxy('deploy web.yml -n app')  # web.yml is uploaded
        get = proxy.get('http://10.0.0.1:31000/ping')
"""

import base64
import http.client
import json as _json
import os
import socket
import sys
import urllib.parse
import uuid

__all__ = ["servo", "Response"]

DEFAULT_SOCKET = "/run/servo/portal.sock"


class PortalDown(Exception):
    """The relay socket cannot be reached."""


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over the relay's AF_UNIX socket."""

    def __init__(self, path, timeout=None):
        super().__init__("portal", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _socket_path():
    return os.environ.get("SERVO_SOCKET") or DEFAULT_SOCKET


def _post(path, body=b"", headers=None):
    """POSTs to the relay; (status, parsed JSON answer)."""
    conn = _UnixConnection(_socket_path())
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        status = resp.status
    except (OSError, http.client.HTTPException) as e:
        raise PortalDown(str(e))
    finally:
        conn.close()
    try:
        answer = _json.loads(raw.decode("utf-8"))
    except ValueError:
        answer = {"ok": False, "out": raw.decode("utf-8", "replace")}
    if not isinstance(answer, dict):
        answer = {"ok": False, "out": str(answer)}
    return status, answer


def _multipart(files):
    """A multipart/form-data body, one part per file (field name = file name)."""
    boundary = "servo-" + uuid.uuid4().hex
    chunks = []
    for name, data in files:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        chunks.append(
            (
                "--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n" % (boundary, quoted, quoted)
            ).encode("utf-8")
        )
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(("--%s--\r\n" % boundary).encode("utf-8"))
    return "multipart/form-data; boundary=" + boundary, b"".join(chunks)


class Response(object):
    """The answer of `proxy.get`/`proxy.post`, shaped like a `requests` response."""

    def __init__(self, status_code, text, headers=None, content=None):
        self.status_code = status_code
        self.text = text
        self.headers = headers or {}
        self.content = content if content is not None else text.encode("utf-8")

    @property
    def ok(self):
        return self.status_code < 400

    def json(self):
        return _json.loads(self.text)

    def __repr__(self):
        return "<Response [%d]>" % self.status_code


class _Proxy(object):
    """The callable handed out by `with servo() as proxy`."""

    def __init__(self, strict, verbose):
        self._strict = strict
        self._verbose = verbose

    def __call__(self, cmdline):
        tokens = cmdline.split()
        files = []
        for i, token in enumerate(tokens):
            path = os.path.expanduser(token)
            if os.path.isfile(path):
                name = os.path.basename(path)
                with open(path, "rb") as f:
                    data = f.read()
                if name not in [n for n, _ in files]:
                    files.append((name, data))
                tokens[i] = name
        if "-j" not in tokens:
            tokens.append("-j")
        headers = {"X-Shell": " ".join(tokens)}
        body = b""
        if files:
            headers["Content-Type"], body = _multipart(files)
        _, answer = _post("/shell", body, headers)
        ok = answer.get("ok") is True
        out = answer.get("out")
        if self._verbose:
            print('[%s] "%s"' % ("passed" if ok else "failed", cmdline))
            sys.stdout.flush()
        if not ok:
            if self._strict:
                why = out if isinstance(out, str) else _json.dumps(out)
                if why.startswith("portal unreachable"):
                    raise AssertionError("is the portal down ? (%s)" % why)
                raise AssertionError('"%s" failed: %s' % (cmdline, why))
            return None
        if isinstance(out, str):
            try:
                return _json.loads(out)
            except ValueError:
                return out
        return out

    def request(self, method, url, data=None, json=None, headers=None, timeout=10, params=None):
        """An HTTP request through the relay (SPEC §6.6). A denied request
        gives status_code 403 with the reason as text; it does not raise."""
        headers = dict(headers or {})
        if params:
            sep = "&" if urllib.parse.urlsplit(url).query else "?"
            url = url + sep + urllib.parse.urlencode(params)
        body = None
        if json is not None:
            body = _json.dumps(json)
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(data, dict):
            body = urllib.parse.urlencode(data)
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif isinstance(data, bytes):
            body = data.decode("utf-8")
        elif data is not None:
            body = str(data)
        payload = {"method": method.upper(), "url": url, "headers": headers, "timeout_s": timeout}
        if body is not None:
            payload["body"] = body
        status, answer = _post(
            "/http", _json.dumps(payload).encode("utf-8"), {"Content-Type": "application/json"}
        )
        if status != 200 or "status" not in answer:
            out = answer.get("out")
            return Response(status, out if isinstance(out, str) else _json.dumps(answer))
        raw = answer.get("body") or ""
        if answer.get("body_base64"):
            content = base64.b64decode(raw)
            text = content.decode("utf-8", "replace")
        else:
            text, content = raw, raw.encode("utf-8")
        return Response(int(answer["status"]), text, answer.get("headers") or {}, content)

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def post(self, url, data=None, **kw):
        return self.request("POST", url, data=data, **kw)


class servo(object):
    """`with servo(strict=True, verbose=False) as proxy:` — leaving the block
    exits the script: 0 normally, 1 on a failure (printed as the original
    package did)."""

    def __init__(self, strict=True, verbose=False):
        self._proxy = _Proxy(strict, verbose)

    def __enter__(self):
        return self._proxy

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            sys.exit(0)
        if issubclass(exc_type, SystemExit):
            return False
        if issubclass(exc_type, PortalDown):
            print("failure -> is the portal down ?")
        elif issubclass(exc_type, AssertionError):
            print("failure -> %s" % exc)
        else:
            print("unexpected failure -> %s" % exc)
        sys.stdout.flush()
        sys.exit(1)
