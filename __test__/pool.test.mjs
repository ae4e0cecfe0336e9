import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import { codebay, waitFor } from './helpers.mjs'

const { LocalSession } = codebay

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

test('a pooled session starts clean: nothing of the session before it', async () => {
  const options = { poolSize: 2, memoryBytes: 200 * 1024 * 1024 }
  const seen = new Set()
  for (let i = 0; i < 4; i++) {
    const s = await LocalSession.create(options)
    assert.ok(!seen.has(s.getSessionId()), 'a session id is never handed out twice')
    seen.add(s.getSessionId())
    const r = await s.code.runCode(
      "import os\nleft = sorted(os.listdir('/home/user')) + sorted(os.listdir('/tmp'))\n" +
      "before = globals().get('marker')\nopen('/home/user/mark', 'w').write('x'); open('/tmp/mark', 'w').write('x')\n" +
      'marker = 1\n(left, before)', 'python')
    assert.equal(r.result, '([], None)', `session ${i} saw a previous session's files or variables`)
    const js = await s.code.runCode('globalThis.jsMarker ?? "clean"', 'javascript')
    assert.equal(js.result, "'clean'")
    await s.code.runCode('globalThis.jsMarker = 1', 'javascript')
    await s.close()
    await sleep(150)
  }
})

test('the pool refills in the background and hands out ready sessions', async () => {
  const options = { poolSize: 1, prewarm: ['python', 'javascript'], memoryBytes: 210 * 1024 * 1024 }
  const first = await LocalSession.create(options)
  await first.close()
  await sleep(1500)
  const second = await LocalSession.create(options)
  const r = await second.code.runCode('1 + 1', 'python')
  const j = await second.code.runCode('1 + 1', 'javascript')
  assert.equal(r.result, '2')
  assert.equal(j.result, '2')
  await second.close()
})

test('poolSize 0 and bad pool options', async () => {
  const s = await LocalSession.create({ poolSize: 0, prewarm: [] })
  assert.equal((await s.code.runCode('6 * 7', 'py')).result, '42')
  await s.close()
  await assert.rejects(LocalSession.create({ poolSize: 17 }), /poolSize must be a whole number from 0 to 16/)
  await assert.rejects(LocalSession.create({ prewarm: ['ruby'] }), /prewarm: Unsupported language: ruby/)
})

test('concurrent runs in one context are queued in call order, never interleaved', async () => {
  const s = await LocalSession.create({ poolSize: 0 })
  await s.code.runCode('seen = []', 'python')
  const runs = Array.from({ length: 40 }, (_, i) =>
    s.code.runCode(`seen.append(${i})\nprint('start ${i}')\nimport time; time.sleep(0.001)\nprint('end ${i}')\nlen(seen)`, 'python'))
  const results = await Promise.all(runs)
  results.forEach((r, i) => {
    assert.deepEqual(r.logs.stdout, [`start ${i}\n`, `end ${i}\n`], `run ${i} saw only its own output`)
    assert.equal(r.result, String(i + 2 - 1))
  })
  const order = await s.code.runCode('seen', 'python')
  assert.equal(order.result, JSON.stringify(Array.from({ length: 40 }, (_, i) => i)).replace(/,/g, ', '))
  await s.close()
})

test('create() rejects options of the wrong type with a TypeError naming them', async () => {
  await assert.rejects(LocalSession.create(5), (e) => e instanceof TypeError && /takes an options object/.test(e.message))
  await assert.rejects(LocalSession.create({ memoryBytes: 'lots' }), (e) => e instanceof TypeError && /memoryBytes/.test(e.message))
  await assert.rejects(LocalSession.create({ env: { A: 1 } }), (e) => e instanceof TypeError && /env/.test(e.message))
})

test('the pool is bounded over all option sets, and drainPool() empties it', async () => {
  const helpers = () => fs.readdirSync(`/proc/${process.pid}/task`)
    .flatMap((t) => fs.readFileSync(`/proc/${process.pid}/task/${t}/children`, 'utf8').split(/\s+/).filter(Boolean).map(Number))
    .filter((p) => { try { return /codebay-sandbox/.test(fs.readFileSync(`/proc/${p}/cmdline`, 'utf8')) && !/State:\s+Z/.test(fs.readFileSync(`/proc/${p}/status`, 'utf8')) } catch { return false } })
  await LocalSession.drainPool()
  for (let i = 0; i < 10; i++) {
    const s = await LocalSession.create({ env: { REQUEST_ID: `r${i}` }, memoryBytes: 240 * 1024 * 1024 })
    await s.close()
  }
  await sleep(4000) // the refills of the last creates
  const idle = helpers().length
  assert.ok(idle <= 4, `${idle} idle sandboxes after 10 option sets (at most 4)`)
  assert.ok(idle >= 1, 'the pool still pools')
  const drained = await LocalSession.drainPool()
  assert.equal(drained, idle)
  assert.ok(await waitFor(() => helpers().length === 0, 10_000), `left: ${helpers()}`)
})
