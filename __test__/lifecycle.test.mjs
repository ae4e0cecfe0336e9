// What a session leaves behind when its Node process goes away.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import fs from 'node:fs'
import path from 'node:path'
import os from 'node:os'
import { cgroupDirs, sessionPids, waitFor } from './helpers.mjs'

const INDEX = fileURLToPath(new URL('../index.js', import.meta.url))

/** Children of every thread of a process (the helper is spawned from a tokio thread). */
function childrenOf(pid) {
  const kids = []
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    const text = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim()
    if (text) kids.push(...text.split(/\s+/).map(Number))
  }
  return kids
}

test('when the Node process is SIGKILLed, every helper (pooled ones too) and every sandbox process go with it', async (t) => {
  const script = `
    const { LocalSession } = require(${JSON.stringify(INDEX)})
    ;(async () => {
      const s = await LocalSession.create()
      await s.code.runCode("import subprocess; subprocess.Popen(['sh', '-c', 'trap \\"\\" TERM INT HUP; sleep 1000'], start_new_session=True)", 'python')
      await s.code.runCode('setInterval(() => {}, 1000); 1', 'javascript')
      console.log(s.getSessionId())
      setInterval(() => {}, 1000)
    })()
  `
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  // Whatever fails below, the child (which never exits by itself) must not outlive the test.
  t.after(() => child.kill('SIGKILL'))
  const sessionId = await new Promise((resolve, reject) => {
    child.stdout.once('data', (d) => resolve(String(d).trim()))
    child.once('exit', (code) => reject(new Error(`node exited early with ${code}`)))
  })
  const dirs = cgroupDirs(sessionId)
  assert.ok(dirs.length > 0, 'the session has cgroups while it lives')
  const pids = sessionPids(sessionId)
  assert.ok(pids.length >= 4, `init, two drivers and the sleeper are in the cgroup: ${pids}`)
  // The session's helper, and those of the sandboxes the pool built meanwhile.
  await new Promise((r) => setTimeout(r, 1000))
  const helpers = childrenOf(child.pid).filter((p) => fs.readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'codebay-sandbox')
  assert.ok(helpers.length >= 2, `the session's helper and the pool's: ${helpers}`)
  pids.push(...helpers)
  child.kill('SIGKILL')
  const gone = await waitFor(() => cgroupDirs(sessionId).length === 0 && pids.every((p) => !fs.existsSync(`/proc/${p}`)), 10_000)
  assert.ok(gone, `left behind: cgroups ${cgroupDirs(sessionId)}, pids ${pids.filter((p) => fs.existsSync(`/proc/${p}`))}`)
})

test('without its sandbox helper, create() rejects naming it: nothing runs unisolated', () => {
  const script = `
    const { LocalSession } = require(${JSON.stringify(INDEX)})
    LocalSession.create({ poolSize: 0 }).then(
      () => { console.log('created'); process.exit(3) },
      (e) => { console.log(e.message); process.exit(0) })
  `
  const child = spawnSync(process.execPath, ['-e', script], {
    env: { ...process.env, CODEBAY_SANDBOX_BIN: '/nonexistent/codebay-sandbox' }, encoding: 'utf8', timeout: 20_000,
  })
  assert.equal(child.status, 0, `create() did not reject: ${child.stdout}${child.stderr}`)
  assert.match(child.stdout, /could not start the sandbox helper \/nonexistent\/codebay-sandbox/)
})

test('a helper that finds the kernel lacking fails create() with ERR_CODEBAY_KERNEL_UNSUPPORTED', () => {
  // A stand-in helper: it reads the config datagram and answers as the real one does on a
  // kernel without Landlock (the real helper's check is tested in crates/codebay-sandbox).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'codebay-fake-helper-'))
  const helper = path.join(dir, 'codebay-sandbox')
  fs.writeFileSync(helper, [
    '#!/usr/bin/python3',
    'import os',
    'os.read(0, 1 << 20)',
    'os.write(0, b\'{"type":"error","step":"kernel_check","message":"the kernel lacks what the sandbox needs: Landlock"}\')',
  ].join('\n'), { mode: 0o755 })
  const script = `
    const { LocalSession } = require(${JSON.stringify(INDEX)})
    LocalSession.create({ poolSize: 0 }).then(
      () => { console.log('created'); process.exit(3) },
      (e) => { console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })); process.exit(0) })
  `
  const child = spawnSync(process.execPath, ['-e', script], {
    env: { ...process.env, CODEBAY_SANDBOX_BIN: helper }, encoding: 'utf8', timeout: 20_000,
  })
  fs.rmSync(dir, { recursive: true, force: true })
  assert.equal(child.status, 0, `create() did not reject: ${child.stdout}${child.stderr}`)
  const e = JSON.parse(child.stdout)
  assert.equal(e.code, 'ERR_CODEBAY_KERNEL_UNSUPPORTED')
  assert.match(e.message, /\(kernel_check\): the kernel lacks what the sandbox needs: Landlock/)
})
