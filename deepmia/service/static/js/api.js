// The REST API as the pages use it: same-origin fetch with the session cookie, the CSRF header on unsafe
// methods (the value of the deepmia_csrf cookie) and a redirect to /login when the session is missing.

export function cookie(name) {
  const hit = document.cookie.split('; ').find((c) => c.startsWith(name + '='))
  return hit ? decodeURIComponent(hit.slice(name.length + 1)) : ''
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`)
    this.status = status
    this.detail = detail
  }
}

export function toLogin() {
  const next = encodeURIComponent(location.pathname + location.search)
  location.assign(`/login?next=${next}`)
}

// api('/api/studies', {params, json, form, method, as: 'json'|'buffer'|'text'|'response'})
export async function api(path, opts = {}) {
  const method = opts.method || (opts.json || opts.form ? 'POST' : 'GET')
  const url = new URL(path, location.origin)
  for (const [k, v] of Object.entries(opts.params || {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v)
  }
  const headers = {}
  let body
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json'
    body = JSON.stringify(opts.json)
  } else if (opts.form) {
    body = opts.form
  }
  if (!['GET', 'HEAD'].includes(method)) headers['X-CSRF-Token'] = cookie('deepmia_csrf')
  const res = await fetch(url, { method, headers, body, credentials: 'same-origin' })
  if (res.status === 401 && !opts.noRedirect) {
    toLogin()
    throw new ApiError(401, 'not logged in')
  }
  if (!res.ok) {
    let detail = res.statusText
    try { detail = (await res.json()).detail ?? detail } catch { /* not JSON */ }
    throw new ApiError(res.status, detail)
  }
  const as = opts.as || 'json'
  if (as === 'response') return res
  if (as === 'buffer') return res.arrayBuffer()
  if (as === 'text') return res.text()
  return res.status === 204 ? null : res.json()
}

// small DOM helper: el('td', {class: 'x', onclick}, 'text', child)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v)
    else if (k === 'dataset') Object.assign(node.dataset, v)
    else node.setAttribute(k, v === true ? '' : v)
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue
    node.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return node
}

export async function showUser(target) {
  const me = await api('/api/me')
  target.replaceChildren(
    el('span', { id: 'me' }, `${me.user} (${me.role})`), ' ',
    el('button', {
      type: 'button', class: 'link',
      onclick: async () => { await api('/api/auth/logout', { method: 'POST', noRedirect: true }).catch(() => {}); toLogin() },
    }, 'Log out'))
  return me
}

export function showError(target, err) {
  target.textContent = err instanceof ApiError ? `Error ${err.message}` : String(err)
  target.hidden = false
}
