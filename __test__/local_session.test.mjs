// LocalSession end to end: the real helper, the real sandbox, the real drivers, for
// both languages. Each describe block owns its sessions and closes them.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import fs from 'node:fs'
import { codebay, waitFor } from './helpers.mjs'

const { LocalSession, Code } = codebay
const INDEX = fileURLToPath(new URL('../index.js', import.meta.url))
const MIB = 1024 * 1024

const stdout = (r) => (r.logs?.stdout ?? []).join('')
const stderr = (r) => (r.logs?.stderr ?? []).join('')
const show = (r) => JSON.stringify(r, (k, v) => (typeof v === 'string' && v.length > 400 ? `${v.slice(0, 400)}…` : v))

/** A run that must succeed; returns its result. */
async function ok(session, code, language, timeoutS = 10) {
  const r = await session.code.runCode(code, language, timeoutS)
  assert.equal(r.success, true, `${language} ${JSON.stringify(code)} failed: ${show(r)}`)
  return r
}

/** A run that must fail with `name`; returns its result. */
async function fails(session, code, language, name, timeoutS = 10) {
  const r = await session.code.runCode(code, language, timeoutS)
  assert.equal(r.success, false, `${language} ${JSON.stringify(code)} succeeded: ${show(r)}`)
  assert.equal(r.error?.name, name, show(r))
  assert.ok(r.errorMessage && r.errorMessage.length > 0, show(r))
  return r
}

// ------------------------------------------------------------------ host-side views

/** Every cgroup directory of a session, in whichever hierarchies the host has. */
function cgroupDirs(sessionId) {
  const root = '/sys/fs/cgroup'
  const candidates = [`${root}/codebay/${sessionId}`]
  for (const entry of fs.readdirSync(root)) candidates.push(`${root}/${entry}/codebay/${sessionId}`)
  return candidates.filter((dir) => fs.existsSync(dir))
}

/** A live host process's uid (sandbox processes run under ids mapped at ≥ 1000000), or null. */
function sandboxUid(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1])
    return /^State:\s+[ZX]/m.test(status) ? null : uid
  } catch {
    return null
  }
}

/** Runs a Node script to its end (killed past `limitMs`); resolves with its exit and output. */
function runNode(script, limitMs) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => { out += d })
    child.stderr.on('data', (d) => { err += d })
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, out, err })
    })
  })
}

// ------------------------------------------------------------------ functional runs

describe('a local session runs Python and JavaScript', () => {
  let s
  before(async () => { s = await LocalSession.create() })
  after(async () => { await s?.close() })

  test('print and console.log go to stdout, stderr writes to stderr, as chunks', async () => {
    let r = await ok(s, 'import sys\nprint("one")\nprint("two")\nprint("bad", file=sys.stderr)', 'python')
    assert.deepEqual(r.logs, { stdout: ['one\n', 'two\n'], stderr: ['bad\n'] })
    r = await ok(s, 'console.log("one"); console.log("two"); console.error("bad")', 'javascript')
    assert.deepEqual(r.logs, { stdout: ['one\n', 'two\n'], stderr: ['bad\n'] })
  })

  test('the last expression is the main result (repr / util.inspect)', async () => {
    let r = await ok(s, 'x = [1, "a"]\nx', 'python')
    assert.equal(r.result, "[1, 'a']")
    assert.deepEqual(r.results, [{ text: "[1, 'a']", isMainResult: true }])
    r = await ok(s, 'const o = { a: [1, "b"] }; o', 'javascript')
    assert.equal(r.result, "{ a: [ 1, 'b' ] }")
    // A plain JSON-serialisable value is also application/json.
    assert.deepEqual(r.results, [{ text: "{ a: [ 1, 'b' ] }", json: { a: [1, 'b'] }, isMainResult: true }])
    r = await ok(s, '"text"', 'python')
    assert.equal(r.result, "'text'")
    r = await ok(s, '"text"', 'javascript')
    assert.equal(r.result, "'text'")
  })

  test('None, undefined and statements give no main result; result falls back to stdout', async () => {
    for (const [code, language] of [['None', 'python'], ['y = 3', 'python'], ['undefined', 'javascript'],
      ['let y = 3', 'javascript'], ['void 0', 'javascript']]) {
      const r = await ok(s, code, language)
      assert.deepEqual(r.results, [], `${language} ${code}`)
      assert.equal(r.result, '', `${language} ${code}`)
    }
    assert.equal((await ok(s, 'print("only output")', 'python')).result, 'only output\n')
    assert.equal((await ok(s, 'console.log("only output")', 'javascript')).result, 'only output\n')
  })

  test('variables, functions and imports persist across runs of a language', async () => {
    await ok(s, 'import json\ncounter = 1\ndef double(v):\n    return v * 2', 'python')
    await ok(s, 'counter += 1', 'python')
    assert.equal((await ok(s, 'json.dumps({"c": double(counter)})', 'python')).result, `'{"c": 4}'`)
    await ok(s, 'const path = require("path"); var total = 1; function triple(v) { return v * 3 }', 'javascript')
    await ok(s, 'total += 1', 'javascript')
    assert.equal((await ok(s, 'path.join("a", String(triple(total)))', 'javascript')).result, "'a/6'")
  })

  test('the two languages share the workspace, /home/user, which is the working directory', async () => {
    assert.equal((await ok(s, 'import os\nos.getcwd()', 'python')).result, "'/home/user'")
    assert.equal((await ok(s, 'process.cwd()', 'javascript')).result, "'/home/user'")
    await ok(s, 'with open("from_python.txt", "w") as f:\n    f.write("written by python")', 'python')
    let r = await ok(s, 'require("fs").readFileSync("/home/user/from_python.txt", "utf8")', 'javascript')
    assert.equal(r.result, "'written by python'")
    await ok(s, 'require("fs").writeFileSync("from_js.json", JSON.stringify({ n: 7 }))', 'javascript')
    r = await ok(s, 'import json\njson.load(open("/home/user/from_js.json"))["n"]', 'python')
    assert.equal(r.result, '7')
  })

  test('a Python exception gives name, value and a traceback of the user\'s lines', async () => {
    const r = await fails(s, 'def inner():\n    return 1 / 0\n\ninner()', 'python', 'ZeroDivisionError')
    assert.equal(r.error.value, 'division by zero')
    assert.equal(r.errorMessage, 'ZeroDivisionError: division by zero')
    assert.match(r.error.traceback, /line 4, in <module>/)
    assert.match(r.error.traceback, /line 2, in inner\n\s+return 1 \/ 0/)
    assert.doesNotMatch(r.error.traceback, /driver\.py|runtimes/)
    assert.equal((await ok(s, 'counter', 'python')).result, '2', 'the session keeps working, state intact')
  })

  test('a JavaScript exception gives name, value and a stack of the user\'s lines', async () => {
    const r = await fails(s, 'function inner() {\n  throw new TypeError("no good")\n}\ninner()', 'javascript', 'TypeError')
    assert.equal(r.error.value, 'no good')
    assert.match(r.error.traceback, /^TypeError: no good\n/)
    assert.match(r.error.traceback, /at inner \(<cell-\d+>:2:9\)/)
    assert.match(r.error.traceback, /<cell-\d+>:4:1/)
    assert.doesNotMatch(r.error.traceback, /driver\.js|runtimes|node:vm/)
    const rejected = await fails(s, 'await Promise.reject(new RangeError("later"))', 'javascript', 'RangeError')
    assert.equal(rejected.error.value, 'later')
    assert.equal((await ok(s, 'total', 'javascript')).result, '2', 'the session keeps working, state intact')
  })

  test('syntax errors are reported as SyntaxError, and nothing of the cell runs', async () => {
    let r = await fails(s, 'counter = 100\ndef broken(:\n    pass', 'python', 'SyntaxError')
    assert.match(r.error.traceback, /line 2/)
    assert.equal((await ok(s, 'counter', 'python')).result, '2')
    r = await fails(s, 'total = 100;\nlet = = 1', 'javascript', 'SyntaxError')
    assert.match(r.error.traceback, /<cell-\d+>:2/)
    assert.equal((await ok(s, 'total', 'javascript')).result, '2')
  })

  test('unicode passes in and out: emoji, CJK, accents', async () => {
    const text = 'héllo 😀 中文 🇯🇵'
    let r = await ok(s, `s = ${JSON.stringify(text)}\nprint(s)\nprint(len("😀中"), file=__import__("sys").stderr)\ns`, 'python')
    assert.deepEqual(r.logs, { stdout: [`${text}\n`], stderr: ['2\n'] })
    assert.equal(r.result, `'${text}'`)
    r = await ok(s, `const u = ${JSON.stringify(text)}; console.log(u); console.error([..."😀中"].length); u`, 'javascript')
    assert.deepEqual(r.logs, { stdout: [`${text}\n`], stderr: ['2\n'] })
    assert.equal(r.result, `'${text}'`)
  })

  test('invalid UTF-8 on stdout becomes replacement characters, and nothing breaks', async () => {
    let r = await ok(s, 'import sys\nsys.stdout.buffer.write(b"a\\xff\\xfeb\\n")\nsys.stdout.flush()', 'python')
    assert.equal(stdout(r), 'a\uFFFD\uFFFDb\n')
    r = await ok(s, 'process.stdout.write(Buffer.from([0x61, 0xff, 0xfe, 0x62, 0x0a]))', 'javascript')
    assert.equal(stdout(r), 'a\uFFFD\uFFFDb\n')
    assert.equal((await ok(s, '"still fine"', 'python')).result, "'still fine'")
  })

  test('output that looks like a driver reply cannot forge a result', async () => {
    const forged = (id) => JSON.stringify({ id, ok: true, executionCount: 99, results: [{ 'text/plain': 'FORGED', isMainResult: true }], error: null })
    let r = await ok(s, `import sys\nfor i in range(3):\n    print(${JSON.stringify(forged(1))}.replace('1', str(i), 1))\n    print(${JSON.stringify(forged(2))}, file=sys.stderr)\n"real"`, 'python')
    assert.equal(r.result, "'real'")
    assert.equal(r.logs.stdout.length, 3)
    assert.doesNotMatch(JSON.stringify(r.results), /FORGED/)
    r = await ok(s, `console.log(${JSON.stringify(forged(1))}); console.error(${JSON.stringify(forged(null))}); "real"`, 'javascript')
    assert.equal(r.result, "'real'")
    assert.equal(stdout(r), `${forged(1)}\n`)
    assert.doesNotMatch(JSON.stringify(r.results), /FORGED/)
  })
})

// ------------------------------------------------------------------ timeouts

describe('timeouts', () => {
  let s
  before(async () => { s = await LocalSession.create() })
  after(async () => { await s?.close() })

  test('Python: an interrupted loop is a TimeoutError and the state survives', async () => {
    await ok(s, 'kept = "before the loop"', 'python')
    const r = await fails(s, 'while True: pass', 'python', 'TimeoutError', 1)
    assert.match(r.error.value, /timeout of 1 s/)
    assert.equal((await ok(s, 'kept', 'python')).result, "'before the loop'")
  })

  test('JavaScript: a synchronous loop is interrupted and the state survives', async () => {
    await ok(s, 'var kept = "before the loop"', 'javascript')
    await fails(s, 'while (true) {}', 'javascript', 'TimeoutError', 1)
    assert.equal((await ok(s, 'kept', 'javascript')).result, "'before the loop'")
  })

  test('a loop that prints is interrupted in both languages; later output is captured again', async () => {
    for (const [code, next, language] of [
      ['i = 0\nwhile True:\n    print("tick", i)\n    i += 1', 'print("after")\ni > 0', 'python'],
      ['var i = 0; while (true) { console.log("tick", i); i++ }', 'console.log("after"); i > 0', 'javascript'],
    ]) {
      const r = await fails(s, code, language, 'TimeoutError', 1)
      assert.match(stdout(r), /^tick 0\ntick 1\n/)
      // The interrupt may land inside a write: the stream must not stay stuck.
      const after = await ok(s, next, language, 5)
      assert.equal(after.result, language === 'python' ? 'True' : 'true')
      assert.equal(stdout(after), 'after\n')
    }
  })

  test('JavaScript: an awaited promise that never settles is abandoned, state kept', async () => {
    await fails(s, 'await new Promise(() => {})', 'javascript', 'TimeoutError', 1)
    assert.equal((await ok(s, 'kept', 'javascript')).result, "'before the loop'")
  })

  test('JavaScript: a busy loop in a timer cannot be interrupted: killed, and the next run starts fresh', async () => {
    const r = await fails(s, 'setTimeout(() => { while (true) {} }, 0)\nawait new Promise((r) => setTimeout(r, 100))\n1', 'javascript', 'TimeoutError', 1)
    assert.match(r.error.value, /killed/)
    const next = await ok(s, 'typeof kept', 'javascript')
    assert.equal(next.result, "'undefined'", 'a fresh interpreter')
  })
})

// ------------------------------------------------------------------ broken interpreters

describe('a run that breaks its own interpreter', () => {
  let s
  before(async () => { s = await LocalSession.create() })
  after(async () => { await s?.close() })

  const python = [
    ['os._exit(3)', 'import os\nos._exit(3)'],
    ['SIGKILL to itself', 'import os\nos.kill(os.getpid(), 9)'],
    ['closing its stdout', 'import os\nos.close(1)\n"after"'],
    ['closing its stderr', 'import os\nos.close(2)\n"after"'],
  ]
  for (const [what, code] of python) {
    test(`Python, ${what}: an InterpreterExitError, then a fresh interpreter`, async () => {
      await ok(s, 'state = 1', 'python')
      const r = await fails(s, code, 'python', 'InterpreterExitError')
      assert.match(r.error.value, /python interpreter stopped/)
      const next = await ok(s, 'print("alive")\n"state" in globals()', 'python')
      assert.deepEqual([stdout(next), next.result], ['alive\n', 'False'])
    })
  }

  const javascript = [
    ['process.exit(1)', 'process.exit(1)'],
    ['SIGKILL to itself', 'process.kill(process.pid, "SIGKILL")'],
    ['closing its stdout', 'require("fs").closeSync(1); console.log("lost"); "after"'],
  ]
  for (const [what, code] of javascript) {
    test(`JavaScript, ${what}: an InterpreterExitError, then a fresh interpreter`, async () => {
      await ok(s, 'var state = 1', 'javascript')
      const r = await fails(s, code, 'javascript', 'InterpreterExitError')
      assert.match(r.error.value, /javascript interpreter stopped/)
      const next = await ok(s, 'console.log("alive"); typeof state', 'javascript')
      assert.deepEqual([stdout(next), next.result], ['alive\n', "'undefined'"])
    })
  }

  test('writing to fd 4 fails the run (fd 4 is not the reply channel any more, or is garbled)', async () => {
    for (const [code, language] of [['import os\nos.write(4, b"garbage\\n")', 'python'],
      ['require("fs").writeSync(4, "garbage\\n")', 'javascript']]) {
      const r = await s.code.runCode(code, language, 10)
      assert.equal(r.success, false, show(r))
      assert.ok(r.error.name === 'InterpreterExitError' || /EBADF|Bad file descriptor/.test(r.error.value), show(r))
      assert.equal((await ok(s, '6 * 7', language)).result, '42')
    }
  })

  // Every pipe the interpreter holds, beyond stdout and stderr, gets a garbage line:
  // the reply channel is among them wherever the driver moved it.
  const pythonGarbage = `import os
for fd in range(3, 256):
    try:
        if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
            os.write(fd, b"this is not a reply\\n")
    except OSError:
        pass
"no reply"`
  const javascriptGarbage = `const fs = require('fs')
for (let fd = 3; fd < 256; fd++) {
  try {
    if (fs.readlinkSync('/proc/self/fd/' + fd).startsWith('pipe:')) fs.writeSync(fd, 'this is not a reply\\n')
  } catch {}
}
'no reply'`
  for (const [language, code] of [['python', pythonGarbage], ['javascript', javascriptGarbage]]) {
    test(`${language}: garbage on the reply channel is an InterpreterExitError, not a result`, async () => {
      const r = await fails(s, code, language, 'InterpreterExitError')
      assert.doesNotMatch(r.result, /no reply/)
      assert.equal((await ok(s, '6 * 7', language)).result, '42')
    })
  }
})

// ------------------------------------------------------------------ limits by name

describe('limits are reported by name', () => {
  test('MemoryError: 400 MB in a 128 MiB session with small file systems, then the next run works', async () => {
    // Processes and files share one limit: 128 MiB + what 16 MiB file systems may hold.
    const s = await LocalSession.create({ memoryBytes: 128 * MIB, workspaceBytes: 16 * MIB, tmpBytes: 16 * MIB })
    try {
      await ok(s, 'lost = 1', 'python')
      let r = await fails(s, 'blob = b"\\x01" * (400 * 1024 * 1024)\nlen(blob)', 'python', 'MemoryError', 30)
      assert.match(r.error.value, /128 MiB/)
      assert.equal((await ok(s, '1 + 1', 'python')).result, '2')
      r = await fails(s, 'const blob = Buffer.alloc(400 * 1024 * 1024, 1); blob.length', 'javascript', 'MemoryError', 30)
      assert.equal((await ok(s, '1 + 1', 'javascript')).result, '2')
    } finally {
      await s.close()
    }
  })

  test('ProcessLimitError: subprocesses or forks past maxProcesses, then the next run works', async () => {
    const s = await LocalSession.create({ maxProcesses: 16 })
    try {
      const cases = [
        ['import subprocess\nchildren = [subprocess.Popen(["sleep", "30"]) for _ in range(40)]', 'python'],
        ['import os, time\nfor _ in range(40):\n    if os.fork() == 0:\n        time.sleep(30)\n        os._exit(0)', 'python'],
        ['const cp = require("child_process")\nconst kids = []\nfor (let i = 0; i < 40; i++) kids.push(cp.spawn("sleep", ["30"]))\nkids.length', 'javascript'],
      ]
      for (const [code, language] of cases) {
        const r = await fails(s, code, language, 'ProcessLimitError', 20)
        assert.match(r.error.value, /limit of 16 processes/)
        assert.equal((await ok(s, '"ok"', language)).result, "'ok'")
      }
    } finally {
      await s.close()
    }
  })

  test('OutputLimitError: 5 MB printed under a 1 MiB cap keeps the first MiB and says what was dropped', async () => {
    const s = await LocalSession.create({ outputLimitBytes: MIB })
    try {
      let r = await fails(s, 'print("a" + "b" * (5 * 1024 * 1024 - 1))\n"done"', 'python', 'OutputLimitError', 20)
      assert.equal(stdout(r).length, MIB)
      assert.ok(stdout(r).startsWith('abbb'))
      assert.match(r.error.value, /4194305 bytes of stdout/)
      assert.equal(r.result, "'done'")
      assert.deepEqual((await ok(s, '1', 'python')).logs, { stdout: [], stderr: [] })

      r = await fails(s, 'process.stdout.write("a" + "b".repeat(5 * 1024 * 1024 - 1)); "done"', 'javascript', 'OutputLimitError', 20)
      assert.equal(stdout(r).length, MIB)
      assert.ok(stdout(r).startsWith('abbb'))
      assert.match(r.error.value, /4194304 bytes of stdout/)
      r = await fails(s, 'for (let i = 0; i < 5 * 1024; i++) console.error("e".repeat(1023)); "done"', 'javascript', 'OutputLimitError', 20)
      assert.equal(stderr(r).length, MIB)
      assert.match(r.error.value, /4194304 bytes of stderr/)
      // Nothing of a capped run spills into the next one.
      assert.deepEqual((await ok(s, '1', 'javascript')).logs, { stdout: [], stderr: [] })
    } finally {
      await s.close()
    }
  })
})

// ------------------------------------------------------------------ the tool surface

describe('callMcpTool, Code and the session object', () => {
  let s
  before(async () => { s = await LocalSession.create() })
  after(async () => { await s?.close() })

  test('run_code through callMcpTool answers the backend JSON', async () => {
    const t = await s.callMcpTool('run_code', { code: 'print(1)\n2', language: 'python', timeout_s: 10 })
    assert.equal(t.success, true)
    assert.equal(t.errorMessage, '')
    assert.ok(t.requestId)
    const data = JSON.parse(t.data)
    assert.deepEqual(data.stdout, ['1\n'])
    assert.deepEqual(data.result.map((x) => JSON.parse(x)), [{ 'text/plain': '2', isMainResult: true }])
  })

  test('tool errors are failed results with a sentence, never a throw', async () => {
    const cases = [
      ['delete_everything', { code: '1', language: 'python' }, /Unknown tool 'delete_everything'/],
      ['run_code', { code: '1', language: 'ruby', timeout_s: 5 }, /^\[ERR_CODEBAY_UNSUPPORTED_LANGUAGE\] Unsupported language: ruby/],
      ['run_code', { language: 'python', timeout_s: 5 }, /run_code needs code, a string/],
      ['run_code', { code: 7, language: 'python' }, /run_code needs code, a string/],
      ['run_code', { code: '1', language: 'python', timeout: 5 }, /unknown field `timeout`/],
      ['run_code', { code: '1', language: 'python', timeout_s: -1 }, /timeout/i],
      ['run_code', { code: '1', language: 'python', timeout_s: '5' }, /timeout/i],
      ['run_code', null, /run_code arguments must be an object/],
    ]
    for (const [name, args, message] of cases) {
      const t = await s.callMcpTool(name, args)
      assert.equal(t.success, false, `${name} ${JSON.stringify(args)}`)
      assert.match(t.errorMessage, message)
      assert.match(t.errorMessage, /^\S+ \S+ \S+/, 'a sentence, not a code')
      assert.equal(t.data, '')
    }
  })

  test('new Code(session) and session.code give the same results over the same state', async () => {
    const wrapped = new Code(s)
    await wrapped.runCode('shared = 21', 'python')
    const a = await s.code.runCode('print("x")\nshared * 2', 'python')
    const b = await wrapped.runCode('print("x")\nshared * 2', 'python')
    for (const r of [a, b]) {
      assert.equal(r.success, true)
      assert.equal(r.result, '42')
      assert.deepEqual(r.logs, { stdout: ['x\n'], stderr: [] })
      assert.deepEqual(r.results, [{ text: '42', isMainResult: true }])
    }
    const ea = await s.code.runCode('null.x', 'javascript')
    const eb = await wrapped.runCode('null.x', 'javascript')
    assert.deepEqual([ea.success, ea.error.name, ea.error.value], [eb.success, eb.error.name, eb.error.value])
  })

  test('getAPIKey is empty and getSessionId is stable and unique per session', async () => {
    const other = await LocalSession.create()
    try {
      assert.equal(s.getAPIKey(), '')
      assert.equal(s.getSessionId(), s.getSessionId())
      assert.notEqual(s.getSessionId(), other.getSessionId())
      assert.match(s.getSessionId(), /^[a-z0-9-]{1,64}$/)
    } finally {
      await other.close()
    }
  })

  test('after close(), runs resolve with a failure, and close() again is fine', async () => {
    const closing = await LocalSession.create()
    await ok(closing, '1', 'python')
    const id = closing.getSessionId()
    await closing.close()
    assert.deepEqual(cgroupDirs(id), [], 'close() returns once the cgroups are gone')
    await closing.close()
    const r = await closing.code.runCode('1', 'python')
    assert.equal(r.success, false)
    assert.match(r.errorMessage, /closed/)
    const t = await closing.callMcpTool('run_code', { code: '1', language: 'javascript' })
    assert.equal(t.success, false)
    assert.match(t.errorMessage, /closed/)
    await closing.close()
  })
})

// ------------------------------------------------------------------ process lifetime

describe('the Node process and what it leaves behind', () => {
  // The child prints its session id, its helper's pid and the pids in the session's
  // cgroups while they live, so that the parent can check each is gone afterwards.
  const script = (close) => `
    import { createRequire } from 'node:module'
    import fs from 'node:fs'
    const { LocalSession } = createRequire(import.meta.url)(${JSON.stringify(INDEX)})
    const s = await LocalSession.create()
    const py = await s.code.runCode('6 * 7', 'python', 10)
    const js = await s.code.runCode('6 * 7', 'javascript', 10)
    const id = s.getSessionId()
    const pids = []
    for (const task of fs.readdirSync('/proc/self/task')) {
      pids.push(...fs.readFileSync('/proc/self/task/' + task + '/children', 'utf8').split(/\\s+/).filter(Boolean).map(Number))
    }
    for (const root of ['/sys/fs/cgroup', ...fs.readdirSync('/sys/fs/cgroup').map((e) => '/sys/fs/cgroup/' + e)]) {
      // The session's cgroup and the context cgroups below it.
      const dir = root + '/codebay/' + id
      const dirs = [dir]
      try { for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) dirs.push(dir + '/' + e.name) } catch {}
      for (const d of dirs) {
        try { pids.push(...fs.readFileSync(d + '/cgroup.procs', 'utf8').split('\\n').filter(Boolean).map(Number)) } catch {}
      }
    }
    const uids = {}
    for (const p of new Set(pids)) uids[p] = Number(/^Uid:\\s+(\\d+)/m.exec(fs.readFileSync('/proc/' + p + '/status', 'utf8'))[1])
    console.log(JSON.stringify({ id, results: [py.result, js.result], uids }))
    ${close ? 'await s.close()' : ''}
  `

  for (const close of [true, false]) {
    test(close ? 'a script that closes its session exits by itself, leaving nothing'
      : 'a script that forgets close() still exits, and the helper cleans up after it', async () => {
      const { code, signal, out, err } = await runNode(script(close), 20_000)
      assert.equal(signal, null, `node had to be killed: ${err}`)
      assert.equal(code, 0, err)
      const { id, results, uids } = JSON.parse(out)
      assert.deepEqual(results, ['42', '42'])
      const pids = Object.keys(uids).map(Number)
      const sandboxed = pids.filter((p) => uids[p] >= 1_000_000)
      assert.ok(sandboxed.length >= 3, `init and two drivers run under mapped ids: ${JSON.stringify(uids)}`)
      const gone = () => cgroupDirs(id).length === 0 && pids.every((p) => sandboxUid(p) === null)
      assert.ok(await waitFor(gone, 10_000),
        `left behind: cgroups ${cgroupDirs(id)}, pids ${pids.filter((p) => sandboxUid(p) !== null)}`)
    })
  }
})

test('result is stdout joined for small and large outputs alike, and large output is one chunk', async () => {
  const { LocalSession } = codebay
  const s = await LocalSession.create({ poolSize: 0, outputLimitBytes: 1024 * 1024 })
  try {
    const small = await s.code.runCode("print('a')\nprint('b')", 'python')
    assert.deepEqual(small.logs.stdout, ['a\n', 'b\n'])
    assert.equal(small.result, 'a\nb\n')
    const large = await s.code.runCode("import sys\nfor i in range(2000): sys.stdout.write('%04d' % i + 'x' * 95 + '\\n')", 'python')
    assert.equal(large.success, true)
    assert.equal(large.logs.stdout.length, 1)
    assert.equal(large.logs.stdout[0].length, 200_000)
    assert.equal(large.result, large.logs.stdout[0])
    assert.ok(large.result.startsWith('0000x') && large.result.endsWith('1999' + 'x'.repeat(95) + '\n'))
    const js = await s.code.runCode("for (let i = 0; i < 2000; i++) console.log(String(i).padStart(4, '0') + 'y'.repeat(95))", 'javascript')
    assert.equal(js.result, js.logs.stdout.join(''))
    assert.equal(js.result.length, 200_000)
  } finally {
    await s.close()
  }
})

test('callMcpTool answers unreadable calls with a failed result, never a throw', async () => {
  const { LocalSession } = codebay
  const s = await LocalSession.create({ poolSize: 0, prewarm: [] })
  try {
    const noArgs = await s.callMcpTool('run_code')
    assert.equal(noArgs.success, false)
    assert.equal(noArgs.errorMessage, '[ERR_CODEBAY_INVALID_ARGUMENT] run_code needs code, a string')
    const fnArgs = await s.callMcpTool('run_code', { code: () => 1, language: 'python' })
    assert.equal(fnArgs.success, false)
    assert.match(fnArgs.errorMessage, /^The arguments of 'run_code' must be JSON data: /)
    const noName = await s.callMcpTool(42, {})
    assert.deepEqual({ ...noName, requestId: '' }, { success: false, data: '', errorMessage: 'The tool name must be a string.', requestId: '' })
    assert.notEqual(noName.requestId, fnArgs.requestId)
    assert.equal((await s.code.runCode('1 + 1', 'python')).result, '2', 'the session still works')
  } finally {
    await s.close()
  }
})
