#!/usr/bin/env python3
"""Standalone tests for the runtime drivers (no sandbox needed).

    python3 runtimes/test_drivers.py [-v]

Each test starts a driver with the sandbox's fd layout (0 = /dev/null,
1/2 = pipes, 3 = request pipe, 4 = reply pipe) through subprocess pass_fds,
sends JSON-line requests and checks the messages (display events, then one
reply) and the captured output. Every line a driver writes is checked to be
compact JSON with the keys in the order the Rust types declare them, and
FixtureTest holds both drivers to crates/codebay-protocol/tests/fixtures/driver.jsonl
byte for byte.
Environment: CODEBAY_PYTHON (default: the running interpreter),
CODEBAY_NODE (default: `node` on PATH).
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PY_DRIVER = os.path.join(HERE, 'python', 'driver.py')
JS_DRIVER = os.path.join(HERE, 'javascript', 'driver.js')
PYTHON = os.environ.get('CODEBAY_PYTHON') or os.path.realpath(sys.executable)
NODE = os.environ.get('CODEBAY_NODE') or shutil.which('node') or '/usr/bin/node'
PY_ARGV = [PYTHON, '-I', '-u', PY_DRIVER]
JS_ARGV = [NODE, '--expose-internals', JS_DRIVER]
FIXTURE = os.path.join(os.path.dirname(HERE), 'crates', 'codebay-protocol', 'tests', 'fixtures',
                       'driver.jsonl')

REPLY_KEYS = ['type', 'id', 'ok', 'executionCount', 'mainResult', 'error']
DISPLAY_KEYS = ['type', 'id', 'bundle']
ERROR_KEYS = ['name', 'value', 'traceback']


def compact(obj):
    """The bytes serde_json writes for obj (keys in obj's order)."""
    return json.dumps(obj, ensure_ascii=False, separators=(',', ':')).encode('utf-8')


def check_bundle(bundle, main):
    keys = list(bundle)
    assert keys[0] == 'text/plain' and keys[-1] == 'isMainResult', bundle
    assert bundle['isMainResult'] is main, bundle


def check_message(line, msg):
    """A driver line is one compact message, keys in the order of crates/codebay-protocol/src/driver.rs."""
    assert line == compact(msg), line
    if msg.get('type') == 'display':
        assert list(msg) == DISPLAY_KEYS, line
        check_bundle(msg['bundle'], False)
    else:
        keys = list(msg)
        if keys[-1:] == ['resultBytesDropped']:
            # written only when something was cut
            assert type(msg['resultBytesDropped']) is int and msg['resultBytesDropped'] > 0, line
            keys.pop()
        assert keys == REPLY_KEYS and msg['type'] == 'reply', line
        assert msg['ok'] is (msg['error'] is None), line
        if msg['error'] is not None:
            assert list(msg['error']) == ERROR_KEYS, line
            assert msg['mainResult'] is None, line
        if msg['mainResult'] is not None:
            check_bundle(msg['mainResult'], True)


class Driver:
    """A driver process with the sandbox's fd layout.

    All pipes are read from the test's thread with select(); stdout/stderr are
    drained while waiting for a reply, and once more (non-blocking) when the
    reply line has arrived: the driver writes the reply only after its output,
    so everything the cell printed is in the pipes by then.
    """

    def __init__(self, argv, extra_env=None):
        self.cwd = tempfile.mkdtemp(prefix='codebay-test-')
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        # The child's ends go to high fds (passed with pass_fds); a small
        # trampoline moves them to 3 and 4, closes the originals and execs the
        # driver (subprocess closes everything not in pass_fds *after*
        # preexec_fn, so preexec_fn cannot do the dup2 itself).
        req_r, rep_w = _dup_high(req_r), _dup_high(rep_w)
        prologue = ('import os, sys; os.dup2(%d, 3); os.dup2(%d, 4); os.close(%d); os.close(%d); '
                    'os.execv(sys.argv[1], sys.argv[1:])' % (req_r, rep_w, req_r, rep_w))
        env = {'PATH': '/usr/local/bin:/usr/bin:/bin', 'HOME': self.cwd, 'LANG': 'C.UTF-8',
               'PYTHONUNBUFFERED': '1'}
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [PYTHON, '-I', '-S', '-c', prologue] + list(argv), stdin=subprocess.DEVNULL, stdout=out_w,
            stderr=err_w, pass_fds=(req_r, rep_w), start_new_session=True, cwd=self.cwd, env=env)
        for fd in (req_r, rep_w, out_w, err_w):
            os.close(fd)
        self.req_w = req_w
        self.fds = {'reply': rep_r, 'stdout': out_r, 'stderr': err_r}
        self.bufs = {'reply': b'', 'stdout': b'', 'stderr': b''}
        self.next_id = 1

    def _pump(self, timeout):
        """Read whatever is available (waiting up to timeout); False if nothing came."""
        fds = {fd: name for name, fd in self.fds.items() if fd is not None}
        if not fds:
            return False
        r, _, _ = select.select(list(fds), [], [], max(timeout, 0))
        for fd in r:
            chunk = os.read(fd, 65536)
            name = fds[fd]
            if chunk:
                self.bufs[name] += chunk
            else:
                os.close(fd)
                self.fds[name] = None
        return bool(r)

    def _drain(self):
        while self._pump(0):
            pass

    def send_raw(self, data):
        os.write(self.req_w, data)

    def send(self, code, timeout_ms=10000, envs=None, limit=None):
        rid = self.next_id
        self.next_id += 1
        req = {'id': rid, 'code': code, 'timeoutMs': timeout_ms}
        if envs is not None:
            req['envs'] = envs
        if limit is not None:
            req['resultLimitBytes'] = limit
        self.send_raw(json.dumps(req).encode() + b'\n')
        return rid

    def line(self, timeout=10.0):
        """The next raw line on fd 4 (without its newline)."""
        deadline = time.monotonic() + timeout
        while b'\n' not in self.bufs['reply']:
            if self.fds['reply'] is None:
                raise AssertionError('reply pipe closed (driver exited %r); stderr: %r'
                                     % (self.proc.poll(), self.bufs['stderr']))
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError('no message within %.1fs' % timeout)
            self._pump(left)
        line, self.bufs['reply'] = self.bufs['reply'].split(b'\n', 1)
        return line

    def message(self, timeout=10.0):
        line = self.line(timeout)
        msg = json.loads(line)
        check_message(line, msg)
        return msg

    def reply(self, timeout=10.0):
        """The next reply; the display messages before it go to self.displays."""
        deadline = time.monotonic() + timeout
        self.displays = []
        while True:
            msg = self.message(deadline - time.monotonic())
            if msg['type'] == 'reply':
                break
            self.displays.append(msg)
        for d in self.displays:
            assert d['id'] == msg['id'], (d, msg)
        self._drain()
        return msg

    def run(self, code, timeout=10.0, envs=None, limit=None):
        rid = self.send(code, envs=envs, limit=limit)
        rep = self.reply(timeout)
        assert rep['id'] == rid, rep
        return rep

    def output(self, wait=0.0):
        """(stdout, stderr) captured since the last call; wait collects for that long."""
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._pump(left)
        self._drain()
        out, err = self.bufs['stdout'], self.bufs['stderr']
        self.bufs['stdout'] = self.bufs['stderr'] = b''
        return out, err

    def wait_stdout(self, marker, timeout=10.0):
        """Wait until marker shows up on stdout (the cell is running)."""
        deadline = time.monotonic() + timeout
        while marker not in self.bufs['stdout']:
            if time.monotonic() > deadline:
                raise AssertionError('%r not printed; got %r' % (marker, self.bufs['stdout']))
            self._pump(0.05)
        self.bufs['stdout'] = b''
        time.sleep(0.05)  # let the cell get into its loop

    def interrupt(self):
        self.proc.send_signal(signal.SIGINT)

    def close(self):
        try:
            os.close(self.req_w)
        except OSError:
            pass
        try:
            rc = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._drain()  # what the driver wrote last stays in self.bufs
        for name, fd in self.fds.items():
            if fd is not None:
                os.close(fd)
        shutil.rmtree(self.cwd, ignore_errors=True)
        return rc


def _dup_high(fd):
    import fcntl
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
    os.close(fd)
    return new


def main_text(rep):
    return None if rep['mainResult'] is None else rep['mainResult']['text/plain']


class _DriverTest:
    """Tests shared by both languages; subclasses set ARGV and CODE snippets."""

    ARGV = None
    _spare = None  # a driver started in advance for the next test (hides startup time)

    @classmethod
    def tearDownClass(cls):
        if cls._spare is not None:
            cls._spare.close()
            cls._spare = None

    def setUp(self):
        cls = type(self)
        self.d = cls._spare if cls._spare is not None else Driver(self.ARGV)
        cls._spare = Driver(self.ARGV)
        self.tmp = self.d.cwd

    def tearDown(self):
        rc = self.d.close()
        self.assertEqual(rc, 0, 'driver exit status at EOF')

    def assertOk(self, rep):
        self.assertTrue(rep['ok'], rep)
        self.assertIsNone(rep['error'], rep)

    def assertError(self, rep, name):
        self.assertFalse(rep['ok'], rep)
        self.assertEqual(rep['error']['name'], name, rep)
        self.assertNotIn('driver.', rep['error']['traceback'], rep['error']['traceback'])
        return rep['error']

    def protocol_error(self, raw, rid, value):
        self.d.send_raw(raw + b'\n')
        rep = self.d.reply()
        self.assertEqual(rep, {'type': 'reply', 'id': rid, 'ok': False, 'executionCount': 0, 'mainResult': None,
                               'error': {'name': 'ProtocolError', 'value': value, 'traceback': ''}})

    def test_protocol_error_and_keeps_serving(self):
        bad_code = 'request must be an object with a string "code"'
        bad_envs = 'envs must be an object of strings'
        self.protocol_error(b'this is not json', None, 'invalid request line')
        self.protocol_error(b'{"id": 77', None, 'invalid request line')
        self.protocol_error(b'{"id": 77}', 77, bad_code)
        self.protocol_error(b'{"id": 78, "code": null}', 78, bad_code)
        self.protocol_error(b'"code"', None, bad_code)
        self.protocol_error(b'[{"code": "1"}]', None, bad_code)
        self.protocol_error(b'null', None, bad_code)
        for envs in (b'null', b'[]', b'"A=1"', b'{"A": 1}', b'{"A": null}', b'{"": "x"}', b'{"A=B": "x"}',
                     b'{"A": "x\\u0000y"}'):
            self.protocol_error(b'{"id": 79, "code": "1", "timeoutMs": 1000, "envs": %s}' % envs, 79, bad_envs)
        rep = self.d.run(self.EXPR_1_PLUS_1)
        self.assertEqual((main_text(rep), rep['executionCount']), ('2', 1))

    # ------------------------------------------------------------------ envs

    def env_probe(self, envs=None):
        """[CB_NEW, HOME] as the code sees them, and 'CB_NEW:HOME' as a child process does."""
        self.assertOk(self.d.run(self.ENV_PROBE, envs=envs))
        out, err = self.d.output()
        self.assertEqual(err, b'')
        return json.loads(out)

    def assertEnvRestored(self):
        self.assertEqual(self.env_probe(), [None, self.tmp, '<unset>:' + self.tmp])

    def test_envs_for_one_run(self):
        self.assertEnvRestored()
        envs = {'CB_NEW': 'new ✓', 'HOME': '/env/home'}
        self.assertEqual(self.env_probe(envs), ['new ✓', '/env/home', 'new ✓:/env/home'])
        self.assertEnvRestored()
        self.assertEqual(self.env_probe({'CB_NEW': ''}), ['', self.tmp, ':' + self.tmp])
        self.assertEnvRestored()

    def test_envs_restored_after_an_error(self):
        err = self.assertError(self.d.run(self.RAISE_ENV, envs={'CB_NEW': 'boom', 'HOME': '/env/home'}), 'Error')
        self.assertEqual(err['value'], 'boom /env/home')
        self.assertEnvRestored()

    def test_envs_restored_when_the_code_changed_them(self):
        self.assertOk(self.d.run(self.MUTATE_ENV, envs={'CB_NEW': 'new', 'HOME': '/env/home'}))
        self.assertEnvRestored()

    def test_envs_restored_after_an_interrupt(self):
        for code in self.BUSY_LOOPS:
            self.d.send(code, envs={'CB_NEW': 'new', 'HOME': '/env/home'})
            self.d.wait_stdout(b'go')
            self.d.interrupt()
            self.assertFalse(self.d.reply()['ok'])
            self.assertEnvRestored()

    def test_envs_across_an_await(self):
        rep = self.d.run(self.AWAIT_ENV, envs={'CB_NEW': 'later'})
        self.assertEqual(main_text(rep), "'later'")
        self.assertEnvRestored()

    # --------------------------------------------------------------- display

    def test_display_streams_before_the_reply(self):
        rid = self.d.send(self.DISPLAY_THEN_WAIT)
        msg = self.d.message()
        self.assertEqual(msg, {'type': 'display', 'id': rid, 'bundle': {'text/plain': 'early', 'isMainResult': False}})
        # The output printed before display() was flushed before the display message.
        self.d._drain()
        self.assertEqual(self.d.bufs['stdout'], b'before\n')
        time.sleep(0.1)
        self.d._drain()
        self.assertNotIn(b'\n', self.d.bufs['reply'])  # the run still waits: no reply yet
        open(os.path.join(self.tmp, 'go'), 'w').close()
        rep = self.d.reply()
        self.assertEqual((rep['id'], main_text(rep), self.d.displays), (rid, '7', []))
        self.assertEqual(self.d.output()[0], b'before\nafter\n')

    def test_display_outside_a_run_is_dropped(self):
        rep = self.d.run(self.DISPLAY_LATER)
        self.assertOk(rep)
        self.assertEqual(self.d.displays, [])
        time.sleep(0.3)
        self.d._drain()
        self.assertEqual(self.d.bufs['reply'], b'')
        rep = self.d.run(self.EXPR_1_PLUS_1)
        self.assertEqual((main_text(rep), self.d.displays), ('2', []))
        self.assertEqual(self.d.output(), self.DISPLAYED_LATER)

    def test_execution_count_increases(self):
        counts = [self.d.run(self.EXPR_1_PLUS_1)['executionCount'] for _ in range(3)]
        self.assertEqual(counts, [1, 2, 3])

    def test_idle_sigint_does_not_kill(self):
        self.assertOk(self.d.run(self.EXPR_1_PLUS_1))
        self.d.interrupt()
        time.sleep(0.2)
        self.assertIsNone(self.d.proc.poll())
        self.assertEqual(main_text(self.d.run(self.EXPR_1_PLUS_1)), '2')

    def test_unicode(self):
        rep = self.d.run(self.PRINT_UNICODE)
        self.assertOk(rep)
        out, _ = self.d.output()
        self.assertEqual(out.decode('utf-8'), 'héllo wörld ✓ 😀\n')

    def test_protocol_fds_not_inherited(self):
        rep = self.d.run(self.LIST_CHILD_FDS)
        self.assertOk(rep)
        out, _ = self.d.output()
        fds = sorted(int(x) for x in out.decode().split())
        self.assertEqual(fds, [0, 1, 2, 3], out)  # 3 = the listing's own directory fd

    # resultLimitBytes and values that must not break the reply channel. Each language
    # sets KEEP (assigns keep = 5), BIG_MAIN, BIG_DISPLAY, RAW_DISPLAY % (text, json),
    # DEEP_CODES and SURROGATE_CODES.

    def assertKept(self):
        """The context survived: keep (set by KEEP) is still there."""
        self.assertEqual(main_text(self.d.run('keep')), '5')

    def test_result_limit_cuts_a_big_main_result(self):
        self.assertOk(self.d.run(self.KEEP))
        rep = self.d.run(self.BIG_MAIN, limit=1024, timeout=60)
        self.assertOk(rep)
        self.assertEqual(main_text(rep), "'" + 'x' * 1023)  # the cut applies to the repr
        self.assertEqual(rep['resultBytesDropped'], 50_000_002 - 1024)
        self.assertKept()

    def test_result_limit_cuts_a_big_display(self):
        self.assertOk(self.d.run(self.KEEP))
        rep = self.d.run(self.BIG_DISPLAY, limit=1024, timeout=60)
        self.assertOk(rep)
        self.assertEqual([len(m['bundle']['text/plain']) for m in self.d.displays], [1024])
        self.assertGreater(rep['resultBytesDropped'], 49_000_000)
        self.assertKept()

    def test_result_limit_keeps_whole_characters_and_drops_big_json(self):
        rep = self.d.run(self.RAW_DISPLAY % ("'ééé'", '[1, 2, 3]'), limit=3)
        self.assertOk(rep)
        self.assertEqual([m['bundle'] for m in self.d.displays], [
            {'text/plain': 'é', 'application/json': '<result of 7 bytes dropped: over the limit of 3 bytes>',
             'isMainResult': False}])
        self.assertEqual(rep['resultBytesDropped'], 4 + 7)
        # Under the limit, or without one: nothing cut, no resultBytesDropped.
        rep = self.d.run(self.RAW_DISPLAY % ("'ééé'", '[1, 2, 3]'), limit=100)
        self.assertNotIn('resultBytesDropped', rep)
        self.assertEqual(self.d.displays[0]['bundle']['application/json'], [1, 2, 3])
        rep = self.d.run(self.RAW_DISPLAY % ("'ééé'", '[1, 2, 3]'))
        self.assertNotIn('resultBytesDropped', rep)
        self.assertEqual(self.d.displays[0]['bundle']['text/plain'], 'ééé')

    def test_bad_result_limit_is_a_protocol_error(self):
        for limit in ('"5"', '-1', '1.5', 'true'):
            raw = '{"id":3,"code":"1","timeoutMs":5000,"resultLimitBytes":%s}\n' % limit
            self.protocol_error(raw.encode(), 3, 'resultLimitBytes must be a non-negative integer')
        self.assertEqual(main_text(self.d.run(self.EXPR_1_PLUS_1)), '2')

    def test_lone_surrogates_become_replacement_characters(self):
        self.assertOk(self.d.run(self.KEEP))
        for code, where in self.SURROGATE_CODES:
            with self.subTest(code=code):
                rid = self.d.send(code)
                found = None
                while True:
                    line = self.d.line()
                    msg = json.loads(line)  # and strictly: valid UTF-8, no lone surrogate
                    check_message(line, msg)
                    if msg['type'] == 'reply':
                        break
                    found = msg['bundle']['text/plain']
                self.assertEqual(msg['id'], rid)
                if where == 'error':
                    found = msg['error']['value']
                elif where == 'main':
                    found = main_text(msg)
                if where is not None:  # None: only that every line parses
                    self.assertIn('\ufffd', found, line)
                self.d._drain()
                self.assertKept()

    def test_json_nested_too_deep_is_refused(self):
        self.assertOk(self.d.run(self.KEEP))
        for code, deep in self.DEEP_CODES:
            with self.subTest(code=code):
                rep = self.d.run(code)
                self.assertOk(rep)
                bundles = [m['bundle'] for m in self.d.displays]
                if rep['mainResult'] is not None:
                    bundles.append(rep['mainResult'])
                self.assertEqual(len(bundles), 1, rep)
                value = bundles[0]['application/json']
                if deep:
                    self.assertEqual(value, '<JSON nested deeper than 100 levels>')
                else:
                    self.assertIsInstance(value, list)
                self.assertKept()


class PythonDriverTest(_DriverTest, unittest.TestCase):
    ARGV = PY_ARGV
    EXPR_1_PLUS_1 = '1 + 1'
    PRINT_UNICODE = "print('héllo wörld ✓ 😀')"
    LIST_CHILD_FDS = "import subprocess\nsubprocess.run(['ls', '/proc/self/fd'])"
    ENV_PROBE = ("import json, os, subprocess\n"
                 "print(json.dumps([os.environ.get('CB_NEW'), os.environ.get('HOME'), subprocess.run("
                 "['sh', '-c', 'printf %s \"${CB_NEW-<unset>}:$HOME\"'], capture_output=True, text=True).stdout],"
                 " ensure_ascii=False))")
    RAISE_ENV = "import os\nclass Error(Exception): pass\nraise Error(os.environ['CB_NEW'] + ' ' + os.environ['HOME'])"
    MUTATE_ENV = "import os\nos.environ['HOME'] = 'changed'\ndel os.environ['CB_NEW']"
    BUSY_LOOPS = ('print("go")\nwhile True:\n    pass', 'import asyncio\nprint("go")\nawait asyncio.sleep(100)')
    AWAIT_ENV = "import asyncio, os\nawait asyncio.sleep(0.01)\nos.environ['CB_NEW']"
    DISPLAY_THEN_WAIT = ("import os, time\nprint('before')\ndisplay({'text/plain': 'early'}, raw=True)\n"
                         "while not os.path.exists('go'):\n    time.sleep(0.01)\nprint('after')\n7")
    DISPLAY_LATER = ("import threading\n"
                     "t = threading.Timer(0.1, lambda: (display('late'), print('displayed')))\nt.start()")
    # No attribution in Python: the thread's print reaches stdout (the engine drops what
    # arrives while no run is in progress).
    DISPLAYED_LATER = (b'displayed\n', b'')
    KEEP = 'keep = 5'
    BIG_MAIN = "'x' * 50_000_000"
    BIG_DISPLAY = "display('x' * 50_000_000)"
    RAW_DISPLAY = "display({'text/plain': %s, 'application/json': %s}, raw=True)"
    SURROGATE_CODES = [
        ("class S:\n    def __repr__(self): return chr(0xd800)\nS()", 'main'),
        ("chr(0xd800)", None),  # repr escapes it
        ("raise ValueError('bad ' + chr(0xdc00))", 'error'),
        ("display({'text/plain': chr(0xd800), 'text/html': chr(0xdfff)}, raw=True)", 'display'),
        ("display({'text/plain': 'x', chr(0xd800): 1}, raw=True)", None),
        ("display({'text/plain': 'x', 'application/json': {'k': [chr(0xd83d)]}}, raw=True)", None),
    ]
    DEEP_CODES = [
        ("d = []\nfor _ in range(200): d = [d]\ndisplay({'application/json': d}, raw=True)", True),
        ("class J:\n    def _repr_json_(self): return d\nJ()", True),
        ("e = []\nfor _ in range(101): e = [e]\ndisplay({'application/json': e}, raw=True)", True),
        ("e = []\nfor _ in range(99): e = [e]\ndisplay({'application/json': e}, raw=True)", False),
        ("display({'application/json': [{'a': '[[[[' * 200}]}, raw=True)", False),
    ]

    def test_print_and_main_result(self):
        rep = self.d.run("print('hi')\nx = 40\nx + 2")
        self.assertOk(rep)
        self.assertEqual(rep['mainResult'], {'text/plain': '42', 'isMainResult': True})
        self.assertEqual(self.d.output()[0], b'hi\n')

    def test_no_main_result(self):
        for code in ('None', 'x = 5', 'def f(): pass', 'import os', "print('a')"):
            rep = self.d.run(code)
            self.assertOk(rep)
            self.assertIsNone(rep['mainResult'], code)

    def test_repr_and_last_value(self):
        rep = self.d.run("'a\\nb'")
        self.assertEqual(main_text(rep), "'a\\nb'")
        self.assertEqual(main_text(self.d.run('[1, 2]')), '[1, 2]')
        self.assertEqual(main_text(self.d.run('_')), '[1, 2]')

    def test_persistence(self):
        self.assertOk(self.d.run('import math\ny = 10\ndef sq(v):\n    return v * v'))
        self.assertEqual(main_text(self.d.run('sq(y) + int(math.sqrt(16))')), '104')

    def test_errors(self):
        err = self.assertError(self.d.run('x = 1\nundefined_name + 1'), 'NameError')
        self.assertEqual(err['value'], "name 'undefined_name' is not defined")
        self.assertIn('<cell-1>', err['traceback'])
        self.assertIn('line 2', err['traceback'])
        self.assertIn('undefined_name + 1', err['traceback'])
        self.assertTrue(err['traceback'].startswith('Traceback'), err['traceback'])
        self.assertOk(self.d.run('def f():\n    return 1 / 0'))
        err = self.assertError(self.d.run('f()'), 'ZeroDivisionError')
        self.assertEqual(err['value'], 'division by zero')
        self.assertIn('<cell-2>', err['traceback'])
        self.assertIn('<cell-3>', err['traceback'])
        self.assertIn('return 1 / 0', err['traceback'])

    def test_syntax_error(self):
        err = self.assertError(self.d.run('x = (1,\ny = 2 +'), 'SyntaxError')
        self.assertIn('<cell-1>', err['traceback'])
        self.assertIn('SyntaxError', err['traceback'])
        self.assertEqual(main_text(self.d.run('3')), '3')

    def test_stderr(self):
        self.assertOk(self.d.run("import sys\nsys.stderr.write('oops\\n')\nNone"))
        out, err = self.d.output()
        self.assertEqual((out, err), (b'', b'oops\n'))

    def test_invalid_utf8_passthrough(self):
        self.assertOk(self.d.run("import sys\nsys.stdout.buffer.write(b'a\\xff\\xfeb\\n')\nNone"))
        self.assertEqual(self.d.output()[0], b'a\xff\xfeb\n')

    def test_top_level_await(self):
        self.assertOk(self.d.run('import asyncio\nasync def f(v):\n    await asyncio.sleep(0.01)\n    return v * 2'))
        rep = self.d.run('r = await f(21)\nr')
        self.assertEqual(main_text(rep), '42')
        self.assertEqual(main_text(self.d.run('await f(r)')), '84')
        self.assertEqual(main_text(self.d.run('asyncio.run(f(1))')), '2')

    def test_interrupt_busy_loop(self):
        rid = self.d.send('print("go")\nwhile True:\n    pass')
        self.d.wait_stdout(b'go')
        self.d.interrupt()
        rep = self.d.reply()
        self.assertEqual(rep['id'], rid)
        err = self.assertError(rep, 'KeyboardInterrupt')
        self.assertIn('<cell-1>', err['traceback'])
        self.assertIn('while True', err['traceback'])
        self.assertEqual(main_text(self.d.run('1 + 1')), '2')

    def test_interrupt_await_and_sleep(self):
        self.assertOk(self.d.run('import asyncio, time'))
        rid = self.d.send('print("go")\nawait asyncio.sleep(100)')
        self.d.wait_stdout(b'go')
        self.d.interrupt()
        self.assertError(self.d.reply(), 'KeyboardInterrupt')
        self.d.send('print("go")\ntime.sleep(100)')
        self.d.wait_stdout(b'go')
        self.d.interrupt()
        self.assertError(self.d.reply(), 'KeyboardInterrupt')
        self.assertEqual(main_text(self.d.run('await asyncio.sleep(0, 5)')), '5')

    def test_overwriting_builtins(self):
        code = ('import builtins, json, sys, io\nprint = None\njson.dumps = None\njson.loads = None\n'
                'builtins.print = None\nbuiltins.repr = None\nsys.stdout = io.StringIO()\nsys.stderr = None\n42')
        rep = self.d.run(code)
        self.assertOk(rep)
        self.assertEqual(main_text(rep), '42')
        rep = self.d.run('1 / 0')
        self.assertError(rep, 'ZeroDivisionError')

    def test_subprocess_output(self):
        self.assertOk(self.d.run("import subprocess\nsubprocess.run(['echo', 'from child'])\nNone"))
        self.assertEqual(self.d.output()[0], b'from child\n')

    def test_sys_exit(self):
        err = self.assertError(self.d.run('import sys\nsys.exit(3)'), 'SystemExit')
        self.assertEqual(err['value'], '3')
        self.assertEqual(main_text(self.d.run('1 + 1')), '2')
        self.assertError(self.d.run('raise KeyboardInterrupt'), 'KeyboardInterrupt')
        self.assertEqual(main_text(self.d.run('2 + 2')), '4')

    def test_rich_repr_and_display(self):
        code = ('class R:\n'
                '    def _repr_html_(self): return "<b>r</b>"\n'
                '    def _repr_png_(self): return b"\\x89PNG"\n'
                '    def _repr_json_(self): return {"a": 1}\n'
                '    def __repr__(self): return "R()"\n'
                'display(R(), 7)\n'
                'R()')
        rep = self.d.run(code)
        self.assertOk(rep)
        self.assertEqual(rep['mainResult'], {'text/plain': 'R()', 'text/html': '<b>r</b>', 'image/png': 'iVBORw==',
                                             'application/json': {'a': 1}, 'isMainResult': True})
        d0, d1 = [d['bundle'] for d in self.d.displays]
        self.assertEqual(d0['isMainResult'], False)
        self.assertEqual(d0['text/html'], '<b>r</b>')
        self.assertEqual(d1, {'text/plain': '7', 'isMainResult': False})
        # Key order: text/plain first (whatever _repr_mimebundle_ returned), isMainResult last.
        rep = self.d.run("class M:\n    def _repr_mimebundle_(self, include=None, exclude=None):\n"
                         "        return {'text/html': '<p>', 'isMainResult': 5, 'text/plain': 'M!'}\n"
                         "display(M())\nM()")
        self.assertEqual(list(rep['mainResult'].items()),
                         [('text/plain', 'M!'), ('text/html', '<p>'), ('isMainResult', True)])
        self.assertEqual(list(self.d.displays[0]['bundle'].items()),
                         [('text/plain', 'M!'), ('text/html', '<p>'), ('isMainResult', False)])

    def test_unserialisable_results_keep_text_plain(self):
        rep = self.d.run("class J:\n    def __init__(self, v): self.v = v\n"
                         "    def _repr_json_(self): return self.v\n    def __repr__(self): return 'J'\n"
                         "c = []\nc.append(c)\ndisplay(J(c))\nJ(float('nan'))")
        self.assertEqual(rep['mainResult'], {'text/plain': 'J', 'isMainResult': True})
        self.assertEqual([d['bundle'] for d in self.d.displays], [{'text/plain': 'J', 'isMainResult': False}])

    def test_display_from_a_forked_child_is_dropped(self):
        rep = self.d.run('import os\npid = os.fork()\nif pid == 0:\n    display("child")\n    os._exit(0)\n'
                         'os.waitpid(pid, 0)\ndisplay("parent")')
        self.assertOk(rep)
        self.assertEqual([d['bundle']['text/plain'] for d in self.d.displays], ["'parent'"])

    def test_forked_child_does_not_answer(self):
        rep = self.d.run('import os\npid = os.fork()\nif pid == 0:\n    print("child")\nelse:\n    os.waitpid(pid, 0)\npid > 0')
        self.assertEqual(main_text(rep), 'True')
        self.assertEqual(main_text(self.d.run('1 + 1')), '2')

    def test_user_sigint_handler_while_idle(self):
        self.assertOk(self.d.run('import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\nNone'))
        self.d.interrupt()
        time.sleep(0.1)
        self.assertEqual(main_text(self.d.run('1 + 1')), '2')

    def test_pickle_class_defined_in_cell(self):
        rep = self.d.run('import pickle\nclass P:\n    pass\ntype(pickle.loads(pickle.dumps(P()))).__name__')
        self.assertEqual(main_text(rep), "'P'")


class JavaScriptDriverTest(_DriverTest, unittest.TestCase):
    ARGV = JS_ARGV
    EXPR_1_PLUS_1 = '1 + 1'
    PRINT_UNICODE = "console.log('héllo wörld ✓ 😀')"
    LIST_CHILD_FDS = "require('child_process').execSync('ls /proc/self/fd', {stdio: 'inherit'}); undefined"
    ENV_PROBE = ("console.log(JSON.stringify([process.env.CB_NEW ?? null, process.env.HOME ?? null, "
                 "require('child_process').execSync('printf %s \"${CB_NEW-<unset>}:$HOME\"').toString()]))")
    RAISE_ENV = "throw new Error(process.env.CB_NEW + ' ' + process.env.HOME)"
    MUTATE_ENV = "process.env.HOME = 'changed'; delete process.env.CB_NEW"
    BUSY_LOOPS = ('console.log("go"); while (true) {}', 'console.log("go"); await new Promise(() => {})')
    AWAIT_ENV = "await new Promise(r => setTimeout(r, 10)); process.env.CB_NEW"
    DISPLAY_THEN_WAIT = ("console.log('before'); display('early');\n"
                         "await new Promise(r => { const t = setInterval(() => { "
                         "if (require('fs').existsSync('go')) { clearInterval(t); r() } }, 5) });\n"
                         "console.log('after'); 7")
    DISPLAY_LATER = "setTimeout(() => { display('late'); console.log('displayed') }, 100); undefined"
    # The timer's output is the ended run's: dropped, and the next run's first line says so.
    DISPLAYED_LATER = (b'', b"[codebay] 10 bytes of output and 1 display result written by an earlier run's "
                            b"callbacks after it ended were dropped (run 1)\n")
    KEEP = 'var keep = 5'
    BIG_MAIN = "'x'.repeat(50_000_000)"
    BIG_DISPLAY = "display('x'.repeat(50_000_000))"
    RAW_DISPLAY = "display({'text/plain': %s, 'application/json': %s}, {raw: true})"
    SURROGATE_CODES = [
        ("'\\ud800'", None),  # inspect escapes it
        ("({ [Symbol.for('nodejs.util.inspect.custom')]() { return '\\ud800' } })", 'main'),
        ("throw new Error('😀'.slice(0, 1))", 'error'),
        ("throw '\\uD800'", 'error'),
        ("display('\\uDC00')", 'display'),
        ("display({'text/plain': 'x', '\\ud800': 1, 'application/json': ['\\udfff\\\\']}, {raw: true})", None),
        ("Promise.reject(new Error('\\ud800'))", 'error'),
    ]
    DEEP_CODES = [
        ("let d = []; for (let i = 0; i < 200; i++) d = [d]; display({'application/json': d}, {raw: true})", True),
        ("display({'application/json': { toJSON() { return d } }}, {raw: true})", True),
        ("let e = []; for (let i = 0; i < 101; i++) e = [e]; display({'application/json': e}, {raw: true})", True),
        ("e = []; for (let i = 0; i < 99; i++) e = [e]; display({'application/json': e}, {raw: true})", False),
        ("display({'application/json': [{a: '[[[['.repeat(200)}]}, {raw: true})", False),
    ]

    def test_print_and_main_result(self):
        rep = self.d.run("console.log('hi')\nconst x = 40\nx + 2")
        self.assertOk(rep)
        self.assertEqual(rep['mainResult'], {'text/plain': '42', 'isMainResult': True})
        self.assertEqual(self.d.output()[0], b'hi\n')

    def test_no_main_result(self):
        for code in ('undefined', 'let a1 = 5', 'const a2 = 6', 'var a3 = 7', 'function f() {}',
                     "console.log('a')"):
            rep = self.d.run(code)
            self.assertOk(rep)
            self.assertIsNone(rep['mainResult'], code)

    def test_inspect_values(self):
        self.assertEqual(main_text(self.d.run("'s'")), "'s'")
        self.assertEqual(main_text(self.d.run('({a: 1, b: [1, 2]})')), '{ a: 1, b: [ 1, 2 ] }')
        self.assertEqual(main_text(self.d.run('{a: 1}')), '{ a: 1 }')
        self.assertEqual(main_text(self.d.run('null')), 'null')

    def test_persistence(self):
        self.assertOk(self.d.run("const path = require('path')\nlet y = 10\nfunction sq(v) { return v * v }\n"
                                 "class K { get v() { return 1 } }"))
        self.assertEqual(main_text(self.d.run("sq(y) + new K().v + path.basename('/a/b')")), "'101b'")
        self.assertEqual(main_text(self.d.run("typeof module + typeof exports + __dirname.length")),
                         "'objectobject%d'" % len(self.tmp))

    def test_require_relative_to_cwd(self):
        with open(os.path.join(self.tmp, 'mod.js'), 'w') as f:
            f.write('module.exports = 5\n')
        self.assertEqual(main_text(self.d.run("require('./mod.js') + 1")), '6')

    def test_errors(self):
        err = self.assertError(self.d.run('let q = 1\nundefinedName + 1'), 'ReferenceError')
        self.assertEqual(err['value'], 'undefinedName is not defined')
        self.assertIn('<cell-1>:2', err['traceback'])
        self.assertNotIn('node:vm', err['traceback'])
        self.assertOk(self.d.run('function boom() { return null.x }'))
        err = self.assertError(self.d.run('boom()'), 'TypeError')
        self.assertIn('<cell-2>:1', err['traceback'])
        self.assertIn('<cell-3>:1', err['traceback'])
        err = self.assertError(self.d.run("throw 'plain'"), 'Error')
        self.assertEqual(err['value'], 'plain')
        err = self.assertError(self.d.run("throw {code: 5}"), 'Error')
        self.assertEqual(err['value'], '{ code: 5 }')

    def test_syntax_error(self):
        err = self.assertError(self.d.run('let x = ;'), 'SyntaxError')
        self.assertIn('<cell-1>', err['traceback'])
        self.assertIn('SyntaxError', err['traceback'])
        self.assertNotIn('node:', err['traceback'])
        err = self.assertError(self.d.run('await 1 +'), 'SyntaxError')
        self.assertIn('<cell-2>', err['traceback'])
        self.assertEqual(err['value'], 'Unexpected end of input')
        self.assertEqual(main_text(self.d.run('3')), '3')

    def test_stderr(self):
        self.assertOk(self.d.run("console.error('oops'); process.stderr.write('raw\\n'); undefined"))
        out, err = self.d.output()
        self.assertEqual((out, err), (b'', b'oops\nraw\n'))

    def test_invalid_utf8_passthrough(self):
        self.assertOk(self.d.run("process.stdout.write(Buffer.from([0x61, 0xff, 0xfe, 0x62, 0x0a])); undefined"))
        self.assertEqual(self.d.output()[0], b'a\xff\xfeb\n')

    def test_top_level_await(self):
        self.assertOk(self.d.run('const f = async (v) => { await new Promise(r => setTimeout(r, 10)); return v * 2 }'))
        self.assertEqual(main_text(self.d.run('const r = await f(21)\nr // comment')), '42')
        self.assertEqual(main_text(self.d.run('r')), '42')
        self.assertEqual(main_text(self.d.run('await f(r)')), '84')
        self.assertIsNone(self.d.run('const z = await f(1)')['mainResult'])
        self.assertEqual(main_text(self.d.run('z')), '2')
        err = self.assertError(self.d.run('await Promise.reject(new RangeError("bad"))'), 'RangeError')
        self.assertEqual(err['value'], 'bad')
        self.assertIn('<cell-', err['traceback'])

    def test_interrupt_busy_loop(self):
        rid = self.d.send('console.log("go"); while (true) {}')
        self.d.wait_stdout(b'go')
        self.d.interrupt()
        rep = self.d.reply()
        self.assertEqual(rep['id'], rid)
        self.assertError(rep, 'Interrupted')
        self.assertEqual(main_text(self.d.run('1 + 1')), '2')

    def test_interrupt_await(self):
        rid = self.d.send('console.log("go"); await new Promise(() => {})')
        self.d.wait_stdout(b'go')
        self.d.interrupt()
        rep = self.d.reply()
        self.assertEqual(rep['id'], rid)
        self.assertError(rep, 'Interrupted')
        self.assertEqual(main_text(self.d.run('1 + 1')), '2')
        # A busy loop before the cell's first await still runs under breakOnSigint.
        self.d.send('console.log("go"); let n = 0; while (true) { n++ }; await null')
        self.d.wait_stdout(b'go')
        self.d.interrupt()
        self.assertError(self.d.reply(), 'Interrupted')
        self.assertEqual(main_text(self.d.run('2 + 2')), '4')

    def test_overwriting_globals(self):
        rep = self.d.run("JSON = null; console = null; globalThis.require = null; "
                         "Array.prototype.push = null; String.prototype.split = null; 42")
        self.assertOk(rep)
        self.assertEqual(main_text(rep), '42')
        self.assertError(self.d.run('nope'), 'ReferenceError')

    def test_subprocess_output(self):
        self.assertOk(self.d.run("require('child_process').execSync('echo hi', {stdio: 'inherit'}); undefined"))
        self.assertEqual(self.d.output()[0], b'hi\n')

    def test_async_errors_do_not_kill(self):
        # The rejection is reported before the reply: the run's own. The timer throws
        # after the run ended: not written then, and the next run's first line says so.
        self.assertOk(self.d.run("setTimeout(() => { throw new Error('late') }, 10); "
                                 "Promise.reject(new Error('rej')); undefined"))
        _, err = self.d.output()
        self.assertEqual(err, b'Uncaught (in promise) Error: rej\n    at <cell-1>:1:67\n')
        self.assertEqual(self.d.output(wait=0.2), (b'', b''))
        self.assertEqual(main_text(self.d.run('1 + 1')), '2')
        self.assertEqual(self.d.output(), (b'', b"[codebay] earlier run 1 had an uncaught exception after it "
                                                b"ended (not this run's error): Error: late\n"))
        self.assertEqual(main_text(self.d.run('1 + 2')), '3')
        self.assertEqual(self.d.output(), (b'', b''))

    def test_protocol_fds_hidden_without_proc_reopen(self):
        # Fallback when /proc/self/fd/N cannot be re-opened (pipe owned by another uid).
        d = Driver(self.ARGV, {'CODEBAY_DRIVER_NO_REOPEN': '1'})
        try:
            code = ("const cp = require('child_process');\n"
                    "cp.execSync('ls -l /proc/self/fd', {stdio: 'inherit'});\n"
                    "cp.spawnSync('ls', ['-l', '/proc/self/fd'], {stdio: 'inherit'});\n"
                    "await new Promise(r => cp.spawn('ls', ['-l', '/proc/self/fd'], {stdio: 'inherit'}).on('exit', r))")
            rep = d.run(code)
            self.assertOk(rep)
            out, err = d.output()
            self.assertEqual(err, b'')
            links = [l.split()[-3:] for l in out.decode().splitlines() if ' -> ' in l]
            fd34 = [target for fd, _, target in links if fd in ('3', '4')]
            self.assertEqual(fd34, ['/dev/null'] * 6, out)  # 3 children x fds 3, 4
            self.assertEqual(main_text(d.run('1 + 1')), '2')
        finally:
            self.assertEqual(d.close(), 0)

    def test_display(self):
        rep = self.d.run('display(5); display({"text/html": "<i>x</i>"}, {raw: true}); 1')
        self.assertOk(rep)
        self.assertEqual([d['bundle'] for d in self.d.displays], [
            {'text/plain': '5', 'isMainResult': False},
            {'text/plain': '', 'text/html': '<i>x</i>', 'isMainResult': False}])
        self.assertEqual(rep['mainResult'], {'text/plain': '1', 'isMainResult': True})
        # Key order: text/plain first, isMainResult last, integer-like keys included;
        # a value JSON cannot hold leaves text/plain only.
        rep = self.d.run("display({'1': 'one', isMainResult: 7, 'text/plain': 'p', f: () => 1}, {raw: true});\n"
                         "const c = {}; c.c = c; display({'text/plain': 'q', 'application/json': c}, {raw: true});\n"
                         "display({'text/plain': 'r', 'application/json': 1n}, {raw: true}); 2n")
        self.assertEqual([list(d['bundle'].items()) for d in self.d.displays], [
            [('text/plain', 'p'), ('1', 'one'), ('isMainResult', False)],
            [('text/plain', 'q'), ('isMainResult', False)],
            [('text/plain', 'r'), ('isMainResult', False)]])
        self.assertEqual(rep['mainResult'], {'text/plain': '2n', 'isMainResult': True})

    def test_display_of_an_earlier_run_during_a_later_run_is_dropped(self):
        # A timer of an earlier run that fires during this run is not this run's: its
        # display and its output are dropped, and this run's last line says so.
        self.assertOk(self.d.run("setTimeout(() => { display('timer'); console.log('timer') }, 50); undefined"))
        rep = self.d.run("console.log('a'); await new Promise(r => setTimeout(r, 300)); console.log('b'); 3")
        self.assertEqual((self.d.displays, main_text(rep)), ([], '3'))
        self.assertEqual(self.d.output(), (b'a\nb\n', b"[codebay] 6 bytes of output and 1 display result written by "
                                                      b"an earlier run's callbacks after it ended were dropped (run 1)\n"))

    def test_what_a_cell_queues_to_run_at_once_is_its_own(self):
        # Promise reactions, nextTicks, microtasks, a write's callback, a display in a
        # reaction, an immediate queued by the cell, an unhandled rejection: all before
        # the reply. Its timers are not: the next run's first line says what they wrote.
        rep = self.d.run("Promise.resolve().then(() => console.log('then')); process.nextTick(() => console.log('tick'));\n"
                         "queueMicrotask(() => console.log('micro')); process.stdout.write('w\\n', () => console.log('cb'));\n"
                         "setImmediate(() => console.log('immediate')); Promise.resolve().then(() => display('shown'));\n"
                         "Promise.reject(new Error('r')); setTimeout(() => console.log('timer'), 0); 1")
        self.assertEqual((main_text(rep), [d['bundle']['text/plain'] for d in self.d.displays]), ('1', ['shown']))
        self.assertEqual(self.d.output(), (b'w\ntick\ncb\nthen\nmicro\nimmediate\n', b'Uncaught (in promise) Error: r\n    at <cell-1>:4:16\n'))
        time.sleep(0.1)
        self.assertEqual(main_text(self.d.run('2')), '2')
        self.assertEqual(self.d.output(), (b'', b"[codebay] 6 bytes of output written by an earlier run's callbacks after it "
                                                b"ended were dropped (run 1)\n"))

    def test_late_output_of_several_runs_is_said_once(self):
        for i in range(3):
            self.assertOk(self.d.run("setTimeout(() => { console.log('x'); Promise.reject(new RangeError('n%d')) }, 50); %d" % (i, i)))
        time.sleep(0.3)
        rep = self.d.run("console.error('own'); 9")
        self.assertEqual(main_text(rep), '9')
        self.assertEqual(self.d.output(), (b'', b"[codebay] 6 bytes of output written by earlier runs' callbacks after they "
                                                b"ended were dropped (runs 1, 2 and 3); earlier run 1 had an unhandled rejection "
                                                b"after it ended (not this run's error): RangeError: n0; earlier run 2 had an "
                                                b"unhandled rejection after it ended (not this run's error): RangeError: n1; "
                                                b"earlier run 3 had an unhandled rejection after it ended (not this run's error): "
                                                b"RangeError: n2\nown\n"))

    def test_following_promises_leaves_them_as_they_were(self):
        rep = self.d.run("const util = require('util'); const p = Promise.resolve(1);\n"
                         "[util.inspect(p), util.inspect(p, { showHidden: true }), Object.getOwnPropertySymbols(p).length,\n"
                         " Reflect.ownKeys(p).length, util.inspect(new Promise(() => {})), util.inspect(Promise.reject(3).catch(() => {}))]")
        self.assertEqual(main_text(rep), "[\n  'Promise { 1 }',\n  'Promise { 1 }',\n  0,\n  0,\n  'Promise { <pending> }',\n"
                                         "  'Promise { <pending> }'\n]")

    def test_rejected_promise_as_last_value_is_the_error(self):
        self.assertOk(self.d.run(self.KEEP))
        for code, name in (("Promise.reject(new Error('no'))", 'Error'),
                           ("await null; Promise.reject(new TypeError('no'))", 'TypeError'),
                           ("Promise.reject('no')", 'Error')):
            with self.subTest(code=code):
                rep = self.d.run(code)
                self.assertError(rep, name)
                self.assertEqual(rep['error']['value'], 'no')
                self.assertEqual(self.d.output(0.05), (b'', b''))  # handled: no unhandledRejection
                self.assertKept()
        self.assertEqual(main_text(self.d.run('new Promise(() => {})')), 'Promise { <pending> }')
        self.assertEqual(main_text(self.d.run('Promise.resolve(3)')), 'Promise { 3 }')

    def test_tracebacks_never_show_driver_frames(self):
        with open(os.path.join(self.tmp, 'm.js'), 'w') as f:
            f.write("exports.o = { [Symbol.for('nodejs.util.inspect.custom')]() { throw new Error('m') } };\n"
                    "exports.t = () => setTimeout(() => { throw new Error('mt') }, 0);\n")
        wait = '; await new Promise(r => setTimeout(r, 30)); 1'
        for code in ("({ [Symbol.for('nodejs.util.inspect.custom')]() { throw new Error('i') } })",
                     "require('./m.js').o",
                     "display(new Proxy({}, {ownKeys() { throw new Error('k') }}), {raw: true})",
                     "display({ get ['text/plain']() { throw new Error('g') } }, {raw: true})",
                     "Error.stackTraceLimit = 2; display({ get ['text/plain']() { throw new Error('g') } }, {raw: true})",
                     "Error.stackTraceLimit = 10; 1 +",
                     "setTimeout(() => { throw new Error('t') }, 0)" + wait,
                     "require('./m.js').t()" + wait,
                     "Promise.reject(new Error('u'))" + wait,
                     "process.nextTick(() => { throw new Error('n') })" + wait,
                     "queueMicrotask(() => { null.x })" + wait):
            with self.subTest(code=code):
                rep = self.d.run(code)
                _, err = self.d.output(0.02)
                text = json.dumps(rep) + err.decode('utf-8', 'replace')
                self.assertTrue(rep['error'] is not None or b'Uncaught' in err, (rep, err))
                for bad in (os.path.realpath(JS_DRIVER), 'driver.js', 'node:vm', 'node:internal/vm'):
                    self.assertNotIn(bad, text)
        _, err = self.d.output(0.02)
        self.d.run("Promise.reject(42)" + wait)
        self.assertEqual(self.d.output(0.02)[1], b'Uncaught (in promise) 42\n')


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def png_size(b64):
    """(width, height) from a base64 PNG's IHDR chunk; asserts it is a PNG."""
    import base64
    import struct
    data = base64.b64decode(b64)
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b'IHDR', data[:16]
    return struct.unpack('>II', data[16:24])


class PythonFiguresTest(unittest.TestCase):
    """matplotlib in the Python driver, started with the engine's env for it (numpy,
    pandas and matplotlib must be installed: .ci/run does it)."""

    @classmethod
    def setUpClass(cls):
        cls.mpl_dir = tempfile.mkdtemp(prefix='codebay-mpl-')
        cls.d = Driver(PY_ARGV, {'MPLBACKEND': 'agg', 'MPLCONFIGDIR': cls.mpl_dir})
        rep = cls.d.run('import matplotlib.pyplot as plt', timeout=120)
        assert rep['ok'], rep

    @classmethod
    def tearDownClass(cls):
        assert cls.d.close() == 0
        shutil.rmtree(cls.mpl_dir, ignore_errors=True)

    def setUp(self):
        self.d.output()

    def run_ok(self, code, limit=None):
        rep = self.d.run(code, timeout=60, limit=limit)
        self.assertTrue(rep['ok'], rep)
        return rep

    def test_show_displays_each_open_figure_once_and_closes_it(self):
        rep = self.run_ok("plt.figure(figsize=(3, 2), dpi=20)\nplt.plot([1, 2])\nplt.figure(figsize=(1, 1), dpi=10)\n"
                          "plt.bar(['a'], [1])\nplt.show()\nplt.show()\nlen(plt.get_fignums())")
        bundles = [d['bundle'] for d in self.d.displays]
        self.assertEqual([list(b) for b in bundles], [['text/plain', 'image/png', 'e2b/chart', 'isMainResult']] * 2)
        self.assertEqual([b['text/plain'] for b in bundles], ['<Figure size 60x40 with 1 Axes>', '<Figure size 10x10 with 1 Axes>'])
        self.assertEqual([png_size(b['image/png']) for b in bundles], [(60, 40), (10, 10)])
        self.assertEqual([b['e2b/chart']['type'] for b in bundles], ['line', 'bar'])
        self.assertEqual(main_text(rep), '0')
        self.assertEqual(self.d.output(), (b'', b''))  # no "non-interactive" warning

    def test_open_figures_come_at_the_end_once(self):
        rep = self.run_ok("f1 = plt.figure(figsize=(1, 1), dpi=10); plt.plot([1])\n"
                          "f2 = plt.figure(figsize=(2, 1), dpi=10); plt.plot([2])\ndisplay(f1)\n'x'")
        # f1 (displayed by the code) is not shown again; f2 comes at the end; both are closed.
        self.assertEqual([png_size(d['bundle']['image/png']) for d in self.d.displays], [(10, 10), (20, 10)])
        self.assertEqual(main_text(rep), "'x'")
        self.assertEqual(main_text(self.run_ok('plt.get_fignums()')), '[]')
        self.assertEqual(self.d.displays, [])
        # A figure as the last value is the main result (with its PNG and chart), and only that.
        rep = self.run_ok('fig = plt.figure(figsize=(1, 1), dpi=10)\nplt.plot([1, 2])\nfig')
        self.assertEqual(self.d.displays, [])
        self.assertEqual(list(rep['mainResult']), ['text/plain', 'image/png', 'e2b/chart', 'isMainResult'])
        # fig.show() shows that figure and closes it; plt.close'd figures are not shown.
        self.run_ok("a = plt.figure(); plt.plot([1]); b = plt.figure(); plt.plot([2]); plt.close(b); a.show()\n"
                    "len(plt.get_fignums())")
        self.assertEqual(len(self.d.displays), 1)

    def test_figures_of_a_run_that_raised_or_was_interrupted(self):
        rep = self.d.run("plt.plot([1, 2])\nraise ValueError('x')")
        self.assertEqual(rep['error']['name'], 'ValueError')
        self.assertEqual(len(self.d.displays), 1)
        self.d.send("plt.plot([1, 2])\nprint('go', flush=True)\nwhile True: pass")
        self.d.wait_stdout(b'go')
        self.d.interrupt()
        rep = self.d.reply()
        self.assertEqual(rep['error']['name'], 'KeyboardInterrupt')
        self.assertEqual(self.d.displays, [])  # out of time: nothing is drawn
        self.assertEqual(main_text(self.run_ok('plt.get_fignums()')), '[]')

    def test_a_figure_that_cannot_be_drawn_keeps_its_text(self):
        rep = self.run_ok("plt.plot([1, 2])\nplt.title(r'$\\frac{$')\nplt.show()\n1")
        self.assertEqual([d['bundle'] for d in self.d.displays],
                         [{'text/plain': '<Figure size 640x480 with 1 Axes>', 'isMainResult': False}])
        self.assertEqual(main_text(rep), '1')
        out, err = self.d.output()
        self.assertTrue(err.startswith(b'[codebay] the figure could not be drawn: ValueError: '), err)
        self.assertEqual(main_text(self.run_ok('plt.get_fignums()')), '[]')

    def test_chart_data_over_the_result_limit_is_left_out_uncounted(self):
        rep = self.run_ok('plt.plot(range(50000))\nplt.show()', limit=300_000)
        [bundle] = [d['bundle'] for d in self.d.displays]
        self.assertEqual(list(bundle), ['text/plain', 'image/png', 'isMainResult'])
        self.assertEqual(png_size(bundle['image/png']), (640, 480))
        self.assertNotIn('resultBytesDropped', rep)
        self.run_ok('plt.plot(range(50))\nplt.show()', limit=300_000)
        self.assertEqual(len(self.d.displays[0]['bundle']['e2b/chart']['elements'][0]['points']), 50)

    def test_the_import_hook_leaves_modules_as_they_are(self):
        rep = self.run_ok("import inspect, importlib, sys\nimport matplotlib.font_manager as fm\n"
                          "[plt.show.__wrapped__.__module__, 'def plot' in inspect.getsource(plt.plot),\n"
                          " importlib.reload(plt) is plt, plt.show.__name__, 'FONTCONFIG_FILE' in __import__('os').environ,\n"
                          " type(fm.fontManager).__name__]")
        self.assertEqual(main_text(rep), "['matplotlib.pyplot', True, True, 'pyplot_show', False, 'FontManager']")
        self.run_ok('import pandas as pd\nax = pd.DataFrame({"a": [1, 3], "b": [2, 1]}).plot()\nplt.show()')
        chart = self.d.displays[0]['bundle']['e2b/chart']
        self.assertEqual([(e['label'], e['points']) for e in chart['elements']],
                         [('a', [[0.0, 1.0], [1.0, 3.0]]), ('b', [[0.0, 2.0], [1.0, 1.0]])])

    def test_pandas_series_and_dataframe_have_html(self):
        rep = self.run_ok("import pandas as pd\ns = pd.Series([1, 2])\ndisplay(s)\npd.DataFrame({'a': [1]})")
        self.assertEqual(list(self.d.displays[0]['bundle']), ['text/plain', 'text/html', 'isMainResult'])
        self.assertIn('<table', self.d.displays[0]['bundle']['text/html'])
        self.assertEqual(list(rep['mainResult']), ['text/plain', 'text/html', 'isMainResult'])
        self.assertEqual(rep['mainResult']['text/plain'], '   a\n0  1')


class JavaScriptDisplayTest(unittest.TestCase):
    """display(value, mime) and the JSON of the last value, line by line."""

    def setUp(self):
        self.d = Driver(JS_ARGV)

    def tearDown(self):
        self.assertEqual(self.d.close(), 0)

    def test_mime_types_and_their_names(self):
        rep = self.d.run("display('<i>', 'text/html'); display('<i>', 'HTML'); display('# m', 'md');\n"
                         "display('data:image/png;base64,iVBO\\nRw==', 'png'); display(new Uint8Array([0xff, 0xd8, 0xff]).buffer, 'jpg');\n"
                         "display('[1, 2]', 'json'); display('not json', 'json'); display('t', 'text');\n"
                         "display({mark: 'bar'}, 'application/vnd.vegalite.v5+json'); display(Buffer.from('<svg/>'), 'svg')")
        self.assertTrue(rep['ok'], rep)
        self.assertEqual([d['bundle'] for d in self.d.displays], [
            {'text/plain': '', 'text/html': '<i>', 'isMainResult': False},
            {'text/plain': '', 'text/html': '<i>', 'isMainResult': False},
            {'text/plain': '', 'text/markdown': '# m', 'isMainResult': False},
            {'text/plain': '', 'image/png': 'iVBORw==', 'isMainResult': False},
            {'text/plain': '', 'image/jpeg': '/9j/', 'isMainResult': False},
            {'text/plain': '', 'application/json': [1, 2], 'isMainResult': False},
            {'text/plain': '', 'application/json': 'not json', 'isMainResult': False},
            {'text/plain': 't', 'isMainResult': False},
            {'text/plain': '', 'application/vnd.vegalite.v5+json': {'mark': 'bar'}, 'isMainResult': False},
            {'text/plain': '', 'image/svg+xml': '<svg/>', 'isMainResult': False},
        ])

    def test_json_of_the_last_value(self):
        rep = self.d.run("({ b: [true, null, 'é'], a: { n: -0.25 } })")
        self.assertEqual(rep['mainResult']['application/json'], {'b': [True, None, 'é'], 'a': {'n': -0.25}})
        for code in ("const p = new Proxy({}, {}); p", "({ toJSON() { return 1 } })", "class K {}; new K()",
                     "[undefined]", "({ s: Symbol('x') })", "({ b: 1n })"):
            rep = self.d.run(code)
            self.assertNotIn('application/json', rep['mainResult'] or {}, code)
        # Too deep, or too long for the result limit: left out, nothing counted.
        rep = self.d.run("let d = 0; for (let i = 0; i < 120; i++) d = [d]; d")
        self.assertEqual(list(rep['mainResult']), ['text/plain', 'isMainResult'])
        rep = self.d.run('Array(1000).fill(1)', limit=1000)
        self.assertEqual(list(rep['mainResult']), ['text/plain', 'isMainResult'])
        self.assertNotIn('resultBytesDropped', rep)
        rep = self.d.run('Array(10).fill(1)', limit=1000)
        self.assertEqual(rep['mainResult']['application/json'], [1] * 10)

    def test_display_of_an_ended_run_with_a_mime_type_is_dropped(self):
        self.d.run("setTimeout(() => display('<b>late</b>', 'html'), 50); undefined")
        time.sleep(0.2)
        rep = self.d.run('1')
        self.assertEqual((self.d.displays, main_text(rep)), ([], '1'))
        self.assertEqual(self.d.output()[1], b"[codebay] 1 display result written by an earlier run's callbacks after "
                                             b"it ended was dropped (run 1)\n")

class FixtureTest(unittest.TestCase):
    """Both drivers write crates/codebay-protocol/tests/fixtures/driver.jsonl byte for byte."""

    ARGV = {'python': PY_ARGV, 'javascript': JS_ARGV}

    def test_fixture_cases(self):
        with open(FIXTURE, encoding='utf-8') as f:
            cases = [json.loads(line) for line in f if line.strip()]
        self.assertTrue(cases)
        covered = set()
        for case in cases:
            for language in case['languages']:
                covered.add(language)
                with self.subTest(case=case['name'], language=language):
                    self.run_case(case, self.ARGV[language])
        self.assertEqual(covered, {'python', 'javascript'})

    def run_case(self, case, argv):
        d = Driver(argv)
        try:
            for exchange in case['exchanges']:
                request = exchange['request']
                raw = request if isinstance(request, str) else compact(request).decode('utf-8')
                d.send_raw(raw.encode('utf-8') + b'\n')
                got = []
                while True:
                    line = d.line()
                    got.append(line)
                    if json.loads(line).get('type') == 'reply':
                        break
                self.assertEqual(got, [compact(m) for m in exchange['messages']], raw)
        finally:
            rc = d.close()
        self.assertEqual(rc, 0)
        self.assertEqual(d.bufs['reply'], b'', 'nothing after the last reply')


if __name__ == '__main__':
    unittest.main()
