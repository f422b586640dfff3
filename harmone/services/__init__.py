"""Application services: the rules of one concern each, called alike by the REST API, the
console and the command line (`accounts`: users, console sessions, API tokens)."""
