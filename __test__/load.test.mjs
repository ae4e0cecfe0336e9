// One server under load, and two servers of which one dies. Judged from outside the
// sessions: /metrics, the host's processes and cgroup directories.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import { fileURLToPath } from 'node:url'
import { codebay, descendants, startServer } from './helpers.mjs'

const { RemoteSession, LocalSession } = codebay
const CLI = fileURLToPath(new URL('../bin/codebay.js', import.meta.url))

async function metric(server, name) {
  const res = await fetch(server.url.replace(/\/mcp$/, '/metrics'), { headers: { authorization: `Bearer ${server.apiKey}` } })
  const text = await res.text()
  const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'))
  return line === undefined ? undefined : Number(line.split(' ').pop())
}

/** The helper processes (`codebay-sandbox`) below this process. */
const helpersOfThisProcess = () => descendants(process.pid).filter((p) => p.comm.startsWith('codebay-sandbo')).map((p) => p.pid)

function sessionCgroups(ids) {
  const left = []
  for (const h of fs.readdirSync('/sys/fs/cgroup')) {
    for (const id of ids) if (fs.existsSync(`/sys/fs/cgroup/${h}/codebay/${id}`)) left.push(`${h}/${id}`)
  }
  return left
}

test('50 concurrent clients × 20 runs each: no failure, and nothing left once they close', async () => {
  const server = await startServer({ maxSessions: 50 })
  try {
    const clients = await Promise.all(Array.from({ length: 50 }, () => RemoteSession.connect({ endpoint: server.url, apiKey: server.apiKey })))
    assert.equal(await metric(server, 'codebay_sessions_open'), 50)
    const failures = []
    await Promise.all(clients.map(async (client, c) => {
      for (let i = 0; i < 20; i++) {
        const python = i % 2 === 1
        const r = await client.code.runCode(python ? `print(${c} * 100 + ${i})` : `console.log(${c} * 100 + ${i})`, python ? 'python' : 'javascript')
        if (!r.success || r.logs.stdout[0] !== `${c * 100 + i}\n`) failures.push({ c, i, r })
      }
    }))
    assert.deepEqual(failures, [])
    assert.equal(await metric(server, 'codebay_runs_total'), 1000)
    await Promise.all(clients.map((c) => c.close()))
    assert.equal(await metric(server, 'codebay_sessions_open'), 0)
  } finally {
    await server.close()
  }
  // The pool's idle sandboxes are this process's too: drained, nothing of codebay is left.
  await LocalSession.drainPool()
  // Closing a session ends its helper; the kernel may still be reaping the last ones.
  const deadline = Date.now() + 15_000
  while (helpersOfThisProcess().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
  assert.deepEqual(helpersOfThisProcess(), [])
  const dirs = fs.readdirSync('/sys/fs/cgroup').flatMap((h) => {
    const d = `/sys/fs/cgroup/${h}/codebay`
    return fs.existsSync(d) ? fs.readdirSync(d).filter((n) => n.startsWith('cb-')).map((n) => `${d}/${n}`) : []
  })
  assert.deepEqual(dirs, [], 'session cgroups left')
})

/** A `codebay serve` in a process of its own, which the test can kill. */
async function serverProcess() {
  const apiKey = `k-${Math.random().toString(16).slice(2)}`
  const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--max-sessions', '8'], { env: { ...process.env, CODEBAY_API_KEY: apiKey }, stdio: ['ignore', 'pipe', 'pipe'] })
  const url = await new Promise((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (d) => { out += d; const m = /MCP at (\S+)/.exec(out); if (m) resolve(m[1]) })
    child.on('exit', (code) => reject(new Error(`serve exited ${code}`)))
  })
  return { url, apiKey, child }
}

test('two servers: sessions spread over both; when one is killed its sessions fail clearly and new ones go to the other', async () => {
  const doomed = await serverProcess()
  // The same key on both, so one connect call can use either.
  const kept = await startServer({ maxSessions: 8, apiKey: doomed.apiKey })
  try {
    const endpoints = [kept.url, doomed.url]
    const sessions = await Promise.all(Array.from({ length: 6 }, () => RemoteSession.connect({ endpoint: endpoints, apiKey: kept.apiKey })))
    const on = (s) => (s.toString().includes(doomed.url) ? 'doomed' : 'kept')
    const where = sessions.map(on)
    assert.ok(where.includes('doomed') && where.includes('kept'), `spread: ${where}`)
    for (const s of sessions) assert.equal((await s.code.runCode('1 + 1', 'python')).result, '2')
    doomed.child.kill('SIGKILL')
    await new Promise((resolve) => doomed.child.once('exit', resolve))
    for (const s of sessions) {
      const r = await s.code.runCode('1 + 1', 'python', 10)
      if (on(s) === 'doomed') {
        assert.equal(r.success, false)
        assert.match(r.errorMessage, /cannot reach the MCP server at http:\/\/127\.0\.0\.1/)
      } else {
        assert.equal(r.result, '2')
      }
    }
    for (let i = 0; i < 3; i++) {
      const fresh = await RemoteSession.connect({ endpoint: endpoints, apiKey: kept.apiKey })
      assert.equal(on(fresh), 'kept')
      assert.equal((await fresh.code.runCode('2 + 2', 'python')).result, '4')
      await fresh.close()
    }
    await Promise.all(sessions.map((s) => s.close()))
  } finally {
    doomed.child.kill('SIGKILL')
    await kept.close()
  }
})
