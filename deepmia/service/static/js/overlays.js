// Overlays of results on the base volume: label maps, detection boxes, saliency maps, registration (warped).
import { NVImage } from '/static/vendor/niivue/niivue.js'
import { api, el } from './api.js'

// distinct colours for labels 1..n (label 0 is background, transparent); cycles past the end
export const LABEL_COLOURS = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40],
]
const RGB_TYPES = new Set([128, 2304]) // NIfTI DT_RGB24, DT_RGBA32
const OPAQUE_GRAY = { R: [0, 0, 255], G: [0, 0, 255], B: [0, 0, 255], A: [0, 255, 255], I: [0, 1, 255] }

export function colourOf(label) {
  return LABEL_COLOURS[(label - 1) % LABEL_COLOURS.length]
}

export function labelLut(n, names = [], hidden = new Set()) {
  const cm = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: ['background'] }
  for (let v = 1; v <= n; v++) {
    const [r, g, b] = colourOf(v)
    cm.R.push(r); cm.G.push(g); cm.B.push(b); cm.A.push(hidden.has(v) ? 0 : 255); cm.I.push(v)
    cm.labels.push(names[v] || `label ${v}`)
  }
  return cm
}

function maxValue(img) {
  let mx = 0
  for (let i = 0; i < img.length; i++) if (img[i] > mx) mx = img[i]
  return Math.round(mx)
}

// a uint8 volume on the base grid, all zero (also for an RGB base, whose img holds 3-4 bytes a voxel)
function zerosOnGrid(base) {
  const vol = base.clone()
  const [, nx, ny, nz] = base.hdr.dims
  vol.img = new Uint8Array(nx * ny * Math.max(1, nz))
  vol.hdr = { ...vol.hdr, datatypeCode: 2, numBitsPerVoxel: 8, intent_code: 0, scl_slope: 1, scl_inter: 0 }
  return vol
}

// native voxel position (the order of img) of a world position: NiiVue's mm2vox answers in its RAS-reordered
// voxel space, toRASvox maps that back to the stored order (as NiiVue's own getValue does)
export function nativeVox(vol, mm) {
  const v = vol.mm2vox(mm, true)
  const p = vol.permRAS
  if (p[0] === 1 && p[1] === 2 && p[2] === 3) return [v[0], v[1], v[2]]
  const m = vol.toRASvox // gl-matrix mat4, column-major
  return [0, 1, 2].map((r) => m[r] * v[0] + m[4 + r] * v[1] + m[8 + r] * v[2] + m[12 + r])
}

// voxel index box of a world-mm box on the base grid: [[i0, j0, k0], [i1, j1, k1]], clamped to the grid
export function voxelBox(base, boxMM) {
  const [x0, y0, z0, x1, y1, z1] = boxMM
  const zs = [z0 ?? 0, z1 ?? 0]
  const corners = []
  for (const x of [x0, x1]) for (const y of [y0, y1]) for (const z of zs) corners.push(nativeVox(base, [x, y, z]))
  const dims = base.hdr.dims
  const lo = [0, 1, 2].map((a) => Math.max(0, Math.min(...corners.map((c) => c[a]))))
  const hi = [0, 1, 2].map((a) => Math.min(Math.max(1, dims[a + 1]) - 1, Math.max(...corners.map((c) => c[a]))))
  return [lo.map(Math.round), hi.map(Math.round)]
}

// draw each box's outline (all slices it spans) into a label volume, value = class number
export function boxOutlines(base, detections, classes) {
  const vol = zerosOnGrid(base)
  const [, nx, ny] = base.hdr.dims
  const t = Math.max(1, Math.round(Math.min(nx, ny) / 300))
  const put = (i, j, k, v) => { if (i >= 0 && j >= 0 && i < nx && j < ny) vol.img[i + j * nx + k * nx * ny] = v }
  for (const d of detections) {
    const v = classes.indexOf(d.label) + 1
    const [[i0, j0, k0], [i1, j1, k1]] = voxelBox(base, d.box_world_mm)
    for (let k = k0; k <= k1; k++) {
      for (let w = 0; w < t; w++) {
        for (let i = i0; i <= i1; i++) { put(i, j0 + w, k, v); put(i, j1 - w, k, v) }
        for (let j = j0; j <= j1; j++) { put(i0 + w, j, k, v); put(i1 - w, j, k, v) }
      }
    }
  }
  return vol
}

export class Overlays {
  constructor(view, panel, { onDetections } = {}) {
    this.view = view
    this.panel = panel
    this.onDetections = onDetections || (() => {})
    this.items = new Map() // output id -> {vol, kind, opacity, visible}
    view.nv.addColormap('deepmia_gray', OPAQUE_GRAY)
  }

  clear() {
    for (const item of this.items.values()) {
      if (this.view.nv.volumes.includes(item.vol)) this.view.nv.removeVolume(item.vol)
    }
    this.items.clear()
    this.panel.replaceChildren()
  }

  async add(output) {
    if (this.items.has(output.id) || !this.view.base) return
    const loaders = {
      label_map: () => this.labelMap(output),
      saliency: () => this.heatmap(output),
      detections: () => this.detections(output),
      warped: () => this.warped(output),
    }
    if (loaders[output.kind]) await loaders[output.kind]()
  }

  async volumeOf(output) {
    const buffer = await api(`/api/outputs/${output.id}`, { as: 'buffer' })
    const name = /\.nii(\.gz)?$/.test(output.name || '') ? output.name : `output_${output.id}.nii.gz`
    return NVImage.loadFromUrl({ url: buffer, name })
  }

  show(output, vol, opacity, extra = []) {
    vol.opacity = opacity
    this.view.nv.addVolume(vol)
    const item = { vol, kind: output.kind, opacity, visible: true }
    this.items.set(output.id, item)
    const apply = () => { vol.opacity = item.visible ? item.opacity : 0; this.view.nv.updateGLVolume() }
    const toggle = el('input', {
      type: 'checkbox', class: 'overlay-toggle', checked: true, dataset: { output: output.id },
      onchange: (e) => { item.visible = e.target.checked; apply() },
    })
    const slider = el('input', {
      type: 'range', min: 0, max: 100, value: Math.round(opacity * 100), class: 'overlay-opacity',
      dataset: { output: output.id }, oninput: (e) => { item.opacity = e.target.value / 100; apply() },
    })
    toggle.checked = true
    this.panel.append(el('div', { class: 'overlay', dataset: { output: output.id, kind: output.kind } },
      el('label', {}, toggle, ` ${output.kind.replace('_', ' ')}: ${output.name || output.id}`),
      el('label', { class: 'opacity' }, 'opacity ', slider), ...extra))
    return item
  }

  async labelMap(output) {
    const vol = await this.volumeOf(output)
    const n = maxValue(vol.img)
    const hidden = new Set()
    const names = output.labels || []
    vol.setColormapLabel(labelLut(n, names, hidden))
    const legend = el('ul', { class: 'legend' })
    for (let v = 1; v <= n; v++) {
      const [r, g, b] = colourOf(v)
      const box = el('input', {
        type: 'checkbox', checked: true, class: 'label-toggle', dataset: { label: v },
        onchange: (e) => {
          if (e.target.checked) hidden.delete(v); else hidden.add(v)
          vol.setColormapLabel(labelLut(n, names, hidden))
          this.view.nv.updateGLVolume()
        },
      })
      box.checked = true
      legend.append(el('li', {}, el('label', {}, box,
        el('span', { class: 'swatch', style: `background: rgb(${r},${g},${b})` }), ` ${names[v] || 'label ' + v}`)))
    }
    this.show(output, vol, 0.5, [legend])
  }

  async heatmap(output) {
    const vol = await this.volumeOf(output)
    vol.colormap = 'warm'
    // the lowest tenth of the saliency stays transparent, so the anatomy shows through
    vol.cal_min = vol.global_min + 0.1 * (vol.global_max - vol.global_min)
    vol.cal_max = vol.global_max
    this.show(output, vol, 0.6)
  }

  async detections(output) {
    const dets = await api(`/api/outputs/${output.id}`)
    const classes = [...new Set(dets.map((d) => d.label))].sort()
    const vol = boxOutlines(this.view.base, dets, classes)
    vol.setColormapLabel(labelLut(classes.length, ['background', ...classes]))
    const legend = el('ul', { class: 'legend' }, classes.map((c, i) => {
      const [r, g, b] = colourOf(i + 1)
      return el('li', {}, el('span', { class: 'swatch', style: `background: rgb(${r},${g},${b})` }), ` ${c}`)
    }))
    this.show(output, vol, 1, [legend])
    this.onDetections(dets, classes)
  }

  async warped(output) {
    const vol = await this.volumeOf(output)
    vol.colormap = 'deepmia_gray'
    vol.cal_min = this.view.base.cal_min
    vol.cal_max = this.view.base.cal_max
    const item = this.show(output, vol, 0.5)
    const original = vol.img.slice()
    const floor = lowestOf(vol.img)
    const checker = el('input', {
      type: 'checkbox', class: 'checkerboard', dataset: { output: output.id },
      onchange: (e) => {
        vol.img = e.target.checked ? checkerboard(vol, original, floor) : original.slice()
        item.visible = true
        this.view.nv.updateGLVolume()
      },
    })
    this.panel.lastChild.append(el('label', {}, checker, ' checkerboard (fixed | warped)'),
      el('p', { class: 'hint' }, 'opacity is the blend: 0 = fixed, 100 = warped'))
  }
}

// the lowest value the image's type holds: below any window, so drawn transparent by the deepmia_gray colormap
function lowestOf(img) {
  const lows = { Int8Array: -128, Int16Array: -32768, Int32Array: -2147483648, Float32Array: -3.0e38, Float64Array: -3.0e38 }
  return lows[img.constructor.name] ?? 0
}

// the warped image in alternate blocks of about 16 voxels, the fixed one (underneath) in the others
export function checkerboard(vol, original, floor) {
  const [, nx, ny, nz] = vol.hdr.dims
  const b = Math.max(4, Math.round(Math.min(nx, ny) / 8))
  const img = original.slice()
  for (let k = 0; k < Math.max(1, nz); k++) {
    for (let j = 0; j < ny; j++) {
      for (let i = 0; i < nx; i++) {
        if (((Math.floor(i / b) + Math.floor(j / b) + Math.floor(k / b)) & 1) === 1) img[i + j * nx + k * nx * ny] = floor
      }
    }
  }
  return img
}
