"""codebay Python runtime driver.

Runs inside the sandbox as ``python3 -I -u driver.py`` with
fd 0 = /dev/null, fd 1 = stdout pipe, fd 2 = stderr pipe,
fd 3 = requests (JSON lines in), fd 4 = replies (JSON lines out).

Protocol (docs/internals.md section 4; the Rust types in
crates/codebay-protocol/src/driver.rs): one request line
``{"id", "code", "timeoutMs"[, "envs": {NAME: value}][, "resultLimitBytes": L]}``
(``envs``: set in os.environ for this run only, restored afterwards; L: each
MIME value of a result is cut to L bytes of UTF-8, see _limit_bundle) -> any number of
``{"type":"display","id","bundle"}`` lines, one per display() call, written
as it happens, then exactly one
``{"type":"reply","id","ok","executionCount","mainResult","error"[,"resultBytesDropped"]}``
line (the bytes cut, only when > 0),
written after the run's stdout/stderr were flushed. ``mainResult`` is the
bundle of the last expression's value (or null), ``error`` is
``{"name","value","traceback"}`` (or null). Every line is compact JSON with
the keys in the order the Rust types declare them (in a bundle
``text/plain`` first, ``isMainResult`` last), so it is byte-identical to what
serde writes (tests/fixtures/driver.jsonl holds that). A request that cannot
be served gets a reply with ``"ok":false`` and a ``ProtocolError``.

The user's code runs in one persistent namespace (like a Jupyter kernel).
Everything the driver needs is bound to private names at import time, so user
code that rebinds ``print``, ``json``, ``sys.stdout`` ... cannot break the
protocol.
"""

import ast as _ast
import binascii as _binascii
import builtins as _builtins
import codecs as _codecs
import fcntl as _fcntl
import json as _json
import linecache as _linecache
import os as _os
import re as _re
import signal as _signal
import sys as _sys
import traceback as _traceback
import types as _types
import _thread
from itertools import accumulate as _accumulate

_REQ_FD_IN = 3
_REP_FD_IN = 4
_HIGH_FD = 200

_os_read = _os.read
_os_write = _os.write
_os_close = _os.close
_json_dumps = _json.dumps
_json_loads = _json.loads
_environ = _os.environ
_fsencode = _os.fsencode
_getpid = _os.getpid
_write_lock = _thread.allocate_lock()
_TracebackException = _traceback.TracebackException
_isinstance = _builtins.isinstance
_getattr = _builtins.getattr
_repr = _builtins.repr
_type = _builtins.type
_len = _builtins.len
_str = _builtins.str
_compile = _builtins.compile
_exec = _builtins.exec
_eval = _builtins.eval
_b2a_base64 = _binascii.b2a_base64  # what base64.b64encode calls (base64 costs memory)
_linecache_cache = _linecache.cache
_TracebackType = _types.TracebackType
_CO_COROUTINE = 0x0080  # inspect.CO_COROUTINE
_CELL_FLAGS = _ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_DRIVER_FILE = _os.path.abspath(__file__)
_RICH_FILE = _os.path.join(_os.path.dirname(_DRIVER_FILE), 'rich.py')
_PID = _getpid()
_modules = _sys.modules
_max = _builtins.max
_map = _builtins.map
_int = _builtins.int
_bool = _builtins.bool

# Lone surrogates ("\ud800") have no UTF-8 form: each becomes U+FFFD on the wire.
_FFFD = 'codebay.fffd'
_codecs.register_error(_FFFD, lambda e: (b'\xef\xbf\xbd' * (e.end - e.start), e.end))

# JSON nested deeper than this is refused as a result (the engine's parser stops at 128).
_MAX_JSON_DEPTH = 100
_DEPTH_REFUSED = '<JSON nested deeper than %d levels>' % _MAX_JSON_DEPTH
_strip_json_strings = _re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"').sub
_strip_non_brackets = _re.compile(r'[^\[\]{}]+').sub
_BRACKET_STEP = {'[': 1, '{': 1, ']': -1, '}': -1}.__getitem__

# Private bindings of the builtins the driver uses (module globals shadow the
# builtins module, which user code may modify).
(callable, dict, tuple, bytes, bytearray, str, type, isinstance, memoryview,
 Exception, BaseException, KeyboardInterrupt, SyntaxError, OSError, AttributeError) = (
    _builtins.callable, _builtins.dict, _builtins.tuple, _builtins.bytes, _builtins.bytearray,
    _builtins.str, _builtins.type, _builtins.isinstance, _builtins.memoryview,
    _builtins.Exception, _builtins.BaseException, _builtins.KeyboardInterrupt,
    _builtins.SyntaxError, _builtins.OSError, _builtins.AttributeError)


def _move_fd(fd):
    """Duplicate fd to a high, close-on-exec descriptor and close the original."""
    try:
        new = _fcntl.fcntl(fd, _fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)
    except (OSError, AttributeError):
        try:
            new = _fcntl.fcntl(fd, _fcntl.F_DUPFD_CLOEXEC, 10)
        except (OSError, AttributeError):
            new = _os.dup(fd)  # non-inheritable by default (PEP 446)
    _os_close(fd)
    return new


_req_fd = _move_fd(_REQ_FD_IN)
_rep_fd = _move_fd(_REP_FD_IN)


class _State:
    running = False      # True while user code runs: SIGINT raises KeyboardInterrupt
    count = 0            # execution count
    in_run = False       # True from the start of a run until just before its reply
    run_id = None        # the id of the run in progress (display messages carry it)
    loop = None          # persistent asyncio event loop for top-level await
    limit = None         # the run's resultLimitBytes (None: no cap)
    dropped = 0          # bytes cut from the run's results so far
    figures = []         # the matplotlib figures shown by the run so far (rich.figure_bundle)
    rich = None          # rich.py once loaded (False: it could not be)


def _on_sigint(signum, frame):
    if _State.running:
        raise KeyboardInterrupt
    # idle (between requests, or while the driver formats a reply): ignore


_signal.signal(_signal.SIGINT, _on_sigint)

# SIGINT is blocked while the driver itself runs (reading requests, writing
# replies) and unblocked only around the user's code. A SIGINT that arrived
# while idle stays pending and is discarded before the next run, so it can
# neither interrupt the driver's own code nor the next cell.
_SIGINT_SET = {_signal.SIGINT}
_sigmask = _signal.pthread_sigmask
_sigtimedwait = _signal.sigtimedwait
_SIG_BLOCK = _signal.SIG_BLOCK
_SIG_UNBLOCK = _signal.SIG_UNBLOCK
_SIGINT = _signal.SIGINT
_sigmask(_SIG_BLOCK, _SIGINT_SET)


def _discard_pending_sigint():
    while _sigtimedwait(_SIGINT_SET, 0) is not None:
        pass


# Jupyter kernels have the working directory on sys.path.
if '' not in _sys.path:
    _sys.path.insert(0, '')


# --------------------------------------------------------------------------- I/O

_inbuf = bytearray()


def _read_line():
    """Next request line as bytes, or None at EOF."""
    while True:
        i = _inbuf.find(b'\n')
        if i >= 0:
            line = bytes(_inbuf[:i])
            del _inbuf[:i + 1]
            return line
        try:
            chunk = _os_read(_req_fd, 65536)
        except KeyboardInterrupt:
            continue
        if not chunk:
            if _inbuf:
                line = bytes(_inbuf)
                del _inbuf[:]
                return line
            return None
        _inbuf.extend(chunk)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            n = _os_write(fd, view)
        except KeyboardInterrupt:
            continue
        view = view[n:]


def _dumps(obj):
    # Compact, keys in insertion order: the bytes serde_json writes. allow_nan=False:
    # NaN/Infinity (e.g. in a _repr_json_ result) are not JSON, the engine could not
    # read the line; they take the fallback below like a circular structure does.
    return _json_dumps(obj, ensure_ascii=False, separators=(',', ':'), default=_str, allow_nan=False)


def _plain_bundle(bundle):
    return {'text/plain': _safe_str(bundle.get('text/plain', '')),
            'isMainResult': bundle.get('isMainResult', False) is True}


def _encode(obj, key):
    """The message as one line; a bundle under obj[key] that JSON cannot hold
    (circular, NaN ...) is cut down to its text/plain."""
    try:
        text = _dumps(obj)
    except Exception:
        obj = dict(obj)
        if obj.get(key) is not None:
            obj[key] = _plain_bundle(obj[key])
        try:
            text = _dumps(obj)
        except Exception:
            obj[key] = None if key == 'mainResult' else {'text/plain': '', 'isMainResult': False}
            text = _dumps(obj)
    return text.encode('utf-8', _FFFD) + b'\n'


def _send(obj):
    data = _encode(obj, 'mainResult')
    with _write_lock:
        _write_all(_rep_fd, data)


def _flush_std(interruptible=False):
    """Flush the user's streams. interruptible: during a run, a KeyboardInterrupt
    (SIGINT) is the run's and passes through."""
    for name in ('stdout', 'stderr'):
        for stream in (_getattr(_sys, name, None), _getattr(_sys, '__' + name + '__', None)):
            try:
                if stream is not None:
                    stream.flush()
            except KeyboardInterrupt:
                if interruptible:
                    raise
            except BaseException:
                pass


# --------------------------------------------------------------------- results

_CHART_MIME = 'e2b/chart'  # a figure's chart data (E2B's key and shape, see rich.py)

_MIME_METHODS = (
    ('text/html', '_repr_html_'),
    ('text/markdown', '_repr_markdown_'),
    ('image/svg+xml', '_repr_svg_'),
    ('image/png', '_repr_png_'),
    ('image/jpeg', '_repr_jpeg_'),
    ('text/latex', '_repr_latex_'),
    ('application/json', '_repr_json_'),
)


def _encode_mime(mime, data):
    if mime in ('image/png', 'image/jpeg') and _isinstance(data, (bytes, bytearray)):
        return _b2a_base64(bytes(data), newline=False).decode('ascii')
    if mime == 'application/json' or mime.endswith('+json'):
        if _isinstance(data, (str, bytes)):
            try:
                return _json_loads(data)
            except Exception:
                pass
        return data
    if _isinstance(data, (bytes, bytearray)):
        return bytes(data).decode('utf-8', 'replace')
    if not _isinstance(data, str):
        return _str(data)
    return data


def _mime_bundle(obj, main):
    """MIME bundle for obj: text/plain = repr(), plus IPython-style rich reprs (a
    matplotlib figure: its PNG and chart data; a pandas Series: an HTML table too)."""
    bundle = {}
    if not _isinstance(obj, type):
        figure = _modules.get('matplotlib.figure')
        if figure is not None and _isinstance(obj, _getattr(figure, 'Figure', ())) and _rich():
            return _ordered_bundle(_repr(obj), _State.rich.figure_bundle(obj), main)
        meth = _getattr(obj, '_repr_mimebundle_', None)
        if callable(meth):
            try:
                data = meth(include=None, exclude=None)
                if _isinstance(data, tuple):
                    data = data[0]
                if _isinstance(data, dict):
                    for k, v in data.items():
                        if v is not None and _isinstance(k, str):
                            bundle[k] = _encode_mime(k, v)
            except Exception:
                pass
        for mime, name in _MIME_METHODS:
            if mime in bundle:
                continue
            meth = _getattr(obj, name, None)
            if not callable(meth):
                continue
            try:
                data = meth()
            except Exception:
                continue
            if _isinstance(data, tuple) and _len(data) == 2:
                data = data[0]
            if data is None:
                continue
            bundle[mime] = _encode_mime(mime, data)
        if 'text/html' not in bundle:
            pandas = _modules.get('pandas')
            if pandas is not None and _isinstance(obj, _getattr(pandas, 'Series', ())) and _rich():
                html = _State.rich.series_html(obj)
                if html:
                    bundle['text/html'] = html
    if 'text/plain' in bundle:
        plain = bundle.pop('text/plain')
    else:
        plain = _repr(obj)  # may raise: reported as the cell's error
    return _ordered_bundle(plain, bundle, main)


# ------------------------------------------------------------------ rich results
#
# What matplotlib and pandas need is in rich.py, loaded when first needed (_rich): the
# driver never imports matplotlib or pandas, and a session that uses neither pays a
# sys.modules lookup a result. _ImportHook (first in sys.meta_path, finding nothing
# itself) has rich.py wrap the loading of matplotlib.pyplot (plt.show() and
# Figure.show() then display figures) and matplotlib.font_manager (quiet font cache).
# A figure displayed (display(fig), plt.show(), the last expression) is a bundle of its
# text/plain, image/png and e2b/chart. At the end of a run every pyplot figure still
# open and not shown yet is displayed, and all are closed: the next run has none.

_HOOKED_MODULES = ('matplotlib.pyplot', 'matplotlib.font_manager')


class _ImportHook:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in _HOOKED_MODULES or not _rich():
            return None
        return _State.rich.find_spec(name, path, target)


_sys.meta_path.insert(0, _ImportHook)


def _rich():
    # rich.py (None if it cannot be loaded: results are then what they would be without it).
    mod = _State.rich
    if mod is None:
        saved = _sys.dont_write_bytecode
        _sys.dont_write_bytecode = True  # the runtimes are read-only
        try:
            import importlib.util
            spec = importlib.util.spec_from_file_location('_codebay_rich', _RICH_FILE)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            mod.setup(_ImportHook, display, _State, _note)
        except Exception:
            mod = False
        finally:
            _sys.dont_write_bytecode = saved
        _State.rich = mod
    return mod or None


def _note(text):
    # A line of the driver's own on the run's stderr, after what the code wrote.
    _flush_std()
    _write_all(2, text.encode('utf-8', _FFFD))


def _json_depth(text):
    """How deep the JSON text nests arrays and objects (0 for a scalar)."""
    brackets = _strip_non_brackets('', _strip_json_strings('', text))
    if not brackets:
        return 0
    return _max(_accumulate(_map(_BRACKET_STEP, brackets)))


def _limit_bundle(bundle):
    """Make bundle safe for the wire and hold it to the run's resultLimitBytes: a
    string value is cut to its first limit bytes of UTF-8 (whole characters), any
    other value whose JSON is too long is replaced by a note; both count in
    _State.dropped. A value nested deeper than _MAX_JSON_DEPTH is refused. The chart
    data of a figure (e2b/chart) is extra, derived from the figure: when it would be
    refused or cut it is left out, and nothing is counted."""
    limit = _State.limit
    for k in list(bundle):
        if k == 'isMainResult':
            continue
        v = bundle[k]
        if _isinstance(v, str):
            if limit is None or _len(v) <= limit // 4:
                continue  # at most 4 bytes a character: fits
            data = v.encode('utf-8', _FFFD)
            if _len(data) <= limit:
                continue
            end = limit
            while end > 0 and (data[end] & 0xC0) == 0x80:
                end -= 1  # do not cut a character in two
            bundle[k] = data[:end].decode('utf-8')
            _State.dropped += _len(data) - end
            continue
        try:
            text = _dumps(v)
        except Exception:
            continue  # not JSON at all: _encode falls back to text/plain
        if _json_depth(text) > _MAX_JSON_DEPTH:
            if k == _CHART_MIME:
                del bundle[k]
            else:
                bundle[k] = _DEPTH_REFUSED
            continue
        if limit is not None:
            n = _len(text.encode('utf-8', _FFFD))
            if n > limit:
                if k == _CHART_MIME:
                    del bundle[k]
                    continue
                bundle[k] = '<result of %d bytes dropped: over the limit of %d bytes>' % (n, limit)
                _State.dropped += n
    return bundle


def _ordered_bundle(plain, rest, main):
    """text/plain first, isMainResult last (the order the fixtures hold)."""
    bundle = {'text/plain': plain}
    for k, v in rest.items():
        if k != 'text/plain' and k != 'isMainResult':
            bundle[k] = v
    bundle['isMainResult'] = main
    return bundle


def display(*objs, raw=False):
    """Show a (non-main) result bundle for each object, like IPython's display():
    each is sent to the engine at once, as a display message of the current run
    (outside a run, e.g. from a thread after the run ended, it is dropped).

    With raw=True each object must be a MIME bundle dict, e.g.
    display({'text/html': '<b>hi</b>'}, raw=True).
    """
    for obj in objs:
        if raw and _isinstance(obj, dict):
            rest = {k: _encode_mime(k, v) for k, v in obj.items() if _isinstance(k, str)}
            plain = rest.pop('text/plain', '')
            bundle = _ordered_bundle(plain, rest, False)
        else:
            bundle = _mime_bundle(obj, False)
        if not _State.in_run or _getpid() != _PID:
            continue  # no run to attach it to; a forked child must not write on fd 4
        _limit_bundle(bundle)
        # The output printed before the display goes first. Both the flush (user
        # streams) and the encoding (default=str) may run user code: SIGINT stays
        # deliverable; only the write itself is shielded, so a line is never cut.
        _flush_std(interruptible=True)
        data = _encode({'type': 'display', 'id': _State.run_id, 'bundle': bundle}, 'bundle')
        blocked = _sigmask(_SIG_BLOCK, _SIGINT_SET)
        try:
            with _write_lock:
                if _State.in_run:
                    _write_all(_rep_fd, data)
        finally:
            if _SIGINT not in blocked:
                _sigmask(_SIG_UNBLOCK, _SIGINT_SET)


# ---------------------------------------------------------------------- errors

def _is_cell_frame(tb):
    return tb.tb_frame.f_code.co_filename.startswith('<cell-')


def _is_driver_frame(tb):
    return tb.tb_frame.f_code.co_filename == _DRIVER_FILE


def _trim_traceback(tb):
    """The user's part of a traceback: from the first cell frame (or, without
    one, the first non-driver frame) up to, excluding, the next driver frame
    (e.g. the SIGINT handler that raised KeyboardInterrupt)."""
    entries = []
    t = tb
    while t is not None:
        entries.append(t)
        t = t.tb_next
    start = None
    for i, e in enumerate(entries):
        if _is_cell_frame(e):
            start = i
            break
    if start is None:
        for i, e in enumerate(entries):
            if not _is_driver_frame(e):
                start = i
                break
    if start is None:
        return None
    kept = []
    for e in entries[start:]:
        if _is_driver_frame(e):
            break
        kept.append(e)
    new = None
    for e in reversed(kept):
        new = _TracebackType(new, e.tb_frame, e.tb_lasti, e.tb_lineno)
    return new


def _format_error(exc):
    t = _trim_traceback(exc.__traceback__)
    if _isinstance(exc, KeyboardInterrupt) and (t is None or not _is_cell_frame(t)):
        t = None  # interrupted outside the user's code (e.g. in the event loop)
    try:
        exc.__traceback__ = t
        te = _TracebackException(_type(exc), exc, t, compact=True)
        text = ''.join(te.format())
    except BaseException:
        text = '%s: %s\n' % (_type(exc).__name__, _safe_str(exc))
    name = _type(exc).__name__
    if isinstance(exc, SyntaxError):
        value = _safe_str(exc.msg if exc.msg is not None else exc)
    else:
        value = _safe_str(exc)
    return {'name': name, 'value': value, 'traceback': text}


def _safe_str(obj):
    try:
        return _str(obj)
    except BaseException:
        return '<unprintable %s object>' % _type(obj).__name__


# ------------------------------------------------------------------- execution

namespace = {'__name__': '__main__', '__builtins__': _builtins, 'display': display}


def _get_loop():
    import asyncio
    loop = _State.loop
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _State.loop = loop
    return loop


def _run_code_object(code):
    """Run a compiled code object; await it when it is a top-level-await coroutine."""
    if code.co_flags & _CO_COROUTINE:
        coro = _eval(code, namespace)
        loop = _get_loop()
        import asyncio
        try:
            asyncio.set_event_loop(loop)
        except Exception:
            pass
        task = loop.create_task(coro)
        try:
            return loop.run_until_complete(task)
        except BaseException:
            if not task.done():
                task.cancel()
            raise
    return _eval(code, namespace)


def _execute(source, filename):
    """Run one cell; returns the value of the trailing expression (or None). As in
    IPython, a semicolon after that expression makes it run without a value."""
    tree = _compile(source, filename, 'exec', _ast.PyCF_ONLY_AST | _CELL_FLAGS, dont_inherit=True)
    last = None
    quiet = False
    if tree.body and _isinstance(tree.body[-1], _ast.Expr):
        node = tree.body.pop()
        last = _ast.Expression(node.value)
        quiet = _ends_with_semicolon(source, node)
    if tree.body:
        code = _compile(tree, filename, 'exec', _CELL_FLAGS, dont_inherit=True)
        _run_code_object(code)
    if last is not None:
        code = _compile(last, filename, 'eval', _CELL_FLAGS, dont_inherit=True)
        value = _run_code_object(code)
        return None if quiet else value
    return None


def _ends_with_semicolon(source, node):
    # True when a ';' follows the cell's last expression (comments aside).
    if ';' not in source:
        return False
    lines = source.splitlines()  # the ';' can only be on the expression's last line
    try:
        rest = lines[node.end_lineno - 1].encode('utf-8')[node.end_col_offset:].decode('utf-8', 'replace')
    except Exception:
        return False
    return rest.lstrip().startswith(';')


def _reply(rid, count, main, error, dropped=0):
    reply = {'type': 'reply', 'id': rid, 'ok': error is None, 'executionCount': count,
             'mainResult': main, 'error': error}
    if dropped > 0:
        reply['resultBytesDropped'] = dropped
    return reply


def _valid_envs(envs):
    """envs is an object of strings that can all be environment variables."""
    if not _isinstance(envs, dict):
        return False
    for k, v in envs.items():
        if not (_isinstance(k, str) and _isinstance(v, str)) or not k or '=' in k or '\0' in k or '\0' in v:
            return False
        try:
            _fsencode(k), _fsencode(v)  # what os.environ does (a lone surrogate cannot be set)
        except Exception:
            return False
    return True


def _set_envs(envs, saved):
    """Set the run's environment, recording in saved what to restore (name -> old value or None)."""
    for k, v in envs.items():
        if k not in saved:
            saved[k] = _environ.get(k)
        _environ[k] = v


def _restore_envs(saved):
    for k, old in saved.items():
        try:
            if old is None:
                if k in _environ:
                    del _environ[k]
            else:
                _environ[k] = old
        except Exception:
            pass


def _handle(req):
    _State.count += 1
    count = _State.count
    rid = req.get('id')
    code = req.get('code')
    filename = '<cell-%d>' % count
    _linecache_cache[filename] = (_len(code), None, code.splitlines(True), filename)
    main = None
    error = None
    saved = {}
    _State.run_id = rid
    _State.limit = req.get('resultLimitBytes')
    _State.dropped = 0
    _State.in_run = True
    try:
        try:
            _set_envs(req.get('envs') or {}, saved)
            _discard_pending_sigint()
            _State.running = True
            _sigmask(_SIG_UNBLOCK, _SIGINT_SET)
            value = _execute(code, filename)
            if value is not None:
                namespace['_'] = value
                main = _limit_bundle(_mime_bundle(value, True))
            if 'matplotlib._pylab_helpers' in _modules and _rich():
                _State.rich.show_open_figures(True)
        finally:
            _sigmask(_SIG_BLOCK, _SIGINT_SET)
            _State.running = False
    except BaseException as e:  # SystemExit, KeyboardInterrupt included
        _sigmask(_SIG_BLOCK, _SIGINT_SET)
        _State.running = False
        error = _format_error(e)
        if 'matplotlib._pylab_helpers' in _modules and _rich():
            _State.rich.after_error(_isinstance(e, KeyboardInterrupt))
        e = None
    finally:
        _restore_envs(saved)
        if _State.figures:
            _State.figures = []
    _flush_std()
    with _write_lock:  # a display() from a thread after this point is dropped
        _State.in_run = False
        _State.run_id = None
    return _reply(rid, count, main, error, _State.dropped)


def _protocol_error(rid, message):
    return _reply(rid, _State.count, None, {'name': 'ProtocolError', 'value': message, 'traceback': ''})


def _serve():
    while True:
        try:
            if _serve_one():
                return
        except KeyboardInterrupt:
            # Only possible if user code installed its own SIGINT handler
            # (e.g. signal.default_int_handler) and the signal hit the idle loop.
            _State.running = False


def _serve_one():
    """Serve one request line; True at EOF."""
    line = _read_line()
    if line is None:
        return True
    if not line.strip():
        return False
    try:
        req = _json_loads(line.decode('utf-8'))
    except Exception:
        _send(_protocol_error(None, 'invalid request line'))
        return False
    if not _isinstance(req, dict) or not _isinstance(req.get('code'), str):
        rid = req.get('id') if _isinstance(req, dict) else None
        _send(_protocol_error(rid, 'request must be an object with a string "code"'))
        return False
    if 'envs' in req and not _valid_envs(req['envs']):
        _send(_protocol_error(req.get('id'), 'envs must be an object of strings'))
        return False
    limit = req.get('resultLimitBytes')
    if limit is not None and (not _isinstance(limit, _int) or _isinstance(limit, _bool) or limit < 0):
        _send(_protocol_error(req.get('id'), 'resultLimitBytes must be a non-negative integer'))
        return False
    try:
        reply = _handle(req)
    except BaseException as e:  # should not happen; never die on a request
        _State.running = False
        _State.in_run = False
        reply = _reply(req.get('id'), _State.count, None,
                       {'name': _type(e).__name__, 'value': _safe_str(e), 'traceback': ''})
    if _getpid() != _PID:
        # A process forked by the user's code returned from the cell: it must
        # not answer requests meant for the driver.
        _os._exit(0)
    _send(reply)
    return False


if __name__ == '__main__':
    # Keep the driver's own module out of the user's way: user code runs in
    # `namespace`, not in this module's globals.
    _main_mod = _types.ModuleType('__main__')
    _main_mod.__dict__.update(namespace)
    namespace = _main_mod.__dict__
    _sys.modules['__main__'] = _main_mod
    _serve()
    _os._exit(0)
