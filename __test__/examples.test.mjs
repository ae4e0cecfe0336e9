// The worked examples in examples/ run as an author would run them, and print what the
// README says they print.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const EXAMPLES = fileURLToPath(new URL('../examples/', import.meta.url))

/** Width and height from a PNG's IHDR chunk, or null when it is not a PNG. */
function pngSize(bytes) {
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
  if (!bytes.subarray(0, 8).equals(signature) || bytes.toString('latin1', 12, 16) !== 'IHDR') return null
  return [bytes.readUInt32BE(16), bytes.readUInt32BE(20)]
}

test('examples/sales-analysis.mjs: CSV in with files.write, totals, table, bar chart data and PNGs out', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'codebay-example-'))
  try {
    const run = spawnSync(process.execPath, [path.join(EXAMPLES, 'sales-analysis.mjs'), out], { encoding: 'utf8', timeout: 120_000 })
    assert.equal(run.status, 0, run.stderr)
    const lines = run.stdout.split('\n')
    // pandas' totals, as the code printed them, sorted by units.
    const totals = lines.slice(lines.indexOf('totals by region:') + 1, lines.indexOf('totals by region:') + 6)
    assert.deepEqual(totals.map((l) => l.trim().split(/\s+/)), [['region'], ['east', '290'], ['north', '255'], ['south', '200'], ['west', '135']])
    assert.ok(lines.includes('table: HTML, text:'), run.stdout)
    assert.ok(lines.some((l) => /^quarter\s+Q1\s+Q2$/.test(l)), run.stdout)
    assert.ok(lines.includes('chart: bar "Units sold by region", x: region, y: units'), run.stdout)
    for (const [region, units] of [['east', 290], ['north', 255], ['south', 200], ['west', 135]]) {
      assert.ok(lines.includes(`  ${region}: ${units}`), `${region} ${units} in:\n${run.stdout}`)
    }
    // Both PNGs decode to the figure's 6 x 4 inches at 100 dpi.
    for (const name of ['sales.png', 'sales-saved.png']) {
      assert.deepEqual(pngSize(fs.readFileSync(path.join(out, name))), [600, 400], name)
    }
  } finally {
    fs.rmSync(out, { recursive: true, force: true })
  }
})
