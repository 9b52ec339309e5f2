"""The OpenAI-compatible router in front of vLLM replicas: one endpoint for every adapter of every server."""

from loraplane.serving.router.app import create_app
from loraplane.serving.router.settings import RouterSettings
from loraplane.serving.router.table import AdapterVersion, PublicModel, ServerRoute

__all__ = ["AdapterVersion", "PublicModel", "RouterSettings", "ServerRoute", "create_app"]
