// Hostile code against a LocalSession, judged from the host's side: canaries the test
// plants on the host must stay unread, listeners it opens must see no connection, host
// files and processes must be unchanged, and nothing of a session may outlive close().
//
// Numbers are x86_64 syscall numbers; errnos are Linux's.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import dgram from 'node:dgram'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { spawn, spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import {
  codebay, cgroupDirs, sessionPids, hostStatus, hostAlive, hostPids, helperPid, hostSpawnMs, initPid, isNamespaceInit, watchHost, fileSpaceBytes, hostMemoryLimit,
} from './helpers.mjs'

const { LocalSession } = codebay
const MiB = 1024 * 1024
const EPERM = 1
const ENOSYS = 38

// A secret the host holds in files and in its own environment. The helper inherits the
// test's environment, so the variable is one fork away from the sandbox.
const SECRET = `codebay-secret-${crypto.randomBytes(12).toString('hex')}`
const ENV_NAME = `CODEBAY_CANARY_${crypto.randomBytes(4).toString('hex').toUpperCase()}`
process.env[ENV_NAME] = SECRET

const TAG = crypto.randomBytes(6).toString('hex')
const CANARY_DIRS = ['/root', '/tmp', '/home', '/work', '/var/tmp', '/var']
const canaries = CANARY_DIRS.map((d) => `${d}/codebay-canary-${TAG}`)
const hostSockPath = `/tmp/codebay-canary-${TAG}.sock`

let main // the session most cases share
let hostSleep // a host process the sandbox must not be able to signal
const cleanups = []

/** The host Python's installation prefix (past pyenv's shim). */
function hostPythonPrefix() {
  return spawnSyncPy('import sys; print(sys.base_prefix)').trim()
}

test('a Python installed outside /usr is shown at /opt/python: tracebacks and module paths name no host path', async () => {
  const hostPrefix = hostPythonPrefix()
  assert.ok(hostPrefix && !hostPrefix.startsWith('/usr'), `this check needs a host Python outside /usr (CI's is pyenv's), not ${hostPrefix}`)
  const r = await run(main, 'import json\njson.loads("{")')
  assert.equal(r.error?.name, 'JSONDecodeError')
  assert.match(r.error.traceback, /File "\/opt\/python\/lib\/python3\.\d+\/json\/decoder\.py", line \d+/)
  const { json } = await pyJson(main, 'import sys, os, json, email\nprint(json.dumps({"path": sys.path, "exe": sys.executable, "prefix": sys.prefix, "file": email.__file__, "env": dict(os.environ)}))')
  assert.equal(json.prefix, '/opt/python')
  assert.match(json.exe, /^\/opt\/python\/bin\/python3/)
  const seen = JSON.stringify([r.error.traceback, json])
  assert.ok(!seen.includes(hostPrefix), `the host prefix ${hostPrefix} is visible: ${seen}`)
  assert.ok(!seen.includes(os.homedir()), `the host home ${os.homedir()} is visible`)
  // It still runs as a child of the code, with the libraries it was built against.
  const child = await run(main, 'import subprocess, sys\nsubprocess.run([sys.executable, "-c", "import ssl, sqlite3; print(7)"], capture_output=True, text=True).stdout')
  assert.equal(child.result, "'7\\n'", JSON.stringify(child))
})

/** Runs Python on the host (the test's own), returns stdout. */
function spawnSyncPy(code) {
  return spawnSync('python3', ['-c', code], { encoding: 'utf8' }).stdout
}

const sha = (p) => crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex')

/** Runs code and returns the result, with `out` = stdout joined. */
async function run(session, code, language = 'python', timeoutS = 20) {
  const r = await session.code.runCode(code, language, timeoutS)
  r.out = (r.logs?.stdout ?? []).join('')
  r.err = (r.logs?.stderr ?? []).join('')
  return r
}

/** Runs Python that prints one JSON document last; returns it (fails the test otherwise). */
async function pyJson(session, code, timeoutS = 20) {
  const r = await run(session, code, 'python', timeoutS)
  assert.equal(r.success, true, `sandboxed probe failed: ${JSON.stringify(r.error)} ${r.err}`)
  const last = r.out.trim().split('\n').at(-1)
  return { json: JSON.parse(last), raw: JSON.stringify(r) }
}

async function jsJson(session, code, timeoutS = 20) {
  // Each probe in its own function scope: top-level declarations persist across runs.
  const r = await run(session, `await (async () => {\n${code}\n})()`, 'javascript', timeoutS)
  assert.equal(r.success, true, `sandboxed probe failed: ${JSON.stringify(r.error)} ${r.err}`)
  const last = r.out.trim().split('\n').at(-1)
  return { json: JSON.parse(last), raw: JSON.stringify(r) }
}

/** A trivial run in both languages succeeds: the session survived. */
async function assertUsable(session, what) {
  const p = await run(session, '6 * 7')
  assert.equal(p.success, true, `python unusable after ${what}: ${JSON.stringify(p.error)}`)
  assert.equal(p.result, '42')
  const j = await run(session, '6 * 7', 'javascript')
  assert.equal(j.success, true, `javascript unusable after ${what}: ${JSON.stringify(j.error)}`)
  assert.equal(j.result, '42')
}

/** The session's driver processes on the host (uid ≥ 1000000 and not pid 1 inside). */
function driverHostPids(sessionId) {
  return sessionPids(sessionId).filter((p) => hostStatus(p)?.NSpid && !isNamespaceInit(p))
}

before(async () => {
  for (const p of canaries) {
    fs.writeFileSync(p, `${SECRET}\n`, { mode: 0o644 })
    cleanups.push(() => fs.rmSync(p, { force: true }))
  }
  hostSleep = spawn('sleep', ['3017'], { stdio: 'ignore' })
  cleanups.push(() => hostSleep.kill('SIGKILL'))
  main = await LocalSession.create({ memoryBytes: 256 * MiB, maxProcesses: 64 })
  cleanups.push(() => main.close())
})

after(async () => {
  for (const c of cleanups.reverse()) await c()
})

// ------------------------------------------------------------------ host files

const FILE_PROBE = String.raw`
import os, json, errno
paths = PATHS
secret = SECRET
res = {}
def attempt(label, fn):
    try:
        v = fn()
        res[label] = 'READ:' + (v if isinstance(v, str) else repr(v))[:200]
    except OSError as e:
        res[label] = 'ERR:' + (errno.errorcode.get(e.errno, str(e.errno)))
for p in paths:
    rd = lambda q: (lambda: open(q).read())
    attempt('direct' + p, rd(p))
    attempt('/proc/1/root' + p, rd('/proc/1/root' + p))
    attempt('/proc/self/root/..' + p, rd('/proc/self/root/../..' + p))
    attempt('/proc/self/cwd/..' + p, rd('/proc/self/cwd/../../../..' + p))
    attempt('/proc/1/cwd' + p, rd('/proc/1/cwd/../../..' + p))
    attempt('dotdot' + p, rd('/home/user/../../../../../..' + p))
    attempt('relative' + p, rd('../' * 12 + p.lstrip('/')))
    attempt('/dev/fd/..' + p, rd('/dev/fd/../../..' + p))
    link = '/home/user/lnk-' + str(abs(hash(p)))
    try:
        os.symlink(p, link)
    except FileExistsError:
        pass
    attempt('symlink' + p, rd(link))
    link2 = link + '-proc'
    try:
        os.symlink('/proc/1/root' + p, link2)
    except FileExistsError:
        pass
    attempt('symlink-proc' + p, rd(link2))
    attempt('hardlink' + p, lambda: os.link(p, link + '-hard'))
    attempt('open_dir' + p, lambda: os.listdir(os.path.dirname(p)))
# Anything readable in the (small) sandbox tree that holds the secret?
found = []
for root, dirs, files in os.walk('/', onerror=lambda e: None):
    if root == '/':
        dirs[:] = [d for d in dirs if d not in ('proc', 'sys', 'usr')]
    for f in files:
        fp = os.path.join(root, f)
        try:
            if os.path.isfile(fp) and os.path.getsize(fp) < 4 * 1024 * 1024:
                with open(fp, 'rb') as fh:
                    if secret.encode() in fh.read():
                        found.append(fp)
        except OSError:
            pass
res['found'] = found
print(json.dumps(res))
`

test('host canary files are unreadable (python)', async (t) => {
  const code = FILE_PROBE.replace('PATHS', JSON.stringify(canaries)).replace('SECRET', JSON.stringify(SECRET))
  const { json, raw } = await pyJson(main, code)
  const denied = (prefix) => {
    const hits = Object.entries(json).filter(([label]) => label.startsWith(prefix))
    assert.equal(hits.length, canaries.length, prefix)
    for (const [label, v] of hits) assert.match(v, /^ERR:/, `${label} was readable: ${v}`)
  }
  await t.test('the secret appears nowhere in the run\'s output', () => assert.ok(!raw.includes(SECRET)))
  await t.test('direct paths in /root /tmp /home /work /var/tmp /var', () => denied('direct/'))
  await t.test('via /proc/1/root', () => denied('/proc/1/root/'))
  await t.test('via /proc/1/cwd/..', () => denied('/proc/1/cwd/'))
  await t.test('via /proc/self/root/..', () => denied('/proc/self/root/../'))
  await t.test('via /proc/self/cwd/..', () => denied('/proc/self/cwd/../'))
  await t.test('via /dev/fd/..', () => denied('/dev/fd/../'))
  await t.test('via .. traversal (absolute and relative)', () => { denied('dotdot/'); denied('relative/') })
  await t.test('via symlinks planted in the workspace', () => { denied('symlink/'); denied('symlink-proc/') })
  await t.test('via a hard link', () => denied('hardlink/'))
  await t.test('parent directories do not list the canary', () => {
    for (const [label, v] of Object.entries(json)) {
      if (label.startsWith('open_dir')) assert.ok(!v.includes(`codebay-canary-${TAG}`), `${label}: ${v}`)
    }
  })
  await t.test('no readable file in the sandbox tree holds the secret', () => assert.deepEqual(json.found, []))
  await t.test('host canaries unchanged', () => {
    for (const p of canaries) assert.equal(fs.readFileSync(p, 'utf8'), `${SECRET}\n`, `${p} changed`)
  })
})

test('host canary files are unreadable from JavaScript too', async () => {
  const code = `
const fs = require('fs'); const out = {};
for (const p of ${JSON.stringify(canaries)}) for (const q of [p, '/proc/1/root' + p, '/proc/self/root/../..' + p]) {
  try { out[q] = 'READ:' + fs.readFileSync(q, 'utf8') } catch (e) { out[q] = 'ERR:' + e.code }
}
console.log(JSON.stringify(out))`
  const { json, raw } = await jsJson(main, code)
  assert.ok(!raw.includes(SECRET))
  for (const [p, v] of Object.entries(json)) assert.match(v, /^ERR:/, `${p}: ${v}`)
})

test('/etc is the sandbox\'s own: /etc/shadow absent, host passwd/hostname not shown', async () => {
  const hostShadow = fs.existsSync('/etc/shadow') ? fs.readFileSync('/etc/shadow', 'utf8') : ''
  const hostPasswd = fs.readFileSync('/etc/passwd', 'utf8')
  const code = String.raw`
import os, json, socket
out = {}
for p in ['/etc/shadow', '/etc/gshadow', '/proc/1/root/etc/shadow', '/etc/sudoers', '/etc/ssh/ssh_host_ed25519_key', '/root/.ssh/id_rsa', '/root/.bash_history']:
    try:
        out[p] = 'READ:' + open(p).read()
    except OSError as e:
        out[p] = 'ERR:' + str(e.errno)
out['passwd'] = open('/etc/passwd').read()
out['hostname'] = socket.gethostname()
print(json.dumps(out))`
  const { json, raw } = await pyJson(main, code)
  for (const p of ['/etc/shadow', '/etc/gshadow', '/proc/1/root/etc/shadow', '/etc/sudoers', '/etc/ssh/ssh_host_ed25519_key', '/root/.ssh/id_rsa', '/root/.bash_history']) {
    assert.match(json[p], /^ERR:/, `${p}: ${json[p]}`)
  }
  const rootHash = hostShadow.split('\n').find((l) => l.startsWith('root:'))?.split(':')[1]
  if (rootHash && rootHash.length > 3) assert.ok(!raw.includes(rootHash), 'host root hash leaked')
  assert.notEqual(json.passwd, hostPasswd)
  assert.notEqual(json.hostname, os.hostname())
})

// ------------------------------------------------------------------ host environment

test('the host process environment is invisible (os.environ, process.env, /proc/*/environ)', async () => {
  assert.equal(process.env[ENV_NAME], SECRET) // the test process (the addon's host) holds it
  const py = String.raw`
import os, json
out = {'environ': dict(os.environ), 'procs': {}}
for p in os.listdir('/proc'):
    if p.isdigit() or p in ('self', 'thread-self'):
        for f in ('environ', 'cmdline'):
            try:
                out['procs'][p + '/' + f] = open('/proc/%s/%s' % (p, f), 'rb').read().decode('latin-1')
            except OSError as e:
                out['procs'][p + '/' + f] = 'ERR:%d' % e.errno
print(json.dumps(out))`
  const { json, raw } = await pyJson(main, py)
  assert.ok(!raw.includes(SECRET), 'canary env value visible inside (python)')
  assert.ok(!raw.includes(ENV_NAME), 'canary env name visible inside (python)')
  // LD_LIBRARY_PATH: the library path of a shared Python build shown at /opt/python;
  // MPLBACKEND and MPLCONFIGDIR: matplotlib without a display, its cache in /tmp.
  const { LD_LIBRARY_PATH: libraryPath, ...environ } = json.environ
  assert.deepEqual(Object.keys(environ).sort(), ['HOME', 'LANG', 'MPLBACKEND', 'MPLCONFIGDIR', 'PATH', 'PYTHONUNBUFFERED'])
  assert.deepEqual([environ.MPLBACKEND, environ.MPLCONFIGDIR], ['agg', '/tmp/matplotlib'])
  if (libraryPath !== undefined) assert.equal(libraryPath, '/opt/python/lib')
  // init's environment (inherited from the helper) must be out of reach.
  if (json.procs['1/environ'] !== undefined) assert.match(json.procs['1/environ'], /^ERR:|^$/)
  const js = `
const fs = require('fs'); const o = { env: process.env, files: {} };
for (const p of fs.readdirSync('/proc').filter((n) => /^\\d+$/.test(n))) {
  try { o.files[p] = fs.readFileSync('/proc/' + p + '/environ', 'latin1') } catch (e) { o.files[p] = 'ERR:' + e.code }
}
console.log(JSON.stringify(o))`
  const j = await jsJson(main, js)
  assert.ok(!j.raw.includes(SECRET), 'canary env value visible inside (javascript)')
  assert.ok(!(ENV_NAME in j.json.env))
})

// ------------------------------------------------------------------ host processes

test('only the sandbox\'s processes are visible in /proc', async () => {
  const py = String.raw`
import os, json
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
cmd = {}
for p in pids:
    try:
        cmd[p] = open('/proc/%d/cmdline' % p, 'rb').read().decode('latin-1')
    except OSError:
        cmd[p] = None
print(json.dumps({'pids': pids, 'cmd': cmd, 'self': os.getpid()}))`
  const { json } = await pyJson(main, py)
  const host = sessionPids(main.getSessionId())
  // Every pid inside is a process of the session: at most as many as the host sees in its cgroup.
  assert.ok(json.pids.length <= host.length, `inside ${json.pids} vs host session ${host}`)
  assert.ok(json.pids.includes(json.self), 'the driver does not see itself')
  // init (inside root, a fork of the host helper) is not user code's to see either.
  assert.ok(!json.pids.includes(1), `init is visible to user code: ${json.cmd[1]}`)
  const packageDir = path.dirname(createRequire(import.meta.url).resolve('../index.js'))
  for (const c of Object.values(json.cmd)) {
    assert.ok(!c || !c.includes('3017'), `host sleep visible: ${c}`)
    assert.ok(!c || !c.includes('--test'), `host node visible: ${c}`)
    assert.ok(!c || !c.includes(packageDir), `a host path is visible in a cmdline: ${c}`)
  }
  // Host pids that are not the session's own inside numbers do not exist inside.
  for (const p of [process.pid, hostSleep.pid, helperPid(main.getSessionId())]) {
    if (!json.pids.includes(p)) continue
    assert.ok(!json.cmd[p]?.includes('sleep'), `host pid ${p} visible inside`)
  }
})

test('host processes cannot be signalled from inside (kill and pidfd by host pid)', async () => {
  const helper = helperPid(main.getSessionId())
  const targets = [hostSleep.pid, process.pid, helper, 1]
  const py = String.raw`
import os, json, signal, subprocess, sys
out = {}
for p in TARGETS:
    for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM):
        try:
            os.kill(p, sig); out['%d/%d' % (p, sig)] = 'SENT'
        except OSError as e:
            out['%d/%d' % (p, sig)] = 'ERR:%d' % e.errno
    try:
        fd = os.pidfd_open(p); out['pidfd/%d' % p] = 'OPEN'
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL); out['pidfd/%d' % p] = 'SENT'
        except OSError as e:
            out['pidfd/%d' % p] += ':ERR:%d' % e.errno
    except OSError as e:
        out['pidfd/%d' % p] = 'ERR:%d' % e.errno
print(json.dumps(out))`.replace('TARGETS', JSON.stringify(targets))
  const r = await run(main, py)
  // The driver may have died from kill(-1): that is contained. Judge the host.
  await new Promise((res) => setTimeout(res, 200))
  assert.equal(hostSleep.exitCode, null, 'host sleep died')
  assert.equal(hostSleep.signalCode, null, 'host sleep was signalled')
  assert.ok(hostAlive(hostSleep.pid))
  assert.ok(!/^T/.test(hostStatus(hostSleep.pid).State), 'host sleep was stopped')
  assert.ok(hostAlive(helper), 'helper died')
  if (r.success) {
    const json = JSON.parse(r.out.trim().split('\n').at(-1))
    // A host pid number may exist inside (as a sandbox process); pid 1 must refuse.
    assert.notEqual(json[`1/${9}`], 'SENT')
  }
  await assertUsable(main, 'signalling host processes')
})

test('kill(-1) from inside reaches no host process', async () => {
  const helper = helperPid(main.getSessionId())
  const init = initPid(main.getSessionId())
  // From a child: every process this uid may signal inside goes (the driver too), which is contained.
  await run(main, "import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import os, signal\\nfor s in (9, 19, 15): os.kill(-1, s)'])")
  await new Promise((res) => setTimeout(res, 200))
  assert.equal(hostSleep.exitCode, null, 'host sleep died')
  assert.ok(hostAlive(hostSleep.pid) && !/^T/.test(hostStatus(hostSleep.pid).State), 'host sleep hit')
  assert.ok(hostAlive(helper), 'helper died')
  assert.ok(hostAlive(init), 'init died')
  await assertUsable(main, 'kill(-1)')
})

// ------------------------------------------------------------------ credentials

test('no privileges: NoNewPrivs 1, no capabilities, uid 1000 inside, unprivileged host uids', async () => {
  const py = String.raw`
import os, json
st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
st = {k: v.strip() for k, v in st.items()}
out = {'status': st, 'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(), 'groups': os.getgroups(), 'pid': os.getpid()}
for name, fn in [('setuid0', lambda: os.setuid(0)), ('setgid0', lambda: os.setgid(0)), ('setgroups', lambda: os.setgroups([0])), ('seteuid0', lambda: os.seteuid(0))]:
    try:
        fn(); out[name] = 'OK'
    except OSError as e:
        out[name] = 'ERR:%d' % e.errno
out['uid_map'] = open('/proc/self/uid_map').read()
print(json.dumps(out))`
  const { json } = await pyJson(main, py)
  const s = json.status
  assert.equal(s.NoNewPrivs, '1')
  for (const k of ['CapEff', 'CapPrm', 'CapInh', 'CapBnd', 'CapAmb']) assert.equal(s[k], '0000000000000000', k)
  assert.equal(s.Seccomp, '2')
  assert.equal(json.uid, 1000)
  assert.equal(json.euid, 1000)
  assert.equal(json.gid, 1000)
  assert.deepEqual(json.groups, [])
  for (const k of ['setuid0', 'setgid0', 'setgroups', 'seteuid0']) assert.match(json[k], /^ERR:/, k)
  // Host side: every process of the session runs under an unprivileged host uid.
  const pids = sessionPids(main.getSessionId())
  assert.ok(pids.length >= 2, `session processes on the host: ${pids}`)
  for (const p of pids) {
    const st = hostStatus(p)
    if (!st) continue
    for (const id of [...st.Uid.split(/\s+/), ...st.Gid.split(/\s+/)]) {
      assert.ok(Number(id) >= 1000000, `host pid ${p} runs as ${st.Uid} / ${st.Gid}`)
    }
  }
  const drivers = driverHostPids(main.getSessionId())
  assert.ok(drivers.length >= 1)
  for (const p of drivers) {
    const st = hostStatus(p)
    // The code's user is 1000 in the session's own host id range (1000000 + k·65536).
    const uid = Number(st.Uid.split(/\s+/)[0])
    assert.ok(uid >= 1_000_000 && (uid - 1_000_000) % 65536 === 1000, `driver ${p} runs as ${st.Uid}`)
    assert.equal(st.CapEff, '0000000000000000')
    assert.equal(st.NoNewPrivs, '1')
  }
  // init (inside root) and the user code never share a uid: a same-uid process could
  // otherwise signal it or read its /proc files.
  const init = pids.find(isNamespaceInit)
  assert.ok(init)
  const codeUids = new Set(drivers.map((p) => hostStatus(p).Uid.split(/\s+/)[0]))
  assert.ok(!codeUids.has(hostStatus(init).Uid.split(/\s+/)[0]), 'init shares the user code\'s uid')
})

// ------------------------------------------------------------------ writes

test('writes to /usr, /etc, the python prefix, the runtimes and / are refused; host files unchanged', async () => {
  const info = await pyJson(main, 'import sys, os, json; print(json.dumps({"prefix": sys.prefix, "os": os.__file__}))')
  const { prefix, os: osFile } = info.json
  // The prefix as the host has it (the sandbox shows a Python outside /usr at /opt/python).
  const hostPrefix = hostPythonPrefix()
  const onHost = (p) => (p.startsWith(`${prefix}/`) ? hostPrefix + p.slice(prefix.length) : p)
  assert.ok(fs.existsSync(onHost(osFile)), `${osFile} is ${onHost(osFile)} on the host`)
  const runtimes = fileURLToPath(new URL('../runtimes', import.meta.url))
  const watched = ['/etc/passwd', '/etc/hosts', onHost(osFile), `${runtimes}/python/driver.py`, `${runtimes}/javascript/driver.js`, '/usr/bin/env']
  const before = Object.fromEntries(watched.map((p) => [p, [sha(p), fs.statSync(p).mtimeMs, fs.statSync(p).mode]]))
  const created = [`/usr/bin/codebay-pwn-${TAG}`, `/etc/codebay-pwn-${TAG}`, `${prefix}/bin/codebay-pwn-${TAG}`,
    `${prefix}/lib/codebay-pwn-${TAG}.py`, `/codebay-pwn-${TAG}`, `/opt/codebay/runtimes/codebay-pwn-${TAG}`]
  const py = String.raw`
import os, json, shutil
out = {}
def attempt(label, fn):
    try:
        fn(); out[label] = 'OK'
    except OSError as e:
        out[label] = 'ERR:%d' % e.errno
def write(p, mode='a'):
    return lambda: open(p, mode).write('pwned\n')
for p in CREATED:
    attempt('create ' + p, write(p, 'w'))
for p in ['/etc/passwd', '/etc/hosts', OSFILE, '/opt/codebay/runtimes/python/driver.py', '/opt/codebay/runtimes/javascript/driver.js', '/usr/bin/env']:
    attempt('append ' + p, write(p))
    attempt('truncate ' + p, lambda: os.truncate(p, 0))
    attempt('chmod ' + p, lambda: os.chmod(p, 0o777))
    attempt('utime ' + p, lambda: os.utime(p, (0, 0)))
    attempt('unlink ' + p, lambda: os.unlink(p))
    attempt('rename ' + p, lambda: os.rename(p, p + '.bak'))
    attempt('rename-out ' + p, lambda: shutil.move(p, '/home/user/stolen'))
attempt('mkdir /usr/lib/x', lambda: os.mkdir('/usr/lib/codebay-pwn'))
attempt('symlink in /etc', lambda: os.symlink('/home/user', '/etc/codebay-link'))
attempt('/proc/sys write', write('/proc/sys/kernel/core_pattern', 'w'))
attempt('/proc/sysrq-trigger', write('/proc/sysrq-trigger', 'w'))
attempt('/sys/kernel/uevent_helper', write('/sys/kernel/uevent_helper', 'w'))
attempt('/dev/new', lambda: os.mknod('/dev/codebay', 0o600 | 0o020000, os.makedev(1, 3)))
attempt('mknod /home/user/mem', lambda: os.mknod('/home/user/mem', 0o600 | 0o020000, os.makedev(1, 1)))
print(json.dumps(out))`.replace('CREATED', JSON.stringify(created)).replace('OSFILE', JSON.stringify(osFile))
  const corePattern = fs.readFileSync('/proc/sys/kernel/core_pattern', 'utf8')
  const { json } = await pyJson(main, py)
  for (const [label, v] of Object.entries(json)) assert.match(v, /^ERR:/, `${label} succeeded`)
  for (const p of watched) {
    assert.deepEqual([sha(p), fs.statSync(p).mtimeMs, fs.statSync(p).mode], before[p], `${p} changed on the host`)
  }
  for (const p of [...created.map(onHost), `${runtimes}/codebay-pwn-${TAG}`]) assert.ok(!fs.existsSync(p), `${p} appeared on the host`)
  assert.equal(fs.readFileSync('/proc/sys/kernel/core_pattern', 'utf8'), corePattern)
})

test('/tmp, /dev/shm and the workspace are private: sandbox files do not reach the host', async () => {
  const name = `codebay-inside-${TAG}`
  const py = String.raw`
import os, json
for d in ('/tmp', '/dev/shm', '/home/user'):
    open(os.path.join(d, NAME), 'w').write('inside\n')
print(json.dumps({'tmp': os.listdir('/tmp'), 'shm': os.listdir('/dev/shm')}))`.replace('NAME', JSON.stringify(name))
  const { json } = await pyJson(main, py)
  assert.ok(json.tmp.includes(name))
  assert.ok(!json.tmp.some((n) => n.includes(`codebay-canary-${TAG}`)), 'host /tmp canary visible inside')
  for (const d of ['/tmp', '/dev/shm', '/home/user', '/root', '/var/tmp']) {
    assert.ok(!fs.existsSync(`${d}/${name}`), `${d}/${name} appeared on the host`)
  }
})

// ------------------------------------------------------------------ network

/** Host listeners: TCP and UDP on loopback, every host address and the wildcard; abstract and path unix sockets. */
async function openHostListeners() {
  const addrs = new Set(['127.0.0.1', '::1'])
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (!a.address.startsWith('fe80')) addrs.add(a.address)
  }
  const L = { tcp: [], udp: [], accepts: 0, datagrams: 0, unix: [], close: [] }
  const tcpServer = (host) => new Promise((resolve, reject) => {
    const srv = net.createServer((c) => { L.accepts++; c.destroy() })
    srv.on('error', reject)
    srv.listen({ host, port: 0, ipv6Only: host === '::' ? false : undefined }, () => resolve(srv))
  })
  for (const host of [...addrs, '::']) {
    const srv = await tcpServer(host)
    L.close.push(() => new Promise((r) => srv.close(r)))
    const port = srv.address().port
    if (host === '::') for (const a of addrs) L.tcp.push([a, port])
    else L.tcp.push([host, port])
  }
  for (const host of addrs) {
    const sock = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4')
    sock.on('message', () => { L.datagrams++ })
    await new Promise((resolve) => sock.bind(0, host, resolve))
    L.close.push(() => new Promise((r) => sock.close(r)))
    L.udp.push([host, sock.address().port])
  }
  for (const path of [`\0codebay-canary-${TAG}`, hostSockPath]) {
    const srv = net.createServer((c) => { L.accepts++; c.destroy() })
    await new Promise((resolve, reject) => { srv.on('error', reject); srv.listen(path, resolve) })
    L.close.push(() => new Promise((r) => srv.close(r)))
    L.unix.push(path)
  }
  // Self-check: the listeners work from the host.
  await new Promise((resolve, reject) => {
    const c = net.connect({ host: '127.0.0.1', port: L.tcp[0][1] }, () => { c.destroy(); resolve() })
    c.on('error', reject)
  })
  await new Promise((r) => setTimeout(r, 50))
  assert.equal(L.accepts, 1, 'host listener self-check')
  L.accepts = 0
  return L
}

test('no TCP, UDP or unix connection reaches a host listener (loopback, every host address, abstract)', async () => {
  const L = await openHostListeners()
  cleanups.push(() => Promise.all(L.close.map((c) => c())))
  const py = String.raw`
import socket, json
out = {}
for host, port in TCP:
    fam = socket.AF_INET6 if ':' in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(1)
    try:
        s.connect((host, port)); out['tcp %s %d' % (host, port)] = 'CONNECTED'
    except OSError as e:
        out['tcp %s %d' % (host, port)] = 'ERR:%s' % (e.errno,)
    s.close()
for host, port in UDP:
    fam = socket.AF_INET6 if ':' in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        for _ in range(3):
            s.sendto(b'hello', (host, port))
        out['udp %s %d' % (host, port)] = 'SENT'
    except OSError as e:
        out['udp %s %d' % (host, port)] = 'ERR:%s' % (e.errno,)
    s.close()
for path in UNIX:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(1)
    try:
        s.connect(path); out['unix ' + repr(path)] = 'CONNECTED'
    except OSError as e:
        out['unix ' + repr(path)] = 'ERR:%s' % (e.errno,)
    s.close()
out['interfaces'] = [l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]]
print(json.dumps(out))`.replace('TCP', JSON.stringify(L.tcp)).replace('UDP', JSON.stringify(L.udp)).replace('UNIX', JSON.stringify(L.unix))
  const { json } = await pyJson(main, py, 30)
  const js = `
const net = require('net'); const dgram = require('dgram'); const out = {};
const tryConnect = (opts) => new Promise((resolve) => {
  const c = net.connect(opts); c.setTimeout(1000);
  c.on('connect', () => { c.destroy(); resolve('CONNECTED') });
  c.on('error', (e) => resolve('ERR:' + e.code)); c.on('timeout', () => { c.destroy(); resolve('TIMEOUT') });
});
for (const [host, port] of ${JSON.stringify(L.tcp)}) out['tcp ' + host + ' ' + port] = await tryConnect({ host, port });
for (const path of ${JSON.stringify(L.unix)}) out['unix ' + JSON.stringify(path)] = await tryConnect({ path });
for (const [host, port] of ${JSON.stringify(L.udp)}) {
  const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  out['udp ' + host] = await new Promise((resolve) => { s.on('error', (e) => resolve('ERR:' + e.code)); s.send('hi', port, host, (e) => resolve(e ? 'ERR:' + e.code : 'SENT')) });
  try { s.close() } catch {}
}
console.log(JSON.stringify(out))`
  const j = await jsJson(main, js, 30)
  await new Promise((r) => setTimeout(r, 300))
  assert.equal(L.accepts, 0, `a host listener accepted a connection: ${JSON.stringify({ py: json, js: j.json })}`)
  assert.equal(L.datagrams, 0, 'a host UDP socket received a datagram')
  for (const [k, v] of [...Object.entries(json), ...Object.entries(j.json)]) {
    if (k === 'interfaces') continue
    if (k.startsWith('tcp') || k.startsWith('unix')) assert.match(v, /^ERR:|^TIMEOUT$/, `${k}: ${v}`)
  }
  assert.deepEqual(json.interfaces, ['lo'])
})

test('no raw, packet, netlink or other exotic sockets', async () => {
  const py = String.raw`
import socket, json
AF_NETLINK, AF_PACKET, AF_ALG, AF_VSOCK, AF_KEY, AF_BLUETOOTH, AF_XDP, AF_TIPC, AF_RDS = 16, 17, 38, 40, 15, 31, 44, 30, 21
SOCK_PACKET = 10
cases = {
  'inet raw icmp': (socket.AF_INET, socket.SOCK_RAW, 1),
  'inet raw tcp': (socket.AF_INET, socket.SOCK_RAW, 6),
  'inet raw cloexec': (socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 255),
  'inet6 raw': (socket.AF_INET6, socket.SOCK_RAW, 58),
  'inet sock_packet': (socket.AF_INET, SOCK_PACKET, 0),
  'packet raw': (AF_PACKET, socket.SOCK_RAW, 0x300),
  'packet dgram': (AF_PACKET, socket.SOCK_DGRAM, 0x300),
  'netlink route': (AF_NETLINK, socket.SOCK_RAW, 0),
  'netlink dgram': (AF_NETLINK, socket.SOCK_DGRAM, 0),
  'netlink audit': (AF_NETLINK, socket.SOCK_RAW, 9),
  'netlink uevent': (AF_NETLINK, socket.SOCK_DGRAM, 15),
  'alg': (AF_ALG, socket.SOCK_SEQPACKET, 0),
  'vsock': (AF_VSOCK, socket.SOCK_STREAM, 0),
  'key': (AF_KEY, socket.SOCK_RAW, 2),
  'bluetooth': (AF_BLUETOOTH, socket.SOCK_RAW, 0),
  'xdp': (AF_XDP, socket.SOCK_RAW, 0),
  'tipc': (AF_TIPC, socket.SOCK_RDM, 0),
  'rds': (AF_RDS, socket.SOCK_SEQPACKET, 0),
}
out = {}
for k, (f, t, p) in cases.items():
    try:
        s = socket.socket(f, t, p); out[k] = 'OPEN'; s.close()
    except OSError as e:
        out[k] = e.errno
try:
    socket.socketpair(AF_NETLINK, socket.SOCK_RAW, 0); out['socketpair netlink'] = 'OPEN'
except OSError as e:
    out['socketpair netlink'] = e.errno
print(json.dumps(out))`
  const { json } = await pyJson(main, py)
  for (const [k, v] of Object.entries(json)) assert.equal(v, EPERM, `${k}: ${v}`)
})

// ------------------------------------------------------------------ syscalls

const SYSCALLS = String.raw`
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID = 0x10000000, 0x00020000, 0x40000000, 0x20000000
SIGCHLD = 17
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(L(nr), *[L(a) for a in args])
    if r == 0 and nr in (56,):  # a clone that succeeded: the child leaves at once
        os._exit(0)
    return ctypes.get_errno() if r == -1 else 'RETURNED %d' % r
b = ctypes.create_string_buffer
cases = {
  'mount': (165, ctypes.addressof(b(b'none')), ctypes.addressof(b(b'/tmp')), ctypes.addressof(b(b'tmpfs')), 0, 0),
  'umount2': (166, ctypes.addressof(b(b'/tmp')), 2),
  'unshare(NEWUSER)': (272, CLONE_NEWUSER),
  'unshare(NEWNS)': (272, CLONE_NEWNS),
  'unshare(NEWNET)': (272, CLONE_NEWNET),
  'setns': (308, 0, 0),
  'ptrace(TRACEME)': (101, 0, 0, 0, 0),
  'ptrace(ATTACH 1)': (101, 16, 1, 0, 0),
  'process_vm_readv': (310, os.getpid(), 0, 0, 0, 0, 0),
  'process_vm_writev': (311, os.getpid(), 0, 0, 0, 0, 0),
  'keyctl': (250, 0, -3, 0),
  'add_key': (248, ctypes.addressof(b(b'user')), ctypes.addressof(b(b'k')), ctypes.addressof(b(b'v')), 1, -3),
  'request_key': (249, ctypes.addressof(b(b'user')), ctypes.addressof(b(b'k')), 0, 0),
  'bpf': (321, 0, 0, 0),
  'perf_event_open': (298, 0, 0, -1, -1, 0),
  'io_uring_setup': (425, 1, 0),
  'io_uring_enter': (426, 0, 0, 0, 0, 0),
  'userfaultfd(USER_MODE_ONLY)': (323, 1),
  'open_by_handle_at': (304, -100, 0, 0),
  'name_to_handle_at': (303, -100, 0, 0, 0, 0),
  'init_module': (175, 0, 0, 0),
  'finit_module': (313, 0, 0, 0),
  'delete_module': (176, ctypes.addressof(b(b'ext4')), 0),
  'kexec_load': (246, 0, 0, 0, 0),
  'kexec_file_load': (320, -1, -1, 0, 0, 0),
  'reboot': (169, 0, 0, 0, 0),
  'swapon': (167, ctypes.addressof(b(b'/tmp/swap')), 0),
  'swapoff': (168, ctypes.addressof(b(b'/tmp/swap'))),
  'settimeofday(NULL,NULL)': (164, 0, 0),
  'clock_settime': (227, 0, 0),
  'clock_adjtime': (305, 0, 0),
  'adjtimex': (159, 0),
  'acct': (163, 0),
  'pivot_root': (155, ctypes.addressof(b(b'/tmp')), ctypes.addressof(b(b'/tmp'))),
  'chroot': (161, ctypes.addressof(b(b'/tmp'))),
  'fsopen': (430, ctypes.addressof(b(b'tmpfs')), 0),
  'open_tree': (428, -100, ctypes.addressof(b(b'/tmp')), 1),
  'move_mount': (429, -1, 0, -1, 0, 0),
  'mount_setattr': (442, -100, 0, 0, 0, 0),
  'syslog': (103, 10, 0, 0),
  'sethostname': (170, ctypes.addressof(b(b'pwned')), 5),
  'setdomainname': (171, ctypes.addressof(b(b'pwned')), 5),
  'iopl': (172, 3),
  'ioperm': (173, 0, 1024, 1),
  'quotactl': (179, 0, 0, 0, 0),
  'fanotify_init': (300, 0, 0),
  'personality(READ_IMPLIES_EXEC)': (135, 0x0400000),
  'clone(NEWUSER)': (56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0),
  'clone(NEWNS)': (56, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0),
  'clone(NEWPID)': (56, CLONE_NEWPID | SIGCHLD, 0, 0, 0, 0),
  'clone3': (435, 0, 0),
}
out = {k: call(*v) for k, v in cases.items()}
out['uid'] = os.getuid()
print(json.dumps(out))
`

test('every denied syscall is refused with EPERM (clone3 with ENOSYS), host unchanged', async (t) => {
  const mountsBefore = fs.readFileSync('/proc/self/mountinfo', 'utf8')
  const hostnameBefore = os.hostname()
  const t0 = Date.now()
  // In a child process so a syscall that slipped through cannot disturb the driver.
  const py = String.raw`
import subprocess, sys
r = subprocess.run([sys.executable, '-c', CODE], capture_output=True, text=True)
print(r.stderr[-2000:], file=sys.stderr)
print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else '{"exit": %d}' % r.returncode)`.replace('CODE', JSON.stringify(SYSCALLS))
  const { json } = await pyJson(main, py)
  assert.equal(json.uid, 1000)
  const wantEnosys = new Set(['clone3'])
  for (const [k, v] of Object.entries(json)) {
    if (k === 'uid') continue
    await t.test(`${k} -> ${wantEnosys.has(k) ? 'ENOSYS' : 'EPERM'}`, () => assert.equal(v, wantEnosys.has(k) ? ENOSYS : EPERM, `${k}: ${v}`))
  }
  assert.equal(fs.readFileSync('/proc/self/mountinfo', 'utf8'), mountsBefore, 'host mounts changed')
  assert.equal(os.hostname(), hostnameBefore)
  assert.ok(Math.abs(Date.now() - t0) < 60000, 'host clock jumped')
})

test('other syscall ABIs cannot bypass the filter (int 0x80 i386, x32 numbers)', async () => {
  const child = String.raw`
import ctypes, mmap, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}
# x32 ABI: unshare (272) with bit 30 set.
ctypes.set_errno(0)
r = libc.syscall(ctypes.c_long(0x40000000 | 272), ctypes.c_long(0x10000000))
out['x32 unshare'] = ctypes.get_errno() if r == -1 else 'RETURNED %d' % r
print(json.dumps(out), flush=True)
# i386 ABI from a 64-bit process: mov eax, 310 (unshare); mov ebx, CLONE_NEWUSER; int 0x80; ret
code = bytes([0xb8]) + (310).to_bytes(4, 'little') + bytes([0xbb]) + (0x10000000).to_bytes(4, 'little') + bytes([0xcd, 0x80, 0xc3])
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
f = ctypes.CFUNCTYPE(ctypes.c_int)(addr)
out['i386 unshare'] = f()
print(json.dumps(out), flush=True)
`
  const py = String.raw`
import subprocess, sys, json
r = subprocess.run([sys.executable, '-c', CODE], capture_output=True, text=True)
lines = r.stdout.strip().splitlines()
print(json.dumps({'rc': r.returncode, 'last': json.loads(lines[-1]) if lines else None, 'err': r.stderr[-500:]}))`.replace('CODE', JSON.stringify(child))
  const { json } = await pyJson(main, py)
  const x32 = json.last['x32 unshare']
  assert.ok(x32 === ENOSYS || x32 === EPERM, `x32 unshare: ${x32}`)
  // i386 calls: killed by the filter's arch check (SIGSYS = 31), or refused.
  if ('i386 unshare' in json.last) {
    assert.ok(json.last['i386 unshare'] < 0, `i386 unshare returned ${json.last['i386 unshare']}`)
  } else {
    assert.equal(json.rc, -31, `i386 probe ended with ${json.rc}: ${json.err}`)
  }
})

// ------------------------------------------------------------------ more confinement

test('init (pid 1) is out of user code\'s reach: signals, ptrace, /proc', async () => {
  const init = initPid(main.getSessionId())
  assert.ok(init, 'init not found on the host')
  const py = String.raw`
import os, json, signal, ctypes
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP, signal.SIGSEGV):
    try:
        os.kill(1, sig); out['kill %d' % sig] = 'SENT'
    except OSError as e:
        out['kill %d' % sig] = e.errno
ctypes.set_errno(0)
out['ptrace attach'] = ctypes.get_errno() if libc.ptrace(16, 1, 0, 0) == -1 else 'ATTACHED'
for f in ('environ', 'mem', 'maps', 'cmdline', 'exe'):
    try:
        open('/proc/1/' + f, 'rb').read(1); out[f] = 'READ'
    except OSError as e:
        out[f] = e.errno
print(json.dumps(out))`
  const { json } = await pyJson(main, py)
  for (const f of ['environ', 'mem', 'maps', 'cmdline', 'exe', 'ptrace attach']) assert.notEqual(json[f], 'READ', f)
  assert.notEqual(json['ptrace attach'], 'ATTACHED')
  await new Promise((r) => setTimeout(r, 100))
  assert.ok(hostAlive(init), 'init died')
  assert.ok(!/^T/.test(hostStatus(init).State), 'init was stopped')
  await assertUsable(main, 'signalling init')
})

test('child processes inherit the confinement (uid, caps, seccomp, landlock, no canary)', async () => {
  const py = String.raw`
import subprocess, json
script = "id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; cat CANARY 2>&1 || echo DENIED; echo x > /usr/codebay-pwn 2>&1 || echo DENIED"
r = subprocess.run(['sh', '-c', script], capture_output=True, text=True)
n = subprocess.run(['node', '-e', "const fs=require('fs'); let v; try { v = fs.readFileSync(CANARYJS, 'utf8') } catch (e) { v = e.code } console.log(process.getuid(), v)"], capture_output=True, text=True)
print(json.dumps({'sh': r.stdout + r.stderr, 'node': n.stdout + n.stderr}))`.replace('CANARY', canaries[0]).replace('CANARYJS', JSON.stringify(JSON.stringify(canaries[0])).slice(1, -1))
  const { json, raw } = await pyJson(main, py)
  assert.ok(!raw.includes(SECRET), 'a child read the canary')
  assert.match(json.sh, /^1000\n/)
  assert.match(json.sh, /CapEff:\s+0000000000000000/)
  assert.match(json.sh, /CapBnd:\s+0000000000000000/)
  assert.match(json.sh, /NoNewPrivs:\s+1/)
  assert.match(json.sh, /Seccomp:\s+2/)
  assert.equal((json.sh.match(/DENIED/g) ?? []).length, 2, json.sh)
  assert.match(json.node, /^1000 E/, json.node)
  assert.ok(!fs.existsSync('/usr/codebay-pwn'))
})

test('the driver\'s protocol pipes are not inherited by child processes (python and javascript)', async () => {
  const py = String.raw`
import subprocess
print(subprocess.run(['ls', '/proc/self/fd'], capture_output=True, text=True).stdout.split())`
  const r = await run(main, py)
  assert.equal(r.success, true, JSON.stringify(r.error))
  assert.deepEqual(eval(r.out.trim()), ['0', '1', '2', '3'], r.out) // 3 = ls's own directory fd
  const js = "require('child_process').execFileSync('ls', ['/proc/self/fd'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().split('\\n').filter(Boolean)"
  const j = await run(main, js, 'javascript')
  assert.equal(j.success, true, JSON.stringify(j.error))
  // Node fills stdio 0..2; with the pipes reopened close-on-exec nothing else may leak in.
  assert.equal(j.result, "[ '0', '1', '2', '3' ]", j.result)
  // The drivers themselves hold every fd above 2 close-on-exec (the JavaScript driver
  // reopens its protocol pipes through /proc/self/fd, which needs them owned by `user`).
  for (const [lang, code] of [
    ['python', "import os\ndef flags(f):\n    try:\n        return int(open('/proc/self/fdinfo/' + f).read().split('flags:')[1].split()[0], 8)\n    except FileNotFoundError:\n        return 0o2000000  # the listing's own, closed fd\nprint([f for f in os.listdir('/proc/self/fd') if int(f) > 2 and not flags(f) & 0o2000000])"],
    ['javascript', "const fs = require('fs'); const flags = (f) => { try { return parseInt(fs.readFileSync('/proc/self/fdinfo/' + f, 'utf8').split('flags:')[1], 8) } catch { return 0o2000000 } }; console.log(JSON.stringify(fs.readdirSync('/proc/self/fd').filter((f) => +f > 2 && !(flags(f) & 0o2000000))).replaceAll('\"', \"'\"))"],
  ]) {
    const r2 = await run(main, code, lang)
    assert.equal(r2.success, true, JSON.stringify(r2.error))
    assert.equal(r2.out.trim(), '[]', `${lang} driver fds without close-on-exec: ${r2.out}`)
  }
})

test('/dev holds only the minimal nodes; no host devices', async () => {
  const hostDev = fs.readdirSync('/dev')
  const py = String.raw`
import os, json
out = {'dev': sorted(os.listdir('/dev'))}
for p in ('/dev/mem', '/dev/kmem', '/dev/port', '/dev/kmsg', '/dev/sda', '/dev/vda', '/dev/nvme0n1', '/dev/tty', '/dev/console', '/dev/net/tun', '/dev/fuse', '/dev/kvm'):
    try:
        open(p, 'rb').close(); out[p] = 'OPEN'
    except OSError as e:
        out[p] = e.errno
print(json.dumps(out))`
  const { json } = await pyJson(main, py)
  assert.ok(hostDev.length > json.dev.length)
  for (const n of json.dev) assert.ok(['null', 'zero', 'full', 'random', 'urandom', 'shm', 'fd', 'stdin', 'stdout', 'stderr', 'pts', 'ptmx', 'mqueue'].includes(n), `unexpected /dev/${n}`)
  for (const [k, v] of Object.entries(json)) if (k !== 'dev') assert.notEqual(v, 'OPEN', k)
})

test('every mount is nosuid and the cgroup tree is the session\'s own', async () => {
  const sid = main.getSessionId()
  const py = String.raw`
import json, os
mi = open('/proc/self/mountinfo').read().splitlines()
print(json.dumps({'mounts': mi, 'cgroup': open('/proc/self/cgroup').read(), 'sys': os.path.exists('/sys/fs/cgroup')}))`
  const { json } = await pyJson(main, py)
  for (const line of json.mounts) {
    const [left, right] = line.split(' - ')
    const opts = left.split(' ')[5] + ',' + (right.split(' ')[2] ?? '')
    const mp = left.split(' ')[4]
    if (mp === '/dev/null' || /^\/dev\/(zero|full|random|urandom)$/.test(mp)) continue
    assert.match(opts, /nosuid/, `mount without nosuid: ${line}`)
  }
  for (const l of json.cgroup.trim().split('\n')) assert.ok(!l.includes(sid) && !l.includes('codebay'), `host cgroup path visible: ${l}`)
  assert.equal(json.sys, false)
  // Host side: the drivers really are inside the session's cgroup.
  for (const p of driverHostPids(sid)) assert.match(fs.readFileSync(`/proc/${p}/cgroup`, 'utf8'), new RegExp(`codebay/${sid}`))
})

test('host SysV IPC objects are invisible', async () => {
  // The host creates a SysV shared memory segment and message queue with fixed keys.
  const key = 0x5eed0000 + (parseInt(TAG.slice(0, 4), 16) & 0xffff)
  const host = spawnSyncPy(String.raw`
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
shm = libc.shmget(KEY, 4096, 0o1666 | 0o2000)
msg = libc.msgget(KEY, 0o1666 | 0o2000)
print(shm, msg)`.replaceAll('KEY', String(key)))
  const [shmid, msqid] = host.trim().split(' ').map(Number)
  assert.ok(shmid >= 0 && msqid >= 0, `host IPC setup failed: ${host}`)
  cleanups.push(() => spawnSyncPy(`import ctypes\nlibc = ctypes.CDLL(None)\nlibc.shmctl(${shmid}, 0, None)\nlibc.msgctl(${msqid}, 0, None)`))
  const py = String.raw`
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
print(json.dumps({'shm': libc.shmget(KEY, 4096, 0o666), 'msg': libc.msgget(KEY, 0o666), 'sysvipc': open('/proc/sysvipc/shm').read()}))`.replaceAll('KEY', String(key))
  const { json } = await pyJson(main, py)
  assert.equal(json.shm, -1)
  assert.equal(json.msg, -1)
  assert.ok(!json.sysvipc.includes(String(key)), json.sysvipc)
})

test('a listener inside the sandbox is unreachable from the host (abstract unix, UDP)', async () => {
  const name = `codebay-inside-${TAG}`
  const py = String.raw`
import socket
inside_unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
inside_unix.bind('\0NAME'); inside_unix.listen(4); inside_unix.setblocking(False)
inside_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
inside_udp.bind(('0.0.0.0', 45454)); inside_udp.setblocking(False)
print('listening')`.replace('NAME', name)
  const r = await run(main, py)
  assert.equal(r.success, true, JSON.stringify(r.error))
  const res = await new Promise((resolve) => {
    const c = net.connect({ path: `\0${name}` })
    c.on('connect', () => { c.destroy(); resolve('CONNECTED') })
    c.on('error', (e) => resolve(e.code))
  })
  assert.notEqual(res, 'CONNECTED')
  const u = dgram.createSocket('udp4')
  await new Promise((resolve) => u.send('hi', 45454, '127.0.0.1', () => resolve()))
  u.close()
  await new Promise((r2) => setTimeout(r2, 100))
  const check = await run(main, String.raw`
got = []
for s in (inside_unix, inside_udp):
    try:
        s.accept() if s is inside_unix else s.recvfrom(100); got.append('GOT')
    except BlockingIOError:
        got.append('none')
inside_unix.close(); inside_udp.close()
print(got)`)
  assert.equal(check.out.trim(), "['none', 'none']")
})

// ------------------------------------------------------------------ resource bombs

let bomb
const BOMB_LIMITS = { memoryBytes: 128 * MiB, maxProcesses: 32, workspaceBytes: 16 * MiB, tmpBytes: 16 * MiB, outputLimitBytes: 256 * 1024 }

async function bombSession() {
  if (!bomb) {
    bomb = await LocalSession.create(BOMB_LIMITS)
    cleanups.push(() => bomb.close())
  }
  return bomb
}

function assertHostResponsive(w, what) {
  assert.ok(w.spawns >= 1, `${what}: no host spawn completed`)
  assert.ok(w.maxSpawnMs < 5000, `${what}: a host spawn took ${w.maxSpawnMs} ms`)
  assert.ok(w.maxLagMs < 2000, `${what}: the test's event loop lagged ${w.maxLagMs} ms`)
}

test('fork bomb: ProcessLimitError, pids bounded by the cgroup, host responsive, session usable', async () => {
  const s = await bombSession()
  let peak = 0
  const sampler = setInterval(() => { peak = Math.max(peak, sessionPids(s.getSessionId()).length) }, 50)
  const w = await watchHost(() => run(s, 'import os\nwhile True:\n    os.fork()', 'python', 5))
  clearInterval(sampler)
  const r = w.value
  assert.equal(r.success, false)
  assert.equal(r.error?.name, 'ProcessLimitError', JSON.stringify(r.error))
  assert.ok(peak <= BOMB_LIMITS.maxProcesses, `${peak} session processes on the host`)
  assertHostResponsive(w, 'fork bomb')
  await assertUsable(s, 'a fork bomb')
  assert.ok(sessionPids(s.getSessionId()).length <= 4, `leftovers: ${sessionPids(s.getSessionId())}`)
})

test('thread bomb: ProcessLimitError, session usable', async () => {
  const s = await bombSession()
  const r = await run(s, 'import threading, time\nts = []\nwhile True:\n    t = threading.Thread(target=time.sleep, args=(30,), daemon=True); t.start(); ts.append(t)', 'python', 10)
  assert.equal(r.success, false)
  assert.equal(r.error?.name, 'ProcessLimitError', JSON.stringify(r.error))
  await assertUsable(s, 'a thread bomb')
})

test('memory bomb (python and javascript): MemoryError, host memory bounded, session usable', async () => {
  const s = await bombSession()
  const w = await watchHost(() => run(s, "a = []\nwhile True:\n    a.append(b'x' * (8 * 1024 * 1024))", 'python', 20))
  const r = w.value
  assert.equal(r.success, false)
  assert.equal(r.error?.name, 'MemoryError', JSON.stringify(r.error))
  assertHostResponsive(w, 'memory bomb')
  assert.equal(hostMemoryLimit(s.getSessionId()), BOMB_LIMITS.memoryBytes + fileSpaceBytes(BOMB_LIMITS), 'processes and files have one limit')
  const memDir = cgroupDirs(s.getSessionId()).find((d) => d.includes('/memory/')) ?? cgroupDirs(s.getSessionId())[0]
  for (const f of ['memory.max_usage_in_bytes', 'memory.peak']) {
    if (fs.existsSync(`${memDir}/${f}`)) {
      const peak = Number(fs.readFileSync(`${memDir}/${f}`, 'utf8'))
      assert.ok(peak <= BOMB_LIMITS.memoryBytes + fileSpaceBytes(BOMB_LIMITS) + MiB, `${f} = ${peak}`)
    }
  }
  await assertUsable(s, 'a python memory bomb')
  const j = await run(s, "const a = []; while (true) a.push(Buffer.alloc(8 * 1024 * 1024, 1))", 'javascript', 20)
  assert.equal(j.success, false)
  assert.ok(['MemoryError', 'RangeError'].includes(j.error?.name), JSON.stringify(j.error))
  await assertUsable(s, 'a javascript memory bomb')
})

test('disk fill of /home/user, /tmp and /dev/shm: ENOSPC inside, host disk untouched, session usable', async () => {
  const s = await bombSession()
  const hostFree = fs.statfsSync('/tmp')
  const py = String.raw`
import os, json, errno
out = {}
chunk = b'x' * (1024 * 1024)
for d in ('/home/user', '/tmp', '/dev/shm'):
    n = 0
    names = []
    try:
        while n < 512:
            # 4 MiB per file: below RLIMIT_FSIZE, so the filesystem's size is what stops us.
            names.append(os.path.join(d, 'fill%d' % len(names)))
            with open(names[-1], 'wb') as f:
                for _ in range(4):
                    f.write(chunk); f.flush(); n += 1
        out[d] = ['NO LIMIT', n]
    except OSError as e:
        out[d] = [errno.errorcode.get(e.errno), n]
    for p in names:
        try:
            os.unlink(p)
        except OSError:
            pass
print(json.dumps(out))`
  const r = await run(s, py, 'python', 20)
  // /dev/shm may instead exhaust the session's memory (its pages are charged to the cgroup).
  if (r.success) {
    const json = JSON.parse(r.out.trim().split('\n').at(-1))
    assert.deepEqual(json['/home/user'][0], 'ENOSPC', JSON.stringify(json))
    assert.ok(json['/home/user'][1] <= 16, JSON.stringify(json))
    assert.deepEqual(json['/tmp'][0], 'ENOSPC', JSON.stringify(json))
    assert.ok(json['/dev/shm'][0] === 'ENOSPC' || json['/dev/shm'][0] === 'ENOMEM', JSON.stringify(json))
  } else {
    assert.equal(r.error?.name, 'MemoryError', JSON.stringify(r.error))
  }
  const hostAfter = fs.statfsSync('/tmp')
  assert.ok((hostFree.bavail - hostAfter.bavail) * hostAfter.bsize < 64 * MiB, 'the host disk filled')
  await assertUsable(s, 'a disk fill')
})

test('output flood: OutputLimitError, output capped, host unaffected, session usable', async () => {
  const s = await bombSession()
  const rssBefore = process.memoryUsage().rss
  const w = await watchHost(() => run(s, "import sys\nfor _ in range(64):\n    sys.stdout.write('y' * (1024 * 1024))\nsys.stderr.write('z' * (4 * 1024 * 1024))", 'python', 20))
  const r = w.value
  assert.equal(r.success, false)
  assert.equal(r.error?.name, 'OutputLimitError', JSON.stringify(r.error))
  assert.ok(r.out.length <= BOMB_LIMITS.outputLimitBytes + 64 * 1024, `stdout kept ${r.out.length} bytes`)
  assert.ok(r.err.length <= BOMB_LIMITS.outputLimitBytes + 64 * 1024, `stderr kept ${r.err.length} bytes`)
  assert.ok(process.memoryUsage().rss - rssBefore < 256 * MiB, 'host memory grew with the flood')
  assertHostResponsive(w, 'output flood')
  // 16 MiB: node queues pipe writes in the writer's own memory, so a flood that outgrows
  // the session's memory in one synchronous burst ends as MemoryError instead.
  const j = await run(s, "for (let i = 0; i < 16; i++) process.stdout.write('y'.repeat(1 << 20))", 'javascript', 20)
  assert.equal(j.error?.name, 'OutputLimitError', JSON.stringify(j.error))
  await assertUsable(s, 'an output flood')
})

test('fd exhaustion: EMFILE inside, contained, session usable', async () => {
  const s = await bombSession()
  const py = String.raw`
import os, json, errno
fds = []
err = None
try:
    while len(fds) < 100000:
        fds.extend(os.pipe())
except OSError as e:
    err = errno.errorcode.get(e.errno)
n = len(fds)
for f in fds:
    os.close(f)
print(json.dumps({'err': err, 'n': n}))`
  const { json } = await pyJson(s, py)
  assert.ok(['EMFILE', 'ENFILE'].includes(json.err), JSON.stringify(json))
  assert.ok(json.n <= 1024, `opened ${json.n} fds`)
  assert.ok(await hostSpawnMs() < 5000)
  await assertUsable(s, 'fd exhaustion')
})

test('CPU spin (threads and processes): TimeoutError, host responsive, session usable', async () => {
  const s = await bombSession()
  const code = String.raw`
import os, threading
for _ in range(3):
    if os.fork() == 0:
        while True:
            pass
def spin():
    while True:
        pass
for _ in range(2):
    threading.Thread(target=spin, daemon=True).start()
while True:
    pass`
  const w = await watchHost(() => run(s, code, 'python', 2))
  assert.equal(w.value.success, false)
  assert.equal(w.value.error?.name, 'TimeoutError', JSON.stringify(w.value.error))
  assertHostResponsive(w, 'cpu spin')
  const j = await watchHost(() => run(s, 'while (true) {}', 'javascript', 1))
  assert.equal(j.value.error?.name, 'TimeoutError', JSON.stringify(j.value.error))
  assertHostResponsive(j, 'javascript spin')
  await assertUsable(s, 'a CPU spin')
})

// ------------------------------------------------------------------ cross-session isolation

test('sessions are isolated from each other: files, variables, IPC, sockets, signals', async () => {
  const a = await LocalSession.create({ memoryBytes: 128 * MiB })
  const b = await LocalSession.create({ memoryBytes: 128 * MiB })
  try {
    const ra = await run(a, String.raw`
import os, socket, json, ctypes
secret_var = SECRET
for p in ('/home/user/a-secret', '/tmp/a-secret', '/dev/shm/a-secret'):
    open(p, 'w').write(SECRET)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind('\0codebay-cross-TAG'); listener.listen(4); listener.setblocking(False)
libc = ctypes.CDLL(None, use_errno=True)
shmid = libc.shmget(0x5eed, 4096, 0o1666)
print(json.dumps({'pid': os.getpid(), 'shmid': shmid}))`.replaceAll('SECRET', JSON.stringify(SECRET)).replace('TAG', TAG))
    assert.equal(ra.success, true, JSON.stringify(ra.error))
    assert.ok(JSON.parse(ra.out.trim()).shmid >= 0)
    const aDrivers = driverHostPids(a.getSessionId())
    assert.ok(aDrivers.length >= 1)
    const rb = await run(b, String.raw`
import os, socket, json, ctypes, signal
out = {}
try:
    secret_var; out['var'] = 'VISIBLE'
except NameError:
    out['var'] = 'absent'
for p in ('/home/user/a-secret', '/tmp/a-secret', '/dev/shm/a-secret'):
    out[p] = os.path.exists(p)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect('\0codebay-cross-TAG'); out['abstract'] = 'CONNECTED'
except OSError as e:
    out['abstract'] = e.errno
libc = ctypes.CDLL(None, use_errno=True)
out['shm'] = libc.shmget(0x5eed, 4096, 0o666)
for p in HOSTPIDS:
    try:
        os.kill(p, signal.SIGKILL); out['kill %d' % p] = 'SENT'
    except OSError as e:
        out['kill %d' % p] = e.errno
print(json.dumps(out))`.replace('TAG', TAG).replace('HOSTPIDS', JSON.stringify(aDrivers)))
    assert.equal(rb.success, true, JSON.stringify(rb.error))
    assert.ok(!JSON.stringify(rb).includes(SECRET), 'session b saw session a\'s secret')
    const jb = JSON.parse(rb.out.trim().split('\n').at(-1))
    assert.equal(jb.var, 'absent')
    for (const p of ['/home/user/a-secret', '/tmp/a-secret', '/dev/shm/a-secret']) assert.equal(jb[p], false, p)
    assert.notEqual(jb.abstract, 'CONNECTED')
    assert.equal(jb.shm, -1, 'session b reached session a\'s SysV shared memory')
    // Host side: a's drivers survived, and a still holds its state and saw no connection.
    for (const p of aDrivers) assert.ok(hostAlive(p), `session a's driver ${p} died`)
    const ra2 = await run(a, String.raw`
import json
try:
    c, _ = listener.accept(); got = 'ACCEPTED'
except BlockingIOError:
    got = 'none'
print(json.dumps({'secret_var': secret_var == SECRET, 'accept': got}))`.replace('SECRET', JSON.stringify(SECRET)))
    assert.equal(ra2.success, true, JSON.stringify(ra2.error))
    assert.deepEqual(JSON.parse(ra2.out.trim()), { secret_var: true, accept: 'none' })
    // JavaScript contexts are separate too.
    await run(a, `globalThis.crossSecret = ${JSON.stringify(SECRET)}`, 'javascript')
    const jb2 = await run(b, 'typeof crossSecret', 'javascript')
    assert.equal(jb2.result, "'undefined'")
  } finally {
    await a.close()
    await b.close()
  }
})

// ------------------------------------------------------------------ close()

test('close() leaves nothing: no session process, no cgroup dir, no helper, no escaped daemon', async () => {
  const s = await LocalSession.create({ memoryBytes: 128 * MiB })
  const sid = s.getSessionId()
  // Try to outlive the session: a setsid'd sleeper, a double-forked daemon, a JS detached child.
  const r = await run(s, String.raw`
import subprocess, os
subprocess.Popen(['sleep', '4242'], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp('sleep', ['sleep', '4243'])
    os._exit(0)
print('ok')`)
  assert.equal(r.success, true, JSON.stringify(r.error))
  await run(s, "require('child_process').spawn('sleep', ['4244'], { detached: true, stdio: 'ignore' }).unref(); 1", 'javascript')
  await new Promise((res) => setTimeout(res, 200))
  const pids = sessionPids(sid)
  const helper = helperPid(sid)
  const dirs = cgroupDirs(sid)
  assert.ok(helper && hostAlive(helper), 'helper not found')
  assert.ok(dirs.length >= 1, 'no cgroup dir found')
  assert.ok(pids.length >= 5, `session pids before close: ${pids}`)
  const sleepers = pids.filter((p) => /sleep/.test(hostStatus(p)?.Name ?? ''))
  assert.ok(sleepers.length >= 3, `sleepers: ${sleepers}`)
  await s.close()
  for (const p of [...pids, helper]) assert.ok(!hostAlive(p), `host pid ${p} (${hostStatus(p)?.Name}) survived close()`)
  for (const d of dirs) assert.ok(!fs.existsSync(d), `${d} survived close()`)
  assert.deepEqual(cgroupDirs(sid), [])
  // No process anywhere on the host still runs one of the sleepers' commands.
  for (const p of hostPids()) {
    let cmd = ''
    try { cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8') } catch { continue }
    assert.ok(!/^sleep\0424[234]/.test(cmd), `escaped process ${p}: ${cmd}`)
  }
  const after = await run(s, '1')
  assert.equal(after.success, false)
})
