'use strict';
// codebay JavaScript runtime driver.
//
// Runs inside the sandbox as `node --expose-internals driver.js` with
// fd 0 = /dev/null, fd 1 = stdout pipe, fd 2 = stderr pipe,
// fd 3 = requests (JSON lines in), fd 4 = replies (JSON lines out).
//
// Protocol (docs/internals.md section 4; the Rust types in
// crates/codebay-protocol/src/driver.rs): one request line
// {"id","code","timeoutMs"[,"envs":{NAME:value}][,"resultLimitBytes":L]} (envs: set
// in process.env for this run only, restored afterwards; L: each MIME value of a result
// is cut to L bytes of UTF-8, see limitBundle) -> any number of
// {"type":"display","id","bundle"} lines, one per display() call, written as it
// happens, then exactly one
// {"type":"reply","id","ok","executionCount","mainResult","error"[,"resultBytesDropped"]}
// line (the bytes cut, only when > 0), written
// after the run's stdout/stderr were flushed. mainResult is the bundle of the last
// expression's value (or null), error is {"name","value","traceback"} (or null).
// Every line is compact JSON with the keys in the order the Rust types declare
// them (in a bundle "text/plain" first, "isMainResult" last), so it is
// byte-identical to what serde writes (tests/fixtures/driver.jsonl holds that).
// A request that cannot be served gets a reply with "ok":false and a ProtocolError.
//
// User code runs with vm.Script#runInThisContext in the driver's realm, so
// top-level let/const/class/function declarations persist across cells (they
// live in the realm's global lexical scope). Top-level `await` is supported
// through Node's REPL transform (internal/repl/await). Everything the driver
// needs is captured here, before any user code runs.

const fs = require('fs');
const net = require('net');
const path = require('path');
const util = require('util');
const vm = require('vm');
const Module = require('module');

let processTopLevelAwait = null;
try {
  ({ processTopLevelAwait } = require('internal/repl/await'));
} catch {
  // Started without --expose-internals: no top-level await.
}

const proc = process;
const JSONstringify = JSON.stringify;
const JSONparse = JSON.parse;
const inspect = util.inspect;
const isNativeError = util.types.isNativeError;
const writeSync = fs.writeSync;
const openSync = fs.openSync;
const closeSync = fs.closeSync;
const VMScript = vm.Script;
const runInThisContext = vm.Script.prototype.runInThisContext;
const ReflectApply = Reflect.apply;
const PromiseThen = Promise.prototype.then;
const StringSplit = String.prototype.split;
const StringIncludes = String.prototype.includes;
const StringStartsWith = String.prototype.startsWith;
const StringTrim = String.prototype.trim;
const StringSlice = String.prototype.slice;
const StringReplace = String.prototype.replace;
const ArrayPush = Array.prototype.push;
const ArrayJoin = Array.prototype.join;
const ArrayFindLastIndex = Array.prototype.findLastIndex;
const ArrayShift = Array.prototype.shift;
const BufferConcat = Buffer.concat;
const BufferIndexOf = Buffer.prototype.indexOf;
const BufferSubarray = Buffer.prototype.subarray;
const BufferToString = Buffer.prototype.toString;
const BufferFrom = Buffer.from;
const BufferByteLength = Buffer.byteLength;
const StringCharCodeAt = String.prototype.charCodeAt;
const RegExpReplace = RegExp.prototype[Symbol.replace];
const NumberIsSafeInteger = Number.isSafeInteger;
const isPromise = util.types.isPromise;
const ObjectKeys = Object.keys;
const ArrayIsArray = Array.isArray;
const ObjectGetPrototypeOf = Object.getPrototypeOf;
const ObjectPrototype = Object.prototype;
const procEnv = proc.env;
const StringCtor = String;
const ErrorCtor = Error;
const DRIVER_FILE = __filename;
const setTimeoutCaptured = setTimeout;
// Captured before user code can replace them: the streams whose writes must be
// flushed before a reply (a write the pipe does not take at once, e.g. one cut
// short by a signal, is finished asynchronously by libuv).
const stdStreams = [proc.stdout, proc.stderr];
// libuv makes the pipes non-blocking and queues what the pipe does not take, so a
// flood of output would sit in this process's memory (and count against the
// session's) however fast the addon reads. Blocking writes wait for the reader
// instead, as Python's do; children inheriting fd 1/2 get a blocking pipe too.
for (const s of stdStreams) {
  try {
    if (s._handle && typeof s._handle.setBlocking === 'function') s._handle.setBlocking(true);
  } catch {
    // not a pipe (a file, /dev/null): writes to it are synchronous anyway
  }
}

// Node's internal bindings (needs --expose-internals). Loading them prints a
// warning, which must not reach the user's stderr.
let internalBinding = null;
{
  const savedEmitWarning = proc.emitWarning;
  try {
    proc.emitWarning = () => {};
    ({ internalBinding } = require('internal/test/binding'));
  } catch {
    // without --expose-internals: no fd hiding, interrupts through process.on
  } finally {
    proc.emitWarning = savedEmitWarning;
  }
}

// ---------------------------------------------------------------- protocol fds
//
// Node has no dup(). Re-open the pipes through /proc/self/fd: libuv opens
// every file with O_CLOEXEC, so the new descriptors are not inherited by the
// user's child processes; then close 3 and 4. The re-open needs /proc and a
// pipe owned by our uid (a pipe inode is mode 0600, owned by its creator).
// Otherwise keep using 3 and 4 and make every child process spawned through
// child_process get /dev/null at fds 3 and 4 instead (see hideFdsFromChildren).
// CODEBAY_DRIVER_NO_REOPEN=1 forces that fallback (for tests).

function reopen(fd, flags) {
  if (proc.env.CODEBAY_DRIVER_NO_REOPEN === '1') return fd;
  try {
    const nfd = openSync(`/proc/self/fd/${fd}`, flags);
    closeSync(fd);
    return nfd;
  } catch {
    return fd;
  }
}

function hideFdsFromChildren(maxFd) {
  if (internalBinding === null) return;
  const devNull = openSync('/dev/null', 'r+');
  const pad = (options) => {
    if (options !== null && typeof options === 'object' && Array.isArray(options.stdio)) {
      for (let i = options.stdio.length; i <= maxFd; i++) options.stdio[i] = { type: 'fd', fd: devNull };
    }
  };
  const { Process } = internalBinding('process_wrap');
  const spawnAsync = Process.prototype.spawn;
  Process.prototype.spawn = function spawn(options) {
    pad(options);
    return ReflectApply(spawnAsync, this, [options]);
  };
  const spawnSyncBinding = internalBinding('spawn_sync');
  const spawnSync = spawnSyncBinding.spawn;
  spawnSyncBinding.spawn = function spawn(options) {
    pad(options);
    return ReflectApply(spawnSync, this, [options]);
  };
}

let getPromiseDetails = null;
let kPromiseRejected = 2;
if (internalBinding !== null) {
  try {
    const u = internalBinding('util');
    if (typeof u.getPromiseDetails === 'function') getPromiseDetails = u.getPromiseDetails;
    if (u.constants && typeof u.constants.kRejected === 'number') kPromiseRejected = u.constants.kRejected;
  } catch {
    // no promise introspection: a rejected promise as the last value stays a result
  }
}

const REQ_FD = reopen(3, fs.constants.O_RDONLY);
const REP_FD = reopen(4, fs.constants.O_WRONLY);
if (REQ_FD === 3 || REP_FD === 4) hideFdsFromChildren(4);

// A MIME bundle as JSON: "text/plain" first, "isMainResult" last, whatever order
// the object has (JavaScript puts integer-like keys first). A value JSON cannot
// hold (circular, BigInt ...) cuts the bundle down to its text/plain.
function bundleJSON(bundle) {
  try {
    let text = `{"text/plain":${jsonValue(bundle['text/plain'])}`;
    const keys = ObjectKeys(bundle);
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i];
      if (k === 'text/plain' || k === 'isMainResult') continue;
      const v = JSONstringify(bundle[k]);
      if (v !== undefined) text += `,${JSONstringify(k)}:${v}`;
    }
    return `${text},"isMainResult":${bundle.isMainResult === true}}`;
  } catch {
    let plain = '';
    try { plain = StringCtor(bundle['text/plain']); } catch { /* keep '' */ }
    return `{"text/plain":${JSONstringify(plain)},"isMainResult":${bundle.isMainResult === true}}`;
  }
}

function jsonValue(v) {
  const text = JSONstringify(v);
  return text === undefined ? 'null' : text;
}

function replyLine(id, ok, count, main, error, dropped) {
  return `{"type":"reply","id":${jsonValue(id === undefined ? null : id)},"ok":${ok},` +
    `"executionCount":${count},"mainResult":${main === null ? 'null' : bundleJSON(main)},` +
    `"error":${error === null ? 'null' : JSONstringify({ name: StringCtor(error.name), value: StringCtor(error.value), traceback: StringCtor(error.traceback) })}` +
    `${dropped > 0 ? `,"resultBytesDropped":${dropped}` : ''}}`;
}

// JSON nested deeper than this is refused as a result (the engine's parser stops at 128).
const MAX_JSON_DEPTH = 100;
const DEPTH_REFUSED = `<JSON nested deeper than ${MAX_JSON_DEPTH} levels>`;

// How deep JSON text (as JSON.stringify writes it) nests arrays and objects.
function jsonDepth(text) {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = ReflectApply(StringCharCodeAt, text, [i]);
    if (inString) {
      if (c === 92) i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) {
      inString = true;
    } else if (c === 91 || c === 123) {
      if (++depth > max) max = depth;
    } else if (c === 93 || c === 125) {
      depth--;
    }
  }
  return max;
}

// Makes bundle safe for the wire and holds it to the run's resultLimitBytes: a string
// value is cut to its first limit bytes of UTF-8 (whole characters), any other value
// whose JSON is too long is replaced by a note; both count in run.dropped. A value
// nested deeper than MAX_JSON_DEPTH is refused.
function limitBundle(bundle, run) {
  const limit = run.limit;
  const keys = ObjectKeys(bundle);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    if (k === 'isMainResult') continue;
    const v = bundle[k];
    if (typeof v === 'string') {
      if (limit === null || v.length * 3 <= limit) continue; // at most 3 bytes a code unit
      const n = BufferByteLength(v, 'utf8');
      if (n <= limit) continue;
      const buf = BufferFrom(v, 'utf8');
      let end = limit;
      while (end > 0 && (buf[end] & 0xC0) === 0x80) end--; // do not cut a character in two
      bundle[k] = ReflectApply(BufferToString, buf, ['utf8', 0, end]);
      run.dropped += n - end;
      continue;
    }
    let text;
    try {
      text = JSONstringify(v);
    } catch {
      continue; // not JSON at all: bundleJSON falls back to text/plain
    }
    if (typeof text !== 'string') continue;
    if (jsonDepth(text) > MAX_JSON_DEPTH) {
      bundle[k] = DEPTH_REFUSED;
      continue;
    }
    if (limit !== null) {
      const n = BufferByteLength(text, 'utf8');
      if (n > limit) {
        bundle[k] = `<result of ${n} bytes dropped: over the limit of ${limit} bytes>`;
        run.dropped += n;
      }
    }
  }
  return bundle;
}

// JSON.stringify writes a lone surrogate as an escape (\ud800), which strict parsers
// (serde_json) refuse: each becomes U+FFFD. A well-formed pair is written as is.
const LONE_SURROGATE = /\\(\\|ud[89a-f][0-9a-f]{2})/g;
function wellFormed(text) {
  if (!ReflectApply(StringIncludes, text, ['\\ud'])) return text;
  return ReflectApply(RegExpReplace, LONE_SURROGATE, [text, (m, g) => (g === '\\' ? m : '\ufffd')]);
}

function displayLine(id, bundle) {
  return `{"type":"display","id":${jsonValue(id === undefined ? null : id)},"bundle":${bundleJSON(bundle)}}`;
}

function sendLine(text) {
  const buf = BufferFrom(wellFormed(text) + '\n', 'utf8');
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(REP_FD, buf, off, buf.length - off);
    } catch (e) {
      if (e && e.code === 'EAGAIN') continue;
      throw e;
    }
  }
}

function writeStderr(text) {
  try {
    const buf = BufferFrom(text, 'utf8');
    let off = 0;
    while (off < buf.length) off += writeSync(2, buf, off, buf.length - off);
  } catch {
    // nothing sensible left to do
  }
}

// ---------------------------------------------------------------- user globals

const cwd = proc.cwd();
const replFile = path.join(cwd, '<repl>');
const userModule = new Module(replFile, null);
userModule.filename = replFile;
userModule.paths = Module._nodeModulePaths(cwd);
userModule.loaded = true;
const userRequire = Module.createRequire(cwd + path.sep);

let current = null; // the run in progress: { id, interrupt, finished, ... }

// display(value): sends a non-main result {"text/plain": util.inspect(value)}
// (a string is shown as-is) at once, as a display message of the current run;
// display(bundle, {raw: true}) sends the given MIME bundle, e.g.
// display({'text/html': '<b>x</b>'}, {raw: true}). Outside a run (a timer
// firing after the run finished) it is dropped.
function display(value, options) {
  let bundle;
  if (options && options.raw && value !== null && typeof value === 'object') {
    bundle = {};
    for (const k of ObjectKeys(value)) bundle[k] = value[k];
    if (bundle['text/plain'] === undefined) bundle['text/plain'] = '';
  } else {
    bundle = { 'text/plain': typeof value === 'string' ? value : inspect(value) };
  }
  bundle.isMainResult = false;
  const run = current;
  if (run === null || run.finished) return;
  limitBundle(bundle, run);
  // Writes to stdout and stderr are synchronous (blocking pipes): what the cell
  // printed before is in the pipes already.
  if (run !== null && !run.finished) sendLine(displayLine(run.id, bundle));
}

for (const [name, value] of [
  ['require', userRequire], ['module', userModule], ['exports', userModule.exports],
  ['__filename', replFile], ['__dirname', cwd], ['display', display],
]) {
  Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
}

// ---------------------------------------------------------------- errors

function isFrame(line) {
  return ReflectApply(StringStartsWith, ReflectApply(StringTrim, line, []), ['at ']);
}

function isDriverFrame(line) {
  return ReflectApply(StringIncludes, line, [DRIVER_FILE]) ||
         ReflectApply(StringIncludes, line, ['(node:vm:']) ||
         ReflectApply(StringIncludes, line, ['at node:vm:']) ||
         ReflectApply(StringIncludes, line, ['node:internal/vm']);
}

// err.stack without the driver's frames: frames below the last frame of a
// cell are dropped (driver, node:vm, timers/task queues ...); without any
// cell frame (SyntaxError, errors from Node's own callbacks), everything from
// the first driver frame on is dropped.
function filterStack(stack) {
  const lines = ReflectApply(StringSplit, stack, ['\n']);
  const last = ReflectApply(ArrayFindLastIndex, lines,
                            [(l) => isFrame(l) && ReflectApply(StringIncludes, l, ['<cell-'])]);
  let end = lines.length;
  if (last >= 0) {
    end = last + 1;
  } else {
    for (let i = 0; i < lines.length; i++) {
      if (isFrame(lines[i]) && isDriverFrame(lines[i])) { end = i; break; }
    }
  }
  const kept = [];
  for (let i = 0; i < end; i++) {
    const l = lines[i];
    if (isFrame(l) && (isDriverFrame(l) || ReflectApply(StringIncludes, l, ['node:internal/process/task_queues']))) continue;
    kept[kept.length] = l;
  }
  let text = ReflectApply(ArrayJoin, kept, ['\n']);
  if (text[text.length - 1] !== '\n') text += '\n';
  return text;
}

function safeString(v) {
  try {
    return typeof v === 'string' ? v : inspect(v);
  } catch {
    return '<uninspectable value>';
  }
}

// Thrown values: Errors (any realm) give {name: err.name, value: err.message,
// traceback: filtered err.stack}. A thrown non-Error gets name "Error",
// value = the string itself or util.inspect(value), traceback "Uncaught <inspect>".
function formatError(err) {
  try {
    if (isNativeError(err) || err instanceof ErrorCtor) {
      let name = 'Error';
      let value = '';
      let stack = '';
      try { name = StringCtor(err.name); } catch { /* keep default */ }
      try { value = StringCtor(err.message); } catch { /* keep default */ }
      try { stack = typeof err.stack === 'string' ? err.stack : ''; } catch { /* none */ }
      if (!stack) stack = `${name}: ${value}`;
      return { name, value, traceback: filterStack(stack) };
    }
  } catch {
    // fall through
  }
  return { name: 'Error', value: safeString(err), traceback: `Uncaught ${safeString(err)}\n` };
}

function interruptedError() {
  return { name: 'Interrupted', value: 'Script execution was interrupted by SIGINT', traceback: '' };
}

function isInterrupt(err) {
  try {
    return !!err && (err.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED');
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- evaluation

let executionCount = 0;

function isObjectLiteral(code) {
  return /^\s*\{/.test(code) && !/;\s*$/.test(code);
}

function compile(code, filename) {
  // Like the REPL: `{a: 1}` is an object literal, not a block.
  if (isObjectLiteral(code)) {
    try {
      return { script: new VMScript(`(${ReflectApply(StringTrim, code, [])})\n`, { filename }), awaited: false };
    } catch {
      // not an expression: compile as written
    }
  }
  if (processTopLevelAwait !== null && ReflectApply(StringIncludes, code, ['await'])) {
    let wrapped = null;
    try {
      // The trailing newline keeps a comment on the last line from swallowing
      // the transform's closing parentheses.
      wrapped = processTopLevelAwait(code + '\n');
    } catch {
      // The transform's parser rejected the code. Like the REPL, compile it
      // with the awaits removed so that V8 reports the SyntaxError with our
      // filename and line numbers; if that compiles, fall through and let V8
      // judge the original code.
      wrapped = null;
      new VMScript(ReflectApply(StringReplace, code, [/\bawait\b/g, '']), { filename });
    }
    if (wrapped !== null) {
      return { script: new VMScript(wrapped, { filename }), awaited: true };
    }
  }
  return { script: new VMScript(code, { filename }), awaited: false };
}

// Run one cell. Resolves to { value, hasValue } or rejects with the thrown value.
function runCell(code, filename) {
  const { script, awaited } = compile(code, filename);
  const value = ReflectApply(runInThisContext, script, [{ breakOnSigint: true, displayErrors: false }]);
  if (!awaited) return { sync: true, value };
  return { sync: false, promise: value };
}

function mainResult(value, run) {
  if (value === undefined) return null;
  // With a cap, the whole string goes in (and what is cut is counted), not inspect's first 10000 characters.
  const plain = run.limit === null ? inspect(value) : inspect(value, { maxStringLength: Infinity });
  return limitBundle({ 'text/plain': plain, isMainResult: true }, run);
}

// The reason of a promise that is already rejected (marked handled), or none.
function rejection(value) {
  if (getPromiseDetails === null || !isPromise(value)) return null;
  const details = getPromiseDetails(value);
  if (!ArrayIsArray(details) || details[0] !== kPromiseRejected) return null;
  ReflectApply(PromiseThen, value, [undefined, () => {}]);
  return { reason: details[1] };
}

// Bytes the user's code wrote to stdout/stderr that libuv has not yet handed to
// the pipe. A stream that failed or was destroyed holds nothing it will write.
function unflushedBytes() {
  let n = 0;
  for (let i = 0; i < stdStreams.length; i++) {
    try {
      const s = stdStreams[i];
      unstick(s);
      if (!s.destroyed) n += s.writableLength | 0;
    } catch {
      // a stream the user broke: nothing to wait for
    }
  }
  return n;
}

// An interrupt (breakOnSigint) can land between a write libuv has finished and
// the JavaScript that records it: the stream then waits forever for that write,
// and buffers everything after it. Seen from outside any JavaScript, a write in
// progress with nothing queued in libuv can only be that; complete it.
function unstick(s) {
  const state = s._writableState;
  const handle = s._handle;
  if (state && state.writing && handle && handle.writeQueueSize === 0 &&
      typeof state.writecb === 'function' && typeof state.onwrite === 'function') {
    state.onwrite(null);
  }
}

// Polled rather than awaited through 'drain', which fires only after a write that
// returned false: a small write left queued would never announce its end.
function whenFlushed(cb) {
  if (unflushedBytes() === 0) return cb();
  setTimeoutCaptured(whenFlushed, 1, cb);
}

function send(run, reply) {
  if (current !== run) return; // already answered
  current = null;
  sendLine(reply);
  proc.nextTick(pump);
}

// ---------------------------------------------------------------- per-run envs

// Sets the run's environment, recording in saved what to restore.
function setEnvs(envs, saved) {
  const keys = ObjectKeys(envs);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    ReflectApply(ArrayPush, saved, [[k, procEnv[k]]]);
    procEnv[k] = envs[k];
  }
}

// Puts back what setEnvs changed (a variable that did not exist is deleted).
function restoreEnvs(saved) {
  for (let i = saved.length - 1; i >= 0; i--) {
    const k = saved[i][0];
    const old = saved[i][1];
    try {
      if (old === undefined) delete procEnv[k];
      else procEnv[k] = old;
    } catch {
      // nothing sensible left to do
    }
  }
  saved.length = 0;
}

// envs is a plain object of strings that can all be environment variables.
function validEnvs(envs) {
  if (envs === null || typeof envs !== 'object' || ArrayIsArray(envs)) return false;
  const proto = ObjectGetPrototypeOf(envs);
  if (proto !== ObjectPrototype && proto !== null) return false;
  const keys = ObjectKeys(envs);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    const v = envs[k];
    if (typeof v !== 'string' || k === '' || ReflectApply(StringIncludes, k, ['=']) ||
        ReflectApply(StringIncludes, k, ['\0']) || ReflectApply(StringIncludes, v, ['\0'])) return false;
  }
  return true;
}

function finish(run, value, err, hasError) {
  if (current !== run || run.finished) return; // already answered (interrupted)
  run.finished = true;
  restoreEnvs(run.savedEnvs);
  let error = null;
  let main = null;
  if (hasError) {
    error = isInterrupt(err) ? interruptedError() : formatError(err);
  } else {
    const rejected = rejection(value);
    if (rejected !== null) {
      error = isInterrupt(rejected.reason) ? interruptedError() : formatError(rejected.reason);
    } else {
      try {
        main = mainResult(value, run);
      } catch (e) {
        error = formatError(e);
      }
    }
  }
  const reply = replyLine(run.id, error === null, run.count, error === null ? main : null, error, run.dropped);
  // The reply comes after the run's output (docs/internals.md section 4): output
  // still queued would otherwise be captured as the next run's. An interrupted run
  // answers at once, and an interrupt while the output drains cuts the wait short:
  // the deadline has passed, and a flood of background output must not outlast it.
  if (hasError && isInterrupt(err)) {
    send(run, reply);
    return;
  }
  run.interrupt = () => send(run, reply);
  if (unflushedBytes() !== 0) watchForInterrupt(run);
  whenFlushed(() => send(run, reply));
}

function execute(req) {
  executionCount += 1;
  const run = {
    id: req.id, count: executionCount, interrupt: null, finished: false, watched: false, savedEnvs: [],
    limit: req.resultLimitBytes === undefined || req.resultLimitBytes === null ? null : req.resultLimitBytes,
    dropped: 0,
  };
  current = run;
  // A SIGINT meant for the previous run (its deadline passed as it answered)
  // must not stop this one.
  takePendingInterrupt();
  const filename = `<cell-${run.count}>`;
  let outcome;
  try {
    if (req.envs !== undefined) setEnvs(req.envs, run.savedEnvs);
    outcome = runCell(req.code, filename);
  } catch (err) {
    finish(run, undefined, err, true);
    return;
  }
  if (outcome.sync) {
    finish(run, outcome.value, undefined, false);
    return;
  }
  run.interrupt = () => finish(run, undefined, { code: 'ERR_SCRIPT_EXECUTION_INTERRUPTED' }, true);
  watchForInterrupt(run);
  ReflectApply(PromiseThen, outcome.promise, [
    (r) => {
      let v;
      try { v = r === undefined || r === null ? undefined : r.value; } catch { v = undefined; }
      finish(run, v, undefined, false);
    },
    (err) => finish(run, undefined, err, true),
  ]);
}

// SIGINT. `breakOnSigint` registers a watchdog for the length of the script,
// and the first registration starts (and the last stops) a watchdog thread and
// swaps the process's SIGINT handlers: ~100 us a run, more than the rest of the
// run together. Keeping the watchdog started for the driver's whole life makes
// each registration a list insert (~10 us). While it runs it owns SIGINT: a
// signal during a script terminates the script; otherwise it is recorded, and
// an awaited run polls for it. Without the internals, fall back to a listener.
const watchdog = internalBinding === null ? null : internalBinding('contextify');
const INTERRUPT_POLL_MS = 5;
if (watchdog !== null && typeof watchdog.startSigintWatchdog === 'function') {
  watchdog.startSigintWatchdog();
} else {
  proc.on('SIGINT', () => {
    const run = current;
    if (run !== null && run.interrupt !== null) run.interrupt();
  });
}

// True (and forgotten) when a SIGINT arrived since the last call. Restarting
// the watchdog is the only way to clear its flag.
function takePendingInterrupt() {
  if (watchdog === null || !watchdog.watchdogHasPendingSigint()) return false;
  watchdog.stopSigintWatchdog();
  watchdog.startSigintWatchdog();
  return true;
}

// While a run awaits, nothing else would notice the recorded SIGINT.
function watchForInterrupt(run) {
  if (watchdog === null || run.watched) return;
  run.watched = true;
  const poll = () => {
    if (current !== run) return;
    if (takePendingInterrupt()) {
      if (run.interrupt !== null) run.interrupt();
      return;
    }
    setTimeoutCaptured(poll, INTERRUPT_POLL_MS);
  };
  setTimeoutCaptured(poll, INTERRUPT_POLL_MS);
}

// Errors escaping from the user's asynchronous work must not kill the driver.
proc.on('uncaughtException', (err) => {
  writeStderr(`Uncaught ${formatError(err).traceback}`);
});
proc.on('unhandledRejection', (reason) => {
  const f = formatError(reason);
  // A thrown non-Error's traceback is "Uncaught <value>" already.
  const tb = ReflectApply(StringStartsWith, f.traceback, ['Uncaught ']) ? ReflectApply(StringSlice, f.traceback, [9]) : f.traceback;
  writeStderr(`Uncaught (in promise) ${tb}`);
});

// ---------------------------------------------------------------- request loop

const queue = [];
let pending = Buffer.alloc(0);

function protocolError(id, message) {
  sendLine(replyLine(id, false, executionCount, null, { name: 'ProtocolError', value: message, traceback: '' }));
}

function pump() {
  while (current === null && queue.length > 0) {
    const line = ReflectApply(ArrayShift, queue, []);
    let req;
    try {
      req = JSONparse(line);
    } catch {
      protocolError(null, 'invalid request line');
      continue;
    }
    if (req === null || typeof req !== 'object' || ArrayIsArray(req) || typeof req.code !== 'string') {
      protocolError(req !== null && typeof req === 'object' && !ArrayIsArray(req) && req.id !== undefined ? req.id : null,
                    'request must be an object with a string "code"');
      continue;
    }
    if (req.envs !== undefined && !validEnvs(req.envs)) {
      protocolError(req.id, 'envs must be an object of strings');
      continue;
    }
    const limit = req.resultLimitBytes;
    if (limit !== undefined && limit !== null && !(NumberIsSafeInteger(limit) && limit >= 0)) {
      protocolError(req.id, 'resultLimitBytes must be a non-negative integer');
      continue;
    }
    execute(req);
  }
  if (current === null && ended && queue.length === 0) proc.exit(0);
}

let ended = false;
const input = new net.Socket({ fd: REQ_FD, readable: true, writable: false });
input.on('data', (chunk) => {
  pending = BufferConcat([pending, chunk]);
  let i;
  while ((i = ReflectApply(BufferIndexOf, pending, [10])) >= 0) {
    const line = ReflectApply(BufferToString, ReflectApply(BufferSubarray, pending, [0, i]), ['utf8']);
    pending = ReflectApply(BufferSubarray, pending, [i + 1]);
    if (ReflectApply(StringTrim, line, []) !== '') ReflectApply(ArrayPush, queue, [line]);
  }
  pump();
});
input.on('end', () => {
  const rest = ReflectApply(StringTrim, ReflectApply(BufferToString, pending, ['utf8']), []);
  if (rest !== '') ReflectApply(ArrayPush, queue, [rest]);
  ended = true;
  pump();
});
input.on('error', () => {
  ended = true;
  pump();
});
