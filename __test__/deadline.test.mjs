// Its own file: the deadline is timeoutS + 30 s, so this test waits about 30 s, and
// node --test runs files in parallel.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { codebay } from './helpers.mjs'

test('a session whose promise never settles yields the deadline failure', async () => {
  // A hung call, as a stuck network request would be: its promise stays reachable.
  const pending = []
  const session = { callMcpTool: () => new Promise((resolve) => pending.push(resolve)), getAPIKey: () => '', getSessionId: () => 's' }
  const started = Date.now()
  const r = await new codebay.Code(session).runCode('x', 'python', 0.1)
  const waited = (Date.now() - started) / 1000
  assert.equal(r.success, false)
  assert.equal(r.requestId, '')
  assert.match(r.errorMessage, /the session did not answer within 30\.1 seconds/)
  assert.ok(waited >= 30, `gave up after ${waited}s, before the deadline`)
  assert.equal(pending.length, 1)
})
