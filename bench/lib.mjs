// Shared helpers of the benchmark: timing, statistics, process spawning, PSS.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

export const benchDir = path.dirname(fileURLToPath(import.meta.url))
export const rootDir = path.resolve(benchDir, '..')
export const require = createRequire(path.join(rootDir, 'package.json'))

/** Loads the codebay addon of this checkout. */
export function loadCodebay() {
  return require(path.join(rootDir, 'index.js'))
}

/** Monotonic now in milliseconds (float). */
export function now() {
  return Number(process.hrtime.bigint()) / 1e6
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export function log(...args) {
  process.stderr.write(`[bench] ${args.join(' ')}\n`)
}

/** Scales an iteration count by BENCH_SCALE (e.g. 0.1 for a quick smoke run). */
export function n(count, min = 5) {
  const scale = Number(process.env.BENCH_SCALE || 1)
  return Math.max(min, Math.round(count * (Number.isFinite(scale) && scale > 0 ? scale : 1)))
}

/** Nearest-rank percentile of an array of numbers. */
export function percentile(values, p) {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]
}

export function stats(samples) {
  return {
    n: samples.length,
    p50: percentile(samples, 50),
    p99: percentile(samples, 99),
    min: Math.min(...samples),
    max: Math.max(...samples),
    mean: samples.reduce((a, b) => a + b, 0) / samples.length,
  }
}

/** Times `iterations` sequential calls of the async `fn`, after `warmup` untimed ones. */
export async function timeLoop(fn, iterations, warmup = 0) {
  for (let i = 0; i < warmup; i++) await fn(i)
  const samples = new Array(iterations)
  for (let i = 0; i < iterations; i++) {
    const t0 = now()
    await fn(i)
    samples[i] = now() - t0
  }
  return stats(samples)
}

/**
 * Spawns `cmd args` once, waits for it to exit, and checks it printed `expect`.
 * This is what a Node agent that spawns an interpreter per run pays.
 */
export function spawnOnce(cmd, args, { env = {}, expect = '1' } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (d) => { out += d })
    child.stderr.setEncoding('utf8').on('data', (d) => { err += d })
    child.on('error', reject)
    child.on('close', (code, signal) => {
      if (code !== 0 || out.trim() !== expect) {
        reject(new Error(`${path.basename(cmd)} exited ${code ?? signal}, stdout ${JSON.stringify(out.slice(0, 200))}, stderr ${JSON.stringify(err.slice(-300))}`))
      } else {
        resolve()
      }
    })
  })
}

/** A long-lived child answering one JSON line per JSON line (the floor workers). */
export class LineWorker {
  constructor(cmd, args, env = {}) {
    this.child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'inherit'] })
    this.pending = []
    this.buf = ''
    this.child.stdout.setEncoding('utf8').on('data', (d) => {
      this.buf += d
      let i
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i)
        this.buf = this.buf.slice(i + 1)
        const p = this.pending.shift()
        if (p) p.resolve(JSON.parse(line))
      }
    })
    const fail = (e) => { for (const p of this.pending.splice(0)) p.reject(e) }
    this.child.on('error', fail)
    this.child.on('exit', (code, signal) => fail(new Error(`worker exited ${code ?? signal}`)))
  }

  request(obj) {
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject })
      this.child.stdin.write(JSON.stringify(obj) + '\n')
    })
  }

  close() {
    this.child.stdin.end()
    this.child.kill()
  }
}

/** The command and arguments of a bwrap sandbox around `argv` (a careful user's sandbox). */
export function bwrapArgv(argv, extraRoBinds = []) {
  const args = ['--unshare-all', '--die-with-parent', '--ro-bind', '/usr', '/usr']
  for (const [link, target] of [['/bin', 'usr/bin'], ['/lib', 'usr/lib'], ['/lib64', 'usr/lib64'], ['/sbin', 'usr/sbin']]) {
    if (fs.existsSync(`/usr/${target.slice(4)}`)) args.push('--symlink', target, link)
  }
  for (const dir of extraRoBinds) args.push('--ro-bind', dir, dir)
  args.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp', '--', ...argv)
  return args
}

/** Finds an executable on PATH, or null. */
export function which(name) {
  for (const dir of (process.env.PATH || '').split(':')) {
    if (!dir) continue
    const p = path.join(dir, name)
    try {
      fs.accessSync(p, fs.constants.X_OK)
      return p
    } catch {}
  }
  return null
}

// ---------------------------------------------------------------------------
// Memory

function readProc(pid, file) {
  try {
    return fs.readFileSync(`/proc/${pid}/${file}`, 'utf8')
  } catch {
    return null
  }
}

/** PSS of a process in bytes (from smaps_rollup), or null if it is gone. */
export function pssBytes(pid) {
  const text = readProc(pid, 'smaps_rollup')
  if (!text) return null
  const m = /^Pss:\s+(\d+) kB/m.exec(text)
  return m ? Number(m[1]) * 1024 : null
}

export function ppidOf(pid) {
  const stat = readProc(pid, 'stat')
  if (!stat) return null
  // comm may contain spaces and parentheses: fields after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(rest[1])
}

export function commOf(pid) {
  return (readProc(pid, 'comm') || '').trim()
}

function describe(pid) {
  const cmdline = (readProc(pid, 'cmdline') || '').split('\0').filter(Boolean)
  const comm = commOf(pid)
  const joined = cmdline.join(' ')
  if (/driver\.py/.test(joined)) return 'python'
  if (/driver\.js/.test(joined)) return 'node'
  return comm || path.basename(cmdline[0] || '?')
}

function cgroupProcs(dir, into) {
  let entries
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true })
  } catch {
    return
  }
  try {
    for (const line of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n')) {
      if (line.trim()) into.add(Number(line))
    }
  } catch {}
  for (const e of entries) if (e.isDirectory()) cgroupProcs(path.join(dir, e.name), into)
}

/**
 * Every process of a session: those of /sys/fs/cgroup/<any controller>/codebay/<id>
 * (and its sub-cgroups), plus the helper, the `codebay-sandbox` child of this Node
 * process that is the parent of the sandbox's top process.
 */
export function sessionProcesses(sessionId) {
  const pids = new Set()
  let controllers = []
  try {
    controllers = fs.readdirSync('/sys/fs/cgroup')
  } catch {}
  for (const c of controllers) cgroupProcs(path.join('/sys/fs/cgroup', c, 'codebay', sessionId), pids)
  // cgroup v2 unified mounted directly at /sys/fs/cgroup
  cgroupProcs(path.join('/sys/fs/cgroup', 'codebay', sessionId), pids)
  const helpers = new Set()
  for (const pid of pids) {
    const ppid = ppidOf(pid)
    if (ppid && !pids.has(ppid) && commOf(ppid) === 'codebay-sandbox' && ppidOf(ppid) === process.pid) helpers.add(ppid)
  }
  return { sandbox: [...pids], helpers: [...helpers] }
}

/** Summed PSS of a session's processes, with a per-process breakdown. */
export function sessionPss(sessionId) {
  const { sandbox, helpers } = sessionProcesses(sessionId)
  const parts = []
  for (const pid of [...helpers, ...sandbox]) {
    const pss = pssBytes(pid)
    if (pss == null) continue
    parts.push({ pid, what: helpers.includes(pid) ? 'helper' : describe(pid), pss })
  }
  return { total: parts.reduce((a, p) => a + p.pss, 0), parts, helpers: helpers.length }
}

export const MiB = 1024 * 1024
