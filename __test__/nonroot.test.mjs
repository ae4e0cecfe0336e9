// codebay as an ordinary user, on this machine's cgroup v1 layout: users made for the
// test (`useradd`), parents per controller made and chowned as an administrator would,
// sessions created by a script run with `runuser`. What the script reports is checked
// against what the host shows: process owners, cgroup directories, leftovers.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
/** A user with subordinate ids (the code runs as one of them) and one without. */
const SUB = 'codebay-nr-sub'
const OWN = 'codebay-nr-own'
const PARENT = (user) => `/${user}`
const CONTROLLERS = ['memory', 'pids', 'cpu', 'unified']
let pkg // the package as the users can read it

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts })
  if (r.status !== 0 && !opts.allowFail) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`)
  return r
}

function uidOf(user) {
  return Number(sh('id', ['-u', user]).stdout.trim())
}

function ensureUser(user, withSubIds) {
  if (sh('id', ['-u', user], { allowFail: true }).status !== 0) {
    sh('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', user])
  }
  for (const file of ['/etc/subuid', '/etc/subgid']) {
    const lines = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : []
    const kept = lines.filter((l) => l.split(':')[0] !== user)
    // A range far from any other user's: 64 ids per user are plenty for the test.
    if (withSubIds) kept.push(`${user}:${3_000_000 + (uidOf(user) % 1000) * 65_536}:65536`)
    fs.writeFileSync(file, kept.map((l) => l + '\n').join(''))
  }
}

function cgroupRoot(controller) {
  return `/sys/fs/cgroup/${controller}`
}

/** What an administrator does: a parent per controller, given to the user. */
function delegateParents(user) {
  for (const c of CONTROLLERS) {
    const dir = cgroupRoot(c) + PARENT(user)
    if (!fs.existsSync(cgroupRoot(c))) continue
    fs.mkdirSync(dir, { recursive: true })
    sh('chown', ['-R', user, dir])
  }
}

function removeParents(user) {
  for (const c of CONTROLLERS) {
    const dir = cgroupRoot(c) + PARENT(user)
    if (fs.existsSync(path.join(dir, 'codebay'))) fs.rmdirSync(path.join(dir, 'codebay'))
    if (fs.existsSync(dir)) fs.rmdirSync(dir)
  }
}

before(() => {
  ensureUser(SUB, true)
  ensureUser(OWN, false)
  // The checkout may be where other users cannot read (a home directory): the package's
  // runtime files go where they can. Not under /tmp: a sandbox mounts its own /tmp.
  pkg = fs.mkdtempSync('/var/tmp/codebay-nonroot-')
  for (const f of ['index.js', 'codebay.linux-x64-gnu.node', 'codebay-sandbox', 'runtimes']) {
    fs.cpSync(path.join(ROOT, f), path.join(pkg, f), { recursive: true })
  }
  fs.chmodSync(pkg, 0o755)
  delegateParents(SUB)
  delegateParents(OWN)
})

after(() => {
  fs.rmSync(pkg, { recursive: true, force: true })
  removeParents(SUB)
  removeParents(OWN)
})

/**
 * Runs `body` (the text of an async function taking the `codebay` module) as `user`
 * in a fresh Node, with `env`; resolves with what it returns (as JSON).
 */
function asUser(user, body, env = {}, wrap = []) {
  const script = path.join(pkg, `script-${process.hrtime.bigint()}.cjs`)
  fs.writeFileSync(script, `
const codebay = require(${JSON.stringify(path.join(pkg, 'index.js'))})
;(${body})(codebay).then((v) => { process.stdout.write('\\nRESULT ' + JSON.stringify(v) + '\\n') },
  (e) => { process.stdout.write('\\nRESULT ' + JSON.stringify({ thrown: { code: e.code, message: e.message } }) + '\\n') })
`)
  fs.chmodSync(script, 0o644)
  const vars = Object.entries({ PATH: process.env.PATH, HOME: '/var/tmp', ...env }).map(([k, v]) => `${k}=${v}`)
  const r = spawnSync('runuser', ['-u', user, '--', ...wrap, 'env', '-i', ...vars, process.execPath, script], { encoding: 'utf8', cwd: '/var/tmp', timeout: 120_000 })
  fs.rmSync(script)
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '))
  assert.ok(line, `no result from the script (status ${r.status}):\n${r.stdout}\n${r.stderr}`)
  return JSON.parse(line.slice(7))
}

/** Processes on the host owned by `uid` (the test's users own nothing else). */
function processesOf(uid) {
  return fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
    try { return fs.readFileSync(`/proc/${p}/status`, 'utf8').match(/^Uid:\s+(\d+)/m)[1] === String(uid) } catch { return false }
  })
}

/** The session directories left under the user's parents. */
function sessionDirs(user) {
  return CONTROLLERS.flatMap((c) => {
    const dir = cgroupRoot(c) + PARENT(user) + '/codebay'
    return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => n.startsWith('cb-')).map((n) => `${dir}/${n}`) : []
  })
}

// The script reads the host's view of its own session while it is open: the owners of
// its interpreters (from /proc, through the session's cgroup on the host).
const RUNS = `async (codebay, options) => {
  const s = await codebay.LocalSession.create(options)
  const id = s.getSessionId()
  const out = { id }
  const run = async (code, language, t = 30) => { const r = await s.code.runCode(code, language, t); return { success: r.success, result: r.result, stdout: r.logs?.stdout, error: r.error } }
  out.python = await run('print(6 * 7)', 'python')
  out.javascript = await run('6 * 7', 'javascript')
  const fs = require('fs')
  const procs = (c) => { try { return fs.readdirSync(c).filter((n) => /^i-/.test(n)).flatMap((n) => fs.readFileSync(c + '/' + n + '/cgroup.procs', 'utf8').split('\\n').filter(Boolean)) } catch { return [] } }
  const base = '/sys/fs/cgroup/pids' + (options.cgroupParent ?? '') + '/codebay/' + id
  out.hostUids = [...new Set(procs(base).map((p) => { try { return fs.readFileSync('/proc/' + p + '/status', 'utf8').match(/^Uid:\\s+(\\d+)/m)[1] } catch { return 'gone' } }))]
  out.cgroupDirs = fs.existsSync(base)
  out.memoryBomb = await run('x = bytearray(OPTIONS_BOMB)\\nlen(x)', 'python', 60)
  out.afterBomb = await run('print("alive")', 'python')
  out.twoBig = await run('import subprocess, sys\\nps = [subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(HALF); time.sleep(2)"]) for _ in range(2)]\\nprint([p.wait() for p in ps])', 'python', 60)
  out.forkBomb = await run('import os, time\\nfor i in range(400):\\n    if os.fork() == 0:\\n        time.sleep(30)\\n        os._exit(0)', 'python')
  out.afterFork = await run('1 + 1', 'javascript')
  await s.close()
  return out
}`

function runs(user, options, bomb, half) {
  const body = RUNS.replace('OPTIONS_BOMB', String(bomb)).replace('HALF', String(half)).replace('async (codebay, options) =>', `async (codebay, options = ${JSON.stringify(options)}) =>`)
  return asUser(user, body)
}

test('an ordinary user with a chowned v1 parent: runs, limits enforced, the code is a host id of its own, close leaves nothing', async () => {
  const uid = uidOf(SUB)
  // Default limits: 512 MiB for processes plus what the files may hold (1512 MiB in all).
  const out = runs(SUB, { poolSize: 0, cgroupParent: PARENT(SUB) }, 3 * 2 ** 30, 900 * 2 ** 20)
  assert.equal(out.thrown, undefined, JSON.stringify(out.thrown))
  assert.deepEqual(out.python.stdout, ['42\n'])
  assert.equal(out.javascript.result, '42')
  assert.ok(out.cgroupDirs, 'the session cgroups are under the user\'s parent')
  // Judged from the host: the interpreters run as a subordinate id, not as the user.
  const [start] = fs.readFileSync('/etc/subuid', 'utf8').split('\n').find((l) => l.startsWith(SUB + ':')).split(':').slice(1).map(Number)
  assert.ok(out.hostUids.length >= 1 && out.hostUids.every((u) => Number(u) >= start && Number(u) < start + 65536), `host uids ${out.hostUids}`)
  assert.equal(out.memoryBomb.error?.name, 'MemoryError', JSON.stringify(out.memoryBomb))
  assert.deepEqual(out.afterBomb.stdout, ['alive\n'])
  assert.equal(out.forkBomb.error?.name, 'ProcessLimitError', JSON.stringify(out.forkBomb))
  assert.equal(out.afterFork.result, '2')
  // The limit is the session's: two processes of 900 MiB do not both fit in 1512 MiB.
  assert.notDeepEqual(out.twoBig.stdout, ['[0, 0]\n'], JSON.stringify(out.twoBig))
  // Close leaves nothing: no process of the user or of its subordinate ids, no cgroup.
  assert.deepEqual(processesOf(uid), [])
  for (const u of out.hostUids) assert.deepEqual(processesOf(Number(u)), [], `processes of ${u} left`)
  assert.deepEqual(sessionDirs(SUB), [])
})

test('the same through CODEBAY_CGROUP_PARENT; without any parent, ERR_CODEBAY_NO_CGROUP names the ways to get one', async () => {
  const viaEnv = asUser(SUB, `async (codebay) => { const s = await codebay.LocalSession.create({ poolSize: 0 }); const r = await s.code.runCode('print(1)', 'python'); await s.close(); return r.logs.stdout }`, { CODEBAY_CGROUP_PARENT: PARENT(SUB) })
  assert.deepEqual(viaEnv, ['1\n'])
  const refused = asUser(SUB, `async (codebay) => codebay.LocalSession.create({ poolSize: 0 })`)
  assert.equal(refused.thrown?.code, 'ERR_CODEBAY_NO_CGROUP', JSON.stringify(refused))
  for (const words of ['not root', 'systemd-run --user --scope -p Delegate=yes', 'cgroupParent', 'CODEBAY_CGROUP_PARENT', "resourceLimits: 'rlimits'", 'chown']) {
    assert.ok(refused.thrown.message.includes(words), `the message lacks ${words}: ${refused.thrown.message}`)
  }
  // A parent that is not the user's is refused the same way, naming it.
  const notTheirs = asUser(SUB, `async (codebay) => codebay.LocalSession.create({ poolSize: 0, cgroupParent: '/${OWN}' })`)
  assert.equal(notTheirs.thrown?.code, 'ERR_CODEBAY_NO_CGROUP')
  assert.match(notTheirs.thrown.message, new RegExp(`cgroupParent /${OWN} is not a directory it may write`))
  // Under no_new_privs the setuid map tools cannot work: refused by name, not mapped wrongly.
  const nnp = asUser(SUB, `async (codebay) => codebay.LocalSession.create({ poolSize: 0, cgroupParent: '${PARENT(SUB)}' })`, {}, ['setpriv', '--no-new-privs'])
  assert.equal(nnp.thrown?.code, 'ERR_CODEBAY_SANDBOX_FAILED', JSON.stringify(nnp))
  assert.match(nnp.thrown.message, /\(id_map\): .*no_new_privs/)
  assert.deepEqual(sessionDirs(SUB), [])
})

test('resourceLimits: \'rlimits\' runs without any cgroup, with the README\'s weaker guarantees', async () => {
  const uid = uidOf(SUB)
  const memoryBytes = 256 * 2 ** 20
  const out = runs(SUB, { poolSize: 0, resourceLimits: 'rlimits', memoryBytes, maxProcesses: 32 }, 400 * 2 ** 20, 200 * 2 ** 20)
  assert.equal(out.thrown, undefined, JSON.stringify(out.thrown))
  assert.deepEqual(out.python.stdout, ['42\n'])
  assert.equal(out.javascript.result, '42')
  assert.equal(out.cgroupDirs, false, 'no cgroup is made')
  // Per process: an allocation past memoryBytes fails in the process (RLIMIT_DATA).
  assert.equal(out.memoryBomb.error?.name, 'MemoryError', JSON.stringify(out.memoryBomb))
  assert.deepEqual(out.afterBomb.stdout, ['alive\n'])
  // Processes: capped for the code's user in the sandbox (RLIMIT_NPROC); the fork
  // fails in the code, which sees it as its own error.
  assert.equal(out.forkBomb.error?.name, 'BlockingIOError', JSON.stringify(out.forkBomb))
  assert.equal(out.afterFork.result, '2')
  // No session-wide memory cap: two processes of 200 MiB each (400 MiB > memoryBytes).
  assert.deepEqual(out.twoBig.stdout, ['[0, 0]\n'], JSON.stringify(out.twoBig))
  assert.deepEqual(processesOf(uid), [])
  for (const u of out.hostUids) assert.deepEqual(processesOf(Number(u)), [])
})

test('a user without subordinate ids: the code runs as the user\'s own id', async () => {
  const uid = uidOf(OWN)
  const out = runs(OWN, { poolSize: 0, cgroupParent: PARENT(OWN) }, 3 * 2 ** 30, 400 * 2 ** 20)
  assert.equal(out.thrown, undefined, JSON.stringify(out.thrown))
  assert.deepEqual(out.python.stdout, ['42\n'])
  assert.deepEqual(out.hostUids, [String(uid)])
  assert.equal(out.memoryBomb.error?.name, 'MemoryError')
  assert.equal(out.forkBomb.error?.name, 'ProcessLimitError')
  assert.deepEqual(processesOf(uid), [])
  assert.deepEqual(sessionDirs(OWN), [])
})

test('root without CAP_SYS_ADMIN (a container\'s default capabilities) builds a session', async () => {
  // The session's id maps are opened as the namespace's owner: root needs no CAP_SYS_ADMIN.
  const script = path.join(pkg, 'capless.cjs')
  fs.writeFileSync(script, `
const codebay = require(${JSON.stringify(path.join(pkg, 'index.js'))})
const capEff = BigInt('0x' + require('fs').readFileSync('/proc/self/status', 'utf8').match(/^CapEff:\\s+(\\w+)/m)[1])
codebay.LocalSession.create({ poolSize: 0, prewarm: [] }).then(async (s) => {
  const r = await s.code.runCode('6 * 7', 'javascript')
  await s.close()
  console.log(JSON.stringify({ sysAdmin: (capEff >> 21n & 1n) === 1n, result: r.result }))
}, (e) => console.log(JSON.stringify({ thrown: e.message })))
`)
  // Without CAP_SYS_ADMIN the helper cannot copy mounts: init binds the interpreters
  // itself, as the session's host id, which cannot enter root's 0700 home (pyenv's
  // Python): the system PATH's python3, if any, is the one used.
  const env = { PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin` }
  const r = spawnSync('setpriv', ['--bounding-set=-sys_admin', '--', process.execPath, script], { encoding: 'utf8', timeout: 60_000, env })
  fs.rmSync(script)
  const out = JSON.parse(r.stdout.trim().split('\n').pop())
  assert.deepEqual(out, { sysAdmin: false, result: '42' }, r.stderr)
})
