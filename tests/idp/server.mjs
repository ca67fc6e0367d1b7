// A certified OpenID Provider (panva's oidc-provider) for authz's tests.
//
//   node server.mjs SETTINGS.json
//
// SETTINGS: {"port": N, "generation": G, "tenants": ["", "/tenants/a", ...],
//            "clients": [{"client_id", "client_secret"}],
//            "introspector": {"client_id", "client_secret"},
//            "resources": {"<indicator>": {"format": "jwt" | "opaque", "alg": "ES256"}},
//            "mtls_client": {"client_id", "client_secret"} (optional),
//            "keys_out": "<file>" (optional)}
//
// One Provider per tenant, each mounted under its path prefix, all on one port, each
// issuer http://127.0.0.1:PORT<prefix>. Signing keys (RS256, PS256, ES256, EdDSA) are
// made at start, with kids naming the generation: restart with another generation to
// rotate them. Prints "ready <port>" once listening.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const base = `http://127.0.0.1:${settings.port}`;

function signingKeys(generation) {
  const made = [
    ['RS256', generateKeyPairSync('rsa', { modulusLength: 2048 })],
    ['PS256', generateKeyPairSync('rsa', { modulusLength: 2048 })],
    ['ES256', generateKeyPairSync('ec', { namedCurve: 'P-256' })],
    ['EdDSA', generateKeyPairSync('ed25519')],
  ];
  if (settings.keys_out) {
    // For tests that sign as the OP would (a token of another type, say): the private
    // keys as PKCS#8 PEM by algorithm. Test keys, made for this run only.
    const pems = Object.fromEntries(
      made.map(([alg, pair]) => [alg, pair.privateKey.export({ format: 'pem', type: 'pkcs8' })]),
    );
    writeFileSync(settings.keys_out, JSON.stringify(pems));
  }
  return made.map(([alg, pair]) => ({
    ...pair.privateKey.export({ format: 'jwk' }),
    kid: `${alg}-g${generation}`,
    alg,
    use: 'sig',
  }));
}

function provider(prefix, keys) {
  const resources = settings.resources;
  const clients = settings.clients.map((c) => ({
    ...c,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  }));
  if (settings.mtls_client) {
    // Its tokens are bound to the TLS client certificate it shows (RFC 8705 section 3).
    clients.push({
      ...settings.mtls_client,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      tls_client_certificate_bound_access_tokens: true,
    });
  }
  clients.push({ ...settings.introspector, grant_types: [], response_types: [], redirect_uris: [] });
  const op = new Provider(`${base}${prefix}`, {
    clients,
    cookies: { keys: [randomBytes(32).toString('hex')] },
    jwks: { keys },
    enabledJWA: {
      // what the resources below may sign with (the defaults leave out PS256 and EdDSA)
      idTokenSigningAlgValues: ['RS256', 'PS256', 'ES256', 'EdDSA'],
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // DPoP-bound access tokens (cnf.jkt) for a client that sends a proof
      dPoP: { enabled: true },
      // Certificate-bound access tokens (cnf["x5t#S256"]). This test OP listens without
      // TLS: the client's certificate comes URL-encoded in a header, as a TLS-terminating
      // proxy in front of an OP would pass it.
      mTLS: {
        enabled: true,
        certificateBoundAccessTokens: true,
        getCertificate: (ctx) => {
          const pem = ctx.get('x-client-certificate');
          return pem ? decodeURIComponent(pem) : undefined;
        },
      },
      introspection: {
        enabled: true,
        // only the introspecting client may ask, about any token
        allowedPolicy: async (ctx, client) => client.clientId === settings.introspector.client_id,
      },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => false,
        getResourceServerInfo: (ctx, indicator) => {
          const resource = resources[indicator];
          if (resource === undefined) {
            throw new Provider.errors.InvalidTarget();
          }
          const info = { scope: 'read write admin', audience: indicator, accessTokenTTL: 300 };
          if (resource.format === 'jwt') {
            return { ...info, accessTokenFormat: 'jwt', jwt: { sign: { alg: resource.alg } } };
          }
          return { ...info, accessTokenFormat: 'opaque' };
        },
      },
    },
  });
  op.proxy = false;
  return op;
}

const keys = signingKeys(settings.generation);
const mounted = settings.tenants
  .map((prefix) => [prefix, provider(prefix, keys).callback()])
  .sort((a, b) => b[0].length - a[0].length); // the longest prefix first

const server = http.createServer((req, res) => {
  for (const [prefix, handle] of mounted) {
    if (prefix === '' || req.url === prefix || req.url.startsWith(`${prefix}/`)) {
      // as a mounting framework does: the Provider sees the path below its prefix
      req.originalUrl = req.url;
      req.url = req.url.slice(prefix.length) || '/';
      handle(req, res);
      return;
    }
  }
  res.statusCode = 404;
  res.end();
});
server.listen(settings.port, '127.0.0.1', () => {
  process.stdout.write(`ready ${server.address().port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
