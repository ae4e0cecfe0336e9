// The README's TypeScript blocks marked `// typecheck: <name>` compile against the
// package's index.d.ts with `strict`, and a wrong use of the same API does not.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc')
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')
const blocks = [...README.matchAll(/```ts\n\/\/ typecheck: (.+)\n([\s\S]*?)```/g)]

/** Compiles `source` as a module importing 'codebay' from this package; tsc's output. */
function typecheck(source) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'codebay-types-'))
  try {
    fs.writeFileSync(path.join(dir, 'example.ts'), source)
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        strict: true, noEmit: true, target: 'es2022', module: 'es2022', moduleResolution: 'bundler',
        lib: ['es2022'], types: ['node'], typeRoots: [path.join(ROOT, 'node_modules/@types')],
        paths: { codebay: [path.join(ROOT, 'index.d.ts')] },
      },
      files: ['example.ts'],
    }))
    return spawnSync(process.execPath, [TSC, '-p', dir], { encoding: 'utf8' })
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

test('the README has TypeScript blocks to check', () => {
  assert.ok(blocks.some(([, name]) => name === 'agentbay'), 'the AgentBay example')
})

for (const [, name, source] of blocks) {
  test(`README TypeScript block type-checks: ${name}`, () => {
    const run = typecheck(source)
    assert.equal(run.status, 0, run.stdout + run.stderr)
  })
}

test('a wrong use of AgentBaySession does not type-check', () => {
  const wrong = [
    "import { AgentBaySession } from 'codebay'\nawait AgentBaySession.create({ imageID: 'x' })\n",
    "import { AgentBaySession } from 'codebay'\nawait AgentBaySession.attach({ apiKey: 'k' })\n",
    "import { AgentBaySession } from 'codebay'\nconst s = await AgentBaySession.create()\nconst n: number = (await s.delete()).requestId\n",
    "import { AgentBaySession } from 'codebay'\nawait AgentBaySession.create({ labels: { a: 1 } })\n",
  ]
  for (const source of wrong) {
    const run = typecheck(source)
    assert.notEqual(run.status, 0, `compiled but should not:\n${source}`)
    assert.match(run.stdout, /error TS\d+/)
  }
})
