"""The REST API v1 (`/api/v1`), one router per concern: `sites`, `chargers`,
`connection_log`, `users` (load management: `harmone.web.api_loadmgmt`).

Handlers map a request to a service call (`harmone.services`) and its result to a response
body (`harmone.web.schemas`); errors become HTTP answers in `harmone.web.http_errors`.
Authentication and roles are the dependencies of `harmone.web.api.auth`.
"""
