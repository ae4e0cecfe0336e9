// Where a warm run's time goes, for profiling (not a benchmark table): the p50 of the
// whole runCode call, the p50 of the engine's part (executionTime: request written to
// reply read), and the host process's CPU time and voluntary context switches per run.
//   node bench/warm-profile.mjs [python|javascript] [runs]
// Run it under `perf record -g -p <pid>` (the pid is printed) to see the host side.
import fs from 'node:fs'
import { loadCodebay, now, stats } from './lib.mjs'

const language = process.argv[2] || 'python'
const runs = Number(process.argv[3] || 4000)
const code = language === 'python' ? 'print(1)' : 'console.log(1)'
const { LocalSession } = loadCodebay()

function voluntarySwitches() {
  let total = 0
  for (const task of fs.readdirSync('/proc/self/task')) {
    const status = fs.readFileSync(`/proc/self/task/${task}/status`, 'utf8')
    total += Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(status)[1])
  }
  return total
}

const session = await LocalSession.create({ poolSize: 0 })
console.error(`pid ${process.pid}`)
for (let i = 0; i < 300; i++) await session.code.runCode(code, language)
const wall = []
const engine = []
const cpu0 = process.cpuUsage()
const switches0 = voluntarySwitches()
for (let i = 0; i < runs; i++) {
  const t0 = now()
  const r = await session.code.runCode(code, language)
  wall.push(now() - t0)
  engine.push(r.executionTime * 1000)
}
const cpu = process.cpuUsage(cpu0)
const switches = voluntarySwitches() - switches0
await session.close()
const ms = (v) => `${v.toFixed(3)} ms`
console.log(`${language}: ${runs} warm runs; runCode p50 ${ms(stats(wall).p50)}, engine p50 ${ms(stats(engine).p50)}, ` +
  `host CPU ${((cpu.user + cpu.system) / runs).toFixed(1)} µs/run, ${(switches / runs).toFixed(2)} voluntary context switches/run`)
