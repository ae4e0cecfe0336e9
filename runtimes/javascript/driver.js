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
// Output of a run's callbacks that run after it answered is not the next run's: it is
// dropped and counted, and a `[codebay] ...` line on stderr says so (see "late output").
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
const StringIndexOf = String.prototype.indexOf;
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
const ArrayPrototype = Array.prototype;
const ObjectHasOwn = Object.hasOwn;
const ReflectGetOwnPropertyDescriptor = Reflect.getOwnPropertyDescriptor;
const NumberIsFinite = Number.isFinite;
const isProxy = util.types.isProxy;
const isArrayBuffer = util.types.isArrayBuffer;
const isArrayBufferView = ArrayBuffer.isView;
const StringToLowerCase = String.prototype.toLowerCase;
const StringEndsWith = String.prototype.endsWith;
const procEnv = proc.env;
const StringCtor = String;
const ErrorCtor = Error;
const DRIVER_FILE = __filename;
const setTimeoutCaptured = setTimeout;
const setImmediateCaptured = setImmediate;
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

// JSON text made already (jsonOf): bundleJSON writes it as it is.
class RawJSON {
  constructor(text) {
    this.text = text;
  }
}

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
      const raw = bundle[k];
      const v = raw instanceof RawJSON ? raw.text : JSONstringify(raw);
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
    if (v instanceof RawJSON) continue; // held to the limit where it was made
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

// True when value is plain data: null, booleans, finite numbers, strings, arrays
// without holes and objects whose prototype is Object.prototype or null, holding only
// data properties (no getter of an object runs), nested at most MAX_JSON_DEPTH levels,
// without cycles and without proxies, in at most maxValues values (counting each time
// a value shared by several parents is met: JSON writes it each time). Its
// JSON.stringify is then exactly its data.
const jsonStack = [];
for (let i = 0; i < MAX_JSON_DEPTH; i++) jsonStack[i] = null; // own slots: no setter of Array.prototype is reached
let jsonValuesLeft = 0;
function isPlainData(value, maxValues) {
  jsonValuesLeft = maxValues;
  try {
    return plainAt(value, 0);
  } catch {
    return false; // a revoked proxy, a stack overflow ...
  } finally {
    for (let i = 0; i < MAX_JSON_DEPTH; i++) jsonStack[i] = null;
  }
}

function plainAt(v, depth) {
  if (--jsonValuesLeft < 0) return false;
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return true;
  if (typeof v === 'number') return NumberIsFinite(v);
  if (typeof v !== 'object' || depth >= MAX_JSON_DEPTH || isProxy(v)) return false;
  for (let i = 0; i < depth; i++) if (jsonStack[i] === v) return false; // a cycle
  jsonStack[depth] = v;
  const proto = ObjectGetPrototypeOf(v);
  if (ArrayIsArray(v)) {
    if (proto !== ArrayPrototype) return false;
    const n = v.length;
    for (let i = 0; i < n; i++) {
      // An accessor on an array index is not looked for (it would cost a descriptor a value).
      if (!ObjectHasOwn(v, i) || !plainAt(v[i], depth + 1)) return false;
    }
    return true;
  }
  if (proto !== ObjectPrototype && proto !== null) return false;
  const keys = ObjectKeys(v);
  for (let i = 0; i < keys.length; i++) {
    const d = ReflectGetOwnPropertyDescriptor(v, keys[i]);
    if (d === undefined || !ObjectHasOwn(d, 'value') || !plainAt(d.value, depth + 1)) return false;
  }
  return true;
}

// value's application/json for its bundle, when it is a plain object or array whose
// JSON fits the run's limit (it is extra: one that does not fit is left out, nothing
// is counted), else undefined.
function jsonOf(value, run) {
  const limit = run.limit;
  // Each value takes two bytes of JSON or more (with its comma).
  if (value === null || typeof value !== 'object' || !isPlainData(value, limit === null ? MAX_AUTO_JSON : limit / 2 + 1)) {
    return undefined;
  }
  let text;
  try {
    text = JSONstringify(value);
  } catch {
    return undefined; // too long for a string
  }
  if (typeof text !== 'string' || (limit !== null && text.length > limit / 3 && BufferByteLength(text, 'utf8') > limit)) {
    return undefined;
  }
  return new RawJSON(text);
}
// Without a resultLimitBytes, the most values a value's application/json is made of.
const MAX_AUTO_JSON = 4 * 1024 * 1024;

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

let current = null; // the run in progress: { id, count, interrupt, finished, ... }

// ---------------------------------------------------------------- late output
//
// Output is attributed to the run whose code scheduled it: every asynchronous
// resource (a timer, an immediate, a nextTick, an I/O request, a promise) records,
// when it is made, the run that owns the code running then (the run whose cell runs
// synchronously, else the owner of the resource whose callback or reaction runs).
// A write to stdout or stderr through process.stdout/stderr (console.* included),
// a display() and the uncaught exception and unhandled rejection reports are kept
// when their owner is the run in progress (or no run: the driver's own code); when
// the owner is a run that has answered already, they are dropped and counted, and
// one `[codebay] ...` line says so (lateNote): at the start of the next run when
// nothing was running, at the end of the run in progress otherwise.
//
// Promises are followed with V8's promise hooks (v8.promiseHooks), other resources
// with an async_hooks init hook registered without Node's own promise tracking:
// that tracking gives every promise enumerable symbol properties (util.inspect
// would show `Promise { 1, [Symbol(async_id_symbol)]: 2, ... }`), and making them
// non-enumerable per promise costs ~30x on an `await` loop. The owner is a private
// field (OwnerStamp), which no reflection or inspection shows; a WeakMap costs
// ~20x more per promise. Without Node's internals (not how the engine starts the
// driver) nothing is attributed.
const BufferIsEncoding = Buffer.isEncoding;
const ObjectDefineProperty = Object.defineProperty;
const nextTick = proc.nextTick;

// Adds the private field #owner to any object (a base constructor that returns its
// argument makes `this` that object in the subclass).
class OwnerBase {
  constructor(target) {
    return target; // eslint-disable-line no-constructor-return
  }
}
class OwnerStamp extends OwnerBase {
  #owner;
  constructor(target, owner) {
    super(target);
    this.#owner = owner;
  }
  // A resource made again (a pooled socket's handle is reset for its next user) gets
  // the owner of its new maker.
  static stamp(target, owner) {
    if (#owner in target) target.#owner = owner;
    else new OwnerStamp(target, owner); // eslint-disable-line no-new
  }
  static of(target) {
    return #owner in target ? target.#owner : 0;
  }
}
const stampOwner = OwnerStamp.stamp;
const ownerStamped = OwnerStamp.of;
// The run whose code runs synchronously now (its cell, its result's inspection), or 0.
let syncOwner = 0;
// The owners of the promise reactions running now, innermost in reactionOwner (they
// nest only when a reaction makes a microtask checkpoint run). The stack's slots are
// made before user code runs, so no setter it puts on Array.prototype is reached.
let reactionOwner = 0;
let reactionDepth = 0;
const reactionStack = [];
for (let i = 0; i < 64; i++) reactionStack[i] = 0;
let executionAsyncResource = null;

function ownerOf(resource) {
  if (resource === null || (typeof resource !== 'object' && typeof resource !== 'function')) return 0;
  return ownerStamped(resource);
}

// The run that owns the JavaScript running now (0: none, the driver's own code).
function ownerNow() {
  if (syncOwner !== 0) return syncOwner;
  if (reactionDepth !== 0) return reactionOwner;
  return executionAsyncResource === null ? 0 : ownerOf(executionAsyncResource());
}

// Stamps a resource with the owner of the code making it; `soon`: it runs code at once
// (a promise's reactions, a nextTick, an immediate), so its run's reply waits for it.
function own(resource, soon) {
  const owner = ownerNow();
  if (owner !== 0 && resource !== null && (typeof resource === 'object' || typeof resource === 'function')) {
    stampOwner(resource, owner);
    if (soon && current !== null && current.count === owner) current.soon = true;
  }
}

// Node's own nextTick after a write that completed at once (it runs the write's
// callback, when there is one; see the write interceptor): not something to wait for.
let afterWriteTick = null;
let capturingTick = false;

function ownResource(asyncId, type, triggerAsyncId, resource) {
  if (type === 'TickObject') {
    let callback = null;
    try { callback = resource.callback; } catch { /* keep null */ }
    if (capturingTick) afterWriteTick = callback;
    own(resource, callback !== afterWriteTick || afterWriteTick === null);
  } else {
    own(resource, type === 'Immediate' || type === 'Microtask' || type === 'PROMISE');
  }
}

if (internalBinding !== null) {
  try {
    const hooks = require('internal/async_hooks');
    const { promiseHooks } = require('v8');
    const { init_symbol: initSymbol } = hooks.symbols;
    const { kInit, kTotals } = hooks.constants;
    if (typeof hooks.executionAsyncResource !== 'function' || typeof promiseHooks?.createHook !== 'function' ||
        typeof hooks.getHookArrays !== 'function' || typeof hooks.enableHooks !== 'function' ||
        typeof initSymbol !== 'symbol' || typeof kInit !== 'number' || typeof kTotals !== 'number') {
      throw new ErrorCtor('async_hooks internals not as expected');
    }
    promiseHooks.createHook({
      init(promise) {
        own(promise, true);
      },
      before(promise) {
        reactionStack[reactionDepth++] = reactionOwner;
        reactionOwner = ownerStamped(promise);
      },
      after() {
        if (reactionDepth > 0) reactionOwner = reactionStack[--reactionDepth];
      },
    });
    // What AsyncHook#enable does, without its updatePromiseHookMode().
    const { 0: active, 1: fields } = hooks.getHookArrays();
    active[active.length] = { [initSymbol]: ownResource };
    fields[kInit] += 1;
    fields[kTotals] += 1;
    hooks.enableHooks();
    executionAsyncResource = hooks.executionAsyncResource;
    // A write with a callback that completes at once makes Node queue that tick (as
    // console.* writes do): see which function it is.
    capturingTick = true;
    try {
      new (require('stream').Writable)({ write(chunk, encoding, cb) { cb(); } }).write('x', () => {});
    } finally {
      capturingTick = false;
    }
  } catch {
    executionAsyncResource = null; // nothing is attributed
  }
}

// True when output of `owner` must not go to the run in progress: its run has answered.
function isLate(owner) {
  return owner !== 0 && (current === null || current.count !== owner);
}

// What was dropped since the last note.
const late = { bytes: 0, displays: 0, runs: [], errors: [], moreErrors: 0 };
const LATE_ERRORS_NAMED = 3;

function noteLateRun(owner) {
  const runs = late.runs;
  for (let i = 0; i < runs.length; i++) if (runs[i] === owner) return;
  runs[runs.length] = owner;
}

function noteLateError(owner, kind, err) {
  if (late.errors.length >= LATE_ERRORS_NAMED) {
    late.moreErrors += 1;
    return;
  }
  const f = formatError(err);
  let summary = f.name === '' ? f.value : `${f.name}: ${f.value}`;
  const nl = ReflectApply(StringIndexOf, summary, ['\n']);
  if (nl >= 0) summary = `${ReflectApply(StringSlice, summary, [0, nl])} ...`;
  if (summary.length > 200) summary = `${ReflectApply(StringSlice, summary, [0, 200])} ...`;
  late.errors[late.errors.length] = { owner, kind, summary };
}

// A write of `chunk` to stdout/stderr by late code: counted, and true (to drop it).
function lateWrite(chunk, encoding) {
  const owner = ownerNow();
  if (!isLate(owner)) return false;
  let n;
  if (typeof chunk === 'string') {
    try {
      n = BufferByteLength(chunk, typeof encoding === 'string' && BufferIsEncoding(encoding) ? encoding : 'utf8');
    } catch {
      n = chunk.length;
    }
  } else if (chunk instanceof Uint8Array) {
    n = chunk.byteLength;
  } else {
    return false; // not something write() takes: let it throw as it would
  }
  late.bytes += n;
  noteLateRun(owner);
  return true;
}

function runsLabel(runs) {
  let text = runs.length === 1 ? `run ${runs[0]}` : `runs ${runs[0]}`;
  for (let i = 1; i < runs.length; i++) text += i === runs.length - 1 ? ` and ${runs[i]}` : `, ${runs[i]}`;
  return text;
}

// The one line that says what was dropped since the last note (then forgotten), or null.
// Runs are named by their executionCount.
function takeLateNote() {
  if (late.bytes === 0 && late.displays === 0 && late.errors.length === 0) return null;
  const parts = [];
  if (late.bytes !== 0 || late.displays !== 0) {
    let what = late.bytes !== 0 ? `${late.bytes} bytes of output` : '';
    if (late.displays !== 0) {
      what += `${what === '' ? '' : ' and '}${late.displays} display result${late.displays === 1 ? '' : 's'}`;
    }
    const one = late.runs.length === 1;
    parts[parts.length] = `${what} written by ${one ? 'an earlier run\'s' : 'earlier runs\''} callbacks ` +
      `after ${one ? 'it' : 'they'} ended ${late.bytes + late.displays === 1 ? 'was' : 'were'} dropped (${runsLabel(late.runs)})`;
  }
  for (let i = 0; i < late.errors.length; i++) {
    const e = late.errors[i];
    parts[parts.length] = `earlier run ${e.owner} had an ${e.kind} after it ended (not this run's error): ${e.summary}`;
  }
  if (late.moreErrors !== 0) parts[parts.length] = `and ${late.moreErrors} more`;
  late.bytes = 0;
  late.displays = 0;
  late.runs = [];
  late.errors = [];
  late.moreErrors = 0;
  return `[codebay] ${ReflectApply(ArrayJoin, parts, ['; '])}\n`;
}

// The callbacks the global console passes to every write (its error handlers): not
// the user's, nothing to wait for.
const consoleWriteCallbacks = [console._stdoutErrorHandler, console._stderrErrorHandler];

// process.stdout.write and process.stderr.write (console.* writes through them).
if (executionAsyncResource !== null) {
  for (const s of stdStreams) {
    const originalWrite = s.write;
    ObjectDefineProperty(s, 'write', {
      value: function write(chunk, encoding, cb) {
        const done = typeof encoding === 'function' ? encoding : cb;
        if (!lateWrite(chunk, encoding)) {
          // A callback runs in Node's after-write tick: the reply waits for it.
          if (typeof done === 'function' && done !== consoleWriteCallbacks[0] && done !== consoleWriteCallbacks[1] &&
              current !== null && ownerNow() === current.count) current.soon = true;
          return ReflectApply(originalWrite, this, arguments);
        }
        if (typeof done === 'function') ReflectApply(nextTick, proc, [done, null]);
        return true;
      },
      writable: true, configurable: true, enumerable: false,
    });
  }
}

// display(value[, mime]): sends a non-main result at once, as a display message of
// the current run. Without a MIME type: {"text/plain": util.inspect(value)} (a string
// is shown as it is), plus "application/json" for a plain object or array (as for the
// last value), or "image/png" / "image/jpeg" for a Buffer or Uint8Array holding one.
// With a MIME type (or its short name: html, markdown, md, svg, png, jpeg, jpg, json,
// latex, text), the value is that type's content: text for the text types, for png and
// jpeg a Buffer/Uint8Array/ArrayBuffer (sent as base64) or a base64 string (a data: URL
// too), for json a JSON-serialisable value or JSON text; text/plain is then ''.
// display(bundle, {raw: true}) sends the given MIME bundle, e.g.
// display({'text/html': '<b>x</b>'}, {raw: true}). Called by the callback of a run
// that has answered already, it is dropped (and counted, see lateNote).
const MIME_NAMES = {
  __proto__: null,
  html: 'text/html', markdown: 'text/markdown', md: 'text/markdown', svg: 'image/svg+xml',
  png: 'image/png', jpeg: 'image/jpeg', jpg: 'image/jpeg', json: 'application/json',
  latex: 'text/latex', text: 'text/plain', plain: 'text/plain',
};
const DATA_URL = /^data:[^,]*;base64,/;
const BASE64_SPACE = /\s+/g;

function bytesOf(value) {
  if (value instanceof Uint8Array) return BufferFrom(value.buffer, value.byteOffset, value.byteLength);
  if (isArrayBuffer(value)) return BufferFrom(value);
  if (isArrayBufferView(value)) return BufferFrom(value.buffer, value.byteOffset, value.byteLength);
  return null;
}

function imageMime(bytes) {
  if (bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return 'image/png';
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'image/jpeg';
  return null;
}

function mimeContent(mime, value) {
  if (mime === 'image/png' || mime === 'image/jpeg') {
    const bytes = bytesOf(value);
    if (bytes !== null) return ReflectApply(BufferToString, bytes, ['base64']);
    if (typeof value === 'string') {
      return ReflectApply(RegExpReplace, BASE64_SPACE, [ReflectApply(RegExpReplace, DATA_URL, [value, '']), '']);
    }
    throw new TypeError(`display: ${mime} takes a Buffer, a Uint8Array or a base64 string, got ${value === null ? 'null' : typeof value}`);
  }
  if (mime === 'application/json' || ReflectApply(StringEndsWith, mime, ['+json'])) {
    if (typeof value === 'string') {
      try { return JSONparse(value); } catch { return value; }
    }
    return value;
  }
  if (typeof value === 'string') return value;
  const bytes = bytesOf(value);
  if (bytes !== null) return ReflectApply(BufferToString, bytes, ['utf8']);
  return StringCtor(value);
}

function mimeName(given) {
  if (ReflectApply(StringIncludes, given, ['/'])) return given;
  const mime = MIME_NAMES[ReflectApply(StringToLowerCase, given, [])];
  if (mime === undefined) {
    throw new TypeError(`display: unknown MIME type '${given}'; use a MIME type such as 'text/html', or one of ` +
      "'html', 'markdown', 'svg', 'png', 'jpeg', 'json', 'latex', 'text'");
  }
  return mime;
}

function display(value, options) {
  let bundle;
  const run = current;
  if (typeof options === 'string') {
    const mime = mimeName(options);
    const content = mimeContent(mime, value);
    bundle = { 'text/plain': mime === 'text/plain' ? content : '' };
    if (mime !== 'text/plain') bundle[mime] = content;
  } else if (options && options.raw && value !== null && typeof value === 'object') {
    bundle = {};
    for (const k of ObjectKeys(value)) bundle[k] = value[k];
    if (bundle['text/plain'] === undefined) bundle['text/plain'] = '';
  } else if (typeof value === 'string') {
    bundle = { 'text/plain': value };
  } else {
    bundle = { 'text/plain': inspect(value) };
    const bytes = bytesOf(value);
    const image = bytes === null ? null : imageMime(bytes);
    if (image !== null) {
      bundle[image] = ReflectApply(BufferToString, bytes, ['base64']);
    } else if (run !== null) {
      const json = jsonOf(value, run);
      if (json !== undefined) bundle['application/json'] = json;
    }
  }
  bundle.isMainResult = false;
  const owner = ownerNow();
  if (isLate(owner)) {
    late.displays += 1;
    noteLateRun(owner);
    return;
  }
  if (run === null || current !== run) return;
  limitBundle(bundle, run);
  // Writes to stdout and stderr are synchronous (blocking pipes): what the cell
  // printed before is in the pipes already.
  if (current === run) sendLine(displayLine(run.id, bundle));
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
  const bundle = { 'text/plain': plain };
  const json = jsonOf(value, run);
  if (json !== undefined) bundle['application/json'] = json;
  bundle.isMainResult = true;
  return limitBundle(bundle, run);
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

// Answers run: the note of what was dropped while it ran (see lateNote), then the reply.
function send(run) {
  if (current !== run) return; // already answered
  const note = takeLateNote();
  if (note !== null) writeStderr(note);
  current = null;
  const error = run.error;
  sendLine(replyLine(run.id, error === null, run.count, error === null ? run.main : null, error, run.dropped));
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
  // Formatting the error or the result can run the user's code (getters, inspect.custom).
  const outer = syncOwner;
  syncOwner = run.count;
  try {
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
  } finally {
    syncOwner = outer;
  }
  run.error = error;
  run.main = main;
  // An interrupted run answers at once (the deadline has passed).
  if (hasError && isInterrupt(err)) {
    send(run);
    return;
  }
  run.interrupt = () => send(run);
  // The reply waits for what the run's code set to run at once: its promise reactions
  // and nextTicks, the unhandled rejections Node reports after them, and the immediates
  // it queued before it ended. Their output is this run's, not late output. A cell
  // that queued none of these (own() marks run.soon) answers now; one that awaited
  // always waits.
  if (run.soon || !run.sync) setImmediateCaptured(settle, run);
  else settle(run);
}

// The reply comes after the run's output (docs/internals.md section 4): output still
// queued would otherwise be captured as the next run's. An interrupt while the output
// drains cuts the wait short: the deadline has passed, and a flood of background output
// must not outlast it.
function settle(run) {
  if (current !== run) return;
  if (unflushedBytes() !== 0) watchForInterrupt(run);
  whenFlushed(() => send(run));
}

function execute(req) {
  executionCount += 1;
  const run = {
    id: req.id, count: executionCount, interrupt: null, finished: false, watched: false, savedEnvs: [],
    limit: req.resultLimitBytes === undefined || req.resultLimitBytes === null ? null : req.resultLimitBytes,
    dropped: 0, error: null, main: null, soon: false, sync: true,
  };
  current = run;
  // A SIGINT meant for the previous run (its deadline passed as it answered)
  // must not stop this one.
  takePendingInterrupt();
  // What earlier runs' callbacks did while no run was in progress is said first.
  const note = takeLateNote();
  if (note !== null) writeStderr(note);
  // No promise reaction runs here (requests are taken from I/O and nextTick
  // callbacks); a reaction that never saw its end (interrupted) leaves nothing behind.
  reactionDepth = 0;
  reactionOwner = 0;
  const filename = `<cell-${run.count}>`;
  let outcome;
  try {
    if (req.envs !== undefined) setEnvs(req.envs, run.savedEnvs);
    syncOwner = run.count;
    try {
      outcome = runCell(req.code, filename);
    } finally {
      syncOwner = 0;
    }
  } catch (err) {
    finish(run, undefined, err, true);
    return;
  }
  if (outcome.sync) {
    finish(run, outcome.value, undefined, false);
    return;
  }
  run.sync = false;
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

// Errors escaping from the user's asynchronous work must not kill the driver. One
// from a callback of a run that has answered is not this run's: it is counted for
// the note (lateNote), by its one-line summary.
proc.on('uncaughtException', (err) => {
  const owner = ownerNow();
  if (isLate(owner)) {
    noteLateError(owner, 'uncaught exception', err);
    return;
  }
  writeStderr(`Uncaught ${formatError(err).traceback}`);
});
proc.on('unhandledRejection', (reason, promise) => {
  const owner = ownerOf(promise);
  if (isLate(owner)) {
    noteLateError(owner, 'unhandled rejection', reason);
    return;
  }
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
