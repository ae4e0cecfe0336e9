// A warm `print(1)` through RemoteSession over loopback, next to the same run on a
// LocalSession in the same process and run: `npm run bench:remote`. Target: p50 ≤ 1 ms.
import { loadCodebay, now, stats, log } from './lib.mjs'

const codebay = loadCodebay()
const { LocalSession, RemoteSession } = codebay
const N = Number(process.env.BENCH_N ?? 2000)

const apiKey = 'bench-key'
const server = await codebay.serve({ listen: '127.0.0.1:0', apiKey, maxSessions: 2 })
const remote = await RemoteSession.connect({ endpoint: server.url, apiKey })
const local = await LocalSession.create({ poolSize: 0 })

async function measure(name, session) {
  const run = async () => {
    const r = await session.code.runCode('print(1)', 'python')
    if (!r.success || r.logs.stdout[0] !== '1\n') throw new Error(JSON.stringify(r))
  }
  for (let i = 0; i < 200; i++) await run() // warm: the interpreter, connections, JIT
  const times = []
  for (let i = 0; i < N; i++) {
    const t = now()
    await run()
    times.push(now() - t)
  }
  log(`${name} done`)
  return stats(times)
}

// Alternating, so that a change of machine speed during the run hits both.
const l1 = await measure('local', local)
const r1 = await measure('remote', remote)
const l2 = await measure('local', local)
const r2 = await measure('remote', remote)
const f = (ms) => (ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`)
const mean = (a, b, k) => (a[k] + b[k]) / 2
const p50 = mean(r1, r2, 'p50')
console.log(`| warm print(1), ${N}×2 runs | p50 | p99 | target |`)
console.log('|---|---|---|---|')
console.log(`| LocalSession (baseline) | ${f(mean(l1, l2, 'p50'))} | ${f(mean(l1, l2, 'p99'))} | |`)
console.log(`| RemoteSession over loopback (codebay serve in-process) | ${f(p50)} | ${f(mean(r1, r2, 'p99'))} | p50 ≤ 1 ms ${p50 <= 1 ? '✓' : '✗'} |`)
await remote.close()
await local.close()
await server.close()
