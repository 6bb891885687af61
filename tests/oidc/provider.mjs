// A real OpenID Connect provider for Hourglass's login tests: npm
// `oidc-provider` with its development interactions (any password; the login
// name becomes the subject). Started by tests/src/oidc.rs as
//
//     node tests/oidc/provider.mjs PORT
//
// and stopped by killing it. Listens on 127.0.0.1 only. Not for anything but tests.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const port = Number.parseInt(process.argv[2] ?? '', 10);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node provider.mjs PORT');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// Groups by login name; everyone else is a contractor.
const GROUPS = {
  alice: ['engineers'],
  dave: ['engineers', 'oncall'],
  bob: ['sre'],
  erin: ['sre'],
  carol: ['security'],
};

function account(login) {
  const name = login.includes('@') ? login.split('@')[0] : login;
  const email = login.includes('@') ? login : `${login}@acme.example`;
  return {
    accountId: login,
    async claims() {
      return {
        sub: login,
        email,
        email_verified: true,
        name: name.charAt(0).toUpperCase() + name.slice(1),
        groups: GROUPS[name] ?? ['contractors'],
      };
    },
  };
}

// A fresh RS256 key per run: nothing to keep, nothing to leak.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: `test-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' };

const nativeClient = (clientId) => ({
  client_id: clientId,
  application_type: 'native',
  token_endpoint_auth_method: 'none',
  redirect_uris: ['http://127.0.0.1/callback'],
  response_types: ['code'],
  grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
});

// CI pipelines: client-credentials clients whose tokens say which repository
// they run for, as GitHub Actions' OIDC tokens do. Secret: `<id>-secret`.
const PIPELINES = {
  'ci-acme-deploy': { repository: 'acme/deploy', repository_owner: 'acme', ref: 'refs/heads/main' },
  'ci-acme-web': { repository: 'acme/web', repository_owner: 'acme', ref: 'refs/heads/main' },
  'ci-evil-deploy': { repository: 'evil/deploy', repository_owner: 'evil', ref: 'refs/heads/main' },
};

const pipelineClient = (clientId) => ({
  client_id: clientId,
  client_secret: `${clientId}-secret`,
  token_endpoint_auth_method: 'client_secret_post',
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
});

// The broker's approval page: a web client (public, PKCE) whose one
// redirect is the broker's, given by the test that starts both.
const webClients = process.env.HOURGLASS_WEB_REDIRECT
  ? [{
      client_id: 'hourglass-web',
      application_type: 'web',
      token_endpoint_auth_method: 'none',
      redirect_uris: [process.env.HOURGLASS_WEB_REDIRECT],
      response_types: ['code'],
      grant_types: ['authorization_code'],
    }]
  : [];

const configuration = {
  clients: [nativeClient('hourglass'), nativeClient('another-app'), ...Object.keys(PIPELINES).map(pipelineClient), ...webClients],
  jwks: { keys: [signing] },
  cookies: { keys: [randomBytes(16).toString('hex')] },
  findAccount: async (ctx, id) => account(id),
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Put the scopes' claims in the ID token (the broker reads them there).
  conformIdTokenClaims: false,
  pkce: { methods: ['S256'], required: () => true },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    // A pipeline's token: a JWT for the audience `hourglass` (resource
    // urn:hourglass), signed with the provider's published key.
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf ?? (PIPELINES[client.clientId] ? 'urn:hourglass' : undefined),
      getResourceServerInfo: async () => ({
        scope: 'deploy',
        audience: 'hourglass',
        accessTokenFormat: 'jwt',
        accessTokenTTL: 600,
        jwt: { sign: { alg: 'RS256' } },
      }),
      useGrantedResource: async () => false,
    },
  },
  async extraTokenClaims(ctx, token) {
    return token.kind === 'ClientCredentials' ? PIPELINES[token.clientId] : undefined;
  },
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  ttl: {
    AccessToken: 3600,
    ClientCredentials: 600,
    AuthorizationCode: 60,
    DeviceCode: 600,
    IdToken: 3600,
    RefreshToken: 86400,
    Grant: 86400,
    Interaction: 3600,
    Session: 86400,
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, error) => console.error('oidc-provider server_error:', error));
createServer(provider.callback()).listen(port, '127.0.0.1', () => {
  console.error(`oidc-provider listening on ${issuer}`);
});
