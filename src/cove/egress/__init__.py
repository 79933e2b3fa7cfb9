"""Egress control: containers reach the outside only through an HTTP proxy that allows listed domains.

    policy.py    what a container may reach (OpenAI's ``network_policy``), validated once
    resolver.py  name resolution that refuses private, loopback and other internal addresses
    proxy.py     the asyncio HTTP/1.1 proxy (CONNECT and absolute-URI requests), one listener per client
"""
