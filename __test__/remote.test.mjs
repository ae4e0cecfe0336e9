// RemoteSession against the real `codebay serve` on a free loopback port: the local
// session's functional programs give the same results through it (all but requestId
// and timings), output streams while the code runs, and an abort stops the run without
// harming the context.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { codebay, startServer } from './helpers.mjs'

const { LocalSession, RemoteSession } = codebay
let server

before(async () => { server = await startServer() })
after(async () => { await server?.close() })

const strip = ({ requestId, executionTime, ...rest }) => rest

/** Programs of the local session's suite: state, output, errors, limits, rich results. */
const PROGRAMS = [
  ['x = 6 * 7\nprint("x is", x)\nx', 'python'],
  ['x + 1', 'python'],
  ['import sys\nprint("to stderr", file=sys.stderr)\n{"a": [1, 2]}', 'python'],
  ['undefined_name', 'python'],
  ['1/0', 'python'],
  ['import time\ntime.sleep(5)', 'python', 1],
  ['print("after the timeout"); x', 'python'],
  ['class Shown:\n    def _repr_html_(self): return "<b>hi</b>"\n    def __repr__(self): return "Shown()"\nShown()', 'python'],
  ['import os\nos.getcwd()', 'python'],
  ['let n = 1; console.log("n", n); n + 1', 'javascript'],
  ['n * 10', 'javascript'],
  ['throw new TypeError("no")', 'javascript'],
  ['await new Promise((r) => setTimeout(r, 50)); "awaited"', 'javascript'],
  ['display({ "text/html": "<i>x</i>" }, "text/html"); [1, 2, 3]', 'js'],
]

test('the local session\'s programs give the same results through RemoteSession', async () => {
  const remote = await RemoteSession.connect({ endpoint: server.url, apiKey: server.apiKey })
  const local = await LocalSession.create({ poolSize: 0 })
  try {
    assert.match(remote.getSessionId(), /\S/)
    assert.equal(remote.getAPIKey(), server.apiKey)
    for (const [source, language, timeoutS] of PROGRAMS) {
      const viaServer = await remote.code.runCode(source, language, timeoutS)
      const direct = await local.code.runCode(source, language, timeoutS)
      assert.deepEqual(strip(viaServer), strip(direct), source)
    }
    // Options that make sense remotely: envs and contexts.
    const envs = { envs: { STAGE: 'remote' } }
    assert.deepEqual(
      strip(await remote.code.runCode('import os; os.environ["STAGE"]', 'python', 10, envs)),
      strip(await local.code.runCode('import os; os.environ["STAGE"]', 'python', 10, envs)))
    const context = await remote.code.createCodeContext({ language: 'python' })
    await remote.code.runCode('y = 5', 'python', 10, { context })
    assert.equal((await remote.code.runCode('y', 'python', 10, { context })).result, '5')
    assert.equal((await remote.code.runCode('"y" in dir()', 'python')).result, 'False')
    assert.ok((await remote.code.listCodeContexts()).some((c) => c.id === context.id))
    await remote.code.removeCodeContext(context)
    // Files, through the server's file tools.
    await remote.files.write('data/a.txt', 'remote file')
    assert.equal((await remote.files.read('data/a.txt')).toString(), 'remote file')
    assert.deepEqual((await remote.files.list('data')).map((e) => e.name), ['a.txt'])
    assert.equal((await remote.code.runCode('open("data/a.txt").read()', 'python')).result, "'remote file'")
  } finally {
    await remote.close()
    await local.close()
  }
})

test('output streams to the callbacks while the code runs', async () => {
  const remote = await RemoteSession.connect({ endpoint: server.url, apiKey: server.apiKey })
  try {
    // The code waits for a file that the callback writes when the first line arrives:
    // without streaming, the line would come only at the end, and the run would time out.
    const seen = []
    const r = await remote.code.runCode(
      'import os, time\nprint("ready", flush=True)\nwhile not os.path.exists("/tmp/go"):\n    time.sleep(0.01)\nprint("done")',
      'python', 20, {
        onStdout: (m) => {
          seen.push(m.line)
          if (m.line.includes('ready')) void remote.files.write('/tmp/go', '')
        },
      })
    assert.equal(r.success, true, JSON.stringify(r))
    assert.deepEqual(seen, ['ready\n', 'done\n'])
  } finally {
    await remote.close()
  }
})

test('an abort stops the run on the server and the context keeps its state', async () => {
  const remote = await RemoteSession.connect({ endpoint: server.url, apiKey: server.apiKey })
  try {
    await remote.code.runCode('kept = 41', 'python')
    const controller = new AbortController()
    const r = await remote.code.runCode('print("spinning", flush=True)\nwhile True:\n    pass', 'python', 60, {
      signal: controller.signal,
      onStdout: () => controller.abort(),
    })
    assert.equal(r.success, false)
    assert.equal(r.error?.name, 'AbortError', JSON.stringify(r))
    assert.equal((await remote.code.runCode('kept + 1', 'python')).result, '42')
  } finally {
    await remote.close()
  }
})

test('a dead server is a failed result naming it; a list of endpoints skips one that is down', async () => {
  const down = 'http://127.0.0.1:9/mcp'
  await assert.rejects(RemoteSession.connect({ endpoint: down }), { code: 'ERR_CODEBAY_REMOTE_FAILED', message: /127\.0\.0\.1:9/ })
  // Round robin: of two sessions in a row, one starts at the endpoint that is down.
  const sessions = [
    await RemoteSession.connect({ endpoint: [down, server.url], apiKey: server.apiKey }),
    await RemoteSession.connect({ endpoint: [down, server.url], apiKey: server.apiKey }),
  ]
  for (const s of sessions) assert.equal((await s.code.runCode('1 + 1', 'python')).result, '2')
  await sessions[1].close()
  const remote = sessions[0]
  await remote.close()
  const closed = await remote.code.runCode('1', 'python')
  assert.equal(closed.success, false)
  assert.match(closed.errorMessage, /closed/)
})

test('a server whose sessions run with rlimits only (as deploy/kubernetes asks) serves runs', async () => {
  const rl = await startServer({ session: { resourceLimits: 'rlimits' }, maxSessions: 2 })
  try {
    const remote = await RemoteSession.connect({ endpoint: rl.url, apiKey: rl.apiKey })
    assert.deepEqual((await remote.code.runCode('print(6 * 7)', 'python')).logs.stdout, ['42\n'])
    // Per-process limits: an allocation past memoryBytes fails in the process.
    const big = await remote.code.runCode('bytearray(700 * 2**20)', 'python')
    assert.equal(big.error?.name, 'MemoryError', JSON.stringify(big))
    await remote.close()
    await assert.rejects(startServer({ session: { resourceLimits: 'none' } }), /resourceLimits must be 'cgroup' or 'rlimits'/)
  } finally {
    await rl.close()
  }
})
