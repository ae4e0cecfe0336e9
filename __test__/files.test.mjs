// Files of a session (issue 9): written and read as the code's user, with its
// confinement; every path that leads out is refused and the host is unchanged.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { codebay, hostStatus, sessionPids, isNamespaceInit } from './helpers.mjs'

const { LocalSession, Files } = codebay
const INDEX = fileURLToPath(new URL('../index.js', import.meta.url))
const MiB = 2 ** 20

let s
before(async () => { s = await LocalSession.create({ poolSize: 0 }) })
after(async () => { await s?.close() })

async function py(code) {
  const r = await s.code.runCode(code, 'python', 30)
  assert.equal(r.success, true, `${code}: ${JSON.stringify(r.error)}`)
  return r.result
}

async function refused(promise, code) {
  await assert.rejects(promise, (e) => {
    assert.equal(e.code, code, `${e.code}: ${e.message}`)
    return true
  })
}

test('binary round trips: 70,000 random bytes, seen by the code as written', async () => {
  const data = crypto.randomBytes(70_000)
  await s.files.write('in/random.bin', data)
  const back = await s.files.read('in/random.bin')
  assert.ok(Buffer.isBuffer(back))
  assert.ok(back.equals(data))
  const digest = crypto.createHash('sha256').update(data).digest('hex')
  assert.equal(await py("import hashlib; hashlib.sha256(open('in/random.bin','rb').read()).hexdigest()"), `'${digest}'`)
  // Uint8Array and strings too; text reads back as a string.
  await s.files.write('/tmp/u8.bin', new Uint8Array([1, 2, 3]))
  assert.deepEqual([...await s.files.read('/tmp/u8.bin')], [1, 2, 3])
  await s.files.write('notes.txt', 'héllo\n')
  assert.equal(await s.files.read('notes.txt', { format: 'text' }), 'héllo\n')
  assert.equal(await py("open('notes.txt', encoding='utf-8').read()"), "'héllo\\n'")
})

test('files written by the code are read back; list, exists and remove', async () => {
  await py("import os\nos.makedirs('proj/sub', exist_ok=True)\nopen('proj/a.csv','w').write('x,y\\n1,2\\n')\nopen('proj/sub/b.txt','w').write('b')")
  assert.equal(await s.files.read('/home/user/proj/a.csv', { format: 'text' }), 'x,y\n1,2\n')
  const entries = await s.files.list('proj')
  assert.deepEqual(entries.map((e) => [e.name, e.path, e.type]), [
    ['a.csv', '/home/user/proj/a.csv', 'file'],
    ['sub', '/home/user/proj/sub', 'dir'],
  ])
  assert.equal(entries[0].size, 8)
  assert.ok((await s.files.list()).some((e) => e.name === 'proj'), 'list() is /home/user')
  assert.equal(await s.files.exists('proj/a.csv'), true)
  assert.equal(await s.files.exists('proj/nothing'), false)
  await s.files.remove('proj/a.csv')
  assert.equal(await s.files.exists('proj/a.csv'), false)
  await s.files.remove('proj')
  assert.equal(await py("import os; os.path.exists('proj')"), 'False')
  await refused(s.files.read('proj/a.csv'), 'ERR_CODEBAY_NOT_FOUND')
  await refused(s.files.remove('proj'), 'ERR_CODEBAY_NOT_FOUND')
})

test('a 100 MiB file round-trips, holding about two copies in the Node process', () => {
  // In a fresh process, so its peak RSS (VmHWM) is this transfer's.
  const script = `
    const { LocalSession } = require(${JSON.stringify(INDEX)})
    const hwm = () => Number(/VmHWM:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1]) * 1024
    ;(async () => {
      const s = await LocalSession.create({ poolSize: 0, prewarm: [] })
      const data = Buffer.alloc(${100 * MiB})
      for (let i = 0; i < data.length; i += 4096) data[i] = i & 255
      const base = hwm()
      await s.files.write('big.bin', data)
      const back = await s.files.read('big.bin')
      const peak = hwm() - base
      console.log(JSON.stringify({ same: back.equals(data), peak }))
      await s.close()
    })()`
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 120_000 })
  assert.equal(child.status, 0, child.stderr)
  const { same, peak } = JSON.parse(child.stdout.trim().split('\n').at(-1))
  assert.equal(same, true)
  // The caller's buffer is one copy; the engine's while it writes, or the read result, a second.
  assert.ok(peak <= 1.6 * 100 * MiB, `the transfer grew the peak RSS by ${(peak / MiB).toFixed(1)} MiB beyond the data itself`)
})

test('paths that lead out are refused and nothing outside changes', async () => {
  const hostPasswd = fs.readFileSync('/etc/passwd')
  await py("import os\nos.symlink('/etc', 'etc-link')\nos.makedirs('mid', exist_ok=True)\nos.symlink('/etc', 'mid/out')\nos.symlink('/etc/passwd', 'pw')\nos.symlink('../../etc', 'up')\nos.mkfifo('pipe')")
  for (const [path, code] of [
    ['../../etc/passwd', 'ERR_CODEBAY_PATH_OUTSIDE'],
    ['/etc/passwd', 'ERR_CODEBAY_PATH_OUTSIDE'],
    ['a/../../x', 'ERR_CODEBAY_PATH_OUTSIDE'],
    ['etc-link/passwd', 'ERR_CODEBAY_PATH_OUTSIDE'],
    ['mid/out/passwd', 'ERR_CODEBAY_PATH_OUTSIDE'],
    ['pw', 'ERR_CODEBAY_PATH_OUTSIDE'],
    ['up/passwd', 'ERR_CODEBAY_PATH_OUTSIDE'],
    ['pipe', 'ERR_CODEBAY_NOT_A_FILE'],
  ]) {
    await refused(s.files.read(path), code)
    await refused(s.files.write(path, 'pwned\n'), code)
  }
  for (const path of ['etc-link', 'mid/out', '../../etc', '/etc']) await refused(s.files.list(path), 'ERR_CODEBAY_PATH_OUTSIDE')
  await refused(s.files.exists('mid/out/passwd'), 'ERR_CODEBAY_PATH_OUTSIDE')
  await refused(s.files.write('/home/user', 'x'), 'ERR_CODEBAY_NOT_A_FILE')
  // Removing a symlink removes the link, never what it names.
  await s.files.remove('mid')
  await s.files.remove('etc-link')
  assert.equal(await py("import os; sorted(os.listdir('/etc'))[:1], os.path.exists('mid'), os.path.lexists('etc-link')"), "(['group'], False, False)")
  assert.ok(fs.readFileSync('/etc/passwd').equals(hostPasswd), 'the host /etc/passwd is unchanged')
  assert.equal(await py("import os; sorted(n for n in os.listdir('.') if 'codebay' in n)"), '[]', 'no temporary file is left')
})

test('a write over the workspace limit is refused, nothing is written, and the session goes on', async () => {
  const small = await LocalSession.create({ poolSize: 0, prewarm: [], workspaceBytes: 8 * MiB })
  try {
    await small.files.write('keep.txt', 'old')
    await refused(small.files.write('keep.txt', Buffer.alloc(9 * MiB, 1)), 'ERR_CODEBAY_NO_SPACE')
    await refused(small.files.write('new.bin', Buffer.alloc(9 * MiB, 1)), 'ERR_CODEBAY_NO_SPACE')
    assert.equal(await small.files.read('keep.txt', { format: 'text' }), 'old', 'the old content is kept')
    assert.equal(await small.files.exists('new.bin'), false)
    const r = await small.code.runCode("import os; sorted(os.listdir('.'))", 'python')
    assert.equal(r.result, "['keep.txt']")
    await small.files.write('fits.bin', Buffer.alloc(4 * MiB, 2))
    assert.equal((await small.files.read('fits.bin')).length, 4 * MiB)
  } finally {
    await small.close()
  }
})

test('file operations run as the code\'s user, confined, never as the sandbox\'s root', async () => {
  await s.files.write('owner.txt', 'x')
  assert.equal(await py("import os; st = os.stat('owner.txt'); (st.st_uid, oct(st.st_mode & 0o777))"), "(1000, '0o644')")
  // From the host: the agent is a process of the session, with the code's host uid.
  const agent = sessionPids(s.getSessionId()).map((p) => [p, hostStatus(p)])
    .find(([p, st]) => st && !isNamespaceInit(p) && fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('file-agent'))
  assert.ok(agent, 'the file agent runs in the session\'s cgroups')
  const [, st] = agent
  const driver = sessionPids(s.getSessionId()).map(hostStatus).find((x) => x && /python/.test(x.Name))
  assert.equal(st.Uid, driver.Uid, 'the same host uid as the code')
  assert.notEqual(st.Uid.split(/\s+/)[0], '0')
  assert.equal(st.NoNewPrivs, '1')
  assert.equal(st.Seccomp, '2')
  assert.equal(st.CapEff, '0000000000000000')
})

test('the file tools through callMcpTool, text and base64; Files over any session', async () => {
  let r = await s.callMcpTool('write_file', { path: 'tool.txt', data: 'via tool' })
  assert.equal(r.success, true, JSON.stringify(r))
  r = await s.callMcpTool('read_file', { path: 'tool.txt' })
  assert.equal(r.data, 'via tool')
  r = await s.callMcpTool('write_file', { path: '/tmp/b.bin', data: Buffer.from([0, 255, 1]).toString('base64'), encoding: 'base64' })
  assert.equal(r.success, true)
  r = await s.callMcpTool('read_file', { path: '/tmp/b.bin', encoding: 'base64' })
  assert.equal(r.data, 'AP8B')
  r = await s.callMcpTool('read_file', { path: '/tmp/b.bin' })
  assert.equal(r.success, false)
  assert.match(r.errorMessage, /not UTF-8 text; read it with encoding 'base64'/)
  r = await s.callMcpTool('list_files', { path: '/tmp' })
  assert.ok(JSON.parse(r.data).some((e) => e.name === 'b.bin' && e.type === 'file' && e.size === 3))
  r = await s.callMcpTool('remove_file', { path: '/tmp/b.bin' })
  assert.equal(r.success, true)
  r = await s.callMcpTool('read_file', { path: '/etc/passwd' })
  assert.equal(r.success, false)
  assert.match(r.errorMessage, /^\[ERR_CODEBAY_PATH_OUTSIDE\] /)
  r = await s.callMcpTool('write_file', { path: 'x', data: 1 })
  assert.equal(r.success, false)
  // A session that has only callMcpTool gets the same Files, over its tools.
  const calls = []
  const remote = new Files({ callMcpTool: (name, args) => { calls.push(name); return s.callMcpTool(name, args) } })
  await remote.write('remote.bin', Buffer.from([9, 8, 7]))
  assert.deepEqual([...await remote.read('remote.bin')], [9, 8, 7])
  assert.equal(await remote.exists('remote.bin'), true)
  assert.equal(await remote.exists('nope/none'), false)
  await refused(remote.read('/etc/passwd'), 'ERR_CODEBAY_PATH_OUTSIDE')
  await refused(remote.read('missing.txt'), 'ERR_CODEBAY_NOT_FOUND')
  assert.deepEqual([...new Set(calls)].sort(), ['list_files', 'read_file', 'write_file'])
})

test('bad arguments are typed errors, not crashes', async () => {
  await assert.rejects(s.files.write(42, 'x'), (e) => e instanceof TypeError && e.code === 'ERR_CODEBAY_INVALID_ARGUMENT')
  await assert.rejects(s.files.write('x', 42), (e) => e instanceof TypeError && /string, a Buffer or a Uint8Array/.test(e.message))
  await assert.rejects(s.files.read('x', { format: 'hex' }), (e) => e instanceof TypeError && /'bytes' or 'text'/.test(e.message))
  await assert.rejects(s.files.read('x', { fromat: 'text' }), (e) => e instanceof TypeError && /Did you mean 'format'/.test(e.message))
  assert.throws(() => new Files(7), (e) => e instanceof TypeError)
  const closed = await LocalSession.create({ poolSize: 0, prewarm: [] })
  await closed.close()
  await assert.rejects(closed.files.read('x'), (e) => e.code === 'ERR_CODEBAY_SESSION_CLOSED')
})
