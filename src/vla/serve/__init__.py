"""Serving: an OpenVLA-compatible ``POST /act`` server, its client and the study runner.

``python serve.py checkpoint=<dir>`` runs :func:`create_app` under uvicorn; ``PolicyClient`` (HTTP)
and ``LocalPolicy`` (in-process) share one ``act(image, instruction, unnorm_key)`` method.
"""

from vla.serve.app import ServeSettings, create_app
from vla.serve.client import LocalPolicy, PolicyClient, ServerError
from vla.serve.loading import load_policy, quantize_llm

__all__ = ["LocalPolicy", "PolicyClient", "ServeSettings", "ServerError", "create_app", "load_policy", "quantize_llm"]
