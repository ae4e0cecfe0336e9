#!/usr/bin/env node
// `npm install` hook. In a source checkout (Cargo.toml present) it compiles the addon
// and the sandbox helper; an installed package ships both prebuilt and needs nothing.
'use strict'

const { existsSync } = require('node:fs')
const { join } = require('node:path')
const { spawnSync } = require('node:child_process')

const root = join(__dirname, '..')
if (existsSync(join(root, 'Cargo.toml'))) {
  const npm = process.env.npm_execpath
  const build = npm
    ? spawnSync(process.execPath, [npm, 'run', 'build'], { cwd: root, stdio: 'inherit' })
    : spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' })
  process.exit(build.status ?? 1)
}
const missing = ['codebay.linux-x64-gnu.node', 'codebay-sandbox'].filter((f) => !existsSync(join(root, f)))
if (missing.length > 0) {
  console.error(`codebay: this package is missing ${missing.join(' and ')} and has no sources to build them from`)
  process.exit(1)
}
