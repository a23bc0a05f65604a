"""The asyncio layer: session parameters, TCP links, the session, its recovery driver, the event loop."""
