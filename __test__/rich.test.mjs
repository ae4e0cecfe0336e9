// Rich results (issue 9) on a real local session: what Jupyter shows for Python values
// (MIME bundles from _repr_*_, pandas tables), matplotlib figures as PNG results with
// their chart data in E2B's shape, display() in both languages and its streaming, and
// JavaScript's JSON main value. Everything is judged by decoding what comes back.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { codebay } from './helpers.mjs'

const { LocalSession } = codebay
const show = (r) => JSON.stringify(r, (k, v) => (typeof v === 'string' && v.length > 300 ? `${v.slice(0, 300)}…` : v))

async function ok(s, source, language = 'python', options) {
  const r = await s.code.runCode(source, language, 60, options)
  assert.equal(r.success, true, `${language} ${JSON.stringify(source)} failed: ${show(r)}`)
  return r
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

/** { width, height } of a base64 PNG, read from its IHDR chunk (after checking the signature). */
function pngSize(base64) {
  const png = Buffer.from(base64, 'base64')
  assert.ok(png.subarray(0, 8).equals(PNG_SIGNATURE), `not a PNG: ${png.subarray(0, 8).toString('hex')}`)
  assert.equal(png.toString('latin1', 12, 16), 'IHDR')
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) }
}

const images = (r) => r.results.filter((i) => i.png !== undefined)

describe('python: rich results as Jupyter shows them', () => {
  let s
  before(async () => { s = await LocalSession.create({ poolSize: 0 }) })
  after(async () => { await s?.close() })

  test('a DataFrame gives an HTML table and its text; a Series too', async () => {
    const r = await ok(s, "import pandas as pd\ndf = pd.DataFrame({'city': ['Oslo', 'Rome'], 'temp': [3.5, 18.25]})\ndf")
    assert.equal(r.results.length, 1)
    const [item] = r.results
    assert.equal(item.isMainResult, true)
    assert.equal(item.text, '   city   temp\n0  Oslo   3.50\n1  Rome  18.25')
    assert.match(item.html, /<table[^>]*class="dataframe"/)
    assert.match(item.html, /<th>city<\/th>\s*<th>temp<\/th>/)
    assert.match(item.html, /<td>Oslo<\/td>\s*<td>3.50<\/td>/)
    assert.equal(r.result, item.text)
    const series = (await ok(s, "df['temp'].rename('t')")).results[0]
    assert.equal(series.text, '0     3.50\n1    18.25\nName: t, dtype: float64')
    assert.match(series.html, /<table[^>]*class="dataframe"/)
    assert.match(series.html, /<th>t<\/th>/)
    assert.match(series.html, /<td>18.25<\/td>/)
  })

  test('every _repr_*_ maps to its item field, text/plain is always there', async () => {
    const r = await ok(s, `
import base64
class Rich:
    def _repr_html_(self): return '<b>html</b>'
    def _repr_markdown_(self): return '# markdown'
    def _repr_png_(self): return b'\\x89PNG\\r\\n\\x1a\\npng'
    def _repr_jpeg_(self): return b'\\xff\\xd8\\xffjpeg'
    def _repr_svg_(self): return '<svg xmlns="http://www.w3.org/2000/svg"/>'
    def _repr_latex_(self): return r'$\\alpha^2$'
    def _repr_json_(self): return {'a': [1, 2.5, None], 'b': 'x'}
    def __repr__(self): return 'Rich()'
Rich()`)
    const [item] = r.results
    assert.equal(item.text, 'Rich()')
    assert.equal(item.html, '<b>html</b>')
    assert.equal(item.markdown, '# markdown')
    assert.equal(Buffer.from(item.png, 'base64').toString('latin1'), '\x89PNG\r\n\x1a\npng')
    assert.equal(Buffer.from(item.jpeg, 'base64').toString('latin1'), '\xff\xd8\xffjpeg')
    assert.equal(item.svg, '<svg xmlns="http://www.w3.org/2000/svg"/>')
    assert.equal(item.latex, '$\\alpha^2$')
    assert.deepEqual(item.json, { a: [1, 2.5, null], b: 'x' })
    assert.equal(item.isMainResult, true)
    // _repr_mimebundle_ wins for what it gives; the _repr_*_ methods fill in the rest;
    // a method that raises or returns None gives nothing.
    const b = (await ok(s, `
class B:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {'text/plain': 'B!', 'text/html': '<i>bundle</i>'}
    def _repr_html_(self): return '<i>method</i>'
    def _repr_markdown_(self): return '*md*'
    def _repr_latex_(self): raise ValueError('no')
    def _repr_svg_(self): return None
display(B())`)).results
    assert.deepEqual(b, [{ text: 'B!', html: '<i>bundle</i>', markdown: '*md*', isMainResult: false }])
  })

  test('display() results come in order, not main, each reaching onResult while the code runs', async () => {
    const seen = []
    const t0 = Date.now()
    const r = await ok(s, "import time\ndisplay('first')\ndisplay({'n': 1}, 2)\ntime.sleep(1)\nprint('done')\n'last'", 'python', {
      onResult: (item) => seen.push({ text: item.text, main: item.isMainResult, at: Date.now() }),
    })
    const end = Date.now()
    assert.deepEqual(r.results.map((i) => [i.text, i.isMainResult]),
      [["'first'", false], ["{'n': 1}", false], ['2', false], ["'last'", true]])
    assert.deepEqual(seen.map((e) => [e.text, e.main]), r.results.map((i) => [i.text, i.isMainResult]))
    // The displays came before the code's second of sleep, the main result after it.
    assert.ok(seen[3].at - seen[2].at >= 900, `the displays reached onResult ${seen[3].at - seen[2].at} ms before the main result (${seen[0].at - t0} ms into the run)`)
    assert.ok(end >= seen[3].at)
    assert.equal(r.result, "'last'")
  })

  test('a trailing semicolon hides the last value, as in IPython', async () => {
    const r = await ok(s, 'x = 6\nx * 7;  # no value')
    assert.deepEqual(r.results, [])
    assert.equal((await ok(s, 'x * 7')).result, '42')
  })
})

describe('python: matplotlib without a display', () => {
  let s
  before(async () => { s = await LocalSession.create({ poolSize: 0 }) })
  after(async () => { await s?.close() })

  test('matplotlib draws with Agg, quietly, its caches out of the workspace', async () => {
    const r = await ok(s, "import os\nimport matplotlib.pyplot as plt\nimport matplotlib\nprint(matplotlib.get_backend())\nprint(sorted(os.listdir('.')))")
    assert.deepEqual(r.logs.stdout, ['agg\n', '[]\n'])
    assert.deepEqual(r.logs.stderr, [], 'no warning (fontconfig, cache directory) on stderr')
  })

  test('plt.show() gives a PNG of the figure\'s size x dpi, and closes the figure', async () => {
    const r = await ok(s, 'import matplotlib.pyplot as plt\nplt.figure(figsize=(4, 3), dpi=50)\nplt.plot([1, 2, 3], [2, 4, 1])\nplt.show()\nlen(plt.get_fignums())')
    assert.equal(r.results.length, 2, show(r))
    const [figure, main] = r.results
    assert.equal(figure.isMainResult, false)
    assert.equal(figure.text, '<Figure size 200x150 with 1 Axes>')
    assert.deepEqual(pngSize(figure.png), { width: 200, height: 150 })
    assert.equal(main.text, '0')
    assert.equal(r.result, '0')
    // The default figure: 6.4 x 4.8 inches at 100 dpi.
    const d = await ok(s, 'plt.plot([0, 1]); plt.show()')
    assert.deepEqual(pngSize(images(d)[0].png), { width: 640, height: 480 })
  })

  test('each plt.show() is its own result, in order with display() and print()', async () => {
    const events = []
    const r = await ok(s, "print('a')\nplt.plot([1, 2])\nplt.title('one')\nplt.show()\ndisplay('between')\nplt.bar(['x'], [1])\nplt.title('two')\nplt.show()", 'python', {
      onStdout: (m) => events.push(`out ${m.line.trim()}`),
      onResult: (i) => events.push(i.chart ? `chart ${i.chart.type} ${i.chart.title}` : `text ${i.text}`),
    })
    assert.deepEqual(events, ['out a', 'chart line one', "text 'between'", 'chart bar two'])
    assert.equal(images(r).length, 2)
  })

  test('a figure left open at the end of a run is returned once, and not again next run', async () => {
    const r = await ok(s, "fig = plt.figure(figsize=(3, 2), dpi=40)\nplt.plot([3, 1, 2])\n'drawn'")
    const figures = images(r)
    assert.equal(figures.length, 1, show(r))
    assert.deepEqual(pngSize(figures[0].png), { width: 120, height: 80 })
    assert.equal(figures[0].isMainResult, false)
    assert.equal(r.results.at(-1).text, "'drawn'")
    const next = await ok(s, 'len(plt.get_fignums())')
    assert.deepEqual(next.results, [{ text: '0', isMainResult: true }])
    // The figure as the last value is the main result, with its picture, and not shown twice.
    const last = await ok(s, 'fig, ax = plt.subplots(figsize=(2, 2), dpi=30)\nax.plot([1, 2])\nfig')
    assert.equal(last.results.length, 1, show(last))
    assert.equal(last.results[0].isMainResult, true)
    assert.deepEqual(pngSize(last.results[0].png), { width: 60, height: 60 })
    assert.equal(last.results[0].chart.type, 'line')
    // A run that raised still returns what it drew.
    const failed = await s.code.runCode("plt.plot([1, 2])\nraise ValueError('after plotting')", 'python', 60)
    assert.equal(failed.error.name, 'ValueError')
    assert.equal(images(failed).length, 1)
    assert.deepEqual((await ok(s, 'plt.get_fignums()')).results.map((i) => i.text), ['[]'])
  })

  test('savefig writes a PNG into the workspace', async () => {
    const r = await ok(s, "import base64\nplt.figure(figsize=(2, 1), dpi=100)\nplt.plot([1, 2])\nplt.savefig('chart.png')\nplt.close('all')\nbase64.b64encode(open('/home/user/chart.png', 'rb').read()).decode()")
    assert.deepEqual(pngSize(r.result.slice(1, -1)), { width: 200, height: 100 })
  })

  test('a bar chart carries its labels, values, title and axis labels with units', async () => {
    const r = await ok(s, `
fig, ax = plt.subplots()
ax.bar(['Q1', 'Q2', 'Q3'], [120, 95.5, 143], label='2024')
ax.set_title('Revenue by quarter')
ax.set_xlabel('Quarter')
ax.set_ylabel('Revenue (kEUR)')
ax.legend()
plt.show()`)
    const [item] = images(r)
    assert.ok(item.png)
    assert.deepEqual(item.chart, {
      type: 'bar',
      title: 'Revenue by quarter',
      x_label: 'Quarter',
      x_unit: null,
      y_label: 'Revenue (kEUR)',
      y_unit: 'kEUR',
      elements: [
        { label: 'Q1', group: '2024', value: 120 },
        { label: 'Q2', group: '2024', value: 95.5 },
        { label: 'Q3', group: '2024', value: 143 },
      ],
    })
    // Two series side by side, numeric positions with tick labels (as pandas draws them),
    // and horizontal bars (x is then the category axis).
    const grouped = images(await ok(s, `
import numpy as np
fig, ax = plt.subplots()
pos = np.arange(2)
ax.bar(pos - 0.2, [1, 2], 0.4, label='a')
ax.bar(pos + 0.2, [3, 4], 0.4)
ax.set_xticks(pos, ['left', 'right'])
plt.show()`))[0].chart
    assert.deepEqual(grouped.elements.map((e) => [e.group, e.value]), [['a', 1], ['a', 2], ['Group 2', 3], ['Group 2', 4]])
    const barh = images(await ok(s, "plt.barh(['x', 'y'], [5, 6])\nplt.xlabel('amount')\nplt.ylabel('name')\nplt.show()"))[0].chart
    assert.deepEqual([barh.x_label, barh.y_label, barh.elements.map((e) => [e.label, e.value])], ['name', 'amount', [['x', 5], ['y', 6]]])
  })

  test('a line chart carries its lines\' points, ticks and scales', async () => {
    const r = await ok(s, `
fig, ax = plt.subplots()
ax.plot([0, 1, 2, 3], [1.5, 3, float('nan'), 2], label='speed')
ax.plot([0, 3], [0, 0])
ax.axhline(2.5)
ax.set_yscale('log')
ax.set_title('Runs')
ax.set_xlabel('time [s]')
plt.show()`)
    const { chart } = images(r)[0]
    assert.equal(chart.type, 'line')
    assert.equal(chart.title, 'Runs')
    assert.equal(chart.x_label, 'time [s]')
    assert.equal(chart.x_unit, 's')
    assert.equal(chart.y_label, null)
    assert.equal(chart.x_scale, 'linear')
    assert.equal(chart.y_scale, 'log')
    // The NaN point is left out, and so is the axhline (decoration, not data).
    assert.deepEqual(chart.elements, [
      { label: 'speed', points: [[0, 1.5], [1, 3], [3, 2]] },
      { label: 'Line 2', points: [[0, 0], [3, 0]] },
    ])
    assert.equal(chart.x_ticks.length, chart.x_tick_labels.length)
    assert.ok(chart.x_ticks.every((t) => typeof t === 'number'))
    assert.ok(chart.x_tick_labels.every((t) => typeof t === 'string' && t !== ''), chart.x_tick_labels)
    // Dates on the x axis are ISO text, in the points and the ticks.
    const dated = images(await ok(s, "import datetime as dt\nplt.plot([dt.date(2024, 1, 1), dt.date(2024, 1, 3)], [1, 2])\nplt.show()"))[0].chart
    assert.equal(dated.x_scale, 'datetime')
    assert.deepEqual(dated.elements[0].points, [['2024-01-01', 1], ['2024-01-03', 2]])
    assert.match(dated.x_ticks[0], /^2024-01-0\dT\d\d:\d\d:\d\d$/)
  })

  test('a scatter chart carries its points; categories come back as names', async () => {
    const r = await ok(s, `
plt.scatter([1, 2.5, 4], [10, 20, 15], label='samples')
plt.xlabel('x (m)')
plt.show()
plt.scatter(['low', 'high'], [1, 2])
plt.show()`)
    const [first, second] = images(r).map((i) => i.chart)
    assert.equal(first.type, 'scatter')
    assert.deepEqual(first.elements, [{ label: 'samples', points: [[1, 10], [2.5, 20], [4, 15]] }])
    assert.equal(first.x_unit, 'm')
    assert.equal(second.x_scale, 'categorical')
    assert.deepEqual(second.elements, [{ label: 'Series 1', points: [['low', 1], ['high', 2]] }])
  })

  test('a pie chart carries its slices\' labels and angles', async () => {
    const r = await ok(s, "plt.pie([50, 30, 20], labels=['rent', 'food', 'fun'])\nplt.title('Budget')\nplt.show()")
    const { chart } = images(r)[0]
    assert.equal(chart.type, 'pie')
    assert.equal(chart.title, 'Budget')
    assert.deepEqual(chart.elements, [
      { label: 'rent', angle: 180, radius: 1 },
      { label: 'food', angle: 108, radius: 1 },
      { label: 'fun', angle: 72, radius: 1 },
    ])
  })

  test('a figure of several axes is a superchart; an empty figure has no chart', async () => {
    const r = await ok(s, `
fig, (a, b) = plt.subplots(1, 2)
a.plot([1, 2]); b.pie([1, 1])
fig.suptitle('Both')
plt.show()
plt.figure()
plt.show()`)
    const [both, empty] = images(r)
    assert.equal(both.chart.type, 'superchart')
    assert.equal(both.chart.title, 'Both')
    assert.deepEqual(both.chart.elements.map((c) => c.type), ['line', 'pie'])
    assert.equal(empty.chart, undefined)
    assert.ok(pngSize(empty.png).width > 0)
  })
})

describe('javascript: display(value, mime?) and the JSON main value', () => {
  let s
  before(async () => { s = await LocalSession.create({ poolSize: 0, prewarm: [] }) })
  after(async () => { await s?.close() })

  const TINY_PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='

  test('display for each MIME type fills its item field', async () => {
    const r = await ok(s, `
const png = Buffer.from('${TINY_PNG}', 'base64');
display('<b>bold</b>', 'text/html');
display('# Title', 'markdown');
display('<svg xmlns="http://www.w3.org/2000/svg"/>', 'svg');
display(png, 'image/png');
display('${TINY_PNG}', 'png');
display(new Uint8Array([0xff, 0xd8, 0xff, 0xe0]), 'jpeg');
display({ rows: [{ a: 1 }, { a: 2 }] }, 'json');
display('E = mc^2', 'latex');
display(png);
display('plain words')`, 'javascript')
    const items = r.results
    assert.deepEqual(items.slice(0, 3), [
      { html: '<b>bold</b>', isMainResult: false },
      { markdown: '# Title', isMainResult: false },
      { svg: '<svg xmlns="http://www.w3.org/2000/svg"/>', isMainResult: false },
    ])
    assert.deepEqual(pngSize(items[3].png), { width: 1, height: 1 })
    assert.equal(items[4].png, TINY_PNG)
    assert.deepEqual([...Buffer.from(items[5].jpeg, 'base64')], [0xff, 0xd8, 0xff, 0xe0])
    assert.deepEqual(items[6], { json: { rows: [{ a: 1 }, { a: 2 }] }, isMainResult: false })
    assert.deepEqual(items[7], { latex: 'E = mc^2', isMainResult: false })
    assert.equal(items[8].png, TINY_PNG, 'a Buffer holding a PNG is an image')
    assert.match(items[8].text, /^<Buffer 89 50 4e 47/)
    assert.deepEqual(items[9], { text: 'plain words', isMainResult: false })
    assert.ok(items.every((i) => i.isMainResult === false))
  })

  test('display refuses an unknown MIME name and a PNG that is not bytes', async () => {
    const r = await s.code.runCode("display('x', 'htm')", 'javascript')
    assert.equal(r.error.name, 'TypeError')
    assert.match(r.error.value, /unknown MIME type 'htm'/)
    const p = await s.code.runCode("display(42, 'png')", 'javascript')
    assert.match(p.error.value, /image\/png takes a Buffer, a Uint8Array or a base64 string/)
  })

  test('display reaches onResult as it happens', async () => {
    const seen = []
    const r = await ok(s, "display('<p>1</p>', 'html'); await new Promise((r) => setTimeout(r, 800)); 'end'", 'javascript', {
      onResult: (i) => seen.push({ i, at: Date.now() }),
    })
    const end = Date.now()
    assert.deepEqual(seen.map((e) => e.i), r.results)
    assert.ok(end - seen[0].at >= 500, `the display reached onResult ${end - seen[0].at} ms before the run resolved`)
  })

  test('the last value is text, and JSON too when it is a plain object or array', async () => {
    const obj = (await ok(s, "({ city: 'Oslo', temps: [3.5, -1], nested: { ok: true, none: null } })", 'javascript')).results
    assert.deepEqual(obj, [{
      text: "{ city: 'Oslo', temps: [ 3.5, -1 ], nested: { ok: true, none: null } }",
      json: { city: 'Oslo', temps: [3.5, -1], nested: { ok: true, none: null } },
      isMainResult: true,
    }])
    const arr = (await ok(s, '[1, 2, 3].map((x) => x * 2)', 'javascript')).results[0]
    assert.deepEqual([arr.text, arr.json], ['[ 2, 4, 6 ]', [2, 4, 6]])
    // Not plain data: text only.
    for (const code of ['new Map([[1, 2]])', '({ f() {} })', '({ get g() { return 1 } })', '[1, , 3]', '[NaN]',
      '({ d: new Date(0) })', 'const c = {}; c.self = c; c', '42', "'str'", 'Buffer.from([1])']) {
      const [item] = (await ok(s, code, 'javascript')).results
      assert.equal(item.json, undefined, code)
      assert.ok(item.text, code)
    }
  })
})
