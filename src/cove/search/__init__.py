"""Web search for the hosted ``web_search`` tool: engines (an offline index, SearXNG, Brave, Tavily),
page reads through an egress policy of their own, and a cache. ``base.py`` is what the layers above
may know; the composition root picks the engine."""
