"""The web console: server-rendered pages over the same services, rules and relay state as
the REST API.

`harmone.web.console.setup.install(api)` adds it to the FastAPI application: the pages, the
static files, the error pages and the security headers. Design and security model:
docs/console.md.
"""
