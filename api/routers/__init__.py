"""HTTP routers, one per resource; handlers only bind dependencies and call api.services."""
