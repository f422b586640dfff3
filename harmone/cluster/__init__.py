"""Many HARMON-E nodes on one PostgreSQL and one NATS (`harmone serve --cluster`).

Imported only when `--cluster` is given: a single node never loads NATS. See
docs/scale-out.md for the design: the node directory (`directory.py`), what crosses NATS and
how (`node.py`), the load managers' leases with fencing (`leases.py`), and how typed OCPP
events travel between nodes (`codec.py`).
"""
