// The `preload` option of LocalSession.create(): modules imported in the default
// interpreter before the session is handed out, invisibly to the user's runs.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { codebay } from './helpers.mjs'

const { LocalSession } = codebay

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const FIRST_RUN = [
  'import sys',
  "loaded = [m in sys.modules for m in ('pandas', 'matplotlib.pyplot')]",
  "names = sorted(k for k in globals() if not k.startswith('__') and k not in ('sys', 'display', 'loaded'))",
  "(loaded, names, '_' in globals())",
].join('\n')

test('the modules are imported before create() resolves, and the first run is still the user\'s first', async () => {
  const s = await LocalSession.create({ poolSize: 0, prewarm: [], preload: { python: ['pandas', 'matplotlib.pyplot'] } })
  try {
    const first = await s.code.runCode(FIRST_RUN, 'python')
    assert.equal(first.success, true, first.errorMessage)
    // Imported, and nothing else left behind: no name, no `_`.
    assert.equal(first.result, '([True, True], [], False)')
    assert.equal(first.executionCount, 1)
    // The user's own import is the cached module; the counts and cell names go on as usual.
    const df = await s.code.runCode("import pandas as pd\npd.DataFrame({'a': [1]}).shape", 'python')
    assert.equal(df.result, '(1, 1)')
    assert.equal(df.executionCount, 2)
    const failed = await s.code.runCode('x = 1\n1 / 0', 'python')
    assert.equal(failed.executionCount, 3)
    assert.match(failed.error.traceback, /File "<cell-3>", line 2, in <module>\n {4}1 \/ 0/)
  } finally {
    await s.close()
  }
  // Without preload the driver imports neither (so the above means something).
  const plain = await LocalSession.create({ poolSize: 0 })
  try {
    const first = await plain.code.runCode(FIRST_RUN, 'python')
    assert.equal(first.result, '([False, False], [], False)')
    assert.equal(first.executionCount, 1)
  } finally {
    await plain.close()
  }
})

test('a pooled session is handed out with its modules imported', async () => {
  const options = { poolSize: 1, memoryBytes: 300 * 2 ** 20, preload: { py: ['pandas'] } }
  const first = await LocalSession.create(options)
  await first.close()
  await sleep(3000) // the refill builds the next one, imports included
  const s = await LocalSession.create(options)
  try {
    const r = await s.code.runCode("import sys\n'pandas' in sys.modules", 'python')
    assert.equal(r.result, 'True')
    assert.equal(r.executionCount, 1)
  } finally {
    await s.close()
    await LocalSession.drainPool()
  }
})

test('a module that fails to import rejects create() with ERR_CODEBAY_PRELOAD_FAILED naming it', async () => {
  for (const poolSize of [0, 2]) {
    const err = await LocalSession.create({ poolSize, preload: { python: ['json', 'no_such_module_xyz'] } }).then(
      (s) => { s.close(); return null },
      (e) => e,
    )
    assert.ok(err, `poolSize ${poolSize}: create() resolved`)
    assert.equal(err.name, 'Error')
    assert.equal(err.code, 'ERR_CODEBAY_PRELOAD_FAILED')
    assert.equal(err.message,
      "preload: the python module 'no_such_module_xyz' could not be imported: ModuleNotFoundError: No module named 'no_such_module_xyz'")
  }
})

test('a preload option of the wrong shape is ERR_CODEBAY_INVALID_OPTION', async () => {
  for (const [preload, Class, message] of [
    [['pandas'], TypeError, "preload must be an object of module names by language, e.g. { python: ['pandas'] }, got an array"],
    ['pandas', TypeError, /^preload must be an object of module names by language/],
    [{ python: 'pandas' }, TypeError, 'preload.python must be an array of module names, got a string'],
    [{ python: [42] }, TypeError, 'preload.python must be an array of module names, got a number'],
    [{ python: ['os; import x'] }, RangeError, /^preload\.python: "os; import x" is not a module name/],
    [{ python: ['.relative'] }, RangeError, /is not a module name/],
    [{ ruby: ['x'] }, RangeError, /^preload: Unsupported language: ruby\. Supported languages are 'python' and 'javascript'$/],
    [{ javascript: ['lodash'] }, RangeError, /^preload\.javascript: only python modules can be preloaded/],
  ]) {
    await assert.rejects(LocalSession.create({ poolSize: 0, preload }), (e) => {
      assert.ok(e instanceof Class, `${JSON.stringify(preload)}: ${e}`)
      assert.equal(e.code, 'ERR_CODEBAY_INVALID_OPTION')
      if (typeof message === 'string') assert.equal(e.message, message)
      else assert.match(e.message, message)
      return true
    })
  }
  await assert.rejects(LocalSession.create({ preloads: { python: ['pandas'] } }), {
    name: 'TypeError', code: 'ERR_CODEBAY_INVALID_OPTION', message: "LocalSession.create: unknown option 'preloads'. Did you mean 'preload'?",
  })
})
