"""The robot-side client of a policy server: numpy + requests, no torch, no model code.

``PolicyClient`` speaks the exact OpenVLA ``deploy.py`` wire format (:mod:`vla.wire`, json_numpy
bodies) but encodes and decodes explicitly instead of monkey-patching ``json`` the way
``json_numpy.patch()`` does. It has the same ``act(image, instruction, unnorm_key)`` as
:class:`vla.policy.Policy`, so code written against one runs against the other.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import requests

from vla.wire import API_KEY_HEADER, PayloadError, dumps, loads


class ActionSource(Protocol):
    """Anything with ``act``: a :class:`PolicyClient` or an in-process :class:`vla.policy.Policy`."""

    def act(self, image: np.ndarray, instruction: str, unnorm_key: str | None = None) -> np.ndarray: ...


class ServerError(RuntimeError):
    """The server answered an error status; ``status`` and ``detail`` say why."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class PolicyClient:
    """HTTP client for a running policy server (one keep-alive session per client)."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 60.0, max_response_bytes: int = 1 << 20):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self.session = requests.Session()
        if api_key:
            self.session.headers[API_KEY_HEADER] = api_key

    def act(self, image: np.ndarray, instruction: str, unnorm_key: str | None = None) -> np.ndarray:
        payload = {"image": np.ascontiguousarray(image), "instruction": instruction}
        if unnorm_key is not None:
            payload["unnorm_key"] = unnorm_key
        response = self.session.post(f"{self.url}/act", data=dumps(payload), timeout=self.timeout_s,
                                     headers={"Content-Type": "application/json"})
        self._raise_for_status(response)
        try:
            action = loads(response.content, self.max_response_bytes)
        except PayloadError as err:
            raise ServerError(response.status_code, f"unreadable action in response: {err}") from err
        if not isinstance(action, np.ndarray):
            raise ServerError(response.status_code, f"expected a json_numpy array, got {type(action).__name__}")
        return action

    def info(self) -> dict:
        return self._get("/info")

    def health(self) -> dict:
        return self._get("/health")

    def close(self) -> None:
        self.session.close()

    def _get(self, route: str) -> dict:
        response = self.session.get(f"{self.url}{route}", timeout=self.timeout_s)
        self._raise_for_status(response)
        return response.json()

    @staticmethod
    def _raise_for_status(response: requests.Response) -> None:
        if response.ok:
            return
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise ServerError(response.status_code, str(detail))
