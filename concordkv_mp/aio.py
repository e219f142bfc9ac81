"""The asyncio client's public name: `await concordkv_mp.aio.connect(endpoint)` (client/async_client.py)."""

from concordkv_mp.client.async_client import AsyncClient, connect  # noqa: F401 - re-exported
