// A real OpenID Connect provider (the npm package oidc-provider) for the
// Nimbus tests, listening on plain http://127.0.0.1:$OIDC_PORT.
//
// Install the package with `scripts/oidc-provider install` and run
//   NODE_PATH="$(scripts/oidc-provider install)/node_modules" \
//   OIDC_PORT=4000 OIDC_CLIENT_ID=nimbus OIDC_CLIENT_SECRET=secret \
//   OIDC_REDIRECT_URIS=http://127.0.0.1:3000/callback \
//   node scripts/oidc-provider.mjs
// ES modules ignore NODE_PATH, but CommonJS resolution honours it, so the
// package is located with createRequire and then imported by file URL.
//
// One confidential client (client_secret_basic or client_secret_post),
// authorization code flow with PKCE S256 required, scopes
// `openid profile email`. The built-in development login and consent pages
// accept any login name and any password: the login becomes the account id
// (`sub`) and `preferred_username`, `name` and `email` are derived from it.
// Those claims are also put into the ID token (conformIdTokenClaims: false),
// not only served by the userinfo endpoint.
//
// Prints `ready` on stdout once listening; errors go to stderr. With
// OIDC_EXIT_WITH_STDIN=1 it exits when its standard input closes, so a test
// process that dies without cleaning up does not leave it running.

import { createRequire } from 'node:module';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';

function required(name) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    console.error(`oidc-provider.mjs: environment variable ${name} is required`);
    process.exit(2);
  }
  return value;
}

const port = Number.parseInt(required('OIDC_PORT'), 10);
const clientId = required('OIDC_CLIENT_ID');
const clientSecret = required('OIDC_CLIENT_SECRET');
const redirectUris = required('OIDC_REDIRECT_URIS')
  .split(',')
  .map((uri) => uri.trim())
  .filter((uri) => uri !== '');
const issuer = `http://127.0.0.1:${port}`;

let Provider;
try {
  const resolved = createRequire(import.meta.url).resolve('oidc-provider');
  ({ default: Provider } = await import(pathToFileURL(resolved).href));
} catch (error) {
  console.error('oidc-provider.mjs: cannot load the oidc-provider package; '
    + 'run `scripts/oidc-provider install` and set NODE_PATH to its node_modules');
  console.error(error);
  process.exit(2);
}

// A fresh signing key per run instead of the package's well-known
// development key.
const signingKey = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: randomBytes(8).toString('hex'),
  alg: 'RS256',
  use: 'sig',
};

async function findAccount(_ctx, accountId) {
  return {
    accountId,
    async claims() {
      return {
        sub: accountId,
        preferred_username: accountId,
        name: accountId,
        email: `${accountId}@example.test`,
        email_verified: true,
      };
    },
  };
}

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    // A client registered with either secret method may use both.
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  responseTypes: ['code'],
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email'],
  claims: {
    acr: null,
    sid: null,
    auth_time: null,
    iss: null,
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  conformIdTokenClaims: false,
  findAccount,
  jwks: { keys: [signingKey] },
  // Signed cookies with a key of this run. They are not `Secure` because the
  // connection is plain http (the provider sets `Secure` only over https).
  cookies: { keys: [randomBytes(32).toString('hex')] },
  features: {
    devInteractions: { enabled: true },
    // Nothing in the tests revokes or introspects; keep the surface small.
    revocation: { enabled: false },
    introspection: { enabled: false },
  },
});

provider.on('server_error', (_ctx, error) => {
  console.error('oidc-provider.mjs: server_error:', error);
});
for (const event of ['authorization.error', 'grant.error', 'userinfo.error', 'discovery.error', 'jwks.error']) {
  provider.on(event, (_ctx, error) => {
    console.error(`oidc-provider.mjs: ${event}: ${error.name}: ${error.message}`
      + (error.error_description ? ` (${error.error_description})` : ''));
  });
}

const server = provider.listen(port, '127.0.0.1', () => {
  console.log('ready');
});
server.on('error', (error) => {
  console.error(`oidc-provider.mjs: cannot listen on ${issuer}: ${error.code ?? ''} ${error.message}`);
  process.exit(1);
});

if (process.env.OIDC_EXIT_WITH_STDIN === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
