"""Model upstreams behind one protocol (``base.py``): Chat Completions servers (``chat.py``), servers
that speak the Responses API (``responses.py``) and the embedded offline model (``local.py``);
``registry.py`` maps the model names clients send to them."""
