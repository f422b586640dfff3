"""HARMON-E: a transparent OCPP relay that manages each site's load."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
