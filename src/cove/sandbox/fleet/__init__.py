"""The fleet: containers on the nodes of a Ray cluster (``COVE_RAY_ADDRESS``), one ``SandboxHost`` per node.

``host`` is what runs on each node (the one-machine engine behind a Ray actor), ``engine`` is the
``SandboxEngine`` the API server uses (it forwards every call to the container's host), ``placement`` is
the protocol through which the service layer records which node holds which container (the sandbox layer
never touches the store). docs/fleet.md has the whole picture.
"""
