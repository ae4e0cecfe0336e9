// Measurements that need a fresh Node process of their own, so that the memory of one
// does not hide or inflate another: `node --no-node-snapshot --expose-gc bench/child.mjs <task> [count]`.
// Prints one JSON line on stdout; progress goes to stderr.
import { loadCodebay, require, now, sleep, stats, timeLoop, sessionPss, MiB } from './lib.mjs'

const [task, countArg] = process.argv.slice(2)
const count = Number(countArg) || 2000
const warmup = Math.max(50, Math.round(count / 10))

const gc = () => { if (global.gc) { global.gc(); global.gc() } }

/** Samples process RSS every 5 ms while `fn` runs, and once after it. */
async function rssDuring(fn) {
  gc()
  await sleep(50)
  const before = process.memoryUsage().rss
  let max = before
  const timer = setInterval(() => { max = Math.max(max, process.memoryUsage().rss) }, 5)
  const t0 = now()
  let value
  try {
    value = await fn()
  } finally {
    clearInterval(timer)
  }
  const ms = now() - t0
  max = Math.max(max, process.memoryUsage().rss)
  return { before, max, growth: max - before, ms, value }
}

const tasks = {
  // Row 5: PSS of one idle session, alone in this process (no pool, so no other sandbox
  // shares its pages and lowers its PSS): the worst case.
  async 'idle-memory'() {
    const { LocalSession } = loadCodebay()
    const out = {}
    for (const [language, code] of [['python', 'print(1)'], ['javascript', 'console.log(1)']]) {
      const session = await LocalSession.create({ poolSize: 0, prewarm: [language] })
      try {
        const r = await session.code.runCode(code, language)
        if (!r.success) throw new Error(`${language} run failed: ${r.errorMessage}`)
        await sleep(1000)
        const m = sessionPss(session.getSessionId())
        out[language] = m
      } finally {
        await session.close()
      }
    }
    return out
  },

  // Row 6: a 50 MB stdout flood against the 10 MiB output cap.
  async flood() {
    const { LocalSession } = loadCodebay()
    const session = await LocalSession.create()
    const code = "import sys\nfor _ in range(50000): sys.stdout.write('x'*999+'\\n')"
    try {
      const warm = await session.code.runCode('print(1)', 'python')
      if (!warm.success) throw new Error(`warm-up failed: ${warm.errorMessage}`)
      const runs = []
      for (let i = 0; i < 3; i++) {
        const m = await rssDuring(() => session.code.runCode(code, 'python', 30))
        const r = m.value
        const kept = (r.logs?.stdout || []).reduce((a, s) => a + s.length, 0)
        runs.push({ ms: m.ms, growth: m.growth, before: m.before, success: r.success, error: r.error?.name || null, errorMessage: (r.errorMessage || '').slice(0, 200), keptBytes: kept })
        await sleep(200)
      }
      return { runs }
    } finally {
      await session.close()
    }
  },

  // Row 2: pyodide in this process.
  async pyodide() {
    gc()
    const rss0 = process.memoryUsage().rss
    const t0 = now()
    const { loadPyodide } = await import('pyodide')
    const out = []
    const py = await loadPyodide()
    py.setStdout({ batched: (s) => out.push(s) })
    const setupMs = now() - t0
    py.runPython('print(1)')
    if (out.join('').trim() !== '1') throw new Error(`pyodide printed ${JSON.stringify(out)}`)
    const warm = await timeLoop(() => { py.runPython('print(1)') }, count, warmup)
    gc()
    const rss1 = process.memoryUsage().rss
    return { setupMs, warm, rssGrowth: rss1 - rss0, version: py.version }
  },

  // Row 2: isolated-vm in this process (needs --no-node-snapshot on Node 20).
  async 'isolated-vm'() {
    gc()
    const rss0 = process.memoryUsage().rss
    const t0 = now()
    const ivm = require('isolated-vm')
    const isolate = new ivm.Isolate({ memoryLimit: 128 })
    const context = await isolate.createContext()
    const setupMs = now() - t0
    if ((await context.eval('1')) !== 1) throw new Error('isolated-vm eval(1) did not give 1')
    const warm = await timeLoop(() => context.eval('1'), count, warmup)
    const warmSync = await timeLoop(() => context.evalSync('1'), count, warmup)
    gc()
    const rss1 = process.memoryUsage().rss
    const version = require('isolated-vm/package.json').version
    return { setupMs, warm, warmSync, rssGrowth: rss1 - rss0, version }
  },
}

if (!tasks[task]) {
  process.stderr.write(`unknown task ${task}; one of ${Object.keys(tasks).join(', ')}\n`)
  process.exit(2)
}
try {
  const result = await tasks[task]()
  process.stdout.write(JSON.stringify(result) + '\n')
  process.exit(0)
} catch (e) {
  process.stderr.write(`${task}: ${e?.stack || e}\n`)
  process.stdout.write(JSON.stringify({ error: String(e?.message || e).split('\n')[0] }) + '\n')
  process.exit(1)
}
