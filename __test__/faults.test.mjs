// Faults judged from the host's side (issue 8): what a dead supervisor or a crashed
// process leaves behind, and what the engine does about it.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import fs from 'node:fs'
import { codebay, cgroupDirs, helperPid, sessionPids, waitFor } from './helpers.mjs'

const { LocalSession } = codebay
const INDEX = fileURLToPath(new URL('../index.js', import.meta.url))

test('a SIGKILLed supervisor takes its sandbox with it; runs say the sandbox is gone; close() leaves nothing', async () => {
  const s = await LocalSession.create({ poolSize: 0 })
  const id = s.getSessionId()
  try {
    assert.equal((await s.code.runCode('keep = 1\nkeep', 'python')).result, '1')
    const helper = helperPid(id)
    assert.ok(helper, 'the supervisor is found from the host')
    const inside = sessionPids(id)
    process.kill(helper, 'SIGKILL')
    // Init has the parent-death signal: the whole sandbox goes with its supervisor.
    assert.ok(await waitFor(() => inside.every((p) => !fs.existsSync(`/proc/${p}`) || /State:\s+[ZX]/.test(fs.readFileSync(`/proc/${p}/status`, 'utf8'))), 5000),
      `sandbox processes outlived their supervisor: ${inside}`)
    const r = await s.code.runCode('keep', 'python', 5)
    assert.equal(r.success, false)
    assert.match(r.errorMessage, /The sandbox is gone/)
    const again = await s.code.runCode('1', 'javascript', 5)
    assert.match(again.errorMessage, /The sandbox is gone/)
  } finally {
    await s.close()
  }
  assert.deepEqual(cgroupDirs(id), [], 'close() removed what the dead supervisor could not')
})

test('the engine sweeps the cgroups of dead sessions when it starts', () => {
  // A session whose helpers were all SIGKILLed at once: empty cgroup directories, old.
  const dead = 'cb-deaddeaddead'
  const planted = []
  for (const controller of ['memory', 'pids']) {
    const dir = `/sys/fs/cgroup/${controller}/codebay/${dead}`
    fs.mkdirSync(`${dir}/i-1`, { recursive: true })
    planted.push(dir)
  }
  const old = new Date(Date.now() - 3600_000)
  for (const dir of planted) {
    fs.utimesSync(dir, old, old)
    fs.utimesSync(`${dir}/i-1`, old, old)
  }
  const script = `
    const { LocalSession } = require(${JSON.stringify(INDEX)})
    LocalSession.create({ poolSize: 0, prewarm: [] }).then(async (s) => { await s.close() })`
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 })
  assert.equal(child.status, 0, child.stderr)
  for (const dir of planted) assert.equal(fs.existsSync(dir), false, `${dir} was left`)
})

test('a timed-out run\'s traceback ends in TimeoutError, not KeyboardInterrupt, and keeps the user\'s frames', async () => {
  const s = await LocalSession.create({ poolSize: 0 })
  try {
    const r = await s.code.runCode('import time\ndef slow():\n    time.sleep(10)\nslow()', 'python', 0.5)
    assert.equal(r.error.name, 'TimeoutError')
    assert.match(r.error.traceback, /line 3, in slow\n/)
    assert.match(r.error.traceback, /\nTimeoutError: the run exceeded its timeout of 0.5 s\n$/)
    assert.doesNotMatch(r.error.traceback, /KeyboardInterrupt/)
    const controller = new AbortController()
    setTimeout(() => controller.abort(), 300)
    const a = await s.code.runCode('import time\ntime.sleep(10)', 'python', 10, { signal: controller.signal })
    assert.match(a.error.traceback, /\nAbortError: the run was aborted\n$/)
  } finally {
    await s.close()
  }
  const cli = spawnSync(process.execPath, [fileURLToPath(new URL('../bin/codebay.js', import.meta.url)), 'run', '-l', 'py', '-c', 'while True: pass', '--timeout', '0.5'], { encoding: 'utf8', timeout: 30_000 })
  assert.equal(cli.status, 1)
  assert.match(cli.stderr, /TimeoutError: the run exceeded its timeout of 0.5 s/)
  assert.doesNotMatch(cli.stderr, /KeyboardInterrupt/)
})

test('starting an interpreter counts against the run\'s timeout: a stopped init cannot hold a run', async () => {
  const s = await LocalSession.create({ poolSize: 0, prewarm: [] })
  const id = s.getSessionId()
  let init
  try {
    await s.code.runCode('1', 'python')
    init = sessionPids(id).find((p) => /NSpid:.*\s1$/m.test(fs.readFileSync(`/proc/${p}/status`, 'utf8')))
    assert.ok(init, 'init is found from the host')
    process.kill(init, 'SIGSTOP')
    const t0 = Date.now()
    const r = await s.code.runCode('1', 'javascript', 2)
    const took = Date.now() - t0
    assert.equal(r.success, false)
    assert.match(r.errorMessage, /did not start within the run's timeout of 2 s/)
    assert.ok(took < 4000, `the run took ${took} ms`)
  } finally {
    if (init) process.kill(init, 'SIGCONT')
    await s.close()
  }
  assert.deepEqual(cgroupDirs(id), [])
})

test('the pool never hands out a sandbox that died while it waited', async () => {
  const options = { poolSize: 2, memoryBytes: 230 * 1024 * 1024 }
  const first = await LocalSession.create(options)
  const mine = helperPid(first.getSessionId())
  await first.close()
  // Wait for the refill, then kill the pooled sandboxes' supervisors.
  let victims = []
  assert.ok(await waitFor(() => {
    victims = fs.readdirSync(`/proc/${process.pid}/task`).flatMap((t) => fs.readFileSync(`/proc/${process.pid}/task/${t}/children`, 'utf8').split(/\s+/).filter(Boolean).map(Number))
      .filter((p) => p !== mine && fs.existsSync(`/proc/${p}/cmdline`) && /codebay-sandbox/.test(fs.readFileSync(`/proc/${p}/cmdline`, 'utf8')))
    return victims.length >= 2
  }, 10_000), 'the pool refilled')
  for (const p of victims) process.kill(p, 'SIGTERM')
  assert.ok(await waitFor(() => victims.every((p) => !fs.existsSync(`/proc/${p}`) || /State:\s+Z/.test(fs.readFileSync(`/proc/${p}/status`, 'utf8'))), 10_000), 'the pooled supervisors exited')
  const s = await LocalSession.create(options)
  try {
    const r = await s.code.runCode('6 * 7', 'python')
    assert.equal(r.success, true, JSON.stringify(r))
    assert.equal(r.result, '42')
  } finally {
    await s.close()
  }
})

test('all sandboxes together weigh less CPU than one host process', async () => {
  const s = await LocalSession.create({ poolSize: 0, prewarm: [] })
  try {
    const weights = []
    for (const [file, want] of [['cpu.shares', '128'], ['cpu.weight', '12']]) {
      for (const root of ['/sys/fs/cgroup', ...fs.readdirSync('/sys/fs/cgroup').map((e) => `/sys/fs/cgroup/${e}`)]) {
        const f = `${root}/codebay/${file}`
        if (fs.existsSync(f)) weights.push([f, fs.readFileSync(f, 'utf8').trim(), want])
      }
    }
    assert.ok(weights.length > 0, 'a CPU controller holds the sessions')
    for (const [f, got, want] of weights) assert.equal(got, want, f)
  } finally {
    await s.close()
  }
})

test('results are capped and said to be; values that once broke the reply channel cost nothing', async () => {
  const s = await LocalSession.create({ poolSize: 0, outputLimitBytes: 1024 })
  try {
    await s.code.runCode('keep = 7', 'python')
    await s.code.runCode('var keep = 7', 'javascript')
    const big = await s.code.runCode('"x" * 50_000_000', 'python', 30)
    assert.equal(big.success, false)
    assert.equal(big.error.name, 'OutputLimitError')
    assert.match(big.error.value, /results passed the cap of 1 KiB per value: .* 4999\d{4} bytes were dropped/)
    assert.ok(big.result.length <= 1024, `result of ${big.result.length} characters`)
    const both = await s.code.runCode('display("y" * 5000)\n1/0', 'python', 30)
    assert.equal(both.error.name, 'ZeroDivisionError')
    assert.match(both.error.value, /OutputLimitError/, 'the cut is said beside the error')
    for (const [language, source] of [
      ['javascript', 'throw new Error("😀".slice(0, 1))'],
      ['javascript', 'display("\\uDC00"); 1'],
      ['javascript', 'throw "\\uD800"'],
      ['python', 'd = []\nfor _ in range(200): d = [d]\ndisplay({"application/json": d}, raw=True)'],
    ]) {
      const r = await s.code.runCode(source, language, 10)
      assert.notEqual(r.error?.name, 'InterpreterExitError', `${language} ${source}: ${JSON.stringify(r)}`)
      assert.equal((await s.code.runCode('keep', language)).result, '7', `${language} kept its state after ${source}`)
    }
  } finally {
    await s.close()
  }
})

test('a rejected promise as the last value is the run\'s error', async () => {
  const s = await LocalSession.create({ poolSize: 0, prewarm: [] })
  try {
    const r = await s.code.runCode("Promise.reject(new TypeError('no'))", 'javascript', 10)
    assert.equal(r.success, false)
    assert.deepEqual([r.error.name, r.error.value], ['TypeError', 'no'])
  } finally {
    await s.close()
  }
})

test('each live session has host ids of its own: one holding its fds in flight does not stop another', async () => {
  const initUid = (s) => {
    const init = sessionPids(s.getSessionId()).find((p) => /NSpid:.*\s1$/m.test(fs.readFileSync(`/proc/${p}/status`, 'utf8')))
    return Number(/^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${init}/status`, 'utf8'))[1])
  }
  const a = await LocalSession.create({ poolSize: 0 })
  const b = await LocalSession.create({ poolSize: 0 })
  try {
    assert.notEqual(initUid(a), initUid(b), 'two sessions, two host id ranges')
    // Fds in flight until the kernel's per-user limit: a new socket pair whenever one's
    // queue is full.
    const flood = [
      'import socket, array, errno',
      'pairs = []',
      'held = 0',
      'why = None',
      'while why is None and len(pairs) < 100:',
      '    x, y = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)',
      '    x.setblocking(False)',
      '    pairs.append((x, y))',
      '    while True:',
      '        try:',
      "            x.sendmsg([b'.'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [0]))])",
      '            held += 1',
      '        except BlockingIOError:',
      '            break',
      '        except OSError as e:',
      '            why = errno.errorcode.get(e.errno)',
      '            break',
      '(held, why)',
    ].join('\n')
    const held = await a.code.runCode(flood, 'python', 30)
    assert.equal(held.success, true, JSON.stringify(held))
    assert.match(held.result, /^\(\d+, 'ETOOMANYREFS'\)$/, 'A reached the per-user limit')
    const one = [
      'import socket, array',
      'x, y = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)',
      "x.sendmsg([b'.'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [0]))])",
    ].join('\n')
    const passed = await b.code.runCode(one, 'python', 10)
    assert.equal(passed.success, true, `B could not pass one fd while A held ${held.result}: ${JSON.stringify(passed.error)}`)
  } finally {
    await a.close()
    await b.close()
  }
})

test('a sandbox holding its inotify and signal maximum takes nothing from host root', async () => {
  const s = await LocalSession.create({ poolSize: 0 })
  try {
    const held = await s.code.runCode([
      'import ctypes, signal, os',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'fds = []',
      'while True:',
      '    fd = libc.inotify_init1(0)',
      '    if fd < 0: break',
      '    fds.append(fd)',
      'signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])',
      'class sigval(ctypes.Union): _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]',
      'queued = 0',
      'while queued < 200000 and libc.sigqueue(os.getpid(), signal.SIGRTMIN, sigval(0)) == 0: queued += 1',
      '(len(fds), queued)',
    ].join('\n'), 'python', 60)
    assert.equal(held.success, true, JSON.stringify(held))
    assert.match(held.result, /^\(\d+, \d+\)$/)
    // Host root, meanwhile: an inotify instance (fs.watch) and a signal-queue-backed timer.
    const watcher = fs.watch('/tmp')
    watcher.close()
    const timers = spawnSync('python3', ['-c', [
      'import ctypes, signal, os',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])',
      'class sigval(ctypes.Union): _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]',
      'ok = sum(1 for _ in range(100) if libc.sigqueue(os.getpid(), signal.SIGRTMIN, sigval(0)) == 0)',
      'print(ok)',
    ].join('\n')], { encoding: 'utf8' })
    assert.equal(timers.stdout.trim(), '100', `host root could queue ${timers.stdout.trim()} of 100 signals: ${timers.stderr}`)
  } finally {
    await s.close()
  }
})
