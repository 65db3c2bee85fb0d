// Login page: POST the form to /api/auth/login (sets the session and CSRF cookies), then go where we came from.
import { api, showError } from './api.js'

const form = document.getElementById('login-form')
const error = document.getElementById('login-error')

function nextPage() {
  const next = new URLSearchParams(location.search).get('next') || '/'
  // only a path on this server: never an absolute URL to elsewhere
  return next.startsWith('/') && !next.startsWith('//') ? next : '/'
}

form.addEventListener('submit', async (event) => {
  event.preventDefault()
  error.hidden = true
  try {
    await api('/api/auth/login', { form: new FormData(form), noRedirect: true })
    location.assign(nextPage())
  } catch (err) {
    showError(error, err.status === 401 ? 'Unknown user or wrong token.' : err)
  }
})
