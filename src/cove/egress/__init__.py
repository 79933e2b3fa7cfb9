"""Egress control: containers reach the outside only through an HTTP proxy that allows listed domains.

    policy.py    what a container may reach (OpenAI's ``network_policy``) and its domain secrets
    resolver.py  name resolution that refuses private, loopback and other internal addresses
    reader.py    reading a client's requests with h11: heads, bodies, and where the next request begins
    http1.py     requests as a proxy checks them, rewriting for upstream, putting secrets in place of placeholders
    tls.py       Cove's CA, which signs for secret domains so the proxy can put secrets into HTTPS
    proxy.py     the asyncio HTTP/1.1 proxy (CONNECT and absolute-URI requests), one listener per client
    relay.py     moving bytes once the proxy said yes: tunnels, and a connection's requests with their answers
"""
