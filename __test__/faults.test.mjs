// Faults judged from the host's side (issue 8): what a dead supervisor or a crashed
// process leaves behind, and what the engine does about it.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import fs from 'node:fs'
import { codebay, cgroupDirs, helperPid, initPid, sessionPids, waitFor } from './helpers.mjs'

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
    init = initPid(id)
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
    const init = initPid(s.getSessionId())
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

// ------------------------------------------------------------------ full file systems

/** The session's OOM kills as the host counts them (v2 memory.events, v1 oom_control). */
function oomKills(sessionId) {
  let kills = 0
  for (const dir of cgroupDirs(sessionId)) {
    for (const file of ['memory.events', 'memory.oom_control']) {
      const f = `${dir}/${file}`
      if (fs.existsSync(f)) kills += Number(/^oom_kill (\d+)$/m.exec(fs.readFileSync(f, 'utf8'))?.[1] ?? 0)
    }
  }
  return kills
}

const FILL = `
import errno
def fill(path):
    written = 0
    try:
        with open(path, 'wb') as f:
            chunk = b'\\x01' * (1 << 20)
            while True:
                f.write(chunk)
                f.flush()
                written += 1
    except OSError as e:
        return (errno.errorcode[e.errno], written)
`

test('with the default limits, full file systems are ENOSPC and leave the processes their memory', async () => {
  const s = await LocalSession.create({ poolSize: 0 })
  const id = s.getSessionId()
  const py = async (code, timeout = 60) => {
    const r = await s.code.runCode(code, 'python', timeout)
    assert.equal(r.success, true, `${code}: ${JSON.stringify(r.error)}`)
    return r.result
  }
  try {
    await py(`keep = 41\n${FILL}`)
    // 512 MiB of workspace, 256 MiB of /tmp, 64 MiB of /dev/shm: each fills to its size.
    assert.equal(await py("fill('/home/user/fill.bin')"), "('ENOSPC', 512)")
    assert.equal(await py("fill('/tmp/fill.bin')"), "('ENOSPC', 256)")
    assert.equal(await py("fill('/dev/shm/fill.bin')"), "('ENOSPC', 64)")
    assert.equal(oomKills(id), 0, 'no process was killed for the files')
    // Every file system full, and the processes still have memoryBytes (512 MiB).
    assert.equal(await py('blob = bytearray(400 << 20)\nlen(blob) >> 20'), '400')
    assert.equal(await py('del blob\nkeep + 1'), '42', 'the interpreter kept its state')
    const js = await s.code.runCode("const fs = require('fs'); let code; try { fs.writeFileSync('/home/user/more.bin', Buffer.alloc(1 << 20)) } catch (e) { code = e.code }; code", 'javascript', 30)
    assert.equal(js.result, "'ENOSPC'", JSON.stringify(js))
    // Empty files are bounded too: inodes run out before their kernel memory does.
    assert.equal(await py("import os\nos.mkdir('/tmp/many')\nn = 0\ntry:\n    while True:\n        open(f'/tmp/many/{n}', 'w').close()\n        n += 1\nexcept OSError as e:\n    r = (errno.errorcode[e.errno], n > 1000)\nr"), "('ENOSPC', True)")
    assert.equal(oomKills(id), 0)
    // The code can clean up and go on.
    assert.equal(await py("import os, shutil\nfor f in ('/home/user/fill.bin', '/tmp/fill.bin', '/dev/shm/fill.bin', '/home/user/more.bin'):\n    if os.path.exists(f): os.remove(f)\nshutil.rmtree('/tmp/many')\nfill('/home/user/again.bin')"), "('ENOSPC', 512)")
    assert.equal(await py("os.remove('/home/user/again.bin')\nkeep"), '41')
  } finally {
    await s.close()
  }
})

test('System V shared memory is bounded and never orphaned: it goes with the interpreter that made it', async () => {
  const s = await LocalSession.create({ poolSize: 0, prewarm: [] })
  const id = s.getSessionId()
  // Judged from the host: the segments of the sandbox's IPC namespace.
  const segments = () => {
    const out = spawnSync('nsenter', ['-t', String(initPid(id)), '--ipc', 'cat', '/proc/sysvipc/shm'], { encoding: 'utf8' })
    assert.equal(out.status, 0, out.stderr)
    return out.stdout.trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/)).map((f) => ({ id: Number(f[1]), size: Number(f[3]), attached: Number(f[6]) }))
  }
  try {
    const shm = [
      'import ctypes, os',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'libc.shmat.restype = ctypes.c_void_p',
      'def shmget(size):',
      '    r = libc.shmget(0, ctypes.c_size_t(size), 0o1600)',
      '    return r if r >= 0 else os.strerror(ctypes.get_errno())',
    ].join('\n')
    assert.equal((await s.code.runCode(`${shm}\nshmget(490 << 20)`, 'python')).result, "'Invalid argument'", 'a 490 MiB segment is refused')
    const made = await s.code.runCode('seg = shmget(32 << 20)\nseg', 'python')
    const seg = Number(made.result)
    assert.ok(Number.isInteger(seg) && seg >= 0, JSON.stringify(made))
    assert.deepEqual(segments().map((x) => x.id), [seg], 'the unattached segment lives while its maker does')
    // Attached, written and detached: the last detach removes it.
    const used = await s.code.runCode('seg2 = shmget(16 << 20)\nat = libc.shmat(seg2, None, 0)\nctypes.memset(at, 1, 16 << 20)\nlibc.shmdt(ctypes.c_void_p(at))', 'python')
    assert.equal(used.result, '0', JSON.stringify(used))
    assert.deepEqual(segments().map((x) => x.id), [seg])
    // The interpreter is replaced: its segment goes with it.
    await s.code.runCode('os._exit(3)', 'python')
    assert.equal((await s.code.runCode('1 + 1', 'python')).result, '2')
    assert.deepEqual(segments(), [], 'no segment outlived its interpreter')
  } finally {
    await s.close()
  }
})

describe('late output of an earlier run', () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
  const js = (s, code, options) => s.code.runCode(code, 'javascript', 30, options)
  const note = (n, runs) => `[codebay] ${n} bytes of output written by an earlier run's callbacks after it ended were dropped (run ${runs})\n`
  const idleNote = (n) => `[codebay] ${n} bytes of output written while no run was in progress (by a process or thread an earlier run started) were dropped.\n`

  test('a timer\'s output after its run ended is not the next run\'s: dropped, and that run\'s first line says so', async () => {
    const s = await LocalSession.create({ poolSize: 0, prewarm: [] })
    try {
      const first = await js(s, "setTimeout(() => console.log('late'), 200); 1")
      assert.equal(first.result, '1')
      await sleep(500)
      const out = []
      const err = []
      const r = await js(s, 'console.log(2); 2', { onStdout: (m) => out.push(m.line), onStderr: (m) => err.push(m.line) })
      assert.equal(r.success, true, JSON.stringify(r))
      assert.equal(r.result, '2')
      assert.deepEqual(r.logs, { stdout: ['2\n'], stderr: [note(5, first.executionCount)] })
      assert.deepEqual([out, err], [r.logs.stdout, r.logs.stderr], 'streamed as in the logs')
      const again = await js(s, '3')
      assert.deepEqual(again.logs, { stdout: [], stderr: [] }, 'said once')
      // The output of what the run queued to run at once is its own.
      const soon = await js(s, "Promise.resolve().then(() => console.log('then')); process.nextTick(() => console.log('tick')); setImmediate(() => console.log('immediate')); 4")
      assert.deepEqual(soon.logs, { stdout: ['tick\n', 'then\n', 'immediate\n'], stderr: [] })
      assert.deepEqual((await js(s, '5')).logs, { stdout: [], stderr: [] })
    } finally {
      await s.close()
    }
  })

  test('an unhandled rejection is its own run\'s; one after its run ended is said to the next run, not as its error', async () => {
    const s = await LocalSession.create({ poolSize: 0, prewarm: [] })
    try {
      const own = await js(s, "Promise.reject(new Error('x')); 1")
      assert.equal(own.success, true)
      assert.equal(own.logs.stderr.join(''), `Uncaught (in promise) Error: x\n    at <cell-${own.executionCount}>:1:16\n`)
      assert.deepEqual((await js(s, '2')).logs, { stdout: [], stderr: [] }, 'nothing of it in the next run')
      const rejecting = await js(s, "setTimeout(() => Promise.reject(new TypeError('late')), 100); 1")
      await sleep(400)
      const r = await js(s, '2')
      assert.equal(r.success, true, JSON.stringify(r))
      assert.equal(r.error, undefined)
      assert.equal(r.result, '2')
      assert.deepEqual(r.logs, { stdout: [], stderr: [`[codebay] earlier run ${rejecting.executionCount} had an unhandled rejection after it ended (not this run's error): TypeError: late\n`] })
      const throwing = await js(s, "setTimeout(() => { console.error('oops'); throw new RangeError('boom') }, 100); 1")
      await sleep(400)
      const t = await js(s, '3')
      assert.equal(t.success, true, JSON.stringify(t))
      assert.deepEqual(t.logs.stderr, [`[codebay] 5 bytes of output written by an earlier run's callbacks after it ended were dropped (run ${throwing.executionCount}); earlier run ${throwing.executionCount} had an uncaught exception after it ended (not this run's error): RangeError: boom\n`])
    } finally {
      await s.close()
    }
  })

  test('a timer that fires during a later run is not that run\'s: dropped, that run ends with the note; an awaited promise of an earlier run is the awaiting run\'s', async () => {
    const s = await LocalSession.create({ poolSize: 0, prewarm: [] })
    try {
      const first = await js(s, "setTimeout(() => console.log('late'), 300); 1")
      const r = await js(s, "console.log('a'); await new Promise((r) => setTimeout(r, 1000)); console.log('b'); 2")
      assert.equal(r.result, '2')
      assert.deepEqual(r.logs, { stdout: ['a\n', 'b\n'], stderr: [note(5, first.executionCount)] })
      assert.deepEqual((await js(s, '3')).logs, { stdout: [], stderr: [] })
      // What a run does after awaiting an earlier run's promise is its own.
      await js(s, 'globalThis.ready = new Promise((r) => setTimeout(r, 300)); 1')
      const waited = await js(s, "await ready; console.log('after'); setTimeout(() => console.log('timer'), 10); await new Promise((r) => setTimeout(r, 50)); 4")
      assert.deepEqual(waited.logs, { stdout: ['after\n', 'timer\n'], stderr: [] })
      // Following promises changes nothing the code sees of them.
      const util = await js(s, "const util = require('util'); [util.inspect(Promise.resolve(1)), util.inspect(Promise.resolve(1), { showHidden: true }), Object.getOwnPropertySymbols(Promise.resolve(1)).length, util.inspect(setTimeout(() => {}, 1)).includes('owner')]")
      assert.equal(util.result, "[ 'Promise { 1 }', 'Promise { 1 }', 0, false ]")
      assert.equal((await js(s, 'new Promise(() => {})')).result, 'Promise { <pending> }')
    } finally {
      await s.close()
    }
  })

  test('what reaches the pipes while no run is in progress (a child process, a Python thread) is dropped with a note', async () => {
    const s = await LocalSession.create({ poolSize: 0, prewarm: [] })
    try {
      await js(s, "require('child_process').spawn('sh', ['-c', 'sleep 0.3; echo child-out; echo child-err >&2'], { stdio: 'inherit' }); 1")
      await sleep(700)
      const r = await js(s, '2')
      assert.deepEqual(r.logs, { stdout: [], stderr: [idleNote(20)] })
      assert.equal(r.success, true)
      await s.code.runCode("import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.3), print('thread'))).start()", 'python')
      await sleep(700)
      const p = await s.code.runCode('print(2)', 'python')
      assert.deepEqual(p.logs, { stdout: ['2\n'], stderr: [idleNote(7)] })
      assert.deepEqual((await s.code.runCode('3', 'python')).logs, { stdout: [], stderr: [] })
      // A child flooding its pipe while no run is in progress is read slowly, not at the
      // cost of a host thread: it waits on the full pipe.
      await js(s, "globalThis.flood = require('child_process').spawn('sh', ['-c', 'sleep 0.2; exec yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'], { stdio: 'inherit' }); 1")
      await sleep(300)
      const cpu = process.cpuUsage()
      await sleep(1000)
      const used = process.cpuUsage(cpu)
      assert.ok(used.user + used.system < 300_000, `the host process spent ${(used.user + used.system) / 1000} ms of CPU in 1 s of idle flood`)
      const stopped = await js(s, 'flood.kill(); 1')
      assert.match(stopped.logs.stderr[0], /^\[codebay\] \d+ bytes of output written while no run was in progress/)
      await sleep(200)
      assert.equal((await js(s, '5')).result, '5')
    } finally {
      await s.close()
    }
  })
})
