"""The robot-side client of a policy server: numpy + requests, no torch, no model code.

``PolicyClient`` speaks the exact OpenVLA ``deploy.py`` wire format (:mod:`vla.wire`, json_numpy
bodies) but encodes and decodes explicitly instead of monkey-patching ``json`` the way
``json_numpy.patch()`` does. It has the same ``act(observation_or_image, instruction, unnorm_key)`` as
:class:`vla.policy.Policy`, so code written against one runs against the other: an image, or a robot
observation dict from which the inputs the served model takes are sent (its camera views and proprio,
as ``/info`` lists them). The answer is an action [D] (token models) or a chunk [K, D] (chunk models).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import requests

from vla.wire import API_KEY_HEADER, PayloadError, dumps, loads

# Camera view -> observation key, which is also its /act field (as vla.policy.OBSERVATION_VIEW_KEYS).
VIEW_KEYS = {"primary": "image", "wrist": "wrist_image"}
STATE_KEY = "state"


class ActionSource(Protocol):
    """Anything with ``act``: a :class:`PolicyClient` or an in-process :class:`vla.policy.Policy`."""

    def act(self, observation_or_image: np.ndarray | Mapping[str, Any], instruction: str,
            unnorm_key: str | None = None) -> np.ndarray: ...


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
        self._model_inputs: tuple[list[str], int] | None = None

    def act(self, observation_or_image: np.ndarray | Mapping[str, Any], instruction: str,
            unnorm_key: str | None = None) -> np.ndarray:
        """The server's un-normalized action [D] or chunk [K, D] for an image or a robot observation dict."""
        payload = {**self.request_inputs(observation_or_image), "instruction": instruction}
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

    def request_inputs(self, observation_or_image: np.ndarray | Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The ``/act`` input fields: an image alone, or from an observation dict (``image``,
        ``wrist_image``?, ``state``?) the served model's views and proprio, so a robot whose observations
        hold more than the model uses (a wrist camera, a state) works with every model."""
        if not isinstance(observation_or_image, Mapping):
            return {"image": np.ascontiguousarray(observation_or_image)}
        views, proprio_dim = self.model_inputs()
        fields = {}
        for view in views:
            key = VIEW_KEYS.get(view)
            if key is None or key not in observation_or_image:
                raise ValueError(f"The served model takes camera views {views}, but the observation has no image for "
                                 f"view {view!r} (expected key {key!r}; got keys {sorted(observation_or_image)})")
            fields[key] = np.ascontiguousarray(observation_or_image[key])
        if proprio_dim:
            if STATE_KEY not in observation_or_image:
                raise ValueError(f"The served model takes a {proprio_dim}-D proprio state, but the observation has no "
                                 f"{STATE_KEY!r} (got keys {sorted(observation_or_image)})")
            fields["proprio"] = np.asarray(observation_or_image[STATE_KEY], dtype=np.float64)
        return fields

    def model_inputs(self) -> tuple[list[str], int]:
        """(camera views, proprio_dim) of the served model, asked once; servers from before action chunks
        do not list them and take the primary image only."""
        if self._model_inputs is None:
            info = self.info()
            self._model_inputs = (list(info.get("image_views", ["primary"])), int(info.get("proprio_dim", 0)))
        return self._model_inputs

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
