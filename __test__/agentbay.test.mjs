// AgentBaySession against a fake AgentBay gateway on a loopback port. The gateway checks
// every request as AgentBay's public SDK sends it (method, path, query, headers, form
// fields in the SDK's order, from the golden fixture the Rust side is held to) and
// answers with the documented shapes. Nothing here reaches anything but 127.0.0.1.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import net from 'node:net'
import fs from 'node:fs'
import util from 'node:util'
import { codebay, backendJson } from './helpers.mjs'

const { AgentBaySession, Code, Files, LocalSession } = codebay
const KEY = 'sk-test-3f9a1c'

// Whatever the environment says, a test never goes to the default endpoint.
delete process.env.AGENTBAY_API_KEY
delete process.env.AGENTBAY_TIMEOUT_MS
process.env.AGENTBAY_ENDPOINT = 'http://127.0.0.1:9'

const fixture = fs.readFileSync(new URL('../crates/codebay-protocol/tests/fixtures/agentbay.jsonl', import.meta.url), 'utf8')
  .split('\n').filter(Boolean).map((l) => JSON.parse(l))
const fieldsOf = (kind) => Object.keys(fixture.filter((l) => l.kind === kind).reduce((a, l) => Object.keys(l.message).length > Object.keys(a.message).length ? l : a).message)
const QUERY_KEYS = Object.keys(fixture.find((l) => l.kind === 'query').message)
const FORM_FIELDS = {
  CreateMcpSession: fieldsOf('create_form'),
  CallMcpTool: fieldsOf('call_form'),
  ReleaseMcpSession: fieldsOf('release_form'),
}
/** Fields the SDK leaves out when they have no value. */
const OPTIONAL = new Set(['Labels'])

/** An MCP tool result, as `Data` of a CallMcpTool answer. */
const mcp = (text, isError = false) => ({ content: [{ type: 'text', text }], isError })
const envelope = (data, extra = {}) => ({ RequestId: `req-${Math.random().toString(16).slice(2, 10)}`, Code: 'ok', Message: '', Success: true, HttpStatusCode: 200, Data: data, ...extra })

/**
 * A fake gateway. `answer(call)` returns (or resolves with) `{ status?, type?, body }` (an object is sent as JSON),
 * or `'never'` to leave the request unanswered. Every request is checked; what is
 * wrong is collected in `problems` and answered with HTTP 400.
 */
async function fakeAgentBay(answer = cloudAnswer) {
  const requests = []
  const problems = []
  const nonces = new Set()
  const hung = []
  const server = http.createServer((req, res) => {
    let raw = ''
    req.setEncoding('utf8')
    req.on('data', (c) => { raw += c })
    req.on('end', async () => {
      const url = new URL(req.url, 'http://x')
      const query = Object.fromEntries(url.searchParams)
      const form = new URLSearchParams(raw)
      const action = query.Action
      const wrong = (what) => problems.push(`${action}: ${what}`)
      if (req.method !== 'POST') wrong(`method ${req.method}`)
      if (url.pathname !== '/') wrong(`path ${url.pathname}`)
      if ([...url.searchParams.keys()].join() !== QUERY_KEYS.join()) wrong(`query keys ${[...url.searchParams.keys()]}`)
      if (!FORM_FIELDS[action]) wrong('unknown action')
      if (query.Format !== 'json') wrong(`Format ${query.Format}`)
      if (query.Version !== '2025-05-06') wrong(`Version ${query.Version}`)
      if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(query.Timestamp ?? '') || Math.abs(Date.parse(query.Timestamp) - Date.now()) > 300_000) wrong(`Timestamp ${query.Timestamp}`)
      if (!query.SignatureNonce || nonces.has(query.SignatureNonce)) wrong(`SignatureNonce ${query.SignatureNonce}`)
      nonces.add(query.SignatureNonce)
      if (req.headers['content-type'] !== 'application/x-www-form-urlencoded') wrong(`content-type ${req.headers['content-type']}`)
      if (req.headers['x-acs-action'] !== action) wrong(`x-acs-action ${req.headers['x-acs-action']}`)
      if (req.headers['x-acs-version'] !== '2025-05-06') wrong(`x-acs-version ${req.headers['x-acs-version']}`)
      if (req.headers.authorization !== undefined) wrong('an Authorization header (the SDK sends the key in the form)')
      const expected = (FORM_FIELDS[action] ?? []).filter((f) => !OPTIONAL.has(f) || form.has(f))
      if ([...form.keys()].join() !== expected.join()) wrong(`form fields ${[...form.keys()]} instead of ${expected}`)
      if (form.get('Authorization') !== `Bearer ${KEY}`) wrong(`Authorization ${form.get('Authorization')}`)
      const call = { action, query, form: Object.fromEntries(form) }
      if (action === 'CallMcpTool') {
        try { call.args = JSON.parse(form.get('Args')) } catch { wrong(`Args is not JSON: ${form.get('Args')}`) }
        if (!['false', 'true'].includes(form.get('AutoGenSession'))) wrong(`AutoGenSession ${form.get('AutoGenSession')}`)
        if (form.get('Server') !== '') wrong(`Server ${form.get('Server')}`)
      }
      if (action === 'CreateMcpSession') {
        try { JSON.parse(form.get('SdkStats')) } catch { wrong('SdkStats is not JSON') }
        if (form.has('Labels')) try { JSON.parse(form.get('Labels')) } catch { wrong('Labels is not JSON') }
      }
      requests.push(call)
      if (problems.length) { res.writeHead(400); res.end(problems.join('\n')); return }
      const reply = await answer(call)
      if (reply === 'never') { hung.push(res); return }
      const body = typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body)
      res.writeHead(reply.status ?? 200, { 'content-type': reply.type ?? 'application/json' })
      res.end(body)
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const endpoint = `http://127.0.0.1:${server.address().port}`
  const close = () => new Promise((resolve) => {
    for (const res of hung) res.destroy()
    server.closeAllConnections()
    server.close(resolve)
  })
  return { endpoint, requests, problems, close }
}

/** A working cloud: a session, runs that print their code, a release. */
function cloudAnswer(call) {
  switch (call.action) {
    case 'CreateMcpSession':
      return { body: envelope({ SessionId: 's-cloud-1', ResourceUrl: 'https://example.invalid/s-cloud-1', Success: true }) }
    case 'CallMcpTool':
      if (call.form.Name !== 'run_code') return { body: envelope(mcp(`no tool ${call.form.Name}`, true)) }
      return { body: envelope(mcp(backendJson({ stdout: [`${call.args.code}\n`], executionCount: 1, executionTime: 0.01 }))) }
    case 'ReleaseMcpSession':
      return { body: { RequestId: 'req-release', Success: true } }
  }
}

const gateways = []
async function gateway(answer) {
  const g = await fakeAgentBay(answer)
  gateways.push(g)
  return g
}
after(async () => { for (const g of gateways) await g.close() })

const attach = (endpoint, extra = {}) => AgentBaySession.attach({ apiKey: KEY, sessionId: 's-attached', endpoint, timeoutMs: 5000, ...extra })

test('a create/run/run/delete cycle sends each request as the SDK does', async () => {
  const g = await gateway()
  const session = await AgentBaySession.create({ apiKey: KEY, endpoint: g.endpoint, labels: { team: 'data' } })
  assert.equal(session.getSessionId(), 's-cloud-1')
  assert.equal(session.getAPIKey(), KEY)
  assert.equal(session.resourceUrl, 'https://example.invalid/s-cloud-1')
  const first = await session.code.runCode('print(1)', 'py')
  const second = await session.code.runCode('console.log(2)', ' JS ', 5)
  assert.deepEqual([first.success, first.logs.stdout, second.logs.stdout], [true, ['print(1)\n'], ['console.log(2)\n']])
  assert.match(first.requestId, /^req-/)
  assert.deepEqual(await session.delete(), { requestId: 'req-release', success: true })
  // Idempotent, and close() is its alias: nothing more is sent.
  assert.deepEqual(await session.delete(), { requestId: 'req-release', success: true })
  assert.deepEqual(await session.close(), { requestId: 'req-release', success: true })
  const afterDelete = await session.code.runCode('1', 'python')
  assert.equal(afterDelete.success, false)
  assert.match(afterDelete.errorMessage, /ERR_CODEBAY_SESSION_CLOSED.*deleted/)

  assert.deepEqual(g.problems, [])
  assert.deepEqual(g.requests.map((r) => r.action), ['CreateMcpSession', 'CallMcpTool', 'CallMcpTool', 'ReleaseMcpSession'])
  const [create, run1, run2, release] = g.requests
  assert.equal(create.form.ImageId, 'code_latest')
  assert.equal(create.form.Labels, '{"team":"data"}')
  assert.equal(run1.form.Args, '{"code":"print(1)","language":"python","timeout_s":60}')
  assert.deepEqual(run2.args, { code: 'console.log(2)', language: 'javascript', timeout_s: 5 })
  for (const r of [run1, run2]) assert.deepEqual([r.form.Name, r.form.SessionId, r.form.AutoGenSession], ['run_code', 's-cloud-1', 'false'])
  assert.equal(release.form.SessionId, 's-cloud-1')
})

test('the call form is the fixture\'s bytes, field for field', async () => {
  const g = await gateway()
  const session = await attach(g.endpoint, { sessionId: 's-0123' })
  await session.callMcpTool('run_code', { code: 'print(1)', language: 'python', timeout_s: 60 })
  const line = fixture.find((l) => l.kind === 'call_form')
  assert.deepEqual(g.requests[0].form, { ...line.message, Authorization: `Bearer ${KEY}`, AutoGenSession: 'false' })
  await session.callMcpTool('run_code', {}, true)
  assert.equal(g.requests[1].form.AutoGenSession, 'true')
  assert.deepEqual(g.problems, [])
})

test('backend JSON and plain-text answers map as with any session', async () => {
  const answers = {
    json: envelope(mcp(backendJson({ stdout: ['hi\n'], result: [JSON.stringify({ 'text/plain': '42', 'text/html': '<b>42</b>', isMainResult: true })], executionCount: 3, executionTime: 0.5 }))),
    plain: envelope(mcp('just text')),
    double: envelope(mcp(JSON.stringify(backendJson({ stdout: ['twice\n'] })))),
  }
  const g = await gateway((call) => ({ body: answers[call.args.code] }))
  const session = await attach(g.endpoint)
  const r = await session.code.runCode('json', 'python')
  assert.equal(r.success, true)
  assert.equal(r.result, '42')
  assert.deepEqual(r.results, [{ text: '42', html: '<b>42</b>', isMainResult: true }])
  assert.deepEqual([r.logs.stdout, r.executionCount, r.executionTime], [['hi\n'], 3, 0.5])
  assert.equal(r.requestId, answers.json.RequestId)
  const p = await session.code.runCode('plain', 'python')
  assert.deepEqual(p, { requestId: answers.plain.RequestId, success: true, result: 'just text', logs: { stdout: ['just text'], stderr: [] }, results: [{ text: 'just text', isMainResult: true }] })
  const d = await session.code.runCode('double', 'python')
  assert.deepEqual(d.logs.stdout, ['twice\n'])
})

test('isError answers: a failed run keeps its structured error; another tool joins its texts', async () => {
  const failedRun = backendJson({ stderr: ['Traceback...\n'], executionError: "NameError: name 'x' is not defined", error: { name: 'NameError', value: "name 'x' is not defined", traceback: 'Traceback...' } })
  const g = await gateway((call) => call.form.Name === 'run_code'
    ? { body: envelope(call.args.code === 'x' ? mcp(failedRun, true) : mcp('quota used up', true)) }
    : { body: envelope({ content: [{ type: 'text', text: 'bad path' }, { type: 'text', text: 'really' }], isError: true }) })
  const session = await attach(g.endpoint)
  const r = await session.code.runCode('x', 'python')
  assert.equal(r.success, false)
  assert.deepEqual(r.error, { name: 'NameError', value: "name 'x' is not defined", traceback: 'Traceback...' })
  assert.deepEqual(r.logs.stderr, ['Traceback...\n'])
  const q = await session.code.runCode('y', 'python')
  assert.deepEqual([q.success, q.result, q.errorMessage], [false, '', 'quota used up'])
  const t = await session.callMcpTool('shell', { command: 'ls' })
  assert.deepEqual([t.success, t.data, t.errorMessage], [false, '', 'bad path; really'])
})

test('Success: false bodies and HTTP 500 with a JSON body are "[Code] Message"; without one the status is named', async () => {
  const replies = {
    refused: { body: { RequestId: 'req-r', Code: 'InvalidMcpSession.NotFound', Message: 'session not found', Success: false, HttpStatusCode: 400 } },
    noMessage: { body: { RequestId: 'req-n', Code: 'Throttling', Success: false } },
    error500: { status: 500, body: { RequestId: 'req-5', Code: 'InternalError', Message: 'The request processing has failed due to some unknown error.', HttpStatusCode: 500 } },
    html500: { status: 500, type: 'text/html', body: '<html><body>502 Bad Gateway</body></html>' },
    empty503: { status: 503, body: '' },
    notJson: { type: 'text/plain', body: 'upstream said: ok' },
  }
  const g = await gateway((call) => replies[call.args.code])
  const session = await attach(g.endpoint)
  const run = (code) => session.code.runCode(code, 'python')
  assert.deepEqual(await run('refused'), { requestId: 'req-r', success: false, result: '', errorMessage: '[InvalidMcpSession.NotFound] session not found' })
  assert.equal((await run('noMessage')).errorMessage, '[Throttling] Unknown error')
  assert.deepEqual(await run('error500'), { requestId: 'req-5', success: false, result: '', errorMessage: '[InternalError] The request processing has failed due to some unknown error.' })
  const html = await run('html500')
  assert.equal(html.success, false)
  assert.match(html.errorMessage, /^AgentBay answered CallMcpTool with HTTP 500 Internal Server Error and a body that is not an answer: <html><body>502 Bad Gateway/)
  assert.match((await run('empty503')).errorMessage, /HTTP 503 Service Unavailable .*\(empty\)$/)
  const text = await run('notJson')
  assert.match(text.errorMessage, /^AgentBay answered CallMcpTool with a body that is not a JSON answer \(.*\): upstream said: ok$/)
})

test('a gateway that never answers: the request times out at timeoutMs and runCode resolves success: false', async () => {
  const g = await gateway(() => 'never')
  const session = await attach(g.endpoint, { timeoutMs: 400 })
  const r = await session.code.runCode('while True: pass', 'python', 30)
  assert.deepEqual([r.success, r.requestId, r.result], [false, '', ''])
  assert.equal(r.errorMessage, 'AgentBay did not answer CallMcpTool within 400 ms (timeoutMs)')
  assert.equal(g.requests.length, 1, 'a run is never sent twice')
  // The same for create(), which rejects.
  await assert.rejects(AgentBaySession.create({ apiKey: KEY, endpoint: g.endpoint, timeoutMs: 400 }), (e) => {
    assert.equal(e.code, 'ERR_CODEBAY_REMOTE_FAILED')
    assert.match(e.message, /did not answer CreateMcpSession within 400 ms/)
    return true
  })
})

test('a refused connection is a failed result naming it; create() rejects', async () => {
  const port = await new Promise((resolve) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)) }) })
  const endpoint = `http://127.0.0.1:${port}`
  const session = await attach(endpoint)
  const r = await session.code.runCode('1', 'python')
  assert.equal(r.success, false)
  assert.match(r.errorMessage, new RegExp(`^could not connect to AgentBay at http://127.0.0.1:${port} for CallMcpTool: .*[Rr]efused`))
  const tool = await session.callMcpTool('run_code', { code: '1', language: 'python', timeout_s: 1 })
  assert.deepEqual([tool.success, tool.requestId], [false, ''])
  await assert.rejects(AgentBaySession.create({ apiKey: KEY, endpoint }), { code: 'ERR_CODEBAY_REMOTE_FAILED' })
  assert.deepEqual(await session.delete(), { requestId: '', success: false, errorMessage: `Failed to delete session s-attached: ${r.errorMessage.replace('CallMcpTool', 'ReleaseMcpSession')}` })
})

test('a missing key is ERR_CODEBAY_NO_API_KEY naming the variable, before any request', async () => {
  const g = await gateway()
  for (const make of [() => AgentBaySession.create({ endpoint: g.endpoint }), () => AgentBaySession.attach({ sessionId: 's-1', endpoint: g.endpoint }), () => AgentBaySession.create()]) {
    await assert.rejects(make(), (e) => {
      assert.ok(e instanceof Error)
      assert.equal(e.code, 'ERR_CODEBAY_NO_API_KEY')
      assert.match(e.message, /AGENTBAY_API_KEY/)
      return true
    })
  }
  assert.equal(g.requests.length, 0)
  // The environment supplies what the options leave out.
  process.env.AGENTBAY_API_KEY = KEY
  process.env.AGENTBAY_ENDPOINT = g.endpoint
  process.env.AGENTBAY_TIMEOUT_MS = '3000'
  try {
    const session = await AgentBaySession.create()
    assert.equal(session.getAPIKey(), KEY)
    assert.equal((await session.code.runCode('print(3)', 'python')).logs.stdout[0], 'print(3)\n')
    await session.delete()
  } finally {
    delete process.env.AGENTBAY_API_KEY
    delete process.env.AGENTBAY_TIMEOUT_MS
    process.env.AGENTBAY_ENDPOINT = 'http://127.0.0.1:9'
  }
  assert.deepEqual(g.problems, [])
})

test('bad options reject with typed errors and send nothing', async () => {
  const g = await gateway()
  const cases = [
    [{ apiKey: KEY, endpoint: g.endpoint, timeoutMs: 0 }, RangeError, /timeoutMs/],
    [{ apiKey: KEY, endpoint: g.endpoint, timeoutMs: Infinity }, RangeError, /timeoutMs/],
    [{ apiKey: KEY, endpoint: 'ftp://127.0.0.1' }, RangeError, /endpoint/],
    [{ apiKey: KEY, endpoint: g.endpoint, imageID: 'x' }, TypeError, /Did you mean 'imageId'/],
    [{ apiKey: 42, endpoint: g.endpoint }, TypeError, /apiKey must be a string/],
    [{ apiKey: KEY, endpoint: g.endpoint, labels: ['a'] }, TypeError, /labels/],
    ['key', TypeError, /options object/],
  ]
  for (const [options, kind, message] of cases) {
    await assert.rejects(AgentBaySession.create(options), (e) => {
      assert.ok(e instanceof kind, `${util.inspect(options)}: ${e}`)
      assert.equal(e.code, 'ERR_CODEBAY_INVALID_OPTION')
      assert.match(e.message, message)
      return true
    })
  }
  await assert.rejects(AgentBaySession.attach({ apiKey: KEY, endpoint: g.endpoint }), /sessionId/)
  assert.equal(g.requests.length, 0)
})

test('new Code(agentBaySession) and agentBaySession.code give the same results for the same answers', async () => {
  const g = await gateway((call) => ({ body: { ...envelope(mcp(backendJson({ stdout: [call.args.code], result: [JSON.stringify({ 'text/plain': call.args.language, isMainResult: true })] }))), RequestId: `req-${call.args.code}` } }))
  const session = await attach(g.endpoint)
  const runs = (code) => Promise.all([code.runCode('a', 'python'), code.runCode('b', 'js'), code.runCode('c', 'ruby').catch((e) => e.message)])
  const viaNew = await runs(new Code(session))
  const viaGetter = await runs(session.code)
  assert.deepEqual(viaNew, viaGetter)
  assert.deepEqual(viaNew[0], { requestId: 'req-a', success: true, result: 'python', logs: { stdout: ['a'], stderr: [] }, results: [{ text: 'python', isMainResult: true }] })
  assert.equal(viaNew[1].result, 'javascript')
  assert.equal(viaNew[2], "Unsupported language: ruby. Supported languages are 'python' and 'javascript'")
  assert.equal(g.requests.length, 4)
})

test('through the cloud, the same code gives the same results as a LocalSession', async () => {
  // The fake cloud runs each call in a LocalSession of its own and relays the answer.
  const behind = await LocalSession.create()
  const direct = await LocalSession.create()
  try {
    const g = await gateway(async (call) => {
      const answer = await behind.callMcpTool(call.form.Name, call.args)
      return { body: envelope(mcp(answer.success ? answer.data : answer.errorMessage, !answer.success)) }
    })
    const cloud = await attach(g.endpoint)
    const programs = [
      ['x = 6 * 7\nprint("x is", x)\nx', 'python'],
      ['import sys; print("err", file=sys.stderr); {"a": [1, 2]}', 'python'],
      ['undefined_name', 'python'],
      ['let n = 1; console.log("n", n); n + 1', 'javascript'],
      ['n * 10', 'javascript'],
      ['throw new TypeError("no")', 'javascript'],
      ['import time; time.sleep(5)', 'python', 1],
    ]
    const strip = ({ requestId, executionTime, ...rest }) => rest
    for (const [source, language, timeoutS] of programs) {
      const viaCloud = await cloud.code.runCode(source, language, timeoutS)
      const local = await direct.code.runCode(source, language, timeoutS)
      assert.deepEqual(strip(viaCloud), strip(local), source)
    }
    assert.deepEqual(g.problems, [])
  } finally {
    await behind.close()
    await direct.close()
  }
})

test('streaming callbacks fire once, with the whole output, when the answer is in', async () => {
  const g = await gateway(() => ({ body: envelope(mcp(backendJson({ stdout: ['a\n', 'b\n'], stderr: ['warn\n'], result: [JSON.stringify({ 'text/plain': '1', isMainResult: true })] }))) }))
  const session = await attach(g.endpoint)
  const seen = []
  const r = await session.code.runCode('x', 'python', 60, {
    onStdout: (m) => seen.push(['out', m.line]),
    onStderr: (m) => seen.push(['err', m.line]),
    onResult: (item) => seen.push(['result', item.text]),
  })
  assert.equal(r.success, true)
  assert.deepEqual(seen, [['out', 'a\n'], ['out', 'b\n'], ['err', 'warn\n'], ['result', '1']])
})

test('what the cloud cannot do is ERR_CODEBAY_NOT_SUPPORTED, and nothing is sent', async () => {
  const g = await gateway()
  const session = await attach(g.endpoint)
  await assert.rejects(session.code.runCode('1', 'python', 5, { envs: { A: '1' } }), { code: 'ERR_CODEBAY_NOT_SUPPORTED', message: /envs is not supported by this session/ })
  await assert.rejects(session.code.runCode('1', 'python', 5, { context: 'ctx-1' }), { code: 'ERR_CODEBAY_NOT_SUPPORTED' })
  await assert.rejects(session.code.createCodeContext({ language: 'python' }), { code: 'ERR_CODEBAY_NOT_SUPPORTED', message: /not supported by this session/ })
  await assert.rejects(session.code.listCodeContexts(), { code: 'ERR_CODEBAY_NOT_SUPPORTED' })
  await assert.rejects(session.files.write('bin', Buffer.from([0xff, 0x00])), { code: 'ERR_CODEBAY_NOT_SUPPORTED', message: /Binary data is not supported by this session/ })
  assert.equal(g.requests.length, 0)
})

test('files go through the cloud\'s filesystem tools, as the SDK names them', async () => {
  const disk = new Map([['/home/user/data', null]])
  const g = await gateway((call) => {
    const { Name: tool } = call.form
    const a = call.args
    const missing = () => ({ body: envelope(mcp(`open ${a.path}: no such file or directory`, true)) })
    switch (tool) {
      case 'write_file':
        disk.set(a.path, (a.mode === 'append' ? disk.get(a.path) ?? '' : '') + a.content)
        return { body: envelope(mcp('')) }
      case 'read_file': return disk.has(a.path) ? { body: envelope(mcp(disk.get(a.path))) } : missing()
      case 'get_file_info': return disk.has(a.path) ? { body: envelope(mcp(`name: ${a.path.split('/').pop()}\nsize: ${disk.get(a.path)?.length ?? 4096}\nisDirectory: ${disk.get(a.path) === null}`)) } : missing()
      case 'list_directory': {
        const lines = [...disk.keys()].filter((p) => p.startsWith(a.path + '/') && !p.slice(a.path.length + 1).includes('/')).map((p) => `${disk.get(p) === null ? '[DIR]' : '[FILE]'} ${p.slice(a.path.length + 1)}`)
        return { body: envelope(mcp(lines.join('\n'))) }
      }
      case 'delete_file': return disk.delete(a.path) ? { body: envelope(mcp('')) } : missing()
      default: return { body: envelope(mcp(`unknown tool ${tool}`, true)) }
    }
  })
  const session = await attach(g.endpoint)
  const big = 'é'.repeat(40_000) // 80,000 bytes: two chunks
  await session.files.write('notes.txt', big)
  await new Files(session).write('/home/user/data/a.csv', 'x,y\n1,2\n')
  assert.equal((await session.files.read('notes.txt')).toString(), big)
  assert.deepEqual((await session.files.list('/home/user')).sort((a, b) => a.name.localeCompare(b.name)), [
    { name: 'data', path: '/home/user/data', type: 'dir', size: 4096 },
    { name: 'notes.txt', path: '/home/user/notes.txt', type: 'file', size: big.length },
  ])
  assert.equal(await session.files.exists('data/a.csv'), true)
  await session.files.remove('data/a.csv')
  assert.equal(await session.files.exists('data/a.csv'), false)
  await assert.rejects(session.files.read('data/a.csv'), { code: 'ERR_CODEBAY_NOT_FOUND', message: /read_file failed for \/home\/user\/data\/a.csv: open .*no such file/ })
  await assert.rejects(session.files.read('../etc/passwd'), { code: 'ERR_CODEBAY_PATH_OUTSIDE' })
  const writes = g.requests.filter((r) => r.form.Name === 'write_file').map((r) => [r.args.path, r.args.mode, Buffer.byteLength(r.args.content)])
  assert.deepEqual(writes, [['/home/user/notes.txt', 'overwrite', 61_440], ['/home/user/notes.txt', 'append', 80_000 - 61_440], ['/home/user/data/a.csv', 'overwrite', 8]])
  assert.deepEqual(g.requests.find((r) => r.form.Name === 'read_file').args, { path: '/home/user/notes.txt', offset: 0, length: 0 })
  assert.deepEqual(g.problems, [])
})

test('the key never appears in errors, toString() or inspection', async () => {
  const g = await gateway(() => ({ status: 500, body: 'nope' }))
  const session = await attach(g.endpoint)
  const texts = [
    String(session), `${session}`, util.inspect(session, { showHidden: true, depth: 5 }), JSON.stringify(session),
    (await session.code.runCode('1', 'python')).errorMessage,
    (await session.callMcpTool('read_file', { path: '/x' })).errorMessage,
    (await session.delete()).errorMessage,
    await AgentBaySession.create({ apiKey: KEY, endpoint: g.endpoint }).catch((e) => `${e.message} ${e.stack}`),
    await session.files.read('x').catch((e) => e.message),
  ]
  assert.equal(String(session), `AgentBaySession(s-attached at ${g.endpoint}/)`)
  for (const text of texts) assert.ok(!String(text).includes(KEY), text)
})
