#!/usr/bin/env node
// The command line: `codebay run --language python --code 'print(40 + 2)'`.
'use strict'

const { parseArgs } = require('node:util')
const fs = require('node:fs')
const path = require('node:path')

const USAGE = `Usage:
  codebay run [--language LANG] (--code CODE | FILE | -) [--timeout S] [--json]
              [--out-dir DIR] [--network] [-- ARG...]
  codebay doctor [--cgroup-parent P] [--json]
  codebay serve [--listen HOST:PORT] [--api-key-file F] [--max-sessions N]
                [--idle-timeout S] [--max-body B] [--allowed-host H...]
                [--resource-limits cgroup|rlimits] [--cgroup-parent P]
  codebay mcp
  codebay --version

Runs the code in a fresh local sandbox; its output streams to this terminal as it
is written, then the value of its last expression is printed.
  --language, -l  python (py, python3) or javascript (js, node, nodejs);
                  taken from FILE's extension when not given
  --code, -c      the code itself
  FILE            a file with the code; '-' reads the code from standard input
  --timeout, -t   seconds before the run is stopped (default 60)
  --json          print the whole CodeExecutionResult as JSON instead (no streaming)
  --out-dir, -o   write the run's images to DIR (result-1.png, result-2.svg, ...)
                  and print their paths
  --network       give the sandbox the host's network (off by default)
  -- ARG...       the code's arguments: sys.argv[1:] in Python (sys.argv[0] is
                  FILE, '-' or '-c'), process.argv.slice(2) in JavaScript
  --version       print codebay's version

doctor checks what this machine gives the sandbox (kernel features, cgroups, id
mapping, Node, Python), trying each for real where that is cheap, and says what is
missing and how to fix it.
  --cgroup-parent the cgroupParent sessions would be given (default:
                  $CODEBAY_CGROUP_PARENT)
  --json          print the checks as JSON: { ok, checks: [{ name, verdict, detail,
                  fix }] }, verdict 'ok', 'warning' or 'missing'

serve is an MCP server over Streamable HTTP at http://HOST:PORT/mcp, with GET
/healthz and GET /metrics (Prometheus). Each MCP session gets a sandbox of its own.
  --listen        address to listen on (default 127.0.0.1:8931; port 0: a free one);
                  anything but loopback needs an API key
  --api-key-file  a file whose first line is the key every request must send as
                  'Authorization: Bearer KEY' (default: $CODEBAY_API_KEY, if set)
  --max-sessions  sessions open at once (default: what fits in memory)
  --idle-timeout  seconds before an unused session's sandbox is closed (default 600)
  --max-body      largest request body, in bytes or with K/M/G (default 16M)
  --allowed-host  a Host header to accept besides loopback (repeatable)
  --resource-limits  what bounds each session: cgroup (default) or rlimits, the
                  explicit opt-in where no cgroup can be had (a pod)
  --cgroup-parent the cgroupParent of every session (default: $CODEBAY_CGROUP_PARENT)
It prints its URL on stdout, and stops cleanly on SIGTERM or SIGINT.

mcp is an MCP server over standard input and output, with one sandbox for the life
of the process: what a desktop MCP client launches.

Exit status: run: 0 when the code ran cleanly, 1 when it failed; doctor: 0 when
nothing required is missing, 1 otherwise; 2 on a usage error.`

/** The image fields of a result item, and the extension each is written with. */
const IMAGES = [['png', 'png', 'base64'], ['jpeg', 'jpg', 'base64'], ['svg', 'svg', 'utf8']]

/** The language of a file, from the engine's runtime registry (its extensions). */
function languageOfFile(file) {
  const extension = path.extname(file).toLowerCase().slice(1)
  const { supportedLanguages } = require('../codebay.cjs')
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
      tokens: true,
      options: {
        language: { type: 'string', short: 'l' },
        code: { type: 'string', short: 'c' },
        timeout: { type: 'string', short: 't' },
        json: { type: 'boolean', default: false },
        network: { type: 'boolean', default: false },
        'out-dir': { type: 'string', short: 'o' },
        'cgroup-parent': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
        version: { type: 'boolean', default: false },
      },
    })
  } catch (err) {
    throw new UsageError(err.message)
  }
  const { values, tokens } = parsed
  if (values.help) return { help: true }
  if (values.version) return { version: true }
  // What follows `--` is the code's, never ours.
  const terminator = tokens.find((t) => t.kind === 'option-terminator')
  const ours = tokens.filter((t) => t.kind === 'positional' && (!terminator || t.index < terminator.index)).map((t) => t.value)
  const codeArgs = terminator ? argv.slice(terminator.index + 1) : []
  const [command, ...rest] = ours
  if (command === 'doctor') return parseDoctor(values, rest, terminator)
  if (values['cgroup-parent'] !== undefined) throw new UsageError('--cgroup-parent is an option of doctor')
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
  const outDir = values['out-dir']
  if (outDir === '') throw new UsageError('--out-dir needs a directory')
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
  const script = values.code !== undefined ? '-c' : file
  return { code, language, timeoutS, json: values.json, network: values.network, outDir, script, codeArgs, passArgs: terminator !== undefined }
}

/** `codebay doctor`'s options: only --cgroup-parent and --json. */
function parseDoctor(values, rest, terminator) {
  if (rest.length > 0) throw new UsageError(`doctor takes no arguments, got '${rest[0]}'`)
  const runOnly = ['language', 'code', 'timeout', 'out-dir'].filter((o) => values[o] !== undefined)
  if (values.network) runOnly.push('network')
  if (runOnly.length > 0 || terminator) throw new UsageError(`doctor takes only --cgroup-parent and --json${runOnly.length ? `, not --${runOnly[0]}` : ''}`)
  if (values['cgroup-parent'] === '') throw new UsageError('--cgroup-parent needs a cgroup path')
  return { doctor: true, json: values.json, cgroupParent: values['cgroup-parent'] }
}

/**
 * A run before the user's, in the same context, that gives the code its arguments: a
 * run of its own, so that the user's line numbers do not move. Python's takes back the
 * execution count it used (the driver's `_State.count`, as `preload` does), so the
 * user's code is still `<cell-1>`; JavaScript's cannot, so it is made only when
 * arguments were given (`--`), and then the user's code is `<cell-2>`.
 */
function argvSetup(language, script, codeArgs, passArgs) {
  if (language === 'python') {
    return [
      'def __codebay_argv(argv):',
      '    import sys',
      '    sys.argv = argv',
      '    frame = sys._getframe(1)',
      '    while frame is not None:',
      "        state = frame.f_globals.get('_State')",
      "        if frame.f_globals is not globals() and isinstance(getattr(state, 'count', None), int):",
      '            state.count -= 1',
      '            break',
      '        frame = frame.f_back',
      'try:',
      `    __codebay_argv(${JSON.stringify([script, ...codeArgs])})`,
      'finally:',
      '    del __codebay_argv',
      '',
    ].join('\n')
  }
  if (language === 'javascript' && passArgs) {
    return `void (process.argv = [process.argv[0], ...${JSON.stringify([script, ...codeArgs])}])`
  }
  return null
}

/**
 * `mkdir -p`. Not fs.mkdirSync's `recursive`: in Node 20 that loops forever where mkdir
 * answers ENOENT under a parent that exists (e.g. under /proc).
 */
function makeDirectory(dir) {
  try {
    fs.mkdirSync(dir)
  } catch (err) {
    if (err.code === 'EEXIST' && fs.statSync(dir).isDirectory()) return
    if (err.code !== 'ENOENT' || path.dirname(dir) === dir) throw err
    makeDirectory(path.dirname(dir))
    fs.mkdirSync(dir)
  }
}

/** Writes the run's images into `dir` as result-1.png, result-2.svg, ...; their paths. */
function writeImages(result, dir) {
  const written = []
  for (const item of result.results ?? []) {
    for (const [field, extension, encoding] of IMAGES) {
      if (typeof item[field] !== 'string' || item[field] === '') continue
      if (written.length === 0) makeDirectory(path.resolve(dir))
      const file = path.join(dir, `result-${written.length + 1}.${extension}`)
      fs.writeFileSync(file, Buffer.from(item[field], encoding))
      written.push(file)
    }
  }
  return written
}

async function main() {
  const argv = process.argv.slice(2)
  if (argv[0] === 'serve' || argv[0] === 'mcp') return server(argv[0], argv.slice(1))
  let args
  try {
    args = parse(argv)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`codebay: ${err.message}\n\n${USAGE}\n`)
    return 2
  }
  if (args.help) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  if (args.version) {
    process.stdout.write(`${require('../package.json').version}\n`)
    return 0
  }
  if (args.doctor) return doctor(args)
  const { LocalSession } = require('../codebay.cjs')
  let session
  try {
    // No prewarm: the one run starts its own interpreter, so a JavaScript run needs no Python.
    session = await LocalSession.create({ network: args.network, poolSize: 0, prewarm: [] })
  } catch (err) {
    process.stderr.write(`codebay: ${err.message}\n`)
    return 1
  }
  try {
    let result
    // The output goes to the terminal as it is written; --json prints only the JSON.
    const streaming = args.json ? {} : {
      onStdout: (message) => { process.stdout.write(message.line) },
      onStderr: (message) => { process.stderr.write(message.line) },
    }
    try {
      const language = supportedLanguage(args.language)
      const setup = argvSetup(language, args.script, args.codeArgs, args.passArgs)
      if (setup !== null) {
        const r = await session.code.runCode(setup, language, 30)
        if (!r.success) {
          process.stderr.write(`codebay: could not give the code its arguments: ${r.errorMessage}\n`)
          return 1
        }
      }
      result = await session.code.runCode(args.code, args.language, args.timeoutS, streaming)
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
    if (args.outDir !== undefined) {
      let images
      try {
        images = writeImages(result, args.outDir)
      } catch (err) {
        process.stderr.write(`codebay: cannot write the images to ${args.outDir}: ${err.message}\n`)
        return 1
      }
      if (!args.json) for (const file of images) process.stdout.write(`${file}\n`)
    }
    return result.success ? 0 : 1
  } finally {
    await session.close()
  }
}

/** The canonical name of a language the user gave, or the name as given (runCode then refuses it). */
function supportedLanguage(given) {
  const { supportedLanguages } = require('../codebay.cjs')
  const wanted = given.trim().toLowerCase()
  return supportedLanguages().find((l) => l.name === wanted || l.aliases.includes(wanted))?.name ?? given
}

/** What follows the streamed output: the main result, then the error. */
function report(result) {
  const main = result.results?.find((item) => item.isMainResult && item.text !== undefined)
  if (main) process.stdout.write(`${main.text}\n`)
  if (result.error) {
    const { name, value, traceback } = result.error
    process.stderr.write(traceback ? (traceback.endsWith('\n') ? traceback : `${traceback}\n`) : `${name}: ${value}\n`)
  } else if (!result.success && result.errorMessage) {
    process.stderr.write(`${result.errorMessage}\n`)
  }
}

// --- codebay serve / codebay mcp -----------------------------------------------------

/** Bytes from `16777216`, `16M`, `512KiB`, ... */
function parseBytes(text) {
  const m = /^(\d+)\s*(?:([kmg])(?:i?b)?)?$/i.exec(text.trim())
  if (!m) return NaN
  const scale = { k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[(m[2] ?? '').toLowerCase()] ?? 1
  return Number(m[1]) * scale
}

function parseServe(argv) {
  let values
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        listen: { type: 'string' },
        'api-key-file': { type: 'string' },
        'max-sessions': { type: 'string' },
        'idle-timeout': { type: 'string' },
        'max-body': { type: 'string' },
        'allowed-host': { type: 'string', multiple: true },
        'resource-limits': { type: 'string' },
        'cgroup-parent': { type: 'string' },
      },
    }))
  } catch (err) {
    throw new UsageError(err.message)
  }
  const options = { listen: values.listen, apiKeyFile: values['api-key-file'], allowedHosts: values['allowed-host'] }
  const session = {}
  if (values['resource-limits'] !== undefined) {
    if (!['cgroup', 'rlimits'].includes(values['resource-limits'])) throw new UsageError(`--resource-limits must be cgroup or rlimits, got '${values['resource-limits']}'`)
    session.resourceLimits = values['resource-limits']
  }
  if (values['cgroup-parent'] !== undefined) session.cgroupParent = values['cgroup-parent']
  if (Object.keys(session).length > 0) options.session = session
  if (values['max-sessions'] !== undefined) {
    options.maxSessions = Number(values['max-sessions'])
    if (!Number.isInteger(options.maxSessions) || options.maxSessions < 1) throw new UsageError(`--max-sessions must be a whole number >= 1, got '${values['max-sessions']}'`)
  }
  if (values['idle-timeout'] !== undefined) {
    options.idleTimeoutS = Number(values['idle-timeout'])
    if (!Number.isFinite(options.idleTimeoutS) || options.idleTimeoutS <= 0) throw new UsageError(`--idle-timeout must be a number of seconds > 0, got '${values['idle-timeout']}'`)
  }
  if (values['max-body'] !== undefined) {
    options.maxBody = parseBytes(values['max-body'])
    if (!Number.isFinite(options.maxBody) || options.maxBody < 1) throw new UsageError(`--max-body must be a size in bytes (or with K, M, G), got '${values['max-body']}'`)
  }
  return options
}

async function server(command, argv) {
  let options
  try {
    if (command === 'mcp' && argv.length > 0) throw new UsageError(`mcp takes no arguments, got '${argv[0]}'`)
    options = command === 'serve' ? parseServe(argv) : null
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`codebay: ${err.message}\n\n${USAGE}\n`)
    return 2
  }
  const addon = require('../codebay.cjs')
  if (command === 'mcp') {
    // stdout is the protocol's: nothing else may be written to it.
    process.on('SIGTERM', () => process.exit(0))
    try {
      await addon.serveStdio()
    } catch (err) {
      process.stderr.write(`codebay mcp: ${err.message}\n`)
      process.exit(1)
    }
    process.exit(0)
  }
  let handle
  try {
    handle = await addon.serve(options)
  } catch (err) {
    process.stderr.write(`codebay serve: ${err.message}\n`)
    return 1
  }
  process.stdout.write(`codebay serve: MCP at ${handle.url} (max ${handle.maxSessions} sessions)\n`)
  // The server runs on the addon's threads, which do not keep Node's event loop alive.
  const alive = setInterval(() => {}, 1 << 30)
  await new Promise(() => {
    let stopping = false
    const stop = () => {
      if (stopping) return
      stopping = true
      // Exits even if something of the engine (a pool refill) would keep Node alive.
      handle.close().finally(() => {
        clearInterval(alive)
        process.exit(0)
      })
    }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
  })
  return 0
}

// --- codebay doctor ------------------------------------------------------------------

const PACKAGE_DIR = path.resolve(__dirname, '..')
const NODE_MAJOR_REQUIRED = 20

/**
 * The helper a session would run: $CODEBAY_SANDBOX_BIN, else `codebay-sandbox` beside
 * the addon (the package directory), as the addon's placement() finds it.
 */
function helperPath() {
  return process.env.CODEBAY_SANDBOX_BIN || path.join(PACKAGE_DIR, 'codebay-sandbox')
}

function check(name, verdict, detail, fix = null) {
  return { name, verdict, detail, fix }
}

function nodeCheck() {
  const major = Number(process.versions.node.split('.')[0])
  const detail = `Node ${process.version} at ${process.execPath} (needs ${NODE_MAJOR_REQUIRED} or later); sessions run JavaScript with this same Node`
  return major >= NODE_MAJOR_REQUIRED
    ? check('node', 'ok', detail)
    : check('node', 'missing', detail, `install Node ${NODE_MAJOR_REQUIRED} or later (https://nodejs.org, or your distribution's nodejs package)`)
}

function addonCheck() {
  const file = path.join(PACKAGE_DIR, 'codebay.linux-x64-gnu.node')
  try {
    require('../codebay.cjs')
    return check('addon', 'ok', `loads ${file}`)
  } catch (err) {
    return check('addon', 'missing', `the native addon does not load: ${err.message}`,
      'codebay ships one build, for x86_64 Linux with glibc: reinstall it there (`npm install codebay`); in a clone, `npm run build`')
  }
}

/** The same question the engine asks of `python3` on PATH (its real executable). */
function pythonCheck() {
  const env = { ...process.env }
  delete env.PYTHONHOME
  const r = require('node:child_process').spawnSync('python3', ['-I', '-S', '-c', 'import sys; print(sys.executable); print(sys.version.split()[0])'], { encoding: 'utf8', env, timeout: 30_000 })
  const onlyPython = 'only Python runs need it'
  if (r.status === 0) {
    const [executable, version] = r.stdout.trim().split('\n')
    return check('python', 'ok', `Python ${version} at ${executable} (python3 on PATH); ${onlyPython}`)
  }
  const why = r.error?.code === 'ENOENT' ? 'python3 is not installed or not on PATH' : `python3 did not answer (${r.error?.message ?? `exit status ${r.status}`}${r.stderr ? `: ${r.stderr.trim()}` : ''})`
  return check('python', 'warning',
    `${why}: ${onlyPython}. JavaScript runs work; Python runs fail with InterpreterNotFound, and LocalSession.create() rejects while it prewarms Python (its default): pass prewarm: [] where there is no Python`,
    'install Python 3 (e.g. `apt-get install python3`), or give sessions its path with the `python` option')
}

/** The helper's checks (kernel, cgroups, id mapping), or why they could not be had. */
function helperChecks(cgroupParent) {
  const helper = helperPath()
  const fix = process.env.CODEBAY_SANDBOX_BIN
    ? 'point CODEBAY_SANDBOX_BIN at the codebay-sandbox binary, or unset it'
    : 'reinstall codebay (`npm install codebay`); in a clone, `npm run build` copies the helper beside the addon'
  try {
    fs.accessSync(helper, fs.constants.X_OK)
  } catch (err) {
    return { checks: [check('helper', 'missing', `no executable sandbox helper at ${helper} (${err.code})`, fix)] }
  }
  const args = ['doctor', '--json', ...(cgroupParent !== undefined ? ['--cgroup-parent', cgroupParent] : [])]
  const r = require('node:child_process').spawnSync(helper, args, { encoding: 'utf8', timeout: 60_000 })
  if (r.status === 2) return { usage: r.stderr.trim() }
  let answer
  try {
    answer = JSON.parse(r.stdout)
  } catch {
    const why = r.error ? r.error.message : `exit status ${r.status ?? r.signal}${r.stderr ? `: ${r.stderr.trim()}` : ''}`
    return { checks: [check('helper', 'missing', `${helper} doctor did not answer (${why})`, fix)] }
  }
  return { checks: [check('helper', 'ok', helper), ...answer.checks], cgroupParent: answer.cgroupParent }
}

/** Word-wraps `text` to `width` columns, every line after the first indented by `indent`. */
function wrap(text, width, indent) {
  const lines = []
  let line = ''
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line)
      line = word
    } else {
      line = line ? `${line} ${word}` : word
    }
  }
  if (line) lines.push(line)
  return lines.join(`\n${' '.repeat(indent)}`)
}

function table(checks) {
  const nameWidth = Math.max(...checks.map((c) => c.name.length))
  const indent = 9 + nameWidth + 2
  const width = Math.max(40, (process.stdout.columns || 100) - indent)
  const out = []
  for (const c of checks) {
    out.push(`${c.verdict.padEnd(8)} ${c.name.padEnd(nameWidth)}  ${wrap(c.detail, width, indent)}`)
    if (c.fix) out.push(`${' '.repeat(indent)}${wrap(`fix: ${c.fix}`, width, indent)}`)
  }
  return out.join('\n')
}

function doctor({ json, cgroupParent }) {
  const fromHelper = helperChecks(cgroupParent)
  if (fromHelper.usage !== undefined) {
    process.stderr.write(`codebay: ${fromHelper.usage.replace(/^codebay-sandbox doctor: /, '').split('\n')[0]}\n\n${USAGE}\n`)
    return 2
  }
  const checks = [nodeCheck(), addonCheck(), ...fromHelper.checks, pythonCheck()]
  const ok = checks.every((c) => c.verdict !== 'missing')
  if (json) {
    process.stdout.write(`${JSON.stringify({ ok, cgroupParent: fromHelper.cgroupParent ?? null, checks }, null, 2)}\n`)
  } else {
    const missing = checks.filter((c) => c.verdict === 'missing').map((c) => c.name)
    const warnings = checks.filter((c) => c.verdict === 'warning').map((c) => c.name)
    const summary = missing.length > 0
      ? `Missing: ${missing.join(', ')}. LocalSession.create() fails on this machine until that is fixed.`
      : `Everything codebay needs is here${warnings.length ? ` (warnings: ${warnings.join(', ')})` : ''}.`
    process.stdout.write(`codebay doctor: what this machine gives the sandbox\n\n${table(checks)}\n\n${summary}\n`)
  }
  return ok ? 0 : 1
}

main().then(
  (status) => { process.exitCode = status },
  (err) => {
    process.stderr.write(`codebay: ${err.stack || err}\n`)
    process.exitCode = 1
  },
)
