// `codebay serve` and `codebay mcp` against the official MCP TypeScript SDK as the client,
// and raw HTTP where the SDK would hide what is checked (status codes, bodies).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import { cgroupDirs, descendants, hostAlive, hostStatus } from './helpers.mjs'

const CLI = fileURLToPath(new URL('../bin/codebay.js', import.meta.url))
const KEY = 'test-key-0123456789'
const TOOLS = ['run_code', 'create_code_context', 'list_code_contexts', 'restart_code_context',
  'remove_code_context', 'write_file', 'read_file', 'list_files', 'remove_file']

const noKeyEnv = () => {
  const env = { ...process.env }
  delete env.CODEBAY_API_KEY
  return env
}

/** Like startServer, with the environment's CODEBAY_API_KEY removed unless given. */
function serve(args = [], key) {
  const env = noKeyEnv()
  if (key !== undefined) env.CODEBAY_API_KEY = key
  const proc = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  proc.stderr.on('data', (d) => { stderr += d })
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal, stderr })))
  return new Promise((resolve, reject) => {
    let out = ''
    proc.stdout.on('data', (d) => {
      out += d
      const m = /MCP at (http:\/\/\S+)/.exec(out)
      if (m) resolve({ proc, url: m[1], base: m[1].replace(/\/mcp$/, ''), exited, stop: () => { proc.kill('SIGTERM'); return exited } })
    })
    exited.then(({ code }) => reject(new Error(`serve exited ${code}: ${stderr}`)))
  })
}

async function connect(url, key) {
  const client = new Client({ name: 'codebay-test', version: '1.0.0' })
  const headers = key ? { Authorization: `Bearer ${key}` } : {}
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } })
  await client.connect(transport)
  return { client, transport }
}

async function runCode(client, args, options) {
  const r = await client.callTool({ name: 'run_code', arguments: args }, undefined, options)
  const text = r.content.find((c) => c.type === 'text').text
  return { ...r, json: JSON.parse(text) }
}

const mainText = (json) => json.result.map((i) => JSON.parse(i)).find((b) => b.isMainResult)?.['text/plain']

async function metric(base, name, key) {
  const r = await fetch(`${base}/metrics`, { headers: key ? { Authorization: `Bearer ${key}` } : {} })
  assert.equal(r.status, 200)
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(await r.text())
  return m ? Number(m[1]) : undefined
}

/** The nearest host process named codebay-sandbox above `pid`. */
function helperAbove(pid) {
  for (let p = Number(hostStatus(pid)?.PPid); p > 1; p = Number(hostStatus(p)?.PPid)) {
    if (hostStatus(p)?.Name === 'codebay-sandbox') return p
  }
  return undefined
}

const INIT = JSON.stringify({
  jsonrpc: '2.0', id: 1, method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
})
const MCP_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }

async function until(check, what, ms = 5000) {
  const end = Date.now() + ms
  for (;;) {
    if (await check()) return
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

test('Streamable HTTP: the SDK lists the tools and runs Python and JavaScript, streaming and cancelling', async (t) => {
  const server = await serve()
  t.after(() => server.stop())
  const { client } = await connect(server.url)
  t.after(() => client.close())

  const { tools } = await client.listTools()
  assert.deepEqual(tools.map((tool) => tool.name), TOOLS)
  const runSchema = tools[0].inputSchema
  assert.deepEqual(runSchema.required, ['code', 'language'])
  assert.equal(runSchema.properties.timeout_s.type, 'number')

  const py = await runCode(client, { code: 'x = 41\nprint("hi")\nx + 1', language: 'python' })
  assert.equal(py.isError, false)
  assert.deepEqual(py.json.stdout, ['hi\n'])
  assert.equal(mainText(py.json), '42')
  assert.equal(py.json.executionError, '')

  const js = await runCode(client, { code: 'console.log("js"); 6 * 7', language: 'js', timeout_s: 30 })
  assert.equal(js.isError, false)
  assert.deepEqual(js.json.stdout, ['js\n'])
  assert.equal(mainText(js.json), '42')

  const failed = await runCode(client, { code: 'undefined_name', language: 'python' })
  assert.equal(failed.isError, true)
  assert.equal(failed.json.error.name, 'NameError')

  // Progress: each chunk as it is written, before the answer.
  const notices = []
  const streamed = await runCode(client, {
    code: 'import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.2)\n"done"',
    language: 'python',
  }, { onprogress: (p) => notices.push({ ...p, at: Date.now(), notice: JSON.parse(p.message) }) })
  const stdout = notices.filter((n) => n.notice.stream === 'stdout')
  assert.deepEqual(stdout.map((n) => n.notice.text), ['0\n', '1\n', '2\n'])
  assert.ok(stdout.every((n) => typeof n.notice.timestamp === 'number'))
  assert.deepEqual(notices.map((n) => n.progress), notices.map((_, i) => i + 1))
  assert.ok(stdout[2].at - stdout[0].at >= 250, 'chunks arrived as written, not all at the end')
  const result = notices.find((n) => n.notice.stream === 'result')
  assert.equal(result.notice.item['text/plain'], "'done'")
  assert.equal(result.notice.item.isMainResult, true)
  assert.equal(mainText(streamed.json), "'done'")

  // Cancellation stops a `while True` run; the context keeps its state.
  const controller = new AbortController()
  const started = Date.now()
  const spinning = runCode(client, { code: 'while True:\n    pass', language: 'python', timeout_s: 60 }, { signal: controller.signal })
  setTimeout(() => controller.abort(), 700)
  await assert.rejects(spinning)
  const after = await runCode(client, { code: 'x', language: 'python', timeout_s: 30 })
  assert.equal(mainText(after.json), '41')
  assert.ok(Date.now() - started < 20_000, 'the cancelled run stopped long before its timeout')
  assert.ok((await metric(server.base, 'codebay_runs_total')) >= 6)
})

test('the other tools: contexts and files through the session', async (t) => {
  const server = await serve()
  t.after(() => server.stop())
  const { client } = await connect(server.url)
  t.after(() => client.close())
  const text = (r) => r.content[0].text
  const ctx = JSON.parse(text(await client.callTool({ name: 'create_code_context', arguments: { language: 'python' } })))
  assert.equal(ctx.language, 'python')
  await runCode(client, { code: 'y = 7', language: 'python', context: ctx.id })
  const inCtx = await runCode(client, { code: 'y * 6', language: 'python', context: ctx.id })
  assert.equal(mainText(inCtx.json), '42')
  const listed = JSON.parse(text(await client.callTool({ name: 'list_code_contexts', arguments: {} })))
  assert.ok(listed.some((c) => c.id === ctx.id))
  const w = await client.callTool({ name: 'write_file', arguments: { path: '/home/user/a.txt', data: 'hello' } })
  assert.equal(w.isError, false)
  const r = await client.callTool({ name: 'read_file', arguments: { path: '/home/user/a.txt' } })
  assert.equal(text(r), 'hello')
  const files = JSON.parse(text(await client.callTool({ name: 'list_files', arguments: { path: '/home/user' } })))
  assert.ok(files.some((f) => f.name === 'a.txt'))
  const missing = await client.callTool({ name: 'read_file', arguments: { path: '/home/user/nope' } })
  assert.equal(missing.isError, true)
  await client.callTool({ name: 'remove_code_context', arguments: { id: ctx.id } })
})

test('bad input gets JSON-RPC errors and the server stays up', async (t) => {
  const server = await serve()
  t.after(() => server.stop())
  const { client } = await connect(server.url)
  t.after(() => client.close())
  await assert.rejects(client.callTool({ name: 'no_such_tool', arguments: {} }), /Unknown tool: no_such_tool/)
  await assert.rejects(client.callTool({ name: 'run_code', arguments: { code: 1, language: 'python' } }), /run_code needs code/)
  await assert.rejects(client.callTool({ name: 'read_file', arguments: { path: 5 } }), /read_file arguments/)
  await assert.rejects(client.callTool({ name: 'run_code', arguments: { code: '1', language: 'cobol' } }), /Unsupported language: cobol/)

  const malformed = await fetch(server.url, { method: 'POST', headers: MCP_HEADERS, body: '{"jsonrpc": "2.0", "id": 1, "meth' })
  assert.equal(malformed.status, 400)
  assert.equal((await malformed.json()).error.code, -32700)
  const notRpc = await fetch(server.url, { method: 'POST', headers: MCP_HEADERS, body: '{"hello": "world"}' })
  assert.equal(notRpc.status, 400)
  assert.equal((await notRpc.json()).error.code, -32600)
  // Past the default 16 MiB: the whole upload is read, so the client sees the 413, not EPIPE.
  const huge = await fetch(server.url, { method: 'POST', headers: MCP_HEADERS, body: `{"pad":"${'x'.repeat(17 * 1024 * 1024)}"}` })
  assert.equal(huge.status, 413)
  assert.match((await huge.json()).error.message, /larger than this server's limit of 16777216 bytes/)
  const unknownSession = await fetch(server.url, {
    method: 'POST', headers: { ...MCP_HEADERS, 'mcp-session-id': 'no-such-session' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }),
  })
  assert.ok(unknownSession.status === 404 || unknownSession.status === 400, `status ${unknownSession.status}`)

  assert.equal((await fetch(`${server.base}/healthz`)).status, 200)
  const still = await runCode(client, { code: '1 + 1', language: 'python' })
  assert.equal(mainText(still.json), '2')
})

test('auth: no key or a wrong key is 401 and makes no sandbox; the right key works', async (t) => {
  const server = await serve([], KEY)
  t.after(() => server.stop())
  for (const headers of [{}, { Authorization: 'Bearer wrong-key' }, { Authorization: `Bearer ${KEY}x` }, { Authorization: KEY }]) {
    const r = await fetch(server.url, { method: 'POST', headers: { ...MCP_HEADERS, ...headers }, body: INIT })
    assert.equal(r.status, 401, JSON.stringify(headers))
    assert.doesNotMatch(await r.text(), new RegExp(KEY))
  }
  assert.equal((await fetch(`${server.base}/metrics`)).status, 401)
  assert.equal(await metric(server.base, 'codebay_sessions_open', KEY), 0)
  await assert.rejects(connect(server.url, 'wrong'))
  assert.equal(await metric(server.base, 'codebay_sessions_open', KEY), 0)

  const { client, transport } = await connect(server.url, KEY)
  assert.equal(await metric(server.base, 'codebay_sessions_open', KEY), 1)
  assert.equal(mainText((await runCode(client, { code: '2 + 2', language: 'python' })).json), '4')
  // Ending the MCP session (HTTP DELETE) closes its sandbox.
  await transport.terminateSession()
  await client.close()
  await until(async () => (await metric(server.base, 'codebay_sessions_open', KEY)) === 0, 'the sandbox to close')
  assert.equal((await fetch(`${server.base}/healthz`)).status, 200, '/healthz needs no key')
})

test('a key file works too, and a non-loopback bind without a key refuses to start', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'codebay-key-'))
  const file = path.join(dir, 'key')
  fs.writeFileSync(file, `${KEY}\n`)
  const server = await serve(['--api-key-file', file])
  t.after(() => { server.stop(); fs.rmSync(dir, { recursive: true }) })
  assert.equal((await fetch(server.url, { method: 'POST', headers: MCP_HEADERS, body: INIT })).status, 401)
  const { client } = await connect(server.url, KEY)
  assert.equal(mainText((await runCode(client, { code: '5', language: 'python' })).json), '5')
  await client.close()

  const env = noKeyEnv()
  const refused = spawn(process.execPath, [CLI, 'serve', '--listen', '0.0.0.0:0'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  refused.stderr.on('data', (d) => { stderr += d })
  const code = await new Promise((resolve) => refused.on('exit', resolve))
  assert.equal(code, 1)
  assert.match(stderr, /refusing to listen on 0\.0\.0\.0:0 without an API key/)
})

test('limits: the body limit is 413, a foreign Origin 403, and past --max-sessions a session is refused', async (t) => {
  const server = await serve(['--max-body', '2K', '--max-sessions', '1'])
  t.after(() => server.stop())
  const big = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { padding: 'x'.repeat(4096) } })
  const r = await fetch(server.url, { method: 'POST', headers: MCP_HEADERS, body: big })
  assert.equal(r.status, 413)
  const evil = await fetch(server.url, { method: 'POST', headers: { ...MCP_HEADERS, origin: 'http://evil.example' }, body: INIT })
  assert.equal(evil.status, 403)
  assert.equal(await metric(server.base, 'codebay_sessions_open'), 0)

  const first = await connect(server.url)
  t.after(() => first.client.close())
  await assert.rejects(connect(server.url), /maximum of 1 sessions/)
  assert.equal(await metric(server.base, 'codebay_sessions_open'), 1)
  assert.equal(mainText((await runCode(first.client, { code: '3', language: 'python' })).json), '3')
})

test('SIGTERM: the server closes every sandbox and exits 0 within a few seconds', async () => {
  const server = await serve()
  const { client } = await connect(server.url)
  const spinning = runCode(client, { code: 'while True:\n    pass', language: 'python', timeout_s: 120 }).catch((e) => e)
  await new Promise((r) => setTimeout(r, 500))
  const started = Date.now()
  const { code } = await server.stop()
  assert.equal(code, 0)
  assert.ok(Date.now() - started < 6000, `took ${Date.now() - started} ms`)
  // The run was stopped and answered before the streams closed.
  const answer = await spinning
  assert.ok(!(answer instanceof Error), `an answer, not ${answer}`)
  assert.equal(answer.isError, true)
  assert.equal(answer.json.error.name, 'AbortError', JSON.stringify(answer.json))
  await client.close().catch(() => {})
})

test('serve() from JavaScript: url, port 0, close()', async () => {
  const codebay = createRequire(import.meta.url)('../codebay.cjs')
  const handle = await codebay.serve({ listen: '127.0.0.1:0', maxSessions: 2 })
  assert.match(handle.url, /^http:\/\/127\.0\.0\.1:\d+\/mcp$/)
  assert.equal(handle.maxSessions, 2)
  const { client } = await connect(handle.url)
  assert.equal(mainText((await runCode(client, { code: '6 * 7', language: 'javascript' })).json), '42')
  await client.close()
  await handle.close()
  await handle.close()
  await assert.rejects(fetch(handle.url.replace('/mcp', '/healthz')))
  await assert.rejects(codebay.serve({ listen: '0.0.0.0:0' }), /without an API key/)
})

test('stdio: `codebay mcp` lists the tools and runs Python and JavaScript', async (t) => {
  const transport = new StdioClientTransport({ command: process.execPath, args: [CLI, 'mcp'], env: noKeyEnv(), stderr: 'pipe' })
  const client = new Client({ name: 'codebay-test', version: '1.0.0' })
  await client.connect(transport)
  t.after(() => client.close())
  const { tools } = await client.listTools()
  assert.deepEqual(tools.map((tool) => tool.name), TOOLS)
  const py = await runCode(client, { code: 'z = 20\nz * 2 + 2', language: 'python' })
  assert.equal(mainText(py.json), '42')
  const notices = []
  const js = await runCode(client, { code: 'console.log("a"); console.log("b"); 1 + 1', language: 'javascript' },
    { onprogress: (p) => notices.push(JSON.parse(p.message)) })
  assert.equal(mainText(js.json), '2')
  assert.deepEqual(notices.filter((n) => n.stream === 'stdout').map((n) => n.text).join(''), 'a\nb\n')
  assert.equal(mainText((await runCode(client, { code: 'z', language: 'python' })).json), '20', 'one sandbox for the process')
})

test('--idle-timeout closes the sandbox of a session left unused', async (t) => {
  const server = await serve(['--idle-timeout', '1'])
  t.after(() => server.stop())
  const { client } = await connect(server.url)
  t.after(() => client.close().catch(() => {}))
  assert.equal(mainText((await runCode(client, { code: '1', language: 'python' })).json), '1')
  assert.equal(await metric(server.base, 'codebay_sessions_open'), 1)
  await until(async () => (await metric(server.base, 'codebay_sessions_open')) === 0, 'the idle session to be reaped', 8000)
})

test('ending the session (DELETE) mid-run stops the run and closes the sandbox', async (t) => {
  const server = await serve()
  t.after(() => server.stop())
  const { client, transport } = await connect(server.url)
  const spinning = runCode(client, { code: 'while True:\n    pass', language: 'python', timeout_s: 120 }).catch((e) => e)
  await new Promise((r) => setTimeout(r, 500))
  assert.equal(await metric(server.base, 'codebay_sessions_open'), 1)
  await transport.terminateSession()
  await until(async () => (await metric(server.base, 'codebay_sessions_open')) === 0, 'the sandbox to close', 8000)
  await client.close()
  await spinning
})

test('a client that disconnects mid-run: the run is stopped and, after the idle timeout, the sandbox reaped', async (t) => {
  const server = await serve(['--idle-timeout', '3'])
  t.after(() => server.stop())
  // The client is a process of its own, killed mid-run: no DELETE and no cancel are
  // sent, its connections just end.
  const client = spawn(process.execPath, ['--input-type=module', '-e', `
    import { Client } from '@modelcontextprotocol/sdk/client/index.js'
    import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
    const client = new Client({ name: 'vanishing', version: '1' })
    await client.connect(new StreamableHTTPClientTransport(new URL(process.argv[1])))
    await client.callTool({ name: 'run_code', arguments: { code: 'print("spinning", flush=True)\\nwhile True:\\n    pass', language: 'python', timeout_s: 120 } },
      undefined, { timeout: 300_000, onprogress: () => console.log('spinning') })
  `, server.url], { cwd: fileURLToPath(new URL('..', import.meta.url)), stdio: ['ignore', 'pipe', 'inherit'] })
  t.after(() => client.kill('SIGKILL'))
  await new Promise((resolve, reject) => {
    client.stdout.on('data', (d) => { if (String(d).includes('spinning')) resolve() })
    client.on('exit', (code) => reject(new Error(`the client exited ${code} before its run spun`)))
  })
  // The spinner, seen from the host: the server's busiest descendant; its session's
  // helper, the nearest codebay-sandbox above it (the pool's are not that session's).
  const busiest = () => descendants(server.proc.pid).sort((a, b) => b.ticks - a.ticks)[0]
  const before = busiest().ticks
  await new Promise((r) => setTimeout(r, 500))
  const spinner = busiest()
  assert.ok(spinner.ticks - before > 10, `a process spins (${spinner.comm}: ${spinner.ticks - before} ticks in 0.5 s)`)
  const helper = helperAbove(spinner.pid)
  assert.ok(helper, `a helper above the spinner (${spinner.comm})`)
  const cgroup = /\/(cb-[^/\n]+)/.exec(fs.readFileSync(`/proc/${spinner.pid}/cgroup`, 'utf8'))[1]
  assert.ok(cgroupDirs(cgroup).length > 0, `the session's cgroup ${cgroup} is there`)
  client.kill('SIGKILL')

  // Stopped: the run ends (well before its 120 s), interrupted, and the spinner spins no more.
  await until(async () => (await metric(server.base, 'codebay_runs_total')) === 1, 'the run to end', 30_000)
  const failures = await (await fetch(`${server.base}/metrics`)).text()
  assert.match(failures, /^codebay_run_failures_total\{error="AbortError"\} 1$/m)
  // Interrupted, not killed: the context (and its process) stays until the session goes.
  const after = descendants(server.proc.pid).find((p) => p.pid === spinner.pid)
  assert.ok(after, 'the interrupted context is still there')
  await new Promise((r) => setTimeout(r, 500))
  const later = descendants(server.proc.pid).find((p) => p.pid === spinner.pid)
  assert.ok(later.ticks - after.ticks < 10, `the spinner stopped (${later.ticks - after.ticks} ticks in 0.5 s)`)
  // Reaped: after the idle timeout the session closes, its helper and its cgroups go.
  await until(async () => (await metric(server.base, 'codebay_sessions_open')) === 0, 'the idle session to be reaped', 30_000)
  await until(() => !hostAlive(helper), `its helper ${helper} to exit`, 15_000)
  await until(() => cgroupDirs(cgroup).length === 0, `its cgroup ${cgroup} to go`, 15_000)
})
