// The result panels of one job: measurements, quality flags, the model card, the report.
import { api, el } from './api.js'

function table(rows, columns) {
  return el('table', { class: 'grid small' },
    el('thead', {}, el('tr', {}, columns.map((c) => el('th', {}, c)))),
    el('tbody', {}, rows.map((r) => el('tr', {}, columns.map((c) => el('td', {}, fmt(r[c])))))))
}

function fmt(v) {
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toPrecision(4)
  if (v === null || v === undefined) return ''
  return typeof v === 'object' ? JSON.stringify(v) : String(v)
}

function section(id, title, ...children) {
  return el('section', { id, class: 'result' }, el('h3', {}, title), ...children)
}

// quality results: an overall status and one row per measure; a measure that is not 'pass' or 'info' is flagged
function qualityView(data) {
  const rows = Array.isArray(data) ? data : data.measures
  if (!Array.isArray(rows)) {
    return el('table', { class: 'grid small' }, el('tbody', {},
      Object.entries(data).map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', {}, fmt(v))))))
  }
  const cols = ['name', 'value', 'unit', 'status'].filter((c) => rows.some((r) => c in r))
  const ok = new Set(['pass', 'info', 'ok', undefined])
  return el('div', {},
    data.status ? el('p', { class: ok.has(data.status) ? '' : 'error' }, `overall: ${data.status}`) : null,
    el('table', { class: 'grid small' },
      el('thead', {}, el('tr', {}, cols.map((c) => el('th', {}, c)))),
      el('tbody', {}, rows.map((r) => el('tr', {
        class: ok.has(r.status) ? '' : 'flag', title: [r.meaning, r.threshold].filter(Boolean).join('; '),
      },
        cols.map((c) => el('td', {}, fmt(r[c]))))))))
}

export async function renderResults(job, panel) {
  panel.replaceChildren()
  const outputs = job.outputs || []
  for (const out of outputs.filter((o) => o.kind === 'measurements')) {
    const rows = await api(`/api/outputs/${out.id}`)
    const cols = rows.length ? Object.keys(rows[0]) : ['case', 'target', 'quantity', 'value', 'unit']
    panel.append(section('measurements', 'Measurements', table(rows, cols)))
  }
  if (job.kind === 'quality') {
    for (const out of outputs.filter((o) => (o.media_type || '').includes('json'))) {
      panel.append(section('quality', 'Quality flags', qualityView(await api(`/api/outputs/${out.id}`))))
    }
  }
  const card = outputs.find((o) => o.kind === 'card')
  const model = job.model || job.options?.model
  let cardText = card ? await api(`/api/outputs/${card.id}`, { as: 'text' }) : ''
  if (!cardText && model) cardText = (await api(`/api/models/${encodeURIComponent(model)}`).catch(() => ({}))).card_markdown || ''
  if (cardText) {
    panel.append(section('model-card', `Model card${model ? ': ' + model : ''}`,
      el('details', {}, el('summary', {}, 'show'), el('pre', { class: 'card' }, cardText))))
  }
  const html = outputs.find((o) => o.kind === 'report_html')
  const pdf = outputs.find((o) => o.kind === 'report_pdf')
  if (html || pdf) {
    // the API forbids framing its responses (X-Frame-Options: DENY), so the report's HTML is fetched and shown
    // as srcdoc of a sandboxed frame: no script runs in it, and this page's CSP still applies
    const frame = html ? el('iframe', { class: 'report', title: 'report', sandbox: '' }) : null
    if (frame) frame.srcdoc = await api(`/api/outputs/${html.id}`, { as: 'text' })
    panel.append(section('report', 'Report',
      pdf ? el('p', {}, el('a', { href: `/api/outputs/${pdf.id}`, download: pdf.name || 'report.pdf', id: 'report-pdf' }, 'Download PDF')) : null,
      frame))
  }
  if (job.log) panel.append(section('job-log', 'Log', el('details', {}, el('summary', {}, 'show'), el('pre', {}, job.log))))
}
