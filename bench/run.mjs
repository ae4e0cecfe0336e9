// The benchmark of issues 4, 7, 8, 9 and 12: `npm run bench` (node --no-node-snapshot bench/run.mjs).
//
// Prints one markdown table on stdout, every codebay figure next to the baselines
// measured in the same run, and a Target column computed from the measured ratios.
// Progress goes to stderr. BENCH_SCALE=0.1 scales the iteration counts for a smoke run.
import { spawn, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {
  benchDir, rootDir, require, loadCodebay, now, sleep, log, n, stats, timeLoop,
  spawnOnce, LineWorker, bwrapArgv, which, MiB,
} from './lib.mjs'

const startedAt = now()
const OUTPUT_CAP = 10 * MiB // LocalSessionOptions.outputLimitBytes default

// ---------------------------------------------------------------------------
// Formatting

const ms = (v) => {
  if (!Number.isFinite(v)) return 'n/a'
  if (v < 0.1) return `${(v * 1000).toFixed(0)} µs`
  if (v < 1) return `${v.toFixed(3)} ms`
  if (v < 10) return `${v.toFixed(2)} ms`
  if (v < 1000) return `${v.toFixed(1)} ms`
  return `${(v / 1000).toFixed(2)} s`
}
const mib = (bytes) => `${(bytes / MiB).toFixed(1)} MiB`
const x = (v) => (!Number.isFinite(v) ? 'n/a' : v >= 100 ? `${v.toFixed(0)}×` : v >= 10 ? `${v.toFixed(1)}×` : `${v.toFixed(2)}×`)
const mark = (ok) => (ok ? '✓' : '✗')

const rows = [] // { id, what, p50, p99, other, target }
const verdicts = [] // booleans of every evaluated target
function row(id, what, { p50 = '', p99 = '', other = '', target = '' } = {}) {
  rows.push({ id, what, p50, p99, other, target })
}
function skipped(id, what, why) {
  row(id, what, { other: `skipped: ${why}` })
}
/** Evaluates a target and returns its text, e.g. "≤ 4× floor: 2.90× ✓". */
function target(label, value, ok, fmt = x) {
  if (!Number.isFinite(value)) return `${label}: n/a (baseline missing)`
  verdicts.push(ok)
  return `${label}: ${fmt(value)} ${mark(ok)}`
}
const latency = (s) => (s ? { p50: ms(s.p50), p99: ms(s.p99) } : { other: 'not measured (see stderr)' })

// ---------------------------------------------------------------------------
// Environment

const realPython = (() => {
  if (process.env.BENCH_PYTHON) return process.env.BENCH_PYTHON
  // python3 on PATH may be a shim (pyenv): ask it for the real interpreter.
  return execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim()
})()
const pyInfo = JSON.parse(execFileSync(realPython, ['-I', '-S', '-c',
  'import sys, json; print(json.dumps({"version": sys.version.split()[0], "prefix": sys.prefix, "base": sys.base_prefix}))'],
{ encoding: 'utf8' }))
const pythonDirs = [...new Set([pyInfo.prefix, pyInfo.base, path.dirname(path.dirname(fs.realpathSync(realPython)))])]
  .filter((d) => d && !d.startsWith('/usr/') && d !== '/usr')
const nodeBin = process.execPath
const bwrap = which('bwrap')

function gitRev() {
  try {
    const rev = execFileSync('git', ['-C', rootDir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    const dirty = execFileSync('git', ['-C', rootDir, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    return dirty ? `${rev}+dirty` : rev
  } catch {
    return 'unknown'
  }
}

function resolvable(name) {
  try {
    require.resolve(name)
    return true
  } catch {
    return false
  }
}

/** Runs a bench/child.mjs task in a fresh Node process; resolves with its JSON. */
function child(task, arg = '') {
  return new Promise((resolve) => {
    const args = ['--no-node-snapshot', '--expose-gc', path.join(benchDir, 'child.mjs'), task]
    if (arg !== '') args.push(String(arg))
    const c = spawn(nodeBin, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: rootDir })
    let out = ''
    let err = ''
    c.stdout.setEncoding('utf8').on('data', (d) => { out += d })
    c.stderr.setEncoding('utf8').on('data', (d) => { err += d })
    c.on('close', (code, signal) => {
      const last = out.trim().split('\n').pop() || ''
      let value = null
      try {
        value = JSON.parse(last)
      } catch {}
      if (!value) value = { error: `child exited ${code ?? signal}: ${(err.trim().split('\n').pop() || '').slice(0, 200)}` }
      if (value.error && err.trim()) log(`${task} failed:\n${err.trim()}`)
      resolve(value)
    })
  })
}

// ---------------------------------------------------------------------------
// Measurements

const M = {} // every measured figure, by name

async function measureSpawns() {
  const pyArgs = ['-I', '-S', '-c', 'print(1)']
  const jsArgs = ['-e', 'console.log(1)']
  log(`naive spawn: ${realPython} -I -S -c 'print(1)'`)
  M.pySpawn = await timeLoop(() => spawnOnce(realPython, pyArgs), n(150), 5)
  log(`naive spawn: node -e 'console.log(1)' (env {})`)
  M.jsSpawn = await timeLoop(() => spawnOnce(nodeBin, jsArgs), n(100), 3)
  if (!bwrap) {
    M.bwrapMissing = 'bwrap not on PATH (apt-get install bubblewrap)'
    return
  }
  try {
    log('bwrap spawn: python')
    M.pyBwrap = await timeLoop(() => spawnOnce(bwrap, bwrapArgv([realPython, ...pyArgs], pythonDirs)), n(150), 5)
    log('bwrap spawn: node')
    M.jsBwrap = await timeLoop(() => spawnOnce(bwrap, bwrapArgv([nodeBin, ...jsArgs])), n(100), 3)
  } catch (e) {
    M.bwrapMissing = `bwrap failed: ${String(e.message).slice(0, 160)}`
  }
}

/** Starts the floor workers (bare warm interpreters over a pipe) and checks them. */
async function startFloors() {
  const py = new LineWorker(realPython, ['-I', '-S', path.join(benchDir, 'floor_worker.py')])
  const js = new LineWorker(nodeBin, [path.join(benchDir, 'floor_worker.js')])
  const a = await py.request({ code: 'print(1)' })
  if (a.stdout !== '1\n') throw new Error(`python floor answered ${JSON.stringify(a)}`)
  const b = await js.request({ code: 'console.log(1)' })
  if (b.stdout !== '1\n') throw new Error(`node floor answered ${JSON.stringify(b)}`)
  return { py, js }
}

async function measureChildren(codebayError) {
  if (codebayError) {
    M.idle = M.flood = { error: codebayError }
  } else {
    log('idle memory per session (fresh node process)')
    M.idle = await child('idle-memory')
    log('50 MB stdout flood (fresh node process)')
    M.flood = await child('flood')
  }
  if (resolvable('pyodide')) {
    log('pyodide (fresh node process)')
    M.pyodide = await child('pyodide', n(2000))
  } else {
    M.pyodide = { error: 'pyodide not installed (npm i -D pyodide@0.27)' }
  }
  if (resolvable('isolated-vm')) {
    log('isolated-vm (fresh node process)')
    M.ivm = await child('isolated-vm', n(2000))
  } else {
    M.ivm = { error: 'isolated-vm not installed (npm i -D isolated-vm@5)' }
  }
}

function expectOk(r, what) {
  if (!r.success) throw new Error(`${what} failed: ${r.errorMessage}`)
  return r
}

// Row 1. codebay and its floor are measured in alternating blocks, so that the noise of
// a shared machine (seen here: either moving by 2-3x between runs) falls on both alike
// and their ratio holds still.
const WARM_BLOCKS = 10

async function measureWarm(LocalSession) {
  const perBlock = Math.max(1, Math.round(n(2000) / WARM_BLOCKS))
  log('codebay and floors: warm runs, interleaved')
  const floors = await startFloors()
  const session = await LocalSession.create()
  try {
    expectOk(await session.code.runCode('print(1)', 'python'), 'python warm-up')
    expectOk(await session.code.runCode('console.log(1)', 'javascript'), 'javascript warm-up')
    await sleep(500) // let a pool refill triggered by create() finish
    const check = await session.code.runCode('print(1)', 'python')
    if (check.logs?.stdout?.join('') !== '1\n') throw new Error(`print(1) gave ${JSON.stringify(check)}`)
    let streamed = 0
    const streaming = { onStdout: () => { streamed++ } }
    await session.code.runCode('print(1)', 'python', 60, streaming)
    if (streamed !== 1) throw new Error(`onStdout was called ${streamed} times for print(1)`)
    const kinds = {
      pyWarm: () => session.code.runCode('print(1)', 'python'),
      pyStream: () => session.code.runCode('print(1)', 'python', 60, streaming),
      pyFloor: () => floors.py.request({ code: 'print(1)' }),
      jsWarm: () => session.code.runCode('console.log(1)', 'javascript'),
      jsFloor: () => floors.js.request({ code: 'console.log(1)' }),
    }
    const samples = Object.fromEntries(Object.keys(kinds).map((k) => [k, []]))
    for (const fn of Object.values(kinds)) await timeLoop(fn, 200) // warm-up, not kept
    for (let b = 0; b < WARM_BLOCKS; b++) {
      for (const [kind, fn] of Object.entries(kinds)) {
        for (let i = 0; i < perBlock; i++) {
          const t0 = now()
          await fn()
          samples[kind].push(now() - t0)
        }
      }
    }
    for (const [kind, values] of Object.entries(samples)) M[kind] = stats(values)
  } finally {
    await session.close()
    floors.py.close()
    floors.js.close()
  }
}

async function measureThroughput(LocalSession) {
  const sessions = 8
  const perSession = n(250)
  log(`codebay: throughput, ${sessions} sessions × ${perSession} runs`)
  const all = []
  try {
    for (let i = 0; i < sessions; i++) all.push(await LocalSession.create())
    await Promise.all(all.map((s) => s.code.runCode('1', 'python').then((r) => expectOk(r, 'throughput warm-up'))))
    await sleep(500)
    let failures = 0
    const t0 = now()
    await Promise.all(all.map(async (s) => {
      for (let i = 0; i < perSession; i++) {
        const r = await s.code.runCode('1', 'python')
        if (!r.success) failures++
      }
    }))
    const elapsed = now() - t0
    M.throughput = { runsPerS: (sessions * perSession) / (elapsed / 1000), elapsed, failures, runs: sessions * perSession }
  } finally {
    await Promise.all(all.map((s) => s.close()))
  }
}

async function measureCreate(LocalSession) {
  // Row 3: create + first Python run (the target), and close timed apart.
  const cycle = async (options) => {
    const t0 = now()
    const s = await LocalSession.create(options)
    let t1
    try {
      expectOk(await s.code.runCode('print(1)', 'python'), 'first run')
      t1 = now()
    } finally {
      await s.close()
    }
    return { createAndRun: t1 - t0, close: now() - t1 }
  }
  const loop = async (options, iterations, pauseMs) => {
    const runs = []
    const closes = []
    for (let i = 0; i < iterations; i++) {
      if (pauseMs) await sleep(pauseMs) // not timed
      const c = await cycle(options)
      runs.push(c.createAndRun)
      closes.push(c.close)
    }
    return { ...stats(runs), close: stats(closes) }
  }
  log('codebay: create + first run (+ close), poolSize 0')
  await cycle({ poolSize: 0 })
  M.createUnpooled = await loop({ poolSize: 0 }, n(15), 0)
  log('codebay: create + first run (+ close), pooled (300 ms pause between)')
  await cycle({}) // make sure the pool exists and is filling
  await sleep(1000)
  M.createPooled = await loop({}, n(15), 300)
}

async function measureOvershoot(LocalSession) {
  // Row 7: timeout overshoot.
  const runs = n(20, 3)
  log(`codebay: timeout overshoot, ${runs} × while True: pass, timeoutS 1`)
  const s = await LocalSession.create()
  try {
    expectOk(await s.code.runCode('1', 'python'), 'overshoot warm-up')
    const over = []
    const names = new Set()
    for (let i = 0; i < runs; i++) {
      const t0 = now()
      const r = await s.code.runCode('while True: pass', 'python', 1)
      over.push(now() - t0 - 1000)
      names.add(r.error?.name || (r.success ? 'success' : 'no error name'))
    }
    M.overshoot = { ...stats(over), names: [...names] }
  } finally {
    await s.close()
  }
}

/** The worst lateness of a 10 ms timer in this process while `busy` holds the CPUs. */
async function timerLag(ms) {
  const lags = []
  const until = now() + ms
  while (now() < until) {
    const t0 = now()
    await sleep(10)
    lags.push(now() - t0 - 10)
  }
  return stats(lags)
}

async function measureLag(LocalSession) {
  // Row 8: 8 busy background children, in a sandbox and (the baseline) on the host.
  const children = 8
  log(`codebay: event-loop lag with ${children} busy children, sandboxed and on the host`)
  M.lagIdle = await timerLag(2000)
  const host = Array.from({ length: children }, () => spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' }))
  try {
    await sleep(300)
    M.lagHost = await timerLag(3000)
  } finally {
    for (const c of host) c.kill('SIGKILL')
  }
  await sleep(500)
  const s = await LocalSession.create({ poolSize: 0 })
  try {
    const started = await s.code.runCode(
      `import subprocess\nkids = [subprocess.Popen(['sh', '-c', 'while :; do :; done']) for _ in range(${children})]\nlen(kids)`, 'python', 30)
    expectOk(started, 'busy children')
    await sleep(300)
    M.lagSandbox = await timerLag(3000)
  } finally {
    await s.close()
  }
}

async function measurePromises(LocalSession) {
  // Row 9: what following every promise to its run (late-output attribution) costs.
  const runs = n(12, 3)
  const loop = 'for (let i = 0; i < 1e5; i++) await null'
  log(`codebay: ${runs} × a run of 100,000 awaits, against the same loop in this process`)
  const s = await LocalSession.create({ poolSize: 0, prewarm: ['javascript'] })
  try {
    expectOk(await s.code.runCode(loop, 'javascript'), 'promise loop warm-up')
    const sandboxed = []
    const here = []
    const inProcess = new Function(`return (async () => { ${loop} })()`)
    for (let i = 0; i < runs; i++) {
      let t0 = now()
      expectOk(await s.code.runCode(loop, 'javascript'), 'promise loop')
      sandboxed.push(now() - t0)
      t0 = now()
      await inProcess()
      here.push(now() - t0)
    }
    M.promises = { sandboxed: stats(sandboxed), here: stats(here) }
  } finally {
    await s.close()
  }
}

/**
 * Row 11: a warm `print(1)` through RemoteSession over loopback (`serve()` in this
 * process), alternating in blocks with the same run on a LocalSession.
 */
async function measureRemote(codebay) {
  const apiKey = 'bench-key'
  const server = await codebay.serve({ listen: '127.0.0.1:0', apiKey, maxSessions: 2 })
  const remote = await codebay.RemoteSession.connect({ endpoint: server.url, apiKey })
  const local = await codebay.LocalSession.create({ poolSize: 0 })
  try {
    const run = (s) => async () => expectOk(await s.code.runCode('print(1)', 'python'), 'remote print(1)')
    for (const s of [remote, local]) await timeLoop(run(s), 200) // warm-up, not kept
    const samples = { remote: [], local: [] }
    for (let b = 0; b < 4; b++) {
      for (const [k, s] of [['remote', remote], ['local', local]]) {
        const t = await timeLoop(run(s), n(500))
        samples[k].push(t)
      }
    }
    const merge = (list) => ({ n: list.reduce((a, t) => a + t.n, 0), p50: list.reduce((a, t) => a + t.p50, 0) / list.length, p99: list.reduce((a, t) => a + t.p99, 0) / list.length })
    M.remoteWarm = merge(samples.remote)
    M.remoteLocal = merge(samples.local)
  } finally {
    await remote.close()
    await local.close()
    await server.close()
  }
}

async function measurePreload(LocalSession) {
  // Row 10: the first pandas run in a new session, with the `preload` option and without.
  const code = "import pandas as pd; pd.DataFrame({'a':[1]})"
  const kinds = { plain: {}, preloaded: { preload: { python: ['pandas'] } } }
  const iterations = n(8, 3)
  log(`codebay: ${iterations} × create() + first \`${code}\`, pooled, with and without preload (alternating)`)
  const samples = { plain: { first: [], create: [] }, preloaded: { first: [], create: [] } }
  const cycle = async (kind) => {
    const t0 = now()
    const s = await LocalSession.create(kinds[kind])
    const t1 = now()
    try {
      const r = expectOk(await s.code.runCode(code, 'python'), `first pandas run (${kind})`)
      if (!/a\s+0\s+1/.test(r.result)) throw new Error(`the DataFrame printed ${JSON.stringify(r.result)}`)
      return { create: t1 - t0, first: now() - t1 }
    } finally {
      await s.close()
    }
  }
  for (const kind of Object.keys(kinds)) await cycle(kind) // the shelves exist and fill
  for (let i = 0; i < iterations; i++) {
    for (const kind of Object.keys(kinds)) {
      await sleep(2000) // not timed: the pool builds (and preloads) the next sandbox
      const c = await cycle(kind)
      samples[kind].first.push(c.first)
      samples[kind].create.push(c.create)
    }
  }
  for (const kind of Object.keys(kinds)) {
    M[`pandas_${kind}`] = { ...stats(samples[kind].first), create: stats(samples[kind].create) }
  }
  await LocalSession.drainPool() // the preloaded sandboxes hold pandas: free them now
}

// ---------------------------------------------------------------------------
// Main

async function main() {
  let codebay = null
  let codebayError = null
  try {
    codebay = loadCodebay()
  } catch (e) {
    codebayError = `codebay addon not loadable (npm run build): ${e.message.split('\n')[0]}`
  }
  const dts = fs.readFileSync(path.join(rootDir, 'index.d.ts'), 'utf8')
  const poolApi = /poolSize/.test(dts)

  // Baselines and fresh-process measurements first, while no codebay sandbox (nor a
  // pool refilling in the background) shares the machine with them.
  for (const fn of [measureSpawns]) {
    try {
      await fn()
    } catch (e) {
      log(`${fn.name} failed: ${e.stack}`)
    }
  }
  await measureChildren(codebayError)
  const errors = {} // per section: why it could not be measured
  for (const [name, fn] of [['warm', measureWarm], ['throughput', measureThroughput], ['create', measureCreate], ['overshoot', measureOvershoot], ['lag', measureLag], ['promises', measurePromises], ['preload', measurePreload], ['remote', () => measureRemote(codebay)]]) {
    if (!codebay) {
      errors[name] = codebayError
      continue
    }
    try {
      await fn(codebay.LocalSession)
    } catch (e) {
      errors[name] = `codebay failed: ${String(e.message).split('\n')[0].slice(0, 200)}`
      log(e.stack)
    }
  }

  // ---- Row 1: warm latency, Python
  const py = M.pyWarm
  row('1', '**codebay** warm `runCode(\'print(1)\', \'python\')`, one session', py ? { ...latency(py), other: `${py.n} runs in ${WARM_BLOCKS} blocks alternating with the floor's` } : { other: `skipped: ${errors.warm}` })
  const pyStream = M.pyStream
  if (py && pyStream) {
    row('1', '**codebay** same, with `onStdout` set (the chunk streamed to a callback, then the result)', {
      ...latency(pyStream),
      other: `${pyStream.n} runs, in the same blocks`,
      target: target('≤ 1.3× the run without it', pyStream.p50 / py.p50, pyStream.p50 / py.p50 <= 1.3),
    })
  }
  row('1', '↳ floor: bare warm python, JSON lines over a pipe (bench/floor_worker.py)', {
    ...latency(M.pyFloor),
    target: py ? target('codebay ≤ 4× floor', py.p50 / M.pyFloor?.p50, py.p50 / M.pyFloor?.p50 <= 4) : '',
  })
  row('1', `↳ naive spawn \`python3 -I -S -c 'print(1)'\` (real interpreter, env {})`, {
    ...latency(M.pySpawn),
    other: M.pySpawn ? `${M.pySpawn.n} spawns` : 'not measured (see stderr)',
    target: py ? target('codebay ≥ 50× faster', M.pySpawn?.p50 / py.p50, M.pySpawn?.p50 / py.p50 >= 50) : '',
  })
  if (M.pyBwrap) {
    row('1', '↳ bwrap around that spawn (--unshare-all, ro /usr + python prefix, proc, dev, tmpfs)', {
      ...latency(M.pyBwrap),
      other: `${M.pyBwrap.n} spawns`,
      target: py ? `(no target) codebay ${x(M.pyBwrap.p50 / py.p50)} faster` : '',
    })
  } else {
    skipped('1', '↳ bwrap around that spawn', M.bwrapMissing)
  }
  if (M.pyodide && !M.pyodide.error) {
    const p = M.pyodide
    row('1', `↳ pyodide ${p.version} warm \`runPython('print(1)')\`, in-process (see row 2)`, {
      ...latency(p.warm),
      target: py ? target('codebay faster than pyodide (>1×)', p.warm.p50 / py.p50, p.warm.p50 / py.p50 > 1) : '',
    })
  } else {
    skipped('1', '↳ pyodide warm `runPython(\'print(1)\')`', M.pyodide?.error || 'not measured')
  }

  // ---- Row 1: warm latency, JavaScript
  const js = M.jsWarm
  row('1', '**codebay** warm `runCode(\'console.log(1)\', \'javascript\')`, one session', js ? { ...latency(js), other: `${js.n} runs in ${WARM_BLOCKS} blocks alternating with the floor's` } : { other: `skipped: ${errors.warm}` })
  row('1', '↳ floor: bare warm node, JSON lines over a pipe, vm.runInThisContext (bench/floor_worker.js)', {
    ...latency(M.jsFloor),
    target: js ? target('codebay ≤ 4× floor', js.p50 / M.jsFloor?.p50, js.p50 / M.jsFloor?.p50 <= 4) : '',
  })
  row('1', '↳ naive spawn `node -e \'console.log(1)\'` (env {})', {
    ...latency(M.jsSpawn),
    other: M.jsSpawn ? `${M.jsSpawn.n} spawns` : 'not measured (see stderr)',
    target: js ? target('codebay ≥ 150× faster', M.jsSpawn?.p50 / js.p50, M.jsSpawn?.p50 / js.p50 >= 150) : '',
  })
  if (M.jsBwrap) {
    row('1', '↳ bwrap around that spawn', {
      ...latency(M.jsBwrap),
      other: `${M.jsBwrap.n} spawns`,
      target: js ? `(no target) codebay ${x(M.jsBwrap.p50 / js.p50)} faster` : '',
    })
  } else {
    skipped('1', '↳ bwrap around that spawn', M.bwrapMissing)
  }

  // ---- Row 2: in-process alternatives
  if (M.pyodide && !M.pyodide.error) {
    const p = M.pyodide
    row('2', `pyodide ${p.version}: \`loadPyodide()\`, then \`runPython('print(1)')\` (batched stdout), fresh node process`, {
      ...latency(p.warm),
      other: `setup ${ms(p.setupMs)}, RSS +${mib(p.rssGrowth)}`,
      target: py ? `(no target) vs codebay Python: ${x(p.warm.p50 / py.p50)} codebay's p50` : '',
    })
  } else {
    skipped('2', 'pyodide', M.pyodide?.error || 'not measured')
  }
  if (M.ivm && !M.ivm.error) {
    const v = M.ivm
    row('2', `isolated-vm ${v.version}: new Isolate (128 MB) + createContext, then \`await context.eval('1')\` (no Node APIs), fresh node process`, {
      ...latency(v.warm),
      other: `setup ${ms(v.setupMs)}, RSS +${mib(v.rssGrowth)}; evalSync p50 ${ms(v.warmSync.p50)}, p99 ${ms(v.warmSync.p99)}`,
      target: js ? `(no target) codebay JS p50 is ${x(js.p50 / v.warm.p50)} isolated-vm's` : '',
    })
  } else {
    skipped('2', 'isolated-vm', M.ivm?.error || 'not measured')
  }

  // ---- Row 3: create + first run + close
  const poolNote = poolApi ? '' : ' (poolSize is not in index.d.ts: this build ignores it)'
  const spawnP50 = M.pySpawn?.p50
  if (M.createPooled) {
    const r = M.createPooled.p50 / spawnP50
    row('3', `**codebay** \`create()\` + first \`print(1)\`, pooled (default), 300 ms pause between iterations so the pool refills${poolNote}`, {
      ...latency(M.createPooled),
      other: `${M.createPooled.n} cycles; then \`close()\` p50 ${ms(M.createPooled.close.p50)}`,
      target: target('≤ 0.2× one naive python spawn', r, r <= 0.2),
    })
  } else {
    skipped('3', 'create + first run + close, pooled', errors.create)
  }
  if (M.createUnpooled) {
    const u = M.createUnpooled.p50 / spawnP50
    row('3', `**codebay** same, \`create({ poolSize: 0 })\`${poolNote}`, {
      ...latency(M.createUnpooled),
      other: `${M.createUnpooled.n} cycles; then \`close()\` p50 ${ms(M.createUnpooled.close.p50)}`,
      target: target('≤ 1.5× one naive python spawn', u, u <= 1.5),
    })
  } else {
    skipped('3', 'create + first run + close, `poolSize: 0`', errors.create)
  }
  row('3', '↳ one naive python spawn (as in row 1)', latency(M.pySpawn))

  // ---- Row 4: throughput
  if (M.throughput) {
    const t = M.throughput
    row('4', `**codebay** throughput: 8 concurrent sessions × ${t.runs / 8} runs of \`'1'\` (Python)`, {
      other: `${t.runsPerS.toFixed(0)} runs/s (${t.runs} runs in ${ms(t.elapsed)}${t.failures ? `, ${t.failures} failed` : ''}, ${os.cpus().length} cores)`,
      target: target('≥ 3000 runs/s', t.runsPerS, t.runsPerS >= 3000 && t.failures === 0, (v) => v.toFixed(0)),
    })
  } else {
    skipped('4', 'throughput', errors.throughput)
  }

  // ---- Row 5: idle memory
  const idleRow = (language, label, limitMiB) => {
    const m = M.idle?.[language]
    if (!m) return skipped('5', `idle PSS, ${label} session`, M.idle?.error || codebayError)
    const parts = m.parts.map((p) => `${p.what} ${mib(p.pss)}`).join(' + ')
    row('5', `**codebay** idle PSS, one session with a ${label} context started (\`poolSize: 0\`, alone in a fresh node process)`, {
      other: `${mib(m.total)} = ${parts}`,
      target: target(`≤ ${limitMiB} MiB`, m.total / MiB, m.total <= limitMiB * MiB, (v) => `${v.toFixed(1)} MiB`),
    })
  }
  idleRow('python', 'Python', 15)
  idleRow('javascript', 'JavaScript', 50)

  // ---- Row 6: flood
  if (M.flood && !M.flood.error) {
    const runs = M.flood.runs
    const first = runs[0]
    const names = [...new Set(runs.map((r) => r.error || (r.success ? 'success' : 'failure')))].join(', ')
    const cap = 2 * OUTPUT_CAP
    row('6', '**codebay** 50 MB stdout flood vs the 10 MiB output cap, in a fresh node process; target on the 1st run, runs 2–3 shown for reference', {
      other: `${names}, kept ${mib(first.keptBytes)}; 1st run ${ms(first.ms)}, node RSS +${mib(first.growth)}; runs 2–3: ${runs.slice(1).map((r) => `${ms(r.ms)}, +${mib(r.growth)}`).join('; ')}`,
      target: [
        target('RSS growth ≤ 20 MiB', first.growth / MiB, first.growth <= cap, (v) => `${v.toFixed(1)} MiB`),
        target('done ≤ 1 s', first.ms / 1000, first.ms <= 1000 && first.error === 'OutputLimitError', (v) => `${v.toFixed(2)} s`),
      ].join('; '),
    })
  } else {
    skipped('6', '50 MB stdout flood', M.flood?.error || codebayError)
  }

  // ---- Row 7: timeout overshoot
  if (M.overshoot) {
    const o = M.overshoot
    row('7', `**codebay** timeout overshoot: ${o.n} × \`while True: pass\`, timeoutS 1; time to result − 1 s`, {
      ...latency(o),
      other: `result: ${o.names.join(', ')}`,
      target: target('p99 ≤ 100 ms', o.p99, o.p99 <= 100 && o.names.every((nm) => nm === 'TimeoutError'), ms),
    })
  } else {
    skipped('7', 'timeout overshoot', errors.overshoot)
  }

  // ---- Row 8: event-loop lag under busy background children
  if (M.lagSandbox) {
    row('8', '**codebay** this process\'s 10 ms timer lateness while 8 `while :; do :; done` children of a sandbox run (2 cores)', {
      ...latency(M.lagSandbox),
      other: `${M.lagSandbox.n} timers; sandboxes weigh cpu.shares 128 together`,
      target: target('p99 ≤ 20 ms', M.lagSandbox.p99, M.lagSandbox.p99 <= 20, ms),
    })
    row('8', '↳ the same 8 children started on the host (no sandbox, no weight)', {
      ...latency(M.lagHost),
      other: `${M.lagHost.n} timers`,
      target: `(no target) sandboxed p99 is ${x(M.lagSandbox.p99 / M.lagHost.p99)} the host's`,
    })
    row('8', '↳ idle machine', { ...latency(M.lagIdle), other: `${M.lagIdle.n} timers` })
  } else {
    skipped('8', 'event-loop lag', errors.lag)
  }

  // ---- Row 9: promise-heavy JavaScript
  if (M.promises) {
    const { sandboxed, here } = M.promises
    row('9', '**codebay** a JavaScript run of `for (let i = 0; i < 1e5; i++) await null` (every promise followed to its run), whole runCode', {
      ...latency(sandboxed),
      other: `${sandboxed.n} runs`,
      target: `(no target) ${x(sandboxed.p50 / here.p50)} the loop without codebay`,
    })
    row('9', '↳ the same loop in this node process (no sandbox, no promise hooks)', { ...latency(here), other: `${here.n} runs` })
  } else {
    skipped('9', 'promise-heavy JavaScript', errors.promises)
  }

  // ---- Row 10: preloaded modules
  const plain = M.pandas_plain
  const preloaded = M.pandas_preloaded
  if (plain && preloaded) {
    const r = preloaded.p50 / plain.p50
    row('10', '**codebay** first `import pandas as pd; pd.DataFrame({\'a\':[1]})` in a new session, `create({ preload: { python: [\'pandas\'] } })` (pooled)', {
      ...latency(preloaded),
      other: `${preloaded.n} sessions, alternating with the row below; \`create()\` p50 ${ms(preloaded.create.p50)}`,
      target: target('≤ 0.1× without preload', r, r <= 0.1),
    })
    row('10', '↳ the same without `preload` (pooled)', {
      ...latency(plain),
      other: `${plain.n} sessions; \`create()\` p50 ${ms(plain.create.p50)}`,
    })
  } else {
    skipped('10', 'first pandas run with and without preload', errors.preload)
  }

  // ---- Row 11: RemoteSession over loopback
  if (M.remoteWarm) {
    row('11', '**codebay** warm `runCode(\'print(1)\', \'python\')` through `RemoteSession`, `serve()` on loopback in this process', {
      ...latency(M.remoteWarm),
      other: `${M.remoteWarm.n} runs in 4 blocks alternating with the row below (p50, p99: means of the blocks')`,
      target: target('p50 ≤ 1 ms', M.remoteWarm.p50, M.remoteWarm.p50 <= 1, ms),
    })
    row('11', '↳ the same on a LocalSession', { ...latency(M.remoteLocal), other: `${M.remoteLocal.n} runs` })
  } else {
    skipped('11', 'RemoteSession warm print(1)', errors.remote)
  }

  // ---- Print
  const esc = (s) => String(s).replace(/\|/g, '\\|')
  const lines = [
    '| # | Measurement | p50 | p99 | Other | Target (from this run\'s ratios) |',
    '|---|---|---:|---:|---|---|',
    ...rows.map((r) => `| ${r.id} | ${esc(r.what)} | ${esc(r.p50)} | ${esc(r.p99)} | ${esc(r.other)} | ${esc(r.target)} |`),
  ]
  const met = verdicts.filter(Boolean).length
  const kernel = os.release()
  const cpu = os.cpus()[0]?.model?.trim() || 'unknown cpu'
  process.stdout.write([
    `codebay benchmark (issues 4, 7, 8, 9), ${new Date().toISOString()}, commit ${gitRev()}`,
    `machine: nproc ${os.availableParallelism?.() ?? os.cpus().length} (${cpu}), Linux ${kernel}, node ${process.version}, python ${pyInfo.version} (${realPython}), bwrap ${bwrap ? 'yes' : 'no'}`,
    '',
    ...lines,
    '',
    `targets met: ${met}/${verdicts.length}; whole bench ${((now() - startedAt) / 1000).toFixed(1)} s`,
    '',
  ].join('\n'))
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`bench failed: ${e?.stack || e}\n`)
    process.exit(1)
  },
)
