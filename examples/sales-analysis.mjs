// An agent's data-analysis step, end to end: a CSV goes in as a file, the model's code
// summarises it with pandas and plots it with matplotlib, and the numbers, the table and
// the chart come back — the chart both as a PNG saved on the host and as data, for a
// model that cannot look at images.
//
//   node examples/sales-analysis.mjs [output-dir]     (after npm install)
import fs from 'node:fs'
import path from 'node:path'
import { LocalSession } from 'codebay'

const outDir = process.argv[2] ?? '.'
const csv = [
  'region,quarter,units',
  'north,Q1,120', 'north,Q2,135',
  'south,Q1,90', 'south,Q2,110',
  'east,Q1,150', 'east,Q2,140',
  'west,Q1,60', 'west,Q2,75',
].join('\n')

// What a model would write for "summarise sales.csv by region and plot it".
const code = `
import pandas as pd
import matplotlib.pyplot as plt

df = pd.read_csv('data/sales.csv')
totals = df.groupby('region')['units'].sum().sort_values(ascending=False)
print(totals.to_string())

fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
ax.bar(totals.index, totals.values)
ax.set_title('Units sold by region')
ax.set_xlabel('region')
ax.set_ylabel('units')
fig.savefig('data/sales.png')
plt.show()

df.pivot_table(index='region', columns='quarter', values='units')
`

// pandas and matplotlib imported ahead, in the pooled interpreter: the first run pays nothing.
const session = await LocalSession.create({ preload: { python: ['pandas', 'matplotlib.pyplot'] } })
try {
  // 1. The data goes in: a file of the sandbox's workspace (/home/user).
  await session.files.write('data/sales.csv', csv)

  // 2. The code runs: stdout streams as it is printed.
  const run = await session.code.runCode(code, 'python', 120)
  if (!run.success) throw new Error(`${run.error.name}: ${run.error.value}\n${run.error.traceback}`)
  console.log('totals by region:')
  console.log(run.logs.stdout.join('').trimEnd())

  // 3. What comes back: the table (the last value) as HTML and text ...
  const table = run.results.find((item) => item.isMainResult)
  console.log(`table: ${table.html.includes('<table') ? 'HTML' : 'no HTML'}, text:\n${table.text}`)

  // ... and the chart, as data ...
  const figure = run.results.find((item) => item.chart?.type === 'bar')
  const chart = figure.chart
  console.log(`chart: ${chart.type} "${chart.title}", x: ${chart.x_label}, y: ${chart.y_label}`)
  for (const bar of chart.elements) console.log(`  ${bar.label}: ${bar.value}`)

  // ... and as a PNG, saved on the host, beside the one the code saved in the sandbox.
  const shown = path.join(outDir, 'sales.png')
  fs.writeFileSync(shown, Buffer.from(figure.png, 'base64'))
  const saved = path.join(outDir, 'sales-saved.png')
  fs.writeFileSync(saved, await session.files.read('data/sales.png'))
  console.log(`wrote ${shown} and ${saved}`)
} finally {
  await session.close()
}
