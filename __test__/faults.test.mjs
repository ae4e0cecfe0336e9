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
