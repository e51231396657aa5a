"""The sample application: answers the target group's health check (GET /health) and / on
port 80 with the revision it runs. Standard library only (python3 is on Amazon Linux 2023)."""

import http.server
import os
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
REVISION = (HERE / "REVISION").read_text().strip() if (HERE / "REVISION").exists() else "unknown"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path in ("/health", "/"):
            body = f"ok {REVISION}\n".encode()
            self.send_response(200)
        else:
            body = b"not found\n"
            self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # to the journal, one line per request
        print(f"{self.address_string()} {fmt % args}", flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "80"))
    http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
