"""Serving: an OpenVLA-compatible ``POST /act`` server over a :class:`vla.policy.Policy`.

``vla-serve checkpoint=<dir>`` (``python serve.py``) runs :func:`vla.serve.app.create_app` under
uvicorn; the robot side talks to it with :class:`vla.client.PolicyClient`.
"""
