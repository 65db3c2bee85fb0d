// The "run model" dialog: pick a model and a series, submit a job, follow it live (SSE, polling as fallback).
import { api, el, showError } from './api.js'

export function follow(jobId, onUpdate) {
  return new Promise((resolve) => {
    const finished = (job) => ['done', 'failed', 'cancelled'].includes(job.state)
    let polling = false
    const poll = async () => {
      polling = true
      for (;;) {
        const job = await api(`/api/jobs/${jobId}`)
        onUpdate(job)
        if (finished(job)) return resolve(job)
        await new Promise((r) => setTimeout(r, 1000))
      }
    }
    if (!window.EventSource) return poll()
    const source = new EventSource(`/api/jobs/${jobId}/events`)
    source.onmessage = (event) => {
      const job = JSON.parse(event.data)
      onUpdate(job)
      if (finished(job)) { source.close(); resolve(job) }
    }
    source.onerror = () => { source.close(); if (!polling) poll() }
  })
}

const QUALITY = '__quality'

// the job for the dialog's choice: a quality check, a registration (fixed = the series, moving) or a prediction;
// extras: {report: 'en'|'zh'|'', saliency: bool} (saliency only for a classification model)
export function jobRequest(models, name, seriesId, movingId, extras = {}) {
  if (name === QUALITY) return { kind: 'quality', series_id: seriesId }
  const task = models.find((m) => m.name === name)?.task
  const options = {}
  if (extras.report) options.report = extras.report
  if (extras.saliency && task === 'classification') options.saliency = true
  const more = Object.keys(options).length ? { options } : {}
  if (task === 'registration') {
    return { kind: 'register', model: name, series_id: seriesId, moving_series_id: movingId, ...more }
  }
  return { kind: 'predict', model: name, series_id: seriesId, ...more }
}

export class RunDialog {
  constructor(dialog, { seriesList, currentSeries, onFinished }) {
    this.dialog = dialog
    this.seriesList = seriesList
    this.currentSeries = currentSeries
    this.onFinished = onFinished
  }

  async open() {
    const models = await api('/api/models')
    const model = el('select', { id: 'run-model', name: 'model', required: true },
      models.map((m) => el('option', { value: m.name }, `${m.name} (${m.task})`)),
      el('option', { value: QUALITY }, 'quality check (no model)'))
    const seriesOptions = () => this.seriesList().map((s) => el('option', {
      value: s.id, selected: s.id === this.currentSeries()?.id,
    }, `${s.number ?? ''} ${s.description || s.modality || 'series ' + s.id}`))
    const series = el('select', { id: 'run-series', name: 'series' }, seriesOptions())
    const moving = el('select', { id: 'run-moving', name: 'moving' }, seriesOptions())
    const movingRow = el('label', { hidden: true }, 'Moving series ', moving)
    const progress = el('progress', { id: 'run-progress', max: 100, value: 0, hidden: true })
    const state = el('p', { id: 'run-state', role: 'status' })
    const error = el('p', { class: 'error', role: 'alert', hidden: true })
    const card = el('pre', { class: 'card' })
    const report = el('select', { id: 'run-report', name: 'report' },
      el('option', { value: '' }, 'none'), el('option', { value: 'en' }, 'English'), el('option', { value: 'zh' }, '中文'))
    const reportRow = el('label', {}, 'Report ', report)
    const saliency = el('input', { id: 'run-saliency', type: 'checkbox', name: 'saliency' })
    const saliencyRow = el('label', { hidden: true }, saliency, ' saliency map (Grad-CAM)')
    const showCard = () => {
      const m = models.find((x) => x.name === model.value)
      card.textContent = (m?.card_markdown || '').slice(0, 1500)
      movingRow.hidden = m?.task !== 'registration'
      saliencyRow.hidden = m?.task !== 'classification'
      reportRow.hidden = model.value === QUALITY
    }
    model.addEventListener('change', showCard)
    showCard()
    const submit = el('button', { id: 'run-submit', type: 'submit' }, 'Run')
    const close = el('button', { type: 'button', onclick: () => this.dialog.close() }, 'Close')
    const form = el('form', { method: 'dialog' },
      el('h2', {}, 'Run a model'),
      el('label', {}, 'Model ', model), el('label', {}, 'Series ', series), movingRow, reportRow, saliencyRow,
      el('details', {}, el('summary', {}, 'model card'), card),
      el('div', { class: 'buttons' }, submit, close), progress, state, error)
    form.addEventListener('submit', async (event) => {
      event.preventDefault()
      error.hidden = true
      submit.disabled = true
      try {
        const job = await api('/api/jobs', { json: jobRequest(models, model.value, Number(series.value), Number(moving.value),
          { report: report.value, saliency: saliency.checked }) })
        progress.hidden = false
        const done = await follow(job.id, (j) => {
          progress.value = j.progress ?? 0
          state.textContent = `job ${j.id}: ${j.state} ${Math.round(j.progress ?? 0)}%`
        })
        if (done.state === 'failed') showError(error, done.error || 'the job failed')
        await this.onFinished(done)
      } catch (err) {
        showError(error, err)
      } finally {
        submit.disabled = false
      }
    })
    this.dialog.replaceChildren(form)
    this.dialog.showModal()
  }
}
