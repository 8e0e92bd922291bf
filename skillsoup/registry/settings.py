"""Registry settings: JSON-able parameters (e.g. the router's) in ``REGISTRY/settings.json``.

The file holds ``{"version": N, "values": {...}}``; every write bumps ``version`` and replaces the file
atomically, so readers see the old or the new settings and can tell that they changed.
"""

from __future__ import annotations

import json
from pathlib import Path

from skillsoup.errors import RegistryError
from skillsoup.states.state import write_atomic

FILE = "settings.json"


class Settings:
    def __init__(self, registry_dir: Path):
        self.path = Path(registry_dir) / FILE

    def read(self) -> tuple[int, dict]:
        """(version, values); (0, {}) before the first write."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0, {}
        except (OSError, ValueError) as exc:
            raise RegistryError(f"settings file {self.path} is unreadable ({exc}); fix or delete it") from None
        if not isinstance(data, dict) or not isinstance(data.get("values"), dict):
            raise RegistryError(f"settings file {self.path} is not {{'version': N, 'values': {{...}}}}; fix or delete it")
        return int(data.get("version", 0)), data["values"]

    def write(self, key: str, value) -> int:
        """Set ``key`` (the caller holds the registry lock); ``value=None`` removes it. Returns the new version."""
        if not isinstance(key, str) or not key:
            raise RegistryError(f"setting names are non-empty strings, got {key!r}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"setting {key!r} must be JSON data (numbers, strings, lists, dicts): {exc}") from None
        version, values = self.read()
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        blob = json.dumps({"version": version + 1, "values": values}, indent=2, sort_keys=True, allow_nan=False)
        write_atomic(self.path, blob.encode("utf-8"))
        return version + 1
