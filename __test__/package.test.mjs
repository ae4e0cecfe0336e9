// The package as a user gets it: `npm pack` of this tree, installed from the tarball
// into a fresh project with no Rust toolchain on PATH and no network, then imported by
// name. The pack takes the tree as built: `npm test` does not rebuild (and a rebuild
// would overwrite the addon and helper under the other suites' running sessions), so
// it skips the `prepack` build with --ignore-scripts; that build only refreshes these
// same files.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const BUILT = ['codebay.linux-x64-gnu.node', 'codebay-sandbox', 'index.js', 'index.d.ts']

/**
 * Not under /tmp: the sandbox builds its root there in its own mount namespace, so the
 * installed package's runtimes/ (bound into every sandbox) must live elsewhere.
 */
function workBase() {
  for (const dir of ['/var/tmp', os.homedir()]) {
    try {
      fs.accessSync(dir, fs.constants.W_OK)
      return dir
    } catch {}
  }
  throw new Error('neither /var/tmp nor the home directory is writable')
}

/** The first `name` on `PATH`, or null. */
function which(name, PATH) {
  for (const dir of PATH.split(':')) {
    const file = path.join(dir, name)
    try {
      fs.accessSync(file, fs.constants.X_OK)
      if (fs.statSync(file).isFile()) return file
    } catch {}
  }
  return null
}

let work, project, tarball, packed
/** Node's directory, the real python3's, /usr/bin and /bin: no cargo, no rustc. */
let PATH
/** A directory holding only a `node` symlink: no python3 anywhere on it. */
let NO_PYTHON_PATH

/** A minimal environment: nothing of the npm that runs this test leaks into the child. */
const envWith = (PATH) => ({ PATH, HOME: os.homedir(), npm_config_update_notifier: 'false' })

function npm(args, { cwd, PATH: path_ = PATH }) {
  // The npm running this test when there is one (`npm test`), else the one beside node.
  const cli = process.env.npm_execpath
  const [command, argv] = cli && cli.endsWith('.js') ? [process.execPath, [cli, ...args]] : ['npm', args]
  const run = spawnSync(command, argv, { cwd, env: envWith(path_), encoding: 'utf8', timeout: 120_000 })
  assert.equal(run.status, 0, `npm ${args.join(' ')}:\n${run.stdout}${run.stderr}`)
  return run
}

/** Runs `source` as an ES module in the project, with `PATH`; its stdout as JSON. */
function runInProject(name, source, path_) {
  const file = path.join(project, name)
  fs.writeFileSync(file, source)
  const run = spawnSync(process.execPath, [file], { cwd: project, env: envWith(path_), encoding: 'utf8', timeout: 60_000 })
  assert.equal(run.status, 0, `${name}:\n${run.stdout}${run.stderr}`)
  return JSON.parse(run.stdout)
}

before(() => {
  for (const f of BUILT) assert.ok(fs.existsSync(path.join(ROOT, f)), `${f} is missing: run npm run build first`)
  work = fs.mkdtempSync(path.join(workBase(), 'codebay-package-'))
  project = path.join(work, 'project')
  fs.mkdirSync(project)
  const python = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' })
  const pythonDir = python.status === 0 ? [path.dirname(python.stdout.trim())] : []
  PATH = [...new Set([path.dirname(process.execPath), ...pythonDir, '/usr/bin', '/bin'])].join(':')
  const bin = path.join(work, 'bin')
  fs.mkdirSync(bin)
  fs.symlinkSync(process.execPath, path.join(bin, 'node'))
  NO_PYTHON_PATH = bin
  const pack = npm(['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: ROOT, PATH: process.env.PATH })
  ;[packed] = JSON.parse(pack.stdout)
  tarball = path.join(work, packed.filename)
})

after(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true })
})

test('the tarball holds the prebuilt addon and helper, the entry, the drivers and the license', () => {
  const files = new Map(packed.files.map((f) => [f.path, f]))
  for (const f of ['package.json', 'codebay.cjs', 'index.js', 'index.d.ts', 'codebay.linux-x64-gnu.node', 'codebay-sandbox',
    'runtimes/python/driver.py', 'runtimes/python/rich.py', 'runtimes/javascript/driver.js', 'bin/codebay.js',
    'LICENSE', 'README.md', 'docs/internals.md']) {
    assert.ok(files.has(f), `${f} is not in the tarball: ${[...files.keys()].join(', ')}`)
  }
  assert.ok(!files.has('scripts/install.cjs') && ![...files.keys()].some((f) => f.startsWith('src/') || f.startsWith('crates/')))
  // The helper stays executable.
  assert.equal(files.get('codebay-sandbox').mode & 0o111, 0o111)
  // Every relative link of the README names a file that ships.
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')
  for (const [, target] of readme.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
    if (/^[a-z]+:/.test(target)) continue
    assert.ok(files.has(path.posix.normalize(target)), `README links ${target}, which is not in the package`)
  }
})

test('installed from the tarball without Rust or network: no install script, imports by name, runs both languages', () => {
  assert.equal(which('cargo', PATH), null, `cargo on ${PATH}`)
  assert.equal(which('rustc', PATH), null, `rustc on ${PATH}`)
  npm(['init', '-y'], { cwd: project })
  const install = npm(['install', tarball, '--no-audit', '--no-fund', '--offline', '--cache', path.join(work, 'npm-cache')], { cwd: project })
  const said = install.stdout + install.stderr
  assert.doesNotMatch(said, /install-scripts|install script/i, said)

  const installed = path.join(project, 'node_modules/codebay')
  const manifest = JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8'))
  for (const hook of ['preinstall', 'install', 'postinstall', 'prepare']) assert.equal(manifest.scripts?.[hook], undefined, hook)
  assert.deepEqual([manifest.os, manifest.cpu], [['linux'], ['x64']])

  const got = runInProject('both.mjs', `
    import { LocalSession } from 'codebay'
    import { createRequire } from 'node:module'
    const required = createRequire(import.meta.url)('codebay')
    const session = await LocalSession.create({ poolSize: 0 })
    const py = await session.code.runCode('print(6*7)', 'python')
    const js = await session.code.runCode('console.log([1, 2].map(x => x * 2).join(" "))', 'javascript')
    await session.close()
    console.log(JSON.stringify({ same: required.LocalSession === LocalSession, py, js }))
  `, PATH)
  assert.equal(got.same, true, 'require and import give the same module')
  assert.equal(got.py.success, true, JSON.stringify(got.py))
  assert.deepEqual(got.py.logs.stdout, ['42\n'])
  assert.equal(got.js.success, true, JSON.stringify(got.js))
  assert.deepEqual(got.js.logs.stdout, ['2 4\n'])
})

test('without python3 on PATH a JavaScript session works and its Python runs fail naming python3', () => {
  assert.equal(which('python3', NO_PYTHON_PATH), null)
  const got = runInProject('nopython.mjs', `
    import { LocalSession } from 'codebay'
    const refused = await LocalSession.create({ poolSize: 0 }).then(() => null, (e) => ({ code: e.code, message: e.message }))
    const session = await LocalSession.create({ prewarm: ['javascript'], poolSize: 0 })
    const js = await session.code.runCode('6 * 7', 'javascript')
    const py = await session.code.runCode('print(6*7)', 'python')
    const after = await session.code.runCode('console.log("still here")', 'javascript')
    await session.close()
    console.log(JSON.stringify({ refused, js, py, after }))
  `, NO_PYTHON_PATH)
  // The default prewarm starts Python at create(): that still rejects.
  assert.equal(got.refused?.code, 'ERR_CODEBAY_INTERPRETER_NOT_FOUND', JSON.stringify(got.refused))
  assert.match(got.refused.message, /python3 is not installed or not on PATH/)
  assert.equal(got.js.success, true, JSON.stringify(got.js))
  assert.equal(got.js.result, '42')
  assert.equal(got.py.success, false, JSON.stringify(got.py))
  assert.equal(got.py.error?.name, 'InterpreterNotFound', JSON.stringify(got.py))
  assert.match(got.py.errorMessage, /python3 is not installed or not on PATH/)
  assert.equal(got.after.success, true, JSON.stringify(got.after))
  assert.deepEqual(got.after.logs.stdout, ['still here\n'])
})

test('loaded on another platform, the package throws ERR_CODEBAY_UNSUPPORTED_PLATFORM', () => {
  for (const [platform, arch] of [['darwin', 'arm64'], ['linux', 'arm64'], ['win32', 'x64']]) {
    const got = runInProject(`other-${platform}-${arch}.mjs`, `
      Object.defineProperty(process, 'platform', { value: ${JSON.stringify(platform)} })
      Object.defineProperty(process, 'arch', { value: ${JSON.stringify(arch)} })
      const { createRequire } = await import('node:module')
      const seen = []
      try { createRequire(import.meta.url)('codebay') } catch (e) { seen.push({ code: e.code, message: e.message }) }
      try { await import('codebay') } catch (e) { seen.push({ code: e.code, message: e.message }) }
      console.log(JSON.stringify(seen))
    `, PATH)
    assert.equal(got.length, 2, JSON.stringify(got))
    for (const e of got) {
      assert.equal(e.code, 'ERR_CODEBAY_UNSUPPORTED_PLATFORM')
      assert.ok(e.message.includes(`${platform} ${arch}`) && e.message.includes('Linux on x86-64'), e.message)
    }
  }
})
