import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { codebay, fakeSession, backendJson } from './helpers.mjs'

const { Code } = codebay

test('aliases, case and spaces map to the canonical language sent to the session', async () => {
  const cases = { python: 'python', ' PY ': 'python', Python3: 'python', javascript: 'javascript',
    JS: 'javascript', node: 'javascript', ' NodeJS\n': 'javascript' }
  for (const [given, sent] of Object.entries(cases)) {
    const session = fakeSession()
    await new Code(session).runCode('1', given)
    assert.equal(session.calls.length, 1)
    assert.equal(session.calls[0].args.language, sent, `for ${JSON.stringify(given)}`)
  }
})

test('the session is called as callMcpTool("run_code", {code, language, timeout_s}, false) with this = session', async () => {
  const session = fakeSession()
  await new Code(session).runCode('print(1)', 'python', 7.5)
  const [call] = session.calls
  assert.equal(call.self, session)
  assert.equal(call.toolName, 'run_code')
  assert.deepEqual(Object.keys(call.args).sort(), ['code', 'language', 'timeout_s'])
  assert.deepEqual(call.args, { code: 'print(1)', language: 'python', timeout_s: 7.5 })
  assert.equal(call.autoGenSession, false)
  assert.equal(call.argc, 3)
})

test('timeoutS defaults to 60', async () => {
  const session = fakeSession()
  await new Code(session).runCode('1', 'js')
  await new Code(session).runCode('1', 'js', undefined)
  assert.equal(session.calls[0].args.timeout_s, 60)
  assert.equal(session.calls[1].args.timeout_s, 60)
})

test('an unsupported language rejects with the SDK message and does not call the session', async () => {
  const session = fakeSession()
  const code = new Code(session)
  await assert.rejects(code.runCode('x', ' Ruby'), (err) => {
    assert.ok(err instanceof Error)
    assert.equal(err.message, "Unsupported language:  Ruby. Supported languages are 'python' and 'javascript'")
    return true
  })
  await assert.rejects(code.runCode('x', 'python2'), /Unsupported language: python2\./)
  assert.equal(session.calls.length, 0)
})

test('a timeoutS that is not a finite number > 0 rejects with a RangeError before the session is called', async () => {
  const session = fakeSession()
  const code = new Code(session)
  for (const bad of [0, -1, NaN, Infinity, -Infinity, '5', null, {}, 1e300]) {
    await assert.rejects(code.runCode('1', 'python', bad), RangeError, `for ${String(bad)}`)
  }
  assert.equal(session.calls.length, 0)
})

test('code that is not a string rejects with a TypeError', async () => {
  const session = fakeSession()
  await assert.rejects(new Code(session).runCode(42, 'python'), TypeError)
  assert.equal(session.calls.length, 0)
})

test('plain-text data becomes a successful result with one main text item and no errorMessage key', async () => {
  const session = fakeSession(() => ({ success: true, data: 'hello', errorMessage: '', requestId: 'r-7' }))
  const r = await new Code(session).runCode('x', 'python')
  assert.deepEqual(r, {
    requestId: 'r-7', success: true, result: 'hello',
    logs: { stdout: ['hello'], stderr: [] },
    results: [{ text: 'hello', isMainResult: true }],
  })
  assert.ok(!('errorMessage' in r))
})

test('backend JSON maps logs, MIME items, execution time and count', async () => {
  const data = backendJson({
    stdout: ['a\n', 'b\n'], stderr: ['warn\n'],
    result: [
      JSON.stringify({ 'text/html': '<b>x</b>', 'image/png': 'iVBO', 'text/plain': '' }),
      JSON.stringify({ 'text/plain': '42', 'text/markdown': '**42**', 'image/jpeg': '/9j/', 'image/svg+xml': '<svg/>',
        'text/latex': '$42$', 'application/json': { n: 42 }, 'application/vnd.vegalite.v5+json': { mark: 'bar' },
        isMainResult: true }),
      'not json at all',
    ],
    executionTime: 0.0012, executionCount: 3,
  })
  const r = await new Code(fakeSession(() => ({ success: true, data, errorMessage: '', requestId: 'r-1' }))).runCode('x', 'py')
  assert.equal(r.success, true)
  assert.equal(r.result, '42')
  assert.deepEqual(r.logs, { stdout: ['a\n', 'b\n'], stderr: ['warn\n'] })
  assert.deepEqual(r.results, [
    { html: '<b>x</b>', png: 'iVBO' },
    { text: '42', markdown: '**42**', jpeg: '/9j/', svg: '<svg/>', latex: '$42$', json: { n: 42 },
      chart: { mark: 'bar' }, isMainResult: true },
  ])
  assert.equal(r.executionTime, 0.0012)
  assert.equal(r.executionCount, 3)
  assert.equal(r.error, undefined)
  assert.ok(!('errorMessage' in r))
})

test('without a main result, result is the first text, else stdout joined', async () => {
  const first = backendJson({ stdout: ['s'], result: [JSON.stringify({ 'text/plain': 'first' })] })
  const joined = backendJson({ stdout: ['a', 'b'] })
  const run = (data) => new Code(fakeSession(() => ({ success: true, data, errorMessage: '', requestId: '' }))).runCode('x', 'py')
  assert.equal((await run(first)).result, 'first')
  assert.equal((await run(joined)).result, 'ab')
})

test('the structured error extension maps to result.error; executionError alone becomes ExecutionError', async () => {
  const structured = backendJson({ executionError: "NameError: name 'x' is not defined",
    error: { name: 'NameError', value: "name 'x' is not defined", traceback: 'Traceback...' } })
  const bare = backendJson({ executionError: 'it broke' })
  const run = (errorMessage) => new Code(fakeSession(() => ({ success: false, data: '', errorMessage, requestId: 'r-e' }))).runCode('x', 'py')
  const a = await run(structured)
  assert.equal(a.success, false)
  assert.equal(a.requestId, 'r-e')
  assert.deepEqual(a.error, { name: 'NameError', value: "name 'x' is not defined", traceback: 'Traceback...' })
  assert.equal(a.errorMessage, "NameError: name 'x' is not defined")
  const b = await run(bare)
  assert.deepEqual(b.error, { name: 'ExecutionError', value: 'it broke', traceback: '' })
})

test('a JSON errorMessage is parsed and success forced false even if the JSON says nothing failed', async () => {
  const r = await new Code(fakeSession(() => ({ success: false, data: '', errorMessage: backendJson({ stdout: ['partial'] }), requestId: 'r' }))).runCode('x', 'py')
  assert.equal(r.success, false)
  assert.equal(r.result, 'partial')
  assert.deepEqual(r.logs, { stdout: ['partial'], stderr: [] })
})

test('a plain failed tool result keeps its message', async () => {
  const r = await new Code(fakeSession(() => ({ success: false, data: 'ignored', errorMessage: 'quota exceeded', requestId: 'r-9' }))).runCode('x', 'py')
  assert.deepEqual(r, { requestId: 'r-9', success: false, result: '', errorMessage: 'quota exceeded' })
})

test('a rejected promise resolves with "Failed to run code: ${String(error)}", as the SDK interpolates it', async () => {
  const session = { async callMcpTool() { throw new Error('network down') }, getAPIKey: () => '', getSessionId: () => 's' }
  const r = await new Code(session).runCode('x', 'python')
  assert.deepEqual(r, { requestId: '', success: false, result: '', errorMessage: 'Failed to run code: Error: network down' })
  class APIError extends Error { constructor(m) { super(m); this.name = 'APIError' } }
  const api = { async callMcpTool() { throw new APIError('Code execution failed') }, getAPIKey: () => '', getSessionId: () => 's' }
  assert.equal((await new Code(api).runCode('x', 'python')).errorMessage, 'Failed to run code: APIError: Code execution failed')
})

test('a synchronous throw resolves with the same failure and the process survives', async () => {
  const session = { callMcpTool() { throw new TypeError('sync boom') }, getAPIKey: () => '', getSessionId: () => 's' }
  const r = await new Code(session).runCode('x', 'python')
  assert.deepEqual(r, { requestId: '', success: false, result: '', errorMessage: 'Failed to run code: TypeError: sync boom' })
  const again = await new Code(fakeSession()).runCode('1', 'python')
  assert.equal(again.success, true)
})

test('a rejection with a non-Error value still gives a readable reason', async () => {
  const session = { callMcpTool: () => Promise.reject('plain string'), getAPIKey: () => '', getSessionId: () => 's' }
  const r = await new Code(session).runCode('x', 'python')
  assert.equal(r.success, false)
  assert.match(r.errorMessage, /^Failed to run code: .*plain string/)
})

test('a session answering a non-object fails with a clear message', async () => {
  const r = await new Code(fakeSession(() => 42)).runCode('x', 'python')
  assert.equal(r.success, false)
  assert.equal(r.errorMessage, 'Failed to run code: the session answered a number instead of a tool result object')
})

test('a plain (non-promise) return value is accepted as await would', async () => {
  const session = { callMcpTool: () => ({ success: true, data: 'sync', errorMessage: '', requestId: 'r-s' }), getAPIKey: () => '', getSessionId: () => 's' }
  const r = await new Code(session).runCode('x', 'python')
  assert.equal(r.result, 'sync')
  assert.equal(r.requestId, 'r-s')
})

test('extra properties JSON cannot hold do not spoil a good answer', async () => {
  const r = await new Code(fakeSession(() => ({ success: true, data: 'fine', errorMessage: '', requestId: 'r', extra: () => 1, big: 10n }))).runCode('x', 'python')
  assert.equal(r.result, 'fine')
})

test('the constructor refuses a session without a callable callMcpTool with a TypeError', () => {
  assert.throws(() => new Code({ getAPIKey: () => '', getSessionId: () => '' }), (err) => {
    assert.ok(err instanceof TypeError)
    assert.match(err.message, /callMcpTool/)
    return true
  })
  assert.throws(() => new Code({ callMcpTool: 'nope' }), TypeError)
  assert.throws(() => new Code(null), TypeError)
  assert.throws(() => new Code(undefined), TypeError)
  assert.throws(() => new Code(5), /callMcpTool/)
})

test('500 concurrent runCode calls on one Code each resolve with their own result', async () => {
  let n = 0
  const session = fakeSession((args) => {
    n++
    return new Promise((resolve) => setTimeout(() => resolve({
      success: true, data: `echo:${args.code}`, errorMessage: '', requestId: `req-${args.code}`,
    }), Math.random() * 20))
  })
  const code = new Code(session)
  const results = await Promise.all(Array.from({ length: 500 }, (_, i) => code.runCode(String(i), 'python')))
  assert.equal(n, 500)
  results.forEach((r, i) => {
    assert.equal(r.result, `echo:${i}`)
    assert.equal(r.requestId, `req-${i}`)
  })
})

test('a script using Code exits by itself', () => {
  const script = `
    const { Code } = require(${JSON.stringify(fileURLToPath(new URL('../index.js', import.meta.url)))})
    const session = { callMcpTool: async () => ({ success: true, data: 'done', errorMessage: '', requestId: 'r' }),
                      getAPIKey: () => '', getSessionId: () => 's' }
    const code = new Code(session)
    code.runCode('1', 'python').then((r) => { console.log(r.result); globalThis.keep = code })
  `
  const child = spawnSync(process.execPath, ['-e', script], { timeout: 20_000, encoding: 'utf8' })
  assert.equal(child.signal, null, 'node had to be killed: something kept it alive')
  assert.equal(child.status, 0, child.stderr)
  assert.equal(child.stdout.trim(), 'done')
})

test('a session promise collected without settling fails at once with a clear message', () => {
  const script = `
    const { Code } = require(${JSON.stringify(fileURLToPath(new URL('../index.js', import.meta.url)))})
    const session = { callMcpTool: () => new Promise(() => {}), getAPIKey: () => '', getSessionId: () => 's' }
    new Code(session).runCode('1', 'python', 1).then((r) => console.log(JSON.stringify(r)))
    const pump = setInterval(() => gc(), 10)
    setTimeout(() => clearInterval(pump), 3000).unref()
  `
  const child = spawnSync(process.execPath, ['--expose-gc', '-e', script], { timeout: 20_000, encoding: 'utf8' })
  assert.equal(child.status, 0, child.stderr)
  const r = JSON.parse(child.stdout)
  assert.equal(r.success, false)
  assert.match(r.errorMessage, /^Failed to run code: the session's promise was garbage-collected without settling/)
})

test('options over a JavaScript session: envs and context travel in the run_code arguments', async () => {
  const session = fakeSession()
  await new Code(session).runCode('1', 'py', 5, { envs: { A: '1' }, context: { id: 'ctx-1', language: 'python', cwd: '/home/user' } })
  assert.deepEqual(session.calls[0].args, { code: '1', language: 'python', timeout_s: 5, envs: { A: '1' }, context: 'ctx-1' })
})

test('a JavaScript session cannot stream: its output reaches the callbacks, in order, when it answers', async () => {
  const data = backendJson({ stdout: ['a\n', 'b\n'], stderr: ['e\n'], result: [JSON.stringify({ 'text/plain': '2', isMainResult: true })] })
  const session = fakeSession(() => ({ success: true, data, errorMessage: '', requestId: 'r' }))
  const events = []
  const r = await new Code(session).runCode('1', 'python', 5, {
    onStdout: (m) => events.push(['out', m.line, m.error]),
    onStderr: (m) => events.push(['err', String(m), m.error]),
    onResult: (i) => events.push(['result', i.text]),
  })
  assert.equal(r.result, '2')
  assert.deepEqual(events, [['out', 'a\n', false], ['out', 'b\n', false], ['err', 'e\n', true], ['result', '2']])
})

test('abort over a JavaScript session: pre-aborted never calls it; aborting a hung call resolves at once', async () => {
  const session = fakeSession(() => new Promise(() => {}))
  const code = new Code(session)
  const pre = await code.runCode('1', 'python', 5, { signal: AbortSignal.abort() })
  assert.equal(pre.error.name, 'AbortError')
  assert.equal(session.calls.length, 0)
  const controller = new AbortController()
  const hung = code.runCode('1', 'python', 60, { signal: controller.signal })
  setTimeout(() => controller.abort(), 50)
  const r = await hung
  assert.equal(r.success, false)
  assert.equal(r.error.name, 'AbortError')
})

test('code contexts over a JavaScript session go through its context tools', async () => {
  const session = fakeSession((args) => {
    const last = session.calls.at(-1)
    if (last.toolName === 'create_code_context') return { success: true, data: JSON.stringify({ id: 'ctx-9', language: args.language, cwd: args.cwd }), errorMessage: '', requestId: 'r' }
    if (last.toolName === 'list_code_contexts') return { success: true, data: '[]', errorMessage: '', requestId: 'r' }
    return { success: false, data: '', errorMessage: '[ERR_CODEBAY_UNKNOWN_CONTEXT] No code context has the id ctx-0.', requestId: 'r' }
  })
  const code = new Code(session)
  assert.deepEqual(await code.createCodeContext({ language: 'js', cwd: 'app' }), { id: 'ctx-9', language: 'javascript', cwd: '/home/user/app' })
  assert.deepEqual(await code.listCodeContexts(), [])
  await assert.rejects(code.removeCodeContext('ctx-0'), (e) => e.code === 'ERR_CODEBAY_UNKNOWN_CONTEXT' && e.message === 'No code context has the id ctx-0.')
  assert.deepEqual(session.calls.map((c) => [c.toolName, c.args]), [
    ['create_code_context', { language: 'javascript', cwd: '/home/user/app' }],
    ['list_code_contexts', {}],
    ['remove_code_context', { id: 'ctx-0' }],
  ])
})
