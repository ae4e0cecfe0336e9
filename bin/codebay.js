#!/usr/bin/env node
// The command line: `codebay run --language python --code 'print(40 + 2)'`.
'use strict'

const { parseArgs } = require('node:util')
const fs = require('node:fs')
const path = require('node:path')

const USAGE = `Usage:
  codebay run [--language LANG] (--code CODE | FILE | -) [--timeout S] [--json] [--network]

Runs the code in a fresh local sandbox and prints what it printed.
  --language, -l  python (py, python3) or javascript (js, node, nodejs);
                  taken from FILE's extension when not given
  --code, -c      the code itself
  FILE            a file with the code; '-' reads the code from standard input
  --timeout, -t   seconds before the run is stopped (default 60)
  --json          print the whole CodeExecutionResult as JSON instead
  --network       give the sandbox the host's network (off by default)

Exit status: 0 when the code ran cleanly, 1 when it failed, 2 on a usage error.`

/** The language of a file, from the engine's runtime registry (its extensions). */
function languageOfFile(file) {
  const extension = path.extname(file).toLowerCase().slice(1)
  const { supportedLanguages } = require('../index.js')
  return supportedLanguages().find((language) => language.extensions.includes(extension))?.name
}

class UsageError extends Error {}

function parse(argv) {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        language: { type: 'string', short: 'l' },
        code: { type: 'string', short: 'c' },
        timeout: { type: 'string', short: 't' },
        json: { type: 'boolean', default: false },
        network: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    })
  } catch (err) {
    throw new UsageError(err.message)
  }
  const { values, positionals } = parsed
  if (values.help) return { help: true }
  const [command, ...rest] = positionals
  if (command !== 'run') throw new UsageError(command ? `unknown command '${command}'` : 'no command given')
  if (rest.length > 1) throw new UsageError(`expected one FILE, got ${rest.length}`)
  const file = rest[0]
  if (file !== undefined && values.code !== undefined) throw new UsageError('give either --code or FILE, not both')
  if (file === undefined && values.code === undefined) throw new UsageError('no code given: use --code, a FILE or -')
  let language = values.language
  if (language === undefined) {
    const fromExtension = file && file !== '-' ? languageOfFile(file) : undefined
    if (!fromExtension) throw new UsageError('no --language given, and none can be told from a file extension')
    language = fromExtension
  }
  let timeoutS
  if (values.timeout !== undefined) {
    timeoutS = Number(values.timeout)
    if (!Number.isFinite(timeoutS) || timeoutS <= 0) throw new UsageError(`--timeout must be a number of seconds > 0, got '${values.timeout}'`)
  }
  let code = values.code
  if (code === undefined) {
    try {
      code = fs.readFileSync(file === '-' ? 0 : file, 'utf8')
    } catch (err) {
      throw new UsageError(`cannot read ${file === '-' ? 'standard input' : file}: ${err.message}`)
    }
  }
  return { code, language, timeoutS, json: values.json, network: values.network }
}

async function main() {
  let args
  try {
    args = parse(process.argv.slice(2))
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`codebay: ${err.message}\n\n${USAGE}\n`)
    return 2
  }
  if (args.help) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  const { LocalSession } = require('../index.js')
  let session
  try {
    session = await LocalSession.create({ network: args.network })
  } catch (err) {
    process.stderr.write(`codebay: ${err.message}\n`)
    return 1
  }
  try {
    let result
    try {
      result = await session.code.runCode(args.code, args.language, args.timeoutS)
    } catch (err) {
      // Only a usage problem rejects runCode (an unsupported language).
      process.stderr.write(`codebay: ${err.message}\n\n${USAGE}\n`)
      return 2
    }
    if (args.json) {
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
    } else {
      report(result)
    }
    return result.success ? 0 : 1
  } finally {
    await session.close()
  }
}

function report(result) {
  for (const chunk of result.logs?.stdout ?? []) process.stdout.write(chunk)
  for (const chunk of result.logs?.stderr ?? []) process.stderr.write(chunk)
  const main = result.results?.find((item) => item.isMainResult && item.text !== undefined)
  if (main) process.stdout.write(`${main.text}\n`)
  if (result.error) {
    const { name, value, traceback } = result.error
    process.stderr.write(traceback ? (traceback.endsWith('\n') ? traceback : `${traceback}\n`) : `${name}: ${value}\n`)
  } else if (!result.success && result.errorMessage) {
    process.stderr.write(`${result.errorMessage}\n`)
  }
}

main().then(
  (status) => { process.exitCode = status },
  (err) => {
    process.stderr.write(`codebay: ${err.stack || err}\n`)
    process.exitCode = 1
  },
)
