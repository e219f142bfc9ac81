"""Network clients: `Client` (blocking, sync_client.py), `AsyncClient` (asyncio,
async_client.py), and what both share (routing.py)."""
