// A strict outside relying party (panva's oauth4webapi) running PAR + PKCE + DPoP
// against the provider. The Python test drives it over stdin/stdout, one JSON line each:
//   argv: ISSUER CLIENT_ID REDIRECT_URI
//   out:  {"authorization_url": ...}      in: {"callback_url": ...}
//   out:  {"token": ..., "id_token_claims": ..., "userinfo": ..., "refreshed": ...}
// Any check oauth4webapi makes that fails ends the process with {"error": ...} and exit 1.
import * as oauth from 'oauth4webapi'
import { createInterface } from 'node:readline'

const [issuerUrl, clientId, redirectUri] = process.argv.slice(2)
const insecure = { [oauth.allowInsecureRequests]: true } // loopback http only, in tests
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const say = (value) => process.stdout.write(JSON.stringify(value) + '\n')

/** Run a DPoP request once more when the server asks for a nonce (RFC 9449 section 8). */
async function withNonceRetry (request) {
  try {
    return await request()
  } catch (err) {
    if (oauth.isDPoPNonceError(err)) return await request()
    throw err
  }
}

async function main () {
  const issuer = new URL(issuerUrl)
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oidc', ...insecure }))
  const client = { client_id: clientId }
  const clientAuth = oauth.None()
  const DPoP = oauth.DPoP(client, await oauth.generateKeyPair('ES256'))
  const codeVerifier = oauth.generateRandomCodeVerifier()
  const nonce = oauth.generateRandomNonce()
  const state = oauth.generateRandomState()

  const pushed = await withNonceRetry(async () => oauth.processPushedAuthorizationResponse(as, client,
    await oauth.pushedAuthorizationRequest(as, client, clientAuth, new URLSearchParams({
      response_type: 'code',
      redirect_uri: redirectUri,
      scope: 'openid profile offline_access',
      code_challenge: await oauth.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      nonce,
      state,
      prompt: 'consent'
    }), { DPoP, ...insecure })))
  const authorizationUrl = new URL(as.authorization_endpoint)
  authorizationUrl.searchParams.set('client_id', clientId)
  authorizationUrl.searchParams.set('request_uri', pushed.request_uri)
  say({ authorization_url: authorizationUrl.href, expires_in: pushed.expires_in })

  const { value: line } = await lines.next()
  const callback = oauth.validateAuthResponse(as, client, new URL(JSON.parse(line).callback_url), state)
  let tokenResponse
  const token = await withNonceRetry(async () => {
    tokenResponse = await oauth.authorizationCodeGrantRequest(as, client, clientAuth, callback, redirectUri, codeVerifier, { DPoP, ...insecure })
    return oauth.processAuthorizationCodeResponse(as, client, tokenResponse, { expectedNonce: nonce, requireIdToken: true })
  })
  await oauth.validateApplicationLevelSignature(as, tokenResponse, insecure) // the ID token's signature, against the JWKS
  const claims = oauth.getValidatedIdTokenClaims(token)

  const userinfo = await withNonceRetry(async () => oauth.processUserInfoResponse(as, client, claims.sub,
    await oauth.userInfoRequest(as, client, token.access_token, { DPoP, ...insecure })))
  const refreshed = await withNonceRetry(async () => oauth.processRefreshTokenResponse(as, client,
    await oauth.refreshTokenGrantRequest(as, client, clientAuth, token.refresh_token, { DPoP, ...insecure })))
  say({ token, id_token_claims: claims, userinfo, refreshed })
}

main().then(() => process.exit(0), (err) => {
  say({ error: `${err.name}: ${err.message}`, code: err.code, cause: err.cause && String(err.cause.error || err.cause) })
  process.exit(1)
})
