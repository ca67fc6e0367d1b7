"""Plain data and pure logic: the request model, paths, tokens, verification, policy, decisions."""
