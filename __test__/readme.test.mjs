// Every README block that starts with `// example: <name>` runs, as written, against
// the built package, and prints what its comments say it prints.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { fileURLToPath } from 'node:url'

const README = fileURLToPath(new URL('../README.md', import.meta.url))
const INDEX = fileURLToPath(new URL('../index.js', import.meta.url))
const blocks = [...fs.readFileSync(README, 'utf8').matchAll(/```js\n(\/\/ example: (.+)\n[\s\S]*?)```/g)]

test('the README has runnable examples', () => {
  assert.ok(blocks.length >= 3, `found ${blocks.length}`)
})

for (const [, source, name] of blocks) {
  test(`README example: ${name}`, () => {
    const program = source.replace(/from 'codebay'/g, `from ${JSON.stringify(INDEX)}`)
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', program], { encoding: 'utf8', timeout: 60_000 })
    assert.equal(run.status, 0, run.stderr)
    // A comment `// <value>` after a console.log is what that line prints.
    const expected = []
    for (const line of source.split('\n')) {
      const m = /console\.log\(.*\)\s*\/\/ (.+)$/.exec(line)
      if (m) expected.push(m[1].split(' — ')[0].trim())
    }
    const printed = run.stdout.split('\n')
    for (const want of expected) {
      // console.log prints a string without its quotes: `// 'AbortError'` is the value.
      const wants = [want, want.replace(/^'(.*)'$/, '$1')]
      const patterns = wants.map((w) => new RegExp('^' + w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/…/g, '[0-9a-f]+') + '$'))
      assert.ok(printed.some((line) => patterns.some((p) => p.test(line))), `${name}: expected a line ${JSON.stringify(want)} in:\n${run.stdout}`)
    }
    // Commented output lines after a loop or a call, e.g. `// TypeError ERR_... message`.
    for (const line of source.split('\n')) {
      const m = /^\/\/ ((?:TypeError|RangeError|Error|ERR_)\S* .+)$/.exec(line)
      if (m) assert.ok(printed.includes(m[1]), `${name}: expected ${JSON.stringify(m[1])} in:\n${run.stdout}`)
    }
  })
}
