"""The REST API v1 (`/api/v1`), one router per concern: `sites`, `chargers`,
`connection_log`, `load_management`, `users`.

Handlers map a request to a service call (`harmone.services`) and its result to a response
body (`harmone.web.schemas`); errors become HTTP answers in `harmone.web.http_errors`.
Authentication and roles are the dependencies of `harmone.web.api.auth`.
"""
