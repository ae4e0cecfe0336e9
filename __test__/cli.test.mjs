import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'

const CLI = fileURLToPath(new URL('../bin/codebay.js', import.meta.url))
const codebayForCli = () => createRequire(import.meta.url)('../index.js')

function codebay(args, input) {
  return spawnSync(process.execPath, [CLI, ...args], { input, encoding: 'utf8', timeout: 30_000 })
}

test('run --code prints what the code printed and exits 0', () => {
  const r = codebay(['run', '--language', 'python', '--code', 'print(40 + 2)'])
  assert.equal(r.status, 0, r.stderr)
  assert.equal(r.stdout, '42\n')
})

test('the language comes from a file extension; the main result is printed after the output', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'codebay-cli-'))
  const file = path.join(dir, 'answer.js')
  fs.writeFileSync(file, 'console.log("from js"); 6 * 7')
  const r = codebay(['run', file])
  fs.rmSync(dir, { recursive: true })
  assert.equal(r.status, 0, r.stderr)
  assert.equal(r.stdout, 'from js\n42\n')
})

test("'-' reads the code from stdin; a failing run exits 1 with the traceback on stderr", () => {
  const r = codebay(['run', '-l', 'py', '-'], 'import sys\nprint("out")\nprint("err", file=sys.stderr)\n1/0\n')
  assert.equal(r.status, 1)
  assert.equal(r.stdout, 'out\n')
  assert.match(r.stderr, /^err\n/)
  assert.match(r.stderr, /ZeroDivisionError: division by zero/)
})

test('--json prints the whole CodeExecutionResult', () => {
  const r = codebay(['run', '-l', 'js', '-c', '[1, 2].length', '--json'])
  assert.equal(r.status, 0, r.stderr)
  const result = JSON.parse(r.stdout)
  assert.equal(result.success, true)
  assert.equal(result.result, '2')
  assert.deepEqual(result.results, [{ text: '2', isMainResult: true }])
})

test('--timeout stops the run and exits 1 with TimeoutError', () => {
  const r = codebay(['run', '-l', 'python', '-c', 'while True: pass', '--timeout', '0.5', '--json'])
  assert.equal(r.status, 1)
  assert.equal(JSON.parse(r.stdout).error.name, 'TimeoutError')
})

test('usage errors exit 2 with a message', () => {
  for (const args of [[], ['walk'], ['run'], ['run', '-c', '1'], ['run', '-l', 'ruby', '-c', '1'],
    ['run', '-l', 'py', '-c', '1', 'file.py'], ['run', '-l', 'py', '-c', '1', '--timeout', 'soon'],
    ['run', '--bogus'], ['run', '-l', 'py', '/no/such/file.py']]) {
    const r = codebay(args)
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`)
    assert.match(r.stderr, /^codebay: .+\n\nUsage:/, args.join(' '))
  }
})

test('file extensions come from the engine\'s runtime registry', () => {
  const { supportedLanguages } = codebayForCli()
  assert.deepEqual(supportedLanguages().map((l) => [l.name, l.extensions]), [['python', ['py']], ['javascript', ['js', 'mjs', 'cjs']]])
  assert.deepEqual(supportedLanguages()[1].aliases, ['js', 'node', 'nodejs'])
})
