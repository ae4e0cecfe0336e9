// What AgentBaySession adds to a run over AgentBay's OpenAPI, against a fake gateway on
// loopback that answers every CallMcpTool at once: `node bench/agentbay.mjs`.
//
// Baseline, in the same run: the same POST (query, headers, form) sent with Node's own
// fetch and its answer parsed, so the difference is codebay's (Rust over napi, reqwest,
// the SDK's mapping, Code's parsing), not the server's.
import http from 'node:http'
import { loadCodebay, now, stats, log } from './lib.mjs'

const { AgentBaySession } = loadCodebay()
const N = Number(process.env.BENCH_N ?? 2000)
const text = JSON.stringify({ stdout: ['42\n'], stderr: [], result: [JSON.stringify({ 'text/plain': '42', isMainResult: true })], executionError: '', executionTime: 0.001, executionCount: 1 })
const body = JSON.stringify({ RequestId: 'req-1', Code: 'ok', Success: true, HttpStatusCode: 200, Data: { content: [{ type: 'text', text }], isError: false } })

const server = http.createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
})
server.keepAliveTimeout = 60_000
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const endpoint = `http://127.0.0.1:${server.address().port}`

const session = await AgentBaySession.attach({ apiKey: 'bench', sessionId: 's-bench', endpoint })
const codebayRun = async () => {
  const r = await session.code.runCode('print(42)', 'python')
  if (!r.success || r.result !== '42\n' && r.result !== '42') throw new Error(JSON.stringify(r))
}
const form = new URLSearchParams({ Args: JSON.stringify({ code: 'print(42)', language: 'python', timeout_s: 60 }), Authorization: 'Bearer bench', AutoGenSession: 'false', Name: 'run_code', Server: '', SessionId: 's-bench' })
const fetchRun = async () => {
  const query = new URLSearchParams({ Action: 'CallMcpTool', Format: 'json', Version: '2025-05-06', Timestamp: new Date().toISOString().slice(0, 19) + 'Z', SignatureNonce: Math.random().toString(16).slice(2) })
  const res = await fetch(`${endpoint}/?${query}`, { method: 'POST', body: form, headers: { 'x-acs-action': 'CallMcpTool', 'x-acs-version': '2025-05-06' } })
  const answer = await res.json()
  const backend = JSON.parse(answer.Data.content[0].text)
  if (backend.stdout[0] !== '42\n') throw new Error('bad answer')
}

async function measure(name, fn) {
  for (let i = 0; i < 200; i++) await fn() // warm-up: connections, JIT
  const times = []
  for (let i = 0; i < N; i++) {
    const t = now()
    await fn()
    times.push(now() - t)
  }
  log(`${name} done`)
  return stats(times)
}

// Alternate, so that a change of machine speed during the run hits both.
const a1 = await measure('fetch', fetchRun)
const b1 = await measure('codebay', codebayRun)
const a2 = await measure('fetch', fetchRun)
const b2 = await measure('codebay', codebayRun)
const p50 = (a, b) => (a.p50 + b.p50) / 2
const p99 = (a, b) => (a.p99 + b.p99) / 2
const f = (v) => `${(v * 1000).toFixed(0)} µs`
console.log(`| ${N}×2 runs against a loopback gateway | p50 | p99 |`)
console.log('|---|---|---|')
console.log(`| Node fetch, same request and parse (baseline) | ${f(p50(a1, a2))} | ${f(p99(a1, a2))} |`)
console.log(`| AgentBaySession code.runCode | ${f(p50(b1, b2))} | ${f(p99(b1, b2))} |`)
server.closeAllConnections()
server.close()
