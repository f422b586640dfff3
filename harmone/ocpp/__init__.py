"""OCPP: versions, framing, schemas, the sans-I/O session and the standalone responder."""
