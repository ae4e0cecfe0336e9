"""The floor: a bare, unsandboxed, warm Python answering JSON lines over a pipe.

Each request is one line {"code": "..."}; the code runs in one persistent namespace
with sys.stdout redirected to a StringIO, and the answer is one line
{"stdout": "...", "error": null | "..."}. No sandboxed design can beat this round trip.
"""
import contextlib
import io
import json
import sys


def main():
    stdin, stdout = sys.stdin, sys.stdout
    namespace = {"__name__": "__main__"}
    while True:
        line = stdin.readline()
        if not line:
            return
        request = json.loads(line)
        buf = io.StringIO()
        error = None
        try:
            with contextlib.redirect_stdout(buf):
                exec(request["code"], namespace)
        except BaseException as e:  # noqa: BLE001 - report everything, keep serving
            error = repr(e)
        stdout.write(json.dumps({"stdout": buf.getvalue(), "error": error}) + "\n")
        stdout.flush()


main()
