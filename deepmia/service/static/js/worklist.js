// Worklist: the studies, paged, sorted by a column header (click again to reverse), filtered; upload new ones.
import { api, el, showError, showUser } from './api.js'

const SIZE = 25
const state = { page: 1, sort: '-date', patient: '', modality: '', q: '' }
const body = document.querySelector('#studies tbody')
const error = document.getElementById('error')
const status = document.getElementById('status')

async function load() {
  error.hidden = true
  try {
    const data = await api('/api/studies', { params: { ...state, size: SIZE } })
    body.replaceChildren(...data.items.map(row))
    if (!data.items.length) body.append(el('tr', {}, el('td', { colspan: 6 }, 'No studies.')))
    const pages = Math.max(1, Math.ceil(data.total / SIZE))
    document.getElementById('page-info').textContent = `page ${state.page} of ${pages}, ${data.total} studies`
    document.getElementById('prev').disabled = state.page <= 1
    document.getElementById('next').disabled = state.page >= pages
    for (const th of document.querySelectorAll('th[data-sort]')) {
      const key = th.dataset.sort
      th.classList.toggle('asc', state.sort === key)
      th.classList.toggle('desc', state.sort === '-' + key)
    }
  } catch (err) {
    showError(error, err)
  }
}

function row(s) {
  const open = () => location.assign(`/study/${s.id}`)
  return el('tr', { class: 'link', dataset: { study: s.id }, onclick: open },
    el('td', {}, s.patient_id ?? ''), el('td', {}, s.study_date ?? ''), el('td', {}, s.modality ?? ''),
    el('td', {}, el('a', { href: `/study/${s.id}` }, s.description || '(no description)')),
    el('td', { class: 'num' }, s.n_series ?? ''), el('td', { class: 'uid' }, s.study_uid ?? ''))
}

document.getElementById('filters').addEventListener('submit', (event) => {
  event.preventDefault()
  for (const key of ['patient', 'modality', 'q']) state[key] = document.getElementById('f-' + key).value.trim()
  state.page = 1
  load()
})
document.getElementById('prev').addEventListener('click', () => { state.page -= 1; load() })
document.getElementById('next').addEventListener('click', () => { state.page += 1; load() })
for (const th of document.querySelectorAll('th[data-sort]')) {
  th.addEventListener('click', () => {
    const key = th.dataset.sort
    state.sort = state.sort === key ? '-' + key : key
    load()
  })
}
document.getElementById('upload').addEventListener('change', async (event) => {
  const files = [...event.target.files]
  if (!files.length) return
  const form = new FormData()
  for (const f of files) form.append('files', f, f.name)
  status.textContent = `Uploading ${files.length} file(s)...`
  try {
    const deid = document.getElementById('deid').checked
    const res = await api('/api/uploads', { form, params: { deid: deid ? 'true' : '' } })
    status.textContent = `Uploaded: ${res.studies.length} study(ies), ${res.series.length} series.`
    load()
  } catch (err) {
    status.textContent = ''
    showError(error, err)
  }
  event.target.value = ''
})

showUser(document.getElementById('user')).then(load, () => {})
