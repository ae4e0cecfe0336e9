import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
export const codebay = require('../index.js')

/** A JavaScript session that records its calls and answers with `answer(args)`. */
export function fakeSession(answer = () => ({ success: true, data: 'ok', errorMessage: '', requestId: 'req-1' })) {
  const session = {
    calls: [],
    async callMcpTool(toolName, args, autoGenSession) {
      this.calls.push({ self: this, toolName, args, autoGenSession, argc: arguments.length })
      return answer(args)
    },
    getAPIKey: () => 'key',
    getSessionId: () => 'session-1',
  }
  return session
}

/** A backend answer as a remote session would send it (DESIGN §2). */
export function backendJson(fields) {
  return JSON.stringify({ stdout: [], stderr: [], result: [], executionError: '', ...fields })
}

// ------------------------------------------------------------ host-side views of a LocalSession
import fs from 'node:fs'
import { spawn } from 'node:child_process'

/** The session's cgroup dirs on the host (`/sys/fs/cgroup/<hierarchy>/codebay/<sessionId>`). */
export function cgroupDirs(sessionId) {
  const dirs = []
  const candidates = [`/sys/fs/cgroup/codebay/${sessionId}`]
  for (const h of fs.readdirSync('/sys/fs/cgroup')) candidates.push(`/sys/fs/cgroup/${h}/codebay/${sessionId}`)
  for (const d of candidates) if (fs.existsSync(d)) dirs.push(d)
  return dirs
}

const MIB = 2 ** 20

/**
 * The memory a session's files may hold when full, as the README gives it: the workspace,
 * /tmp, 64 MiB of /dev/shm and 64 MiB of System V segments, and 2 KiB per inode (one
 * per 16 KiB of each tmpfs, at least 256). The session's memory limit is memoryBytes
 * plus this.
 */
export function fileSpaceBytes({ workspaceBytes = 512 * MIB, tmpBytes = 256 * MIB } = {}) {
  const tmpfs = (bytes) => bytes + Math.max(256, Math.floor(bytes / (16 * 1024))) * 2048
  return tmpfs(workspaceBytes) + tmpfs(tmpBytes) + tmpfs(64 * MIB) + 64 * MIB
}

/** The session's memory limit as the host's cgroup files hold it. */
export function hostMemoryLimit(sessionId) {
  for (const dir of cgroupDirs(sessionId)) {
    for (const file of ['memory.max', 'memory.limit_in_bytes']) {
      if (fs.existsSync(`${dir}/${file}`)) return Number(fs.readFileSync(`${dir}/${file}`, 'utf8'))
    }
  }
  return null
}

/** Host pids of every process in the session's cgroups (including child cgroups). */
export function sessionPids(sessionId) {
  const pids = new Set()
  const walk = (d) => {
    try {
      for (const l of fs.readFileSync(`${d}/cgroup.procs`, 'utf8').split('\n')) if (l.trim()) pids.add(Number(l))
      for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(`${d}/${e.name}`)
    } catch { /* vanished */ }
  }
  for (const d of cgroupDirs(sessionId)) walk(d)
  return [...pids].sort((a, b) => a - b)
}

/** Parsed /proc/<pid>/status of a host process, or null if it is gone. */
export function hostStatus(pid) {
  try {
    const out = {}
    for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
      const i = line.indexOf(':')
      if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim()
    }
    return out
  } catch { return null }
}

/** True while a host process exists and is not a zombie. */
export function hostAlive(pid) {
  const st = hostStatus(pid)
  return st !== null && !/^[ZX]/.test(st.State || '')
}

/** Every host pid (numbers of /proc). */
export function hostPids() {
  return fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number)
}

/**
 * The host processes below `pid` (children, theirs, ...), each with its `comm` and the
 * CPU it has used so far (utime + stime, in clock ticks).
 */
export function descendants(pid) {
  const procs = new Map()
  for (const p of hostPids()) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      procs.set(p, { pid: p, ppid: Number(fields[1]), comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), ticks: Number(fields[11]) + Number(fields[12]) })
    } catch { /* gone */ }
  }
  const below = (p) => { for (let q = procs.get(p)?.ppid; q > 1; q = procs.get(q)?.ppid) if (q === pid) return true; return false }
  return [...procs.values()].filter((p) => below(p.pid))
}

/** True when a host process is pid 1 of its innermost pid namespace. */
export function isNamespaceInit(pid) {
  return hostStatus(pid)?.NSpid?.split(/\s+/).at(-1) === '1'
}

/** The host pid of the session's init, or undefined. */
export function initPid(sessionId) {
  return sessionPids(sessionId).find(isNamespaceInit)
}

/** The session's helper (supervisor) on the host: the parent of the session's init. */
export function helperPid(sessionId) {
  const init = initPid(sessionId)
  return init === undefined ? null : Number(hostStatus(init).PPid)
}

/** Milliseconds a host `true` takes to spawn and exit (rejects after `limitMs`). */
export function hostSpawnMs(limitMs = 5000) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now()
    const c = spawn('true', { stdio: 'ignore' })
    const timer = setTimeout(() => { c.kill('SIGKILL'); reject(new Error(`host spawn of true took over ${limitMs} ms`)) }, limitMs)
    c.on('error', reject)
    c.on('exit', () => { clearTimeout(timer); resolve(Date.now() - t0) })
  })
}

/**
 * Runs `fn` while watching the host: a 100 ms timer's worst lateness and a host spawn
 * every 500 ms. Returns { value, maxLagMs, spawns, maxSpawnMs }.
 */
export async function watchHost(fn) {
  let maxLagMs = 0
  let expected = Date.now() + 100
  const timer = setInterval(() => {
    const now = Date.now()
    maxLagMs = Math.max(maxLagMs, now - expected)
    expected = now + 100
  }, 100)
  const spawnTimes = []
  let stop = false
  const spawner = (async () => {
    while (!stop) {
      spawnTimes.push(await hostSpawnMs(5000))
      await new Promise((r) => setTimeout(r, 500))
    }
  })()
  try {
    const value = await fn()
    return { value, maxLagMs, spawns: spawnTimes.length, maxSpawnMs: Math.max(0, ...spawnTimes) }
  } finally {
    stop = true
    clearInterval(timer)
    await spawner
  }
}

/** Polls `check` every 50 ms for up to `ms`; its last answer. */
export async function waitFor(check, ms) {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (check()) return true
    await new Promise((r) => setTimeout(r, 50))
  }
  return check()
}

// ------------------------------------------------------------ a codebay serve in this process
/** Starts `serve()` on a free loopback port with a key of its own. */
export async function startServer(options = {}) {
  const apiKey = options.apiKey ?? `test-key-${Math.random().toString(16).slice(2)}`
  const handle = await codebay.serve({ listen: '127.0.0.1:0', ...options, apiKey })
  return { url: handle.url, apiKey, handle, close: () => handle.close() }
}
