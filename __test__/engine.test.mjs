// The engine issue's acceptance on a real local session: cancel-safe runs, per-context
// accounting, streaming, AbortSignal, per-run envs, code contexts, aliases, options.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { codebay } from './helpers.mjs'

const { LocalSession } = codebay
const INDEX = fileURLToPath(new URL('../index.js', import.meta.url))
const show = (r) => JSON.stringify(r, (k, v) => (typeof v === 'string' && v.length > 300 ? `${v.slice(0, 300)}…` : v))
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function ok(code, source, language, timeoutS = 20, options) {
  const r = await code.runCode(source, language, timeoutS, options)
  assert.equal(r.success, true, `${language} ${JSON.stringify(source)} failed: ${show(r)}`)
  return r
}

describe('a run that is stopped leaves its context consistent', () => {
  let s
  before(async () => { s = await LocalSession.create({ poolSize: 0 }) })
  after(async () => { await s?.close() })

  for (const [language, setup, slow, check] of [
    ['python', 'keep = 7', 'import time\nwhile True: time.sleep(0.01)', 'keep * 6'],
    ['javascript', 'var keep = 7', 'await new Promise(() => {})', 'keep * 6'],
  ]) {
    test(`${language}: abort mid-run, then the next run gets its own result and the state is kept`, async () => {
      await ok(s.code, setup, language)
      const controller = new AbortController()
      const aborted = s.code.runCode(slow, language, 30, { signal: controller.signal })
      setTimeout(() => controller.abort(), 300)
      const next = s.code.runCode(check, language, 30)
      const r = await aborted
      assert.equal(r.success, false)
      assert.equal(r.error.name, 'AbortError', show(r))
      const after = await next
      assert.equal(after.success, true, show(after))
      assert.equal(after.result, '42')
    })
  }

  test('an already-aborted signal never starts the run', async () => {
    await ok(s.code, 'ran = 0', 'python')
    const r = await s.code.runCode('ran = 1', 'python', 5, { signal: AbortSignal.abort() })
    assert.equal(r.error.name, 'AbortError')
    assert.match(r.error.value, /before it started/)
    assert.equal((await ok(s.code, 'ran', 'python')).result, '0')
  })

  test('a run that does not stop when aborted is killed; the next run starts fresh', async () => {
    await ok(s.code, 'globalThis.marker = 1', 'javascript')
    const controller = new AbortController()
    const run = s.code.runCode('setTimeout(() => { for(;;){} }, 0); await new Promise(r => setTimeout(r, 50)); 1', 'javascript', 30, { signal: controller.signal })
    setTimeout(() => controller.abort(), 300)
    const r = await run
    assert.equal(r.error.name, 'AbortError', show(r))
    assert.match(r.error.value, /killed; its state was lost/)
    assert.equal((await ok(s.code, 'typeof globalThis.marker', 'javascript')).result, "'undefined'")
  })
})

describe('limits are counted per context', () => {
  // Small file systems, so the memory limit is close to memoryBytes (256 MiB + 172 MiB).
  const TIGHT = { poolSize: 0, memoryBytes: 256 * 2 ** 20, workspaceBytes: 16 * 2 ** 20, tmpBytes: 16 * 2 ** 20 }
  test('a JavaScript memory flood does not cost a Python run its result or its state', async () => {
    const s = await LocalSession.create({ poolSize: 0 })
    try {
      await ok(s.code, 'keep = 7', 'python')
      await ok(s.code, '1', 'javascript')
      const python = s.code.runCode('import time\ntime.sleep(3)\nkeep', 'python', 30)
      await sleep(300)
      const js = await s.code.runCode('const a=[];for(;;)a.push(Buffer.alloc(16*2**20,1))', 'javascript', 30)
      assert.equal(js.error?.name, 'MemoryError', show(js))
      assert.match(js.error.value, /javascript interpreter was killed; its state was lost/)
      const r = await python
      assert.equal(r.success, true, show(r))
      assert.equal(r.result, '7')
      assert.equal((await ok(s.code, 'keep', 'python')).result, '7')
    } finally {
      await s.close()
    }
  })

  test('a JavaScript process flood does not fail a Python run', async () => {
    const s = await LocalSession.create({ poolSize: 0, maxProcesses: 24 })
    try {
      await ok(s.code, 'keep = 7', 'python')
      const python = s.code.runCode('import time\ntime.sleep(2)\nkeep', 'python', 30)
      await sleep(200)
      const js = await s.code.runCode(
        "const cp = require('child_process'); let n = 0; for (let i = 0; i < 60; i++) { try { cp.spawn('sleep', ['30']).on('error', () => {}); n++ } catch {} }\n" +
        'await new Promise(r => setTimeout(r, 500)); n', 'javascript', 30)
      assert.equal(js.error?.name, 'ProcessLimitError', show(js))
      const r = await python
      assert.equal(r.success, true, show(r))
      assert.equal(r.result, '7')
      // The flood's processes were killed: Python can start a child again.
      await ok(s.code, "import subprocess\nsubprocess.run(['true']).returncode", 'python')
    } finally {
      await s.close()
    }
  })

  test('an idle interpreter killed for another context\'s memory: that run succeeds, the next run here is told', async () => {
    const s = await LocalSession.create(TIGHT)
    try {
      assert.equal((await ok(s.code, 'a = bytearray(240 * 2**20)\nlen(a)', 'python')).result, '251658240')
      // The OOM killer takes the largest process: the idle Python interpreter.
      const js = await ok(s.code, 'const b = []; for (let i = 0; i < 10; i++) b.push(Buffer.alloc(20 * 2**20, 1)); b.length', 'javascript', 30)
      assert.equal(js.result, '10')
      const py = await ok(s.code, "'a' in globals()", 'python')
      assert.equal(py.result, 'False')
      assert.match(py.logs.stderr[0], /^\[codebay\] The python interpreter of this context was killed because the session ran out of memory \(256 MiB for processes plus the 172 MiB its files may hold\) while no run was in progress; its state was lost/)
    } finally {
      await s.close()
    }
  })

  test('a child process killed for memory is reported to the run that started it; the parent keeps its state', async () => {
    const s = await LocalSession.create(TIGHT)
    try {
      await ok(s.code, 'keep = 7', 'python')
      const r = await s.code.runCode(
        "import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'a = bytearray(600 * 2**20)'])\np.wait()", 'python', 30)
      assert.equal(r.error?.name, 'MemoryError', show(r))
      assert.match(r.error.value, /a process this run started was killed; the python interpreter kept its state/)
      assert.equal((await ok(s.code, 'keep', 'python')).result, '7')
    } finally {
      await s.close()
    }
  })
})

describe('streaming', () => {
  let s
  before(async () => { s = await LocalSession.create({ poolSize: 0 }) })
  after(async () => { await s?.close() })

  for (const [language, source] of [
    ['python', "import time\nprint('first', flush=True)\ntime.sleep(1)\nprint('second')"],
    ['javascript', "console.log('first'); await new Promise(r => setTimeout(r, 1000)); console.log('second')"],
  ]) {
    test(`${language}: chunks arrive while the code runs, and are the chunks in logs`, async () => {
      const seen = []
      const r = await ok(s.code, source, language, 20, {
        onStdout: (m) => seen.push({ at: Date.now(), line: m.line, text: String(m), error: m.error, timestamp: m.timestamp }),
      })
      const done = Date.now()
      assert.deepEqual(seen.map((m) => m.line), ['first\n', 'second\n'])
      assert.deepEqual(r.logs.stdout, ['first\n', 'second\n'])
      assert.ok(done - seen[0].at >= 900, `the first chunk came ${done - seen[0].at} ms before the result`)
      assert.equal(seen[0].text, 'first\n', 'toString() is the line')
      assert.equal(seen[0].error, false)
      assert.ok(Math.abs(seen[0].timestamp / 1e6 - seen[0].at) < 5000, 'timestamp is nanoseconds since the epoch')
    })
  }

  test('stderr streams through onStderr, results through onResult, the error through onError', async () => {
    const events = []
    const r = await s.code.runCode("import sys\nprint('oops', file=sys.stderr)\ndisplay('shown')\nraise ValueError('bad')", 'python', 20, {
      onStdout: (m) => events.push(['out', m.line]),
      onStderr: (m) => events.push(['err', m.line, m.error]),
      onResult: (item) => events.push(['result', item.text]),
      onError: (e) => events.push(['error', e.name, e.value]),
    })
    assert.equal(r.success, false)
    assert.deepEqual(events, [['err', 'oops\n', true], ['result', "'shown'"], ['error', 'ValueError', 'bad']])
    assert.deepEqual(r.logs.stderr, ['oops\n'])
  })

  test('a callback that throws is reported once on the host\'s stderr and breaks nothing', async () => {
    const script = `
      const { LocalSession } = require(${JSON.stringify(INDEX)})
      const s = await LocalSession.create({ poolSize: 0, prewarm: [] })
      const r = await s.code.runCode("for i in range(3): print(i)", 'python', 20, { onStdout: () => { throw new Error('callback broke') } })
      const rejected = await s.code.runCode("print('x')", 'python', 20, { onStdout: async () => { throw new Error('async callback broke') } })
      if (!rejected.success) throw new Error('the run with a rejecting callback failed')
      const again = await s.code.runCode('40 + 2', 'python')
      console.log(JSON.stringify({ ok: r.success, out: r.logs.stdout, again: again.result }))
      await s.close()`
    const child = spawn(process.execPath, ['--input-type=commonjs', '-e', `(async () => {${script}})()`], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => { out += d })
    child.stderr.on('data', (d) => { err += d })
    const code = await new Promise((resolve) => child.on('close', resolve))
    assert.equal(code, 0, err)
    assert.deepEqual(JSON.parse(out), { ok: true, out: ['0\n', '1\n', '2\n'], again: '42' })
    assert.equal(err.match(/: callback broke/g)?.length, 1, `reported once: ${err}`)
    assert.equal(err.match(/async callback broke/g)?.length, 1, `a rejected promise is reported too: ${err}`)
  })
})

describe('per-run environment', () => {
  let s
  before(async () => { s = await LocalSession.create({ poolSize: 0 }) })
  after(async () => { await s?.close() })

  test('python: envs are seen by the code and its children, and gone afterwards', async () => {
    const r = await ok(s.code, "import os, subprocess\n(os.environ['CB_RUN'], subprocess.run(['sh', '-c', 'echo $CB_RUN'], capture_output=True, text=True).stdout)", 'python', 20, { envs: { CB_RUN: 'yes' } })
    assert.equal(r.result, "('yes', 'yes\\n')")
    assert.equal((await ok(s.code, "import os\nos.environ.get('CB_RUN')", 'python')).result, '')
  })

  test('javascript: envs are seen by the code and its children, and gone afterwards', async () => {
    const r = await ok(s.code, "[process.env.CB_RUN, require('child_process').execSync('echo $CB_RUN').toString()]", 'javascript', 20, { envs: { CB_RUN: 'yes' } })
    assert.equal(r.result, "[ 'yes', 'yes\\n' ]")
    assert.equal((await ok(s.code, 'process.env.CB_RUN', 'javascript')).result, '')
  })

  test('envs that are not an object of strings are refused', async () => {
    for (const envs of ['A=1', { A: 1 }, { 'A=B': 'x' }]) {
      await assert.rejects(s.code.runCode('1', 'python', 5, { envs }), (e) => e instanceof TypeError && e.code === 'ERR_CODEBAY_INVALID_OPTION', JSON.stringify(envs))
    }
  })
})

describe('code contexts', () => {
  let s
  before(async () => { s = await LocalSession.create({ poolSize: 0, maxContexts: 3 }) })
  after(async () => { await s?.close() })

  test('two contexts of one language do not share variables; each keeps its own state', async () => {
    const a = await s.code.createCodeContext({ language: 'python' })
    const b = await s.code.createCodeContext({ language: 'py', cwd: 'work' })
    assert.equal(a.language, 'python')
    assert.equal(a.cwd, '/home/user')
    assert.deepEqual(b.cwd, '/home/user/work')
    assert.notEqual(a.id, b.id)
    await ok(s.code, 'x = "a"', 'python', 10, { context: a })
    await ok(s.code, 'x = "b"', 'python', 10, { context: b.id })
    assert.equal((await ok(s.code, 'x', 'python', 10, { context: a })).result, "'a'")
    assert.equal((await ok(s.code, 'x', 'python', 10, { context: b })).result, "'b'")
    assert.equal((await ok(s.code, 'import os\nos.getcwd()', 'python', 10, { context: b })).result, "'/home/user/work'")
    const r = await s.code.runCode('x', 'python')
    assert.equal(r.error?.name, 'NameError', 'the default context is a third one')
    const ids = (await s.code.listCodeContexts()).map((c) => c.id)
    assert.deepEqual(ids, ['python', 'javascript', a.id, b.id])
    await s.code.removeCodeContext(a)
    await s.code.removeCodeContext(b.id)
  })

  test('restart clears the state; remove makes the context unknown', async () => {
    const c = await s.code.createCodeContext({ language: 'javascript' })
    await ok(s.code, 'var y = 5', 'javascript', 10, { context: c })
    await s.code.restartCodeContext(c)
    assert.equal((await ok(s.code, 'typeof y', 'javascript', 10, { context: c })).result, "'undefined'")
    await s.code.removeCodeContext(c)
    const r = await s.code.runCode('1', 'javascript', 10, { context: c })
    assert.equal(r.success, false)
    assert.equal(r.error.name, 'ContextError')
    assert.match(r.errorMessage, new RegExp(`No code context has the id ${c.id}`))
    await assert.rejects(s.code.removeCodeContext(c), (e) => e.code === 'ERR_CODEBAY_UNKNOWN_CONTEXT')
    await assert.rejects(s.code.restartCodeContext('ctx-nope'), (e) => e.code === 'ERR_CODEBAY_UNKNOWN_CONTEXT')
  })

  test('the context cap is refused with a clear error', async () => {
    const made = []
    for (let i = 0; i < 3; i++) made.push(await s.code.createCodeContext({ language: 'python' }))
    await assert.rejects(s.code.createCodeContext({ language: 'python' }), (e) => e.code === 'ERR_CODEBAY_CONTEXT_LIMIT' && /maxContexts/.test(e.message))
    for (const c of made) await s.code.removeCodeContext(c)
    await s.code.removeCodeContext(await s.code.createCodeContext({ language: 'python' }))
  })

  test('bad context calls are refused', async () => {
    await assert.rejects(s.code.createCodeContext({ language: 'ruby' }), (e) => e.code === 'ERR_CODEBAY_UNSUPPORTED_LANGUAGE')
    await assert.rejects(s.code.createCodeContext({ language: 'python', cwd: '/etc' }), (e) => e instanceof RangeError && e.code === 'ERR_CODEBAY_INVALID_ARGUMENT')
    await assert.rejects(s.code.createCodeContext({ language: 'python', dir: '/tmp' }), (e) => e.code === 'ERR_CODEBAY_INVALID_OPTION' && /unknown option 'dir'/.test(e.message))
    const js = await s.code.createCodeContext({ language: 'javascript' })
    await assert.rejects(s.code.runCode('1', 'python', 5, { context: js }), (e) => e.code === 'ERR_CODEBAY_INVALID_ARGUMENT' && /runs javascript/.test(e.message))
    await assert.rejects(s.code.removeCodeContext('python'), /cannot be removed/)
    await s.code.removeCodeContext(js)
  })

  test('the same operations are session tools', async () => {
    const made = await s.callMcpTool('create_code_context', { language: 'python' })
    assert.equal(made.success, true, JSON.stringify(made))
    const ctx = JSON.parse(made.data)
    const run = await s.callMcpTool('run_code', { code: 'z = 3\nz', language: 'python', timeout_s: 5, context: ctx.id })
    assert.equal(JSON.parse(run.data).result.length, 1)
    const list = JSON.parse((await s.callMcpTool('list_code_contexts', {})).data)
    assert.ok(list.some((c) => c.id === ctx.id))
    assert.equal((await s.callMcpTool('remove_code_context', { id: ctx.id })).success, true)
    const gone = await s.callMcpTool('remove_code_context', { id: ctx.id })
    assert.equal(gone.success, false)
    assert.match(gone.errorMessage, /^\[ERR_CODEBAY_UNKNOWN_CONTEXT\]/)
  })
})

describe('aliases and options', () => {
  let s
  before(async () => { s = await LocalSession.create({ poolSize: 0 }) })
  after(async () => { await s?.close() })

  test('code.run and code.execute are runCode', async () => {
    assert.equal((await s.code.run('6 * 7', 'python')).result, '42')
    assert.equal((await s.code.execute('6 * 7', 'js')).result, '42')
  })

  test('runCode options are checked: unknown keys name the nearest one, wrong types are TypeErrors', async () => {
    await assert.rejects(s.code.runCode('1', 'python', 5, { onStdOut: () => {} }), (e) => e instanceof TypeError && e.code === 'ERR_CODEBAY_INVALID_OPTION' && /Did you mean 'onStdout'/.test(e.message))
    await assert.rejects(s.code.runCode('1', 'python', 5, { onStdout: 'print' }), (e) => e instanceof TypeError && /onStdout must be a function/.test(e.message))
    await assert.rejects(s.code.runCode('1', 'python', 5, { signal: {} }), (e) => e instanceof TypeError && /AbortSignal/.test(e.message))
    await assert.rejects(s.code.runCode('1', 'python', 5, 'fast'), (e) => e instanceof TypeError)
    await assert.rejects(s.code.runCode('1', 'ruby'), (e) => e.code === 'ERR_CODEBAY_UNSUPPORTED_LANGUAGE' && e.message === "Unsupported language: ruby. Supported languages are 'python' and 'javascript'")
    await assert.rejects(s.code.runCode('1', 'python', -1), (e) => e instanceof RangeError && e.code === 'ERR_CODEBAY_INVALID_ARGUMENT')
  })

  test('create() options: every rule, with public names', async () => {
    const bad = [
      [{ memoryByte: 1 << 30 }, TypeError, /unknown option 'memoryByte'. Did you mean 'memoryBytes'\?/],
      [{ outputCapBytes: 10 }, TypeError, /unknown option 'outputCapBytes'/],
      [{ memoryBytes: '512m' }, TypeError, /memoryBytes must be a number/],
      [{ memoryBytes: 16 * 2 ** 20 }, RangeError, /memoryBytes must be a whole number from 33554432/],
      [{ memoryBytes: 67108864.5 }, RangeError, /memoryBytes must be a whole number/],
      [{ maxProcesses: 2 ** 32 + 5 }, RangeError, /maxProcesses must be a whole number from 4 to 4194304/],
      [{ maxProcesses: 2 }, RangeError, /maxProcesses/],
      [{ cpuCores: -1 }, RangeError, /cpuCores/],
      [{ network: 'yes' }, TypeError, /network must be a boolean/],
      [{ env: 'A=1' }, TypeError, /env must be an object of strings/],
      [{ env: { A: 1 } }, TypeError, /env.A must be a string/],
      [{ workspaceBytes: 0 }, RangeError, /workspaceBytes/],
      [{ poolSize: 17 }, RangeError, /poolSize must be a whole number from 0 to 16/],
      [{ prewarm: ['ruby'] }, RangeError, /prewarm: Unsupported language: ruby/],
      [{ maxContexts: 0 }, RangeError, /maxContexts/],
      [5, TypeError, /takes an options object/],
    ]
    for (const [options, kind, message] of bad) {
      await assert.rejects(LocalSession.create(options), (e) => e instanceof kind && e.code === 'ERR_CODEBAY_INVALID_OPTION' && message.test(e.message), JSON.stringify(options))
    }
  })
})

describe('edges found in review', () => {
  let s
  before(async () => { s = await LocalSession.create({ poolSize: 0 }) })
  after(async () => { await s?.close() })

  for (const [language, setup, slow] of [
    ['python', 'keep = 7', 'import time\ntime.sleep(3)'],
    ['javascript', 'var keep = 7', `const big = ${JSON.stringify('x'.repeat(2 * 2 ** 20))}; for (;;) {}`],
  ]) {
    test(`${language}: an abort right after the request was written still only interrupts`, async () => {
      await ok(s.code, setup, language)
      for (let i = 0; i < 3; i++) {
        const controller = new AbortController()
        const run = s.code.runCode(slow, language, 10, { signal: controller.signal })
        queueMicrotask(() => controller.abort())
        const r = await run
        assert.equal(r.error?.name, 'AbortError', show(r))
        assert.doesNotMatch(r.error.value, /killed/, show(r))
        assert.equal((await ok(s.code, 'keep * 6', language)).result, '42')
      }
    })
  }

  test('a restart is ordered with the runs called after it', async () => {
    const c = await s.code.createCodeContext({ language: 'python' })
    for (let i = 0; i < 10; i++) {
      await ok(s.code, 'x = 1', 'python', 10, { context: c })
      const restarted = s.code.restartCodeContext(c)
      const r = s.code.runCode('x', 'python', 10, { context: c })
      await restarted
      assert.equal((await r).error?.name, 'NameError')
    }
    await s.code.removeCodeContext(c)
  })

  test('a queued run that is aborted answers at once', async () => {
    const first = s.code.runCode('import time\ntime.sleep(2)', 'python', 10)
    const controller = new AbortController()
    const t0 = Date.now()
    const queued = s.code.runCode('1', 'python', 10, { signal: controller.signal })
    setTimeout(() => controller.abort(), 100)
    const r = await queued
    assert.equal(r.error?.name, 'AbortError')
    assert.ok(Date.now() - t0 < 1000, `answered after ${Date.now() - t0} ms`)
    assert.equal((await first).success, true)
  })

  test('a signal is listened to only while its run runs', async () => {
    const { getEventListeners } = await import('node:events')
    const controller = new AbortController()
    for (const bad of [() => s.code.runCode('1', 'cobol', 5, { signal: controller.signal }), () => s.code.runCode('1', 'python', -1, { signal: controller.signal, onStdout: () => {} })]) {
      await assert.rejects(bad())
    }
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0, 'refused calls leave nothing')
    await ok(s.code, '1', 'python', 5, { signal: controller.signal })
    await ok(s.code, 'print(1)', 'python', 5, { signal: controller.signal, onStdout: () => {} })
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0, 'settled runs leave nothing')
  })

  test('any callback gives the same chunks: lines, as without one', async () => {
    const source = 'for i in range(3): print(i)'
    const plain = await ok(s.code, source, 'python')
    const onlyErrors = await ok(s.code, source, 'python', 10, { onError: () => {} })
    const streamed = await ok(s.code, source, 'python', 10, { onStdout: () => {} })
    assert.deepEqual(plain.logs.stdout, ['0\n', '1\n', '2\n'])
    assert.deepEqual(onlyErrors.logs.stdout, plain.logs.stdout)
    assert.deepEqual(streamed.logs.stdout, plain.logs.stdout)
  })

  test('a failure to queue a run reads the same over the session tools', async () => {
    const direct = await s.code.runCode('1', 'python', 5, { context: 'ctx-missing' })
    const wrapper = { callMcpTool: (n, a) => s.callMcpTool(n, a), getAPIKey: () => '', getSessionId: () => 'w' }
    const { Code } = codebay
    const overTools = await new Code(wrapper).runCode('1', 'python', 5, { context: 'ctx-missing' })
    assert.equal(direct.error.name, 'ContextError')
    assert.deepEqual({ ...overTools, requestId: '' }, { ...direct, requestId: '' })
  })

  test('odd options are refused with a code, never thrown synchronously', async () => {
    await assert.rejects(LocalSession.create({ memoryBytes: NaN }), (e) => e instanceof RangeError && e.code === 'ERR_CODEBAY_INVALID_OPTION' && /memoryBytes must be a finite number/.test(e.message))
    await assert.rejects(LocalSession.create([]), (e) => e instanceof TypeError && e.code === 'ERR_CODEBAY_INVALID_OPTION')
    await assert.rejects(s.code.runCode('1', 'python', 5, []), (e) => e instanceof TypeError && e.code === 'ERR_CODEBAY_INVALID_OPTION')
    const throwing = { get envs() { throw new Error('getter') } }
    const p = s.code.runCode('1', 'python', 5, throwing)
    assert.ok(p instanceof Promise, 'a throwing getter rejects the promise')
    await assert.rejects(p, (e) => typeof e.code === 'string')
    await assert.rejects(s.code.createCodeContext({ language: 'python', cwd: 'x'.repeat(300) }), (e) => e.code === 'ERR_CODEBAY_INVALID_ARGUMENT')
  })

  test('context operations on a closed session reject with ERR_CODEBAY_SESSION_CLOSED', async () => {
    const closed = await LocalSession.create({ poolSize: 0, prewarm: [] })
    await closed.close()
    for (const op of [() => closed.code.listCodeContexts(), () => closed.code.restartCodeContext('python'), () => closed.code.removeCodeContext('ctx-1'), () => closed.code.createCodeContext({ language: 'python' })]) {
      await assert.rejects(op(), (e) => e.code === 'ERR_CODEBAY_SESSION_CLOSED')
    }
  })
})
