"""Keys: algorithms, key construction (python-jose), JWKS parsing, key sources, fetching."""
