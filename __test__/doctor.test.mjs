// `codebay doctor`: its verdicts as root, and as ordinary users with and without a
// cgroup parent and subordinate ids. The users (and their cgroup parents) are made here
// when missing, so a fresh machine needs nothing set up; the parents made are removed.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import fs from 'node:fs'
import path from 'node:path'

const ROOT = path.resolve(fileURLToPath(new URL('..', import.meta.url)))
/** What `node bin/codebay.js doctor` needs of the package. */
const PACKAGE_FILES = ['bin/codebay.js', 'index.js', 'codebay.linux-x64-gnu.node', 'codebay-sandbox', 'package.json']
const NAMES = ['node', 'addon', 'helper', 'user', 'container', 'kernel', 'user_namespaces', 'mounts', 'seccomp', 'landlock', 'cgroup', 'id_mapping', 'python']
/** A user with subordinate ids (as useradd gives them), and one without. */
const USER = 'codebay-doctor'
const OWN_USER = 'codebay-doctor-own'
const PARENT = `/${USER}`
const CG = '/sys/fs/cgroup'

const isRoot = process.getuid() === 0
const env = { ...process.env }
delete env.CODEBAY_CGROUP_PARENT
delete env.CODEBAY_SANDBOX_BIN

function sh(cmd, args) {
  return spawnSync(cmd, args, { encoding: 'utf8' })
}

/** Runs `doctor --json` (from the package at `dir`), as `user` if given, under `prefix` (argv run as root first). */
function doctor(args = [], { user, dir = ROOT, prefix = [] } = {}) {
  const node = [process.execPath, path.join(dir, 'bin/codebay.js'), 'doctor', '--json', ...args]
  const argv = [...prefix, ...(user ? ['runuser', '-u', user, '--'] : []), ...node]
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', env, cwd: '/', timeout: 60_000 })
  let answer
  try {
    answer = JSON.parse(r.stdout)
  } catch {
    assert.fail(`doctor ${args.join(' ')} as ${user ?? 'root'} printed no JSON (status ${r.status}): ${r.stdout}${r.stderr}`)
  }
  const check = Object.fromEntries(answer.checks.map((c) => [c.name, c]))
  return { status: r.status, answer, check }
}

function verdicts(check, names) {
  return Object.fromEntries(names.map((n) => [n, check[n]?.verdict]))
}

/** The cgroup mode: 'v1' (memory and pids as v1 hierarchies), 'v2' (a unified hierarchy with them), or null. */
function cgroupMode() {
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' - '))
  const v1 = (c) => mounts.some(([left, right]) => right?.startsWith('cgroup ') && right.split(' ')[2]?.split(',').includes(c) && left.split(' ')[4] === `${CG}/${c}`)
  if (v1('memory') && v1('pids')) return 'v1'
  const unified = mounts.some(([left, right]) => right?.startsWith('cgroup2 ') && left.split(' ')[4] === CG)
  if (unified && /\bmemory\b/.test(fs.readFileSync(`${CG}/cgroup.controllers`, 'utf8')) && /\bpids\b/.test(fs.readFileSync(`${CG}/cgroup.controllers`, 'utf8'))) return 'v2'
  return null
}

/** Makes `name` when it does not exist; false when users cannot be made here. */
function ensureUser(name, { subordinateIds }) {
  if (sh('id', ['-u', name]).status === 0) return true
  const args = ['-M', '-s', '/usr/sbin/nologin', '-c', 'codebay doctor test']
  if (!subordinateIds) args.push('-K', 'SUB_UID_COUNT=0', '-K', 'SUB_GID_COUNT=0')
  const r = sh('useradd', [...args, name])
  return r.status === 0
}

/** What id_mapping should say for `name`: its subordinate ids are used when it has them and newuidmap is installed. */
function expectedIds(name) {
  const uid = sh('id', ['-u', name]).stdout.trim()
  const gid = sh('id', ['-g', name]).stdout.trim()
  const has = (file, id) => {
    let text = ''
    try { text = fs.readFileSync(file, 'utf8') } catch {}
    return text.split('\n').some((l) => {
      const [who, , count] = l.trim().split(':')
      return (who === name || who === id) && Number(count) > 0
    })
  }
  const tools = ['newuidmap', 'newgidmap'].every((t) => ['/usr/bin', '/bin', '/usr/sbin'].some((d) => fs.existsSync(`${d}/${t}`)))
  return tools && has('/etc/subuid', uid) && has('/etc/subgid', gid)
    ? { verdict: 'ok', detail: /^subordinate ids: the code runs as host uid \d+/ }
    : { verdict: 'warning', detail: /^own uid only: the code runs as this user's own uid/, fix: /usermod --add-subuids/ }
}

/**
 * The package where `user` can read it: this checkout, or (when it cannot, as where CI
 * clones under /root) a copy of what the doctor needs in a directory under /var/tmp.
 */
function readablePackage(user, made) {
  const readable = (dir) => PACKAGE_FILES.every((f) => sh('runuser', ['-u', user, '--', 'test', '-r', path.join(dir, f)]).status === 0) &&
    sh('runuser', ['-u', user, '--', 'test', '-x', path.join(dir, 'codebay-sandbox')]).status === 0
  if (readable(ROOT)) return ROOT
  const dir = fs.mkdtempSync('/var/tmp/codebay-doctor-')
  made.push(() => fs.rmSync(dir, { recursive: true, force: true }))
  fs.chmodSync(dir, 0o755)
  for (const f of PACKAGE_FILES) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true, mode: 0o755 })
    fs.copyFileSync(path.join(ROOT, f), path.join(dir, f))
    fs.chmodSync(path.join(dir, f), 0o755)
  }
  fs.chmodSync(path.join(dir, 'bin'), 0o755)
  return dir
}

/** Makes the user's cgroup parents, as an administrator would; returns the directories made. */
function makeParents(mode, user) {
  const made = []
  const mk = (dir) => {
    if (fs.existsSync(dir)) return
    fs.mkdirSync(dir)
    made.unshift(dir)
  }
  if (mode === 'v1') {
    for (const c of ['memory', 'pids', 'cpu']) {
      if (!fs.existsSync(`${CG}/${c}/cgroup.procs`)) continue
      mk(`${CG}/${c}${PARENT}`)
      sh('chown', ['-R', user, `${CG}/${c}${PARENT}`])
    }
  } else {
    // The controllers reach the parent from the root; the user's processes live in a
    // leaf of it (cgroup v2 moves processes only below a cgroup the mover may write).
    fs.writeFileSync(`${CG}/cgroup.subtree_control`, '+memory +pids')
    mk(`${CG}${PARENT}`)
    mk(`${CG}${PARENT}/shell`)
    sh('chown', ['-R', user, `${CG}${PARENT}`])
  }
  return made
}

test('as root, every requirement is there and the doctor exits 0', { skip: !isRoot && 'needs root' }, () => {
  const { status, answer, check } = doctor()
  assert.deepEqual(answer.checks.map((c) => c.name), NAMES)
  for (const name of NAMES.filter((n) => n !== 'python')) {
    assert.equal(check[name].verdict, 'ok', `${name}: ${check[name].detail} ${check[name].fix ?? ''}`)
    assert.equal(check[name].fix, null)
  }
  assert.notEqual(check.python.verdict, 'missing', 'Python is only needed for Python runs')
  assert.equal(status, 0)
  assert.equal(answer.ok, true)
  assert.match(check.user.detail, /^root \(uid 0\)/)
  assert.match(check.id_mapping.detail, /^root: each session maps 65536 unprivileged host ids of its own/)
  assert.match(check.cgroup.detail, /a test session's cgroups were made there with limits, a process moved in, then removed/)
  assert.match(check.landlock.detail, /^ABI \d+ \(needs 6\)/)
  assert.match(check.node.detail, new RegExp(`^Node ${process.version.replace(/\./g, '\\.')} at `))

  // The table says the same, for people.
  const table = spawnSync(process.execPath, [path.join(ROOT, 'bin/codebay.js'), 'doctor'], { encoding: 'utf8', env })
  assert.equal(table.status, 0, table.stdout + table.stderr)
  assert.match(table.stdout, /^codebay doctor: /)
  assert.match(table.stdout, /^ok {7}user_namespaces {2}made user, pid, mount/m)
  assert.match(table.stdout, /Everything codebay needs is here/)
})

test('doctor usage errors exit 2', () => {
  for (const args of [['--cgroup-parent', '../etc'], ['extra'], ['--code', '1'], ['--cgroup-parent', '']]) {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/codebay.js'), 'doctor', ...args], { encoding: 'utf8', env })
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`)
    assert.match(r.stderr, /^codebay: .+\n\nUsage:/, args.join(' '))
  }
  const run = spawnSync(process.execPath, [path.join(ROOT, 'bin/codebay.js'), 'run', '-l', 'js', '-c', '1', '--cgroup-parent', '/x'], { encoding: 'utf8', env })
  assert.equal(run.status, 2)
  assert.match(run.stderr, /--cgroup-parent is an option of doctor/)
})

test('as an ordinary user: a cgroup only with a parent (or delegation), ids as /etc/subuid gives them', { skip: !isRoot && 'needs root (makes users and cgroup parents)' }, (t) => {
  if (sh('runuser', ['--version']).status !== 0) return t.skip('runuser is not installed')
  if (!ensureUser(USER, { subordinateIds: true }) || !ensureUser(OWN_USER, { subordinateIds: false })) return t.skip('cannot make test users (useradd)')
  const mode = cgroupMode()
  const cleanup = []
  t.after(() => { for (const undo of cleanup.reverse()) undo() })
  const dir = readablePackage(USER, cleanup)
  if (sh('runuser', ['-u', USER, '--', process.execPath, '--version']).status !== 0) return t.skip(`${process.execPath} cannot be run by ${USER}`)
  const common = ['user_namespaces', 'mounts', 'seccomp', 'landlock']
  const ok = Object.fromEntries(common.map((n) => [n, 'ok']))

  // Without a parent (and, on cgroup v2, run from a cgroup not delegated to it): no cgroup, and how to get one.
  const bare = doctor([], { user: USER, dir })
  assert.deepEqual(verdicts(bare.check, common), ok, JSON.stringify(bare.answer, null, 2))
  assert.match(bare.check.user.detail, new RegExp(`^uid \\d+ \\(${USER}\\), gid \\d+, not root`))
  assert.equal(bare.check.cgroup.verdict, 'missing', JSON.stringify(bare.check.cgroup))
  assert.match(bare.check.cgroup.detail, /codebay runs as uid \d+, not root, .*\(step no_cgroup\)$/)
  assert.match(bare.check.cgroup.fix, mode === 'v2' ? /systemd-run --user --scope -p Delegate=yes/ : new RegExp(`sudo chown -R ${USER} /sys/fs/cgroup/\\$c/codebay-${USER}`))
  assert.match(bare.check.cgroup.fix, /resourceLimits: 'rlimits'/)
  const ids = expectedIds(USER)
  assert.equal(bare.check.id_mapping.verdict, ids.verdict, JSON.stringify(bare.check.id_mapping))
  assert.match(bare.check.id_mapping.detail, ids.detail)
  assert.equal(bare.status, 1)
  assert.equal(bare.answer.ok, false)

  // A user without subordinate ids: the code runs as its own uid, a warning with the fix.
  const own = doctor([], { user: OWN_USER, dir })
  const ownIds = expectedIds(OWN_USER)
  assert.equal(own.check.id_mapping.verdict, ownIds.verdict, JSON.stringify(own.check.id_mapping))
  assert.match(own.check.id_mapping.detail, ownIds.detail)
  if (ownIds.fix) assert.match(own.check.id_mapping.fix, ownIds.fix)

  if (!mode) return t.skip('no cgroup v1 memory+pids hierarchies and no cgroup v2 with them')
  const parents = makeParents(mode, USER)
  cleanup.push(() => { for (const d of parents) try { fs.rmdirSync(d) } catch {} })
  // On cgroup v2 the user's process runs in the parent's leaf, moved there by root first.
  const prefix = mode === 'v2' ? ['sh', '-c', `echo $$ > ${CG}${PARENT}/shell/cgroup.procs && exec "$@"`, 'sh'] : []
  const runs = [doctor(['--cgroup-parent', PARENT], { user: USER, dir, prefix })]
  if (mode === 'v2') runs.push(doctor([], { user: USER, dir, prefix })) // the delegated subtree, found from /proc/self/cgroup
  for (const given of runs) {
    assert.equal(given.check.cgroup.verdict, 'ok', JSON.stringify(given.check.cgroup))
    assert.match(given.check.cgroup.detail, new RegExp(`^cgroup v${mode === 'v1' ? 1 : 2}[: ].*${PARENT}/codebay`))
    assert.deepEqual(verdicts(given.check, common), ok)
    assert.equal(given.status, 0, JSON.stringify(given.answer, null, 2))
  }
  // The test session's cgroups are gone again.
  for (const d of mode === 'v1' ? ['memory', 'pids'].map((c) => `${CG}/${c}${PARENT}`) : [`${CG}${PARENT}`]) {
    assert.equal(fs.existsSync(`${d}/codebay`), false, `${d}/codebay left behind`)
  }
})
