"""A loopback front for moto that answers, as AWS does, the few RDS calls moto gets wrong, and
passes every other request through unchanged:

- DescribeDBEngineVersions: moto answers 500; served from a recorded response
  (tests/fixtures/rds/), or one a test sets (`versions_xml`).
- DescribeDBParameterGroups for a name that does not exist: moto answers an empty list, AWS the
  error DBParameterGroupNotFound (which amazon.aws.rds_instance_param_group relies on).
- DescribeDBParameters: moto has no catalogue of the engine's parameters, only the values set;
  the recorded catalogue entries of the parameters the project sets are added (engine-default,
  no value) unless moto holds a value for them.

Every request is recorded (`actions`, `requests`), so a test can tell what the play asked for."""

from __future__ import annotations

import threading
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "rds"
NS = "http://rds.amazonaws.com/doc/2014-10-31/"
CATALOGUE = {
    # name: (data type, allowed values, apply type)
    "rds.force_ssl": ("boolean", "0,1", "dynamic"),
    "log_min_duration_statement": ("integer", "-1-2147483647", "dynamic"),
}


def _error(code: str, message: str, status: int = 404) -> tuple[int, bytes]:
    body = (f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
            f"<Message>{message}</Message></Error><RequestId>recorded</RequestId></ErrorResponse>")
    return status, body.encode()


class Front:
    def __init__(self, moto: str):
        self.moto = moto
        self.versions_xml = (FIXTURES / "describe-db-engine-versions-postgres.xml").read_bytes()
        self.actions: list[str] = []
        self.requests: list[tuple[str, dict]] = []
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _relay(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = front.answer(method, self.path, dict(self.headers), body)
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):  # noqa: N802
                self._relay("POST")

            def do_GET(self):  # noqa: N802
                self._relay("GET")

            def do_PUT(self):  # noqa: N802
                self._relay("PUT")

            def do_DELETE(self):  # noqa: N802
                self._relay("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def forward(self, method, path, headers, body):
        request = urllib.request.Request(self.moto + path, data=body or None, method=method,
                                         headers={k: v for k, v in headers.items() if k.lower() != "host"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def answer(self, method, path, headers, body):
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace")) if method == "POST" else {}
        action = (form.get("Action") or [""])[0]
        self.actions.append(action)
        self.requests.append((action, {k: v[0] for k, v in form.items()}))
        xml = {"Content-Type": "text/xml"}
        if action == "DescribeDBEngineVersions":
            return 200, xml, self.versions_xml
        status, out_headers, payload = self.forward(method, path, headers, body)
        if action == "DescribeDBParameterGroups" and status == 200 and form.get("DBParameterGroupName"):
            if not ET.fromstring(payload).findall(f".//{{{NS}}}DBParameterGroup"):
                name = form["DBParameterGroupName"][0]
                status, payload = _error("DBParameterGroupNotFound", f"DBParameterGroup {name} not found.")
                return status, xml, payload
        if action == "DescribeDBParameters" and status == 200:
            payload = self.with_catalogue(payload)
        return status, out_headers, payload

    def with_catalogue(self, payload: bytes) -> bytes:
        ET.register_namespace("", NS)
        root = ET.fromstring(payload)
        parameters = root.find(f".//{{{NS}}}Parameters")
        if parameters is None:
            return payload
        held = {p.findtext(f"{{{NS}}}ParameterName"): p for p in parameters}
        for name, (data_type, allowed, apply_type) in CATALOGUE.items():
            entry = held.get(name)
            if entry is None:
                entry = ET.SubElement(parameters, f"{{{NS}}}Parameter")
                ET.SubElement(entry, f"{{{NS}}}ParameterName").text = name
            for tag, text in (("Source", "engine-default"), ("ApplyType", apply_type), ("DataType", data_type),
                              ("AllowedValues", allowed), ("IsModifiable", "true")):
                if entry.find(f"{{{NS}}}{tag}") is None:
                    ET.SubElement(entry, f"{{{NS}}}{tag}").text = text
        return ET.tostring(root)
