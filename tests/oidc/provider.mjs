// A real OAuth 2.1 / OpenID authorization server for tests/test_oauth.py: the certified `oidc-provider`,
// configured as a team's IdP would be for keyapi-mcp.
//
//   node provider.mjs <config.json>
//
// The config (written by tests/oidc_proc.py) holds the issuer, the port, the signing keys (private JWKs; the
// first one signs, so restarting with a new first key is a key rotation), the clients and, per resource
// indicator, the scopes that resource accepts. Access tokens are JWTs (RFC 9068) whose `aud` is the
// `resource` the client asked for (RFC 8707). Grants: client_credentials, and authorization_code with PKCE,
// whose login and consent are approved at once for the account named by `login_hint` (no pages to drive).
// Prints "listening <port>" on stdout once it accepts connections.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: { keys: config.keys },
  clientDefaults: { id_token_signed_response_alg: config.keys[0].alg },
  scopes: ['openid', ...new Set(Object.values(config.resources).flatMap((scope) => scope.split(' ')))],
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => {
        const scope = config.resources[resourceIndicator];
        if (scope === undefined) {
          throw new errors.InvalidTarget();
        }
        return {
          scope,
          audience: resourceIndicator,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: config.keys[0].alg } },
        };
      },
    },
  },
});

// Approve every interaction at once: log in as `login_hint`, then grant what the client asked for.
provider.use(async (ctx, next) => {
  if (!ctx.path.startsWith('/interaction/')) {
    return next();
  }
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: params.login_hint || 'alice' } };
  } else {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  }
  ctx.respond = false;
  await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
});

const server = createServer(provider.callback());
server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
