// Study page: series list, the view, the results of jobs on this study's series and the run-model dialog.
import { api, el, showError, showUser } from './api.js'
import { View } from './view.js'
import { Overlays } from './overlays.js'
import { renderResults } from './results.js'
import { RunDialog } from './jobs.js'

const studyId = Number(location.pathname.split('/').filter(Boolean).pop())
const error = document.getElementById('error')
const $ = (id) => document.getElementById(id)
let study = null
let jobs = []
let currentJob = null

const view = new View($('gl'), { onLocation: showLocation, onLayout: showLayout })
const overlays = new Overlays(view, $('overlays'), { onDetections: showDetections })
// for tests and for the console: the NiiVue instance and the page's state
window.deepmiaViewer = { view, nv: view.nv, overlays, ready: false, get job() { return currentJob } }

function fmt(x) { return Number(x).toFixed(1) }

function showLocation(loc) {
  $('coords').textContent = Array.from(loc.mm).slice(0, 3).map(fmt).join(', ')
  $('values').textContent = loc.string ? loc.string.split('=').slice(1).join('=').trim() : ''
  const [l, w] = view.window()
  if (document.activeElement !== $('level')) $('level').value = l.toPrecision(4)
  if (document.activeElement !== $('width')) $('width').value = w.toPrecision(4)
}

function showLayout(name) {
  for (const b of document.querySelectorAll('[data-layout]')) b.classList.toggle('on', b.dataset.layout === name)
}

function showDetections(dets) {
  const body = document.querySelector('#detections tbody')
  const ranked = dets.map((d, i) => ({ ...d, i })).sort((a, b) => b.score - a.score)
  body.replaceChildren(...ranked.map((d) => el('tr', {
    class: 'link', dataset: { det: d.i },
    onclick: (e) => {
      for (const r of body.children) r.classList.remove('on')
      e.currentTarget.classList.add('on')
      view.goTo(d.center_world_mm)
    },
  }, el('td', {}, d.i + 1), el('td', {}, d.label), el('td', {}, Number(d.score).toFixed(2)),
  el('td', {}, d.center_world_mm.slice(0, 3).map(fmt).join(', ')))))
  $('detections-box').hidden = false
}

async function openSeries(series) {
  overlays.clear()
  $('detections-box').hidden = true
  $('results').replaceChildren()
  for (const li of $('series').children) li.classList.toggle('on', Number(li.dataset.series) === series.id)
  await view.openSeries(series)
  $('preset').value = 'auto'
  showLocation({ mm: view.crosshairMM() })
}

async function openJob(job) {
  currentJob = job
  for (const li of $('jobs').children) li.classList.toggle('on', Number(li.dataset.job) === job.id)
  const series = study.series.find((s) => s.id === job.series_id)
  if (series && view.series?.id !== series.id) await openSeries(series)
  overlays.clear()
  $('detections-box').hidden = true
  const labels = await labelNames(job.model)
  for (const out of job.outputs || []) await overlays.add({ ...out, labels })
  await renderResults(job, $('results'))
}

// names of a segmentation model's labels from its plan ({"0": "background", "1": ...}), by label value
async function labelNames(model) {
  if (!model) return []
  const info = await api(`/api/models/${encodeURIComponent(model)}`).catch(() => null)
  const names = []
  for (const [value, name] of Object.entries(info?.plan?.labels || {})) names[Number(value)] = name
  return names
}

function jobItem(job) {
  const series = study.series.find((s) => s.id === job.series_id)
  const what = job.model || job.options?.model || job.kind
  return el('li', { class: `job ${job.state}`, dataset: { job: job.id, state: job.state },
    onclick: () => job.state === 'done' && openJob(job).catch((e) => showError(error, e)) },
  `#${job.id} ${what} on ${series?.description || 'series ' + job.series_id}: ${job.state}`)
}

async function loadJobs() {
  const ids = new Set(study.series.map((s) => s.id))
  const all = []
  for (let page = 1; page < 50; page++) {
    const data = await api('/api/jobs', { params: { page } })
    all.push(...data.items)
    if (!data.items.length || all.length >= data.total) break
  }
  jobs = all.filter((j) => ids.has(j.series_id)).sort((a, b) => b.id - a.id)
  $('jobs').replaceChildren(...jobs.map(jobItem))
}

function wireToolbar() {
  for (const b of document.querySelectorAll('[data-layout]')) {
    b.addEventListener('click', () => view.layout(b.dataset.layout))
  }
  $('zoom-in').addEventListener('click', () => view.zoom(1.25))
  $('zoom-out').addEventListener('click', () => view.zoom(0.8))
  $('zoom-reset').addEventListener('click', () => view.resetZoom())
  $('preset').addEventListener('change', (e) => { view.preset(e.target.value); showLocation({ mm: view.crosshairMM() }) })
  const manual = () => {
    const l = Number($('level').value)
    const w = Number($('width').value)
    if (Number.isFinite(l) && w > 0) view.setWindow(l, w)
  }
  $('level').addEventListener('change', manual)
  $('width').addEventListener('change', manual)
  const dialog = new RunDialog($('run-dialog'), {
    seriesList: () => study.series,
    currentSeries: () => view.series,
    onFinished: async (job) => {
      await loadJobs()
      if (job.state === 'done') await openJob(job)
    },
  })
  $('run-open').addEventListener('click', () => dialog.open().catch((e) => showError(error, e)))
}

async function main() {
  performance.mark('main')
  await showUser($('user'))
  study = await api(`/api/studies/${studyId}`)
  performance.mark('study')
  $('study-title').textContent =
    `${study.patient_id ?? ''} ${study.study_date ?? ''} ${study.modality ?? ''} ${study.description ?? ''}`
  document.title = `deepmia: ${study.description || 'study ' + study.id}`
  $('series').replaceChildren(...study.series.map((s) => el('li', {
    dataset: { series: s.id }, class: 'link',
    onclick: () => openSeries(s).catch((e) => showError(error, e)),
  }, `${s.number ?? ''} ${s.description || s.modality}${s.rows ? ` (${s.columns}x${s.rows}x${s.n_instances})` : ''}`)))
  wireToolbar()
  await view.attach()
  performance.mark('attached')
  const wanted = Number(new URLSearchParams(location.search).get('series'))
  const first = study.series.find((s) => s.id === wanted) || study.series[0]
  if (first) await openSeries(first)
  await loadJobs()
  window.deepmiaViewer.ready = true
  document.body.dataset.ready = 'true'
}

// free the GPU textures at once when leaving (a big volume's took minutes to tear down on a CPU renderer)
window.addEventListener('pagehide', () => view.nv.gl?.getExtension('WEBGL_lose_context')?.loseContext())

main().catch((e) => { if (e.status !== 401) showError(error, e) })
