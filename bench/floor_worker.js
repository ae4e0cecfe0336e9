'use strict'
// The floor: a bare, unsandboxed, warm Node answering JSON lines over a pipe.
// Each request is one line {"code": "..."}; the code runs with vm.runInThisContext
// and console.log captured; the answer is one line {"stdout": "...", "error": null | "..."}.
const vm = require('node:vm')
const util = require('node:util')
const readline = require('node:readline')

let captured = []
console.log = (...args) => { captured.push(util.format(...args) + '\n') }

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', (line) => {
  const request = JSON.parse(line)
  captured = []
  let error = null
  try {
    vm.runInThisContext(request.code)
  } catch (e) {
    error = String(e)
  }
  process.stdout.write(JSON.stringify({ stdout: captured.join(''), error }) + '\n')
})
