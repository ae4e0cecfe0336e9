import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
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

/** Runs the CLI asynchronously; when each stdout chunk arrived, and when it exited. */
function codebayTimed(args, { mergeStderr = false } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now()
    // `2>&1` puts both streams on one pipe: the order read is the order written.
    const child = mergeStderr
      ? spawn('sh', ['-c', 'exec "$0" "$@" 2>&1', process.execPath, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    const chunks = []
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (text) => chunks.push({ text, at: Date.now() - t0 }))
    child.stderr.setEncoding('utf8').on('data', (text) => { stderr += text })
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.on('error', reject)
    child.on('close', (status) => {
      clearTimeout(timer)
      resolve({ status, chunks, stdout: chunks.map((c) => c.text).join(''), stderr, exitedAt: Date.now() - t0 })
    })
  })
}

test('the output streams while the code runs: the first line is seen well before the run ends', async () => {
  const r = await codebayTimed(['run', '-l', 'python', '-c', "import time\nprint('first')\ntime.sleep(2)\nprint('second')"])
  assert.equal(r.status, 0, r.stderr)
  assert.equal(r.stdout, 'first\nsecond\n')
  const first = r.chunks.find((c) => c.text.startsWith('first'))
  assert.ok(r.exitedAt - first.at >= 1500, `the first line arrived at ${first.at} ms, the CLI exited at ${r.exitedAt} ms`)
  for (const language of ['python', 'javascript']) {
    const code = language === 'python'
      ? "import sys, time\nprint('out 1')\ntime.sleep(0.3)\nprint('err 1', file=sys.stderr)\ntime.sleep(0.3)\nprint('out 2')"
      : "console.log('out 1'); await new Promise((r) => setTimeout(r, 300)); console.error('err 1'); await new Promise((r) => setTimeout(r, 300)); console.log('out 2')"
    const merged = await codebayTimed(['run', '-l', language, '-c', code], { mergeStderr: true })
    assert.equal(merged.status, 0, merged.stdout)
    assert.equal(merged.stdout, 'out 1\nerr 1\nout 2\n', `${language}: stdout and stderr interleaved as written`)
  }
})

// A 1×1 PNG.
const PNG_BASE64 = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=='
const SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"><rect width="1" height="1"/></svg>'

test('--out-dir writes the image results as files, byte for byte, and prints their paths', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'codebay-cli-'))
  const out = path.join(dir, 'images') // made when missing
  try {
    const code = `print('before')\ndisplay({'image/png': '${PNG_BASE64}'}, raw=True)\n` +
      `display({'text/plain': 'no image'}, raw=True)\ndisplay({'image/svg+xml': '${SVG}'}, raw=True)\n'done'`
    const r = codebay(['run', '-l', 'python', '-c', code, '--out-dir', out])
    assert.equal(r.status, 0, r.stderr)
    const png = path.join(out, 'result-1.png')
    const svg = path.join(out, 'result-2.svg')
    assert.equal(r.stdout, `before\n'done'\n${png}\n${svg}\n`)
    assert.deepEqual(fs.readdirSync(out).sort(), ['result-1.png', 'result-2.svg'])
    const bytes = fs.readFileSync(png)
    assert.ok(bytes.equals(Buffer.from(PNG_BASE64, 'base64')), 'the PNG is the decoded base64')
    assert.ok(bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])))
    assert.equal(fs.readFileSync(svg, 'utf8'), SVG)
    // No image, no file and no directory.
    const none = path.join(dir, 'none')
    const plain = codebay(['run', '-l', 'js', '-c', '1', '-o', none])
    assert.equal(plain.status, 0, plain.stderr)
    assert.equal(plain.stdout, '1\n')
    assert.equal(fs.existsSync(none), false)
    // A directory that cannot be made: the output is printed, then the reason, exit 1.
    const bad = codebay(['run', '-l', 'python', '-c', code, '--out-dir', '/proc/codebay-no-such-dir/x'])
    assert.equal(bad.status, 1)
    assert.equal(bad.stdout, "before\n'done'\n")
    assert.match(bad.stderr, /^codebay: cannot write the images to \/proc\/codebay-no-such-dir\/x: ENOENT/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('--version prints the package version', () => {
  const { version } = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  for (const args of [['--version'], ['run', '--version']]) {
    const r = codebay(args)
    assert.equal(r.status, 0, r.stderr)
    assert.equal(r.stdout, `${version}\n`)
  }
})

test('arguments after -- reach the code as sys.argv[1:] / process.argv.slice(2), line numbers unmoved', () => {
  const py = codebay(['run', '-l', 'python', '-c', 'import sys\nprint(sys.argv)\n1/0', '--', 'a b', '--json', '-x'])
  assert.equal(py.status, 1)
  assert.equal(py.stdout, "['-c', 'a b', '--json', '-x']\n")
  assert.match(py.stderr, /File "<cell-1>", line 3, in <module>\n {4}1\/0/)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'codebay-cli-'))
  try {
    const file = path.join(dir, 'args.js')
    fs.writeFileSync(file, 'console.log(JSON.stringify(process.argv.slice(1)))\nnull.x')
    const js = codebay(['run', file, '--', 'one', '--', "it's"])
    assert.equal(js.status, 1)
    assert.equal(js.stdout, `${JSON.stringify([file, 'one', '--', "it's"])}\n`)
    assert.match(js.stderr, /TypeError: Cannot read properties of null \(reading 'x'\)\n {4}at <cell-\d+>:2:6/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
  const stdin = codebay(['run', '-l', 'py', '-', '--'], 'import sys\nprint(sys.argv)')
  assert.equal(stdin.stdout, "['-']\n")
  // Without --, a second positional is still a usage error.
  assert.equal(codebay(['run', '-l', 'py', '-c', '1', 'extra']).status, 2)
})
