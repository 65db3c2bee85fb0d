// The image view: NiiVue on one canvas, the base series, window/level, view layouts, zoom and the crosshair.
import { Niivue, NVImage, SLICE_TYPE, SHOW_RENDER } from '/static/vendor/niivue/niivue.js'
import { api } from './api.js'

// CT window presets: [level, width] in Hounsfield units
export const CT_PRESETS = {
  brain: [40, 80],
  'soft tissue': [40, 350],
  abdomen: [50, 400],
  lung: [-600, 1500],
  bone: [400, 1800],
}

export const LAYOUTS = {
  axial: SLICE_TYPE.AXIAL,
  coronal: SLICE_TYPE.CORONAL,
  sagittal: SLICE_TYPE.SAGITTAL,
  mpr: SLICE_TYPE.MULTIPLANAR,
  multiplanar: SLICE_TYPE.MULTIPLANAR,
  '3d': SLICE_TYPE.RENDER,
}

// above this many voxels the page opens without the 3D tile (volume rendering on a CPU renderer is slow)
const BIG_VOXELS = 16 * 1024 * 1024

export class View {
  constructor(canvas, { onLocation, onLayout } = {}) {
    this.canvas = canvas
    this.onLocation = onLocation || (() => {})
    this.onLayout = onLayout || (() => {})
    this.layoutName = 'multiplanar'
    this.nv = new Niivue({
      backColor: [0, 0, 0, 1],
      crosshairColor: [1, 0.15, 0.15, 1],
      crosshairWidth: 1,
      crosshairWidthUnit: 'percent',
      crosshairGap: 0,
      fontMinPx: 16,
      fontSizeScaling: 0.6,
      show3Dcrosshair: true,
      isOrientationTextVisible: true,
      multiplanarShowRender: SHOW_RENDER.ALWAYS,
      dragAndDropEnabled: false,
      isColorbar: false,
      logLevel: 'warn',
      loadingText: 'loading...',
    })
    // NiiVue fills each new RGBA texture by uploading a zero-filled array (4 bytes a voxel: 314 MB for a
    // 512x512x300 CT, most of the open time on a CPU renderer), though WebGL already zero-fills texture storage
    // and NiiVue renders every layer of those textures before reading them; skip the upload
    const rgbaTex = Object.getPrototypeOf(this.nv).rgbaTex
    this.nv.rgbaTex = function (texID, activeID, dims) { return rgbaTex.call(this, texID, activeID, dims, false) }
    this.base = null
    this.series = null
    this.timings = {}
  }

  async attach() {
    this.nv.opts.deferGradient = false // as the default layout shows the 3D render
    await this.nv.attachToCanvas(this.canvas)
    this.nv.onLocationChange = (loc) => this.onLocation(loc)
  }

  // Load a series as the base volume; every overlay is dropped. A big volume opens progressively: the server's
  // block-averaged preview (at most 4 M voxels) is drawn first, then the full volume replaces it, keeping the
  // window and the crosshair. Resolves once the full volume is drawn.
  async openSeries(series) {
    const t0 = performance.now()
    const url = `/api/series/${series.id}/image`
    const res = await api(url, { params: { format: 'nifti', preview: 'true' }, as: 'response' })
    const shrink = res.headers.get('X-Deepmia-Preview') || 'none'
    const buffer = await res.arrayBuffer()
    const t1 = performance.now()
    const vol = await NVImage.loadFromUrl({ url: buffer, name: `series_${series.id}.nii.gz` })
    const t2 = performance.now()
    for (const v of [...this.nv.volumes]) this.nv.removeVolume(v)
    this.base = vol
    this.series = series
    this.autoWindow(false) // before adding: adding builds the textures once, with this window
    const factor = shrink === 'none' ? 1 : shrink.split('x').reduce((a, b) => a * Number(b), 1)
    const nvox = vol.hdr.dims[1] * vol.hdr.dims[2] * Math.max(1, vol.hdr.dims[3]) * factor
    if (this.layoutName === 'multiplanar' && nvox > BIG_VOXELS) this.layout('mpr') // no CPU-costly 3D by default
    await this.draw(vol)
    const t3 = performance.now()
    // performance.now() counts from the navigation start of this page
    this.timings = { fetchStart: t0, fetched: t1, parsed: t2, firstDraw: t3, bytes: buffer.byteLength, preview: shrink }
    if (shrink !== 'none') {
      const full = await api(url, { params: { format: 'nifti' }, as: 'buffer' })
      const big = await NVImage.loadFromUrl({ url: full, name: `series_${series.id}.nii.gz` })
      if (this.series !== series) return this.base // another series was opened meanwhile
      const where = this.crosshairMM()
      big.cal_min = this.base.cal_min
      big.cal_max = this.base.cal_max
      this.nv.removeVolume(this.base)
      this.base = big
      await this.draw(big)
      this.goTo(where)
      Object.assign(this.timings, { fullDraw: performance.now(), fullBytes: full.byteLength })
    } else {
      this.timings.fullDraw = t3
    }
    this.nv.createOnLocationChange()
    return this.base
  }

  async draw(vol) {
    this.nv.addVolume(vol)
    await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)))
    this.sync()
  }

  // wait until the GPU has done the queued work (reading one pixel back waits for it): the image is drawn
  sync() {
    const gl = this.nv.gl
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4))
  }

  isCT() {
    const m = (this.series?.modality || '').toUpperCase()
    return m === 'CT'
  }

  // [level, width] in the image's units
  setWindow(level, width) {
    if (!this.base) return
    this.base.cal_min = level - width / 2
    this.base.cal_max = level + width / 2
    this.nv.updateGLVolume()
  }

  // robust 2%..98% intensity range (NiiVue computes it on load), for MR and anything without presets
  autoWindow(update = true) {
    if (!this.base) return
    const lo = this.base.robust_min ?? this.base.global_min
    const hi = this.base.robust_max ?? this.base.global_max
    this.base.cal_min = lo
    this.base.cal_max = hi > lo ? hi : lo + 1
    if (update) this.nv.updateGLVolume()
  }

  preset(name) {
    if (name === 'auto') this.autoWindow()
    else this.setWindow(...CT_PRESETS[name])
  }

  window() {
    if (!this.base) return [0, 1]
    return [(this.base.cal_min + this.base.cal_max) / 2, this.base.cal_max - this.base.cal_min]
  }

  // 'mpr' is the three planes alone, 'multiplanar' adds the 3D render as a fourth tile
  layout(name) {
    this.layoutName = name
    const render = name === 'multiplanar' || name === '3d'
    this.nv.opts.multiplanarShowRender = render ? SHOW_RENDER.ALWAYS : SHOW_RENDER.NEVER
    // the gradient texture (lighting of the 3D render) is computed only while a 3D view is shown
    // (opts.deferGradient is deepmia's patch of NiiVue, see scripts/build_viewer.sh)
    const pending = this.nv.opts.deferGradient && render && this.nv.back
    this.nv.opts.deferGradient = !render
    if (pending) this.nv.gradientGL(this.nv.back.hdr)
    this.nv.setSliceType(LAYOUTS[name])
    this.onLayout(name)
  }

  zoom(factor) {
    const p = this.nv.scene.pan2Dxyzmm
    this.nv.setPan2Dxyzmm([p[0], p[1], p[2], Math.max(0.2, Math.min(20, p[3] * factor))])
  }

  resetZoom() {
    this.nv.setPan2Dxyzmm([0, 0, 0, 1])
  }

  // Move the crosshair to a world position (RAS mm, as the API gives it).
  goTo(mm) {
    this.nv.scene.crosshairPos = this.nv.mm2frac([mm[0], mm[1], mm[2] ?? 0])
    this.nv.drawScene()
    this.nv.createOnLocationChange()
  }

  crosshairMM() {
    return Array.from(this.nv.frac2mm(this.nv.scene.crosshairPos)).slice(0, 3)
  }
}
