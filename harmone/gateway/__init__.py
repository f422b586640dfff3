"""Gateway sites (issue 12): HARMON-E on a box in the site's LAN, managed from the cloud.

`protocol` is the link's wire format (shared by both ends), `certs` the box's self-signed
certificate, `apply` puts a configuration snapshot in force on the box through the services,
`reporter` fills the box's outbox, `link` is the box's end of the link, `box` runs the box.
The cloud's end lives in `harmone.services.gateways` and `harmone.services.gateway_link`.
See docs/gateway.md.
"""
