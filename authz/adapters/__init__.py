"""The edges: gRPC ext_authz, the HTTP authorization endpoint, the operations endpoint."""
