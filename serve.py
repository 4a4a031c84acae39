"""Serve a VLA over HTTP: `python serve.py checkpoint=<dir> host=127.0.0.1 port=8000` (= `vla-serve`)."""

from vla.cli import serve

if __name__ == "__main__":
    serve()
