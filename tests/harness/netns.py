"""Throwaway network namespaces, removed (with their devices) even when a test fails."""

from __future__ import annotations

from felid.lab import ip, namespaces

__all__ = ["ip", "namespaces"]
