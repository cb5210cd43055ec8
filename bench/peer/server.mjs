// node-oidc-provider, the reference peer of `make bench-compare`, in the same shape as ours:
// Redis for every piece of state, RS256, JWT access tokens for a resource, PKCE S256,
// refresh token rotation, an argon2id password check (OWASP parameters, as ours) at login,
// and W cluster workers (the same worker count as our WSGI server).
// Configured by environment: ISSUER, PORT, WORKERS, REDIS_URL, REDIS_PREFIX, CONFIG (JSON file
// written by bench/run.py: clients with secrets, the user and its argon2id hash, a private JWK).
import cluster from 'node:cluster'
import http from 'node:http'
import { readFileSync } from 'node:fs'
import argon2 from 'argon2'
import Redis from 'ioredis'
import Provider from 'oidc-provider'

const env = process.env
const config = JSON.parse(readFileSync(env.CONFIG, 'utf8'))
const RESOURCE = 'https://api.example.com'

if (cluster.isPrimary && Number(env.WORKERS || 1) > 1) {
  for (let i = 0; i < Number(env.WORKERS); i++) cluster.fork()
  cluster.on('exit', () => process.exit(1))
} else {
  const redis = new Redis(env.REDIS_URL || 'redis://127.0.0.1:6379/0', { keyPrefix: env.REDIS_PREFIX || 'peer:' })
  const consumable = new Set(['AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest'])
  const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest'])
  const grantKey = (id) => `grant:${id}`
  const uidKey = (uid) => `uid:${uid}`

  /** The usual node-oidc-provider Redis adapter (one key per model instance, grants as lists). */
  class RedisAdapter {
    constructor (name) { this.name = name }
    key (id) { return `${this.name}:${id}` }
    async upsert (id, payload, expiresIn) {
      const key = this.key(id)
      const multi = redis.multi()
      if (consumable.has(this.name)) multi.hset(key, { payload: JSON.stringify(payload) })
      else multi.set(key, JSON.stringify(payload))
      if (expiresIn) multi.expire(key, expiresIn)
      if (grantable.has(this.name) && payload.grantId) {
        multi.rpush(grantKey(payload.grantId), key)
        multi.expire(grantKey(payload.grantId), expiresIn || 3600)
      }
      if (payload.uid) {
        multi.set(uidKey(payload.uid), id)
        if (expiresIn) multi.expire(uidKey(payload.uid), expiresIn)
      }
      await multi.exec()
    }
    async find (id) {
      if (consumable.has(this.name)) {
        const data = await redis.hgetall(this.key(id))
        if (!data || !data.payload) return undefined
        return { ...JSON.parse(data.payload), ...(data.consumed ? { consumed: Number(data.consumed) } : {}) }
      }
      const data = await redis.get(this.key(id))
      return data ? JSON.parse(data) : undefined
    }
    async findByUid (uid) { const id = await redis.get(uidKey(uid)); return id ? this.find(id) : undefined }
    async findByUserCode () { return undefined }
    async consume (id) { await redis.hset(this.key(id), 'consumed', Math.floor(Date.now() / 1000)) }
    async destroy (id) { await redis.del(this.key(id)) }
    async revokeByGrantId (grantId) {
      const keys = await redis.lrange(grantKey(grantId), 0, -1)
      const multi = redis.multi()
      keys.forEach((key) => multi.del(key.startsWith(redis.options.keyPrefix) ? key.slice(redis.options.keyPrefix.length) : key))
      multi.del(grantKey(grantId))
      await multi.exec()
    }
  }

  const provider = new Provider(env.ISSUER, {
    adapter: RedisAdapter,
    scopes: ['openid', 'offline_access', 'orders:read'],
    clients: config.clients,
    jwks: { keys: [config.jwk] },
    cookies: { keys: [config.cookie_key] },
    pkce: { required: () => true },
    rotateRefreshToken: true,
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => oneOf,
        useGrantedResource: async () => true,
        getResourceServerInfo: async () => ({
          scope: 'orders:read', accessTokenFormat: 'jwt', accessTokenTTL: 600, jwt: { sign: { alg: 'RS256' } }
        })
      }
    },
    ttl: { AccessToken: 600, ClientCredentials: 600, RefreshToken: 86400, Session: 86400, Grant: 86400, Interaction: 600 }
  })
  provider.proxy = false
  const oidc = provider.callback()

  const readForm = (req) => new Promise((resolve) => {
    let body = ''
    req.on('data', (chunk) => { body += chunk })
    req.on('end', () => resolve(new URLSearchParams(body)))
  })

  /** Our login page's work: show a form, check the password with argon2id, grant and resume. */
  async function interaction (req, res) {
    try {
      const details = await provider.interactionDetails(req, res)
      if (req.method === 'GET') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
        res.end(`<form method="post" action="/interaction/${details.uid}/login">` +
          '<input name="login"><input name="password" type="password"><button>Sign in</button></form>')
        return
      }
      const form = await readForm(req)
      const user = config.users[form.get('login')]
      if (!user || !(await argon2.verify(user.hash, form.get('password') || ''))) {
        res.writeHead(401, { 'content-type': 'text/plain' })
        res.end('invalid credentials')
        return
      }
      const grant = new provider.Grant({ accountId: user.sub, clientId: details.params.client_id })
      grant.addOIDCScope(details.params.scope)
      if (details.params.resource) grant.addResourceScope(details.params.resource, 'orders:read')
      const grantId = await grant.save()
      await provider.interactionFinished(req, res, { login: { accountId: user.sub }, consent: { grantId } },
        { mergeWithLastSubmission: false })
    } catch (err) {
      res.writeHead(400, { 'content-type': 'text/plain' })
      res.end(String(err))
    }
  }

  http.createServer((req, res) => {
    if (req.url.startsWith('/interaction/')) return interaction(req, res)
    return oidc(req, res)
  }).listen(Number(env.PORT), '127.0.0.1')
}
export { RESOURCE }
