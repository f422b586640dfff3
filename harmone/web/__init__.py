"""REST API and (later) the web console."""
