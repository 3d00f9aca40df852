// SLRNet Studio mask painter: a canvas editor of label maps (class index per pixel, 255 = unknown).
//
// The server puts a JSON document into the hidden textbox #paint-load: {token, image_id, version,
// width, height (the edit size), image (data URL), labels (L PNG data URL or null), regions
// (fine to coarse, each an RGB PNG data URL: id = R + 256 G), region_level (the one to start at),
// classes [{value, name, color, key}], title} or
// {loading: true, token}. While an image or its labels load, the tools and Save are disabled.
// On Save, window.slrPainter.payload() returns JSON {token, image_id, version, png} where png is
// an RGBA PNG of the edit size: R = painted label, G = 255 where painted (else 0).
// The eraser un-paints (the pixel keeps its starting label); painting "unknown" stores 255.
(() => {
  "use strict";
  if (window.slrPainter) return;

  const UNKNOWN = 255;
  const state = {
    doc: null, loading: false, ready: false, token: null,
    W: 0, H: 0, start: null, edit: null, painted: null, spx: null, levels: [], level: 0, hoverId: -1,
    lut: new Uint8Array(256 * 3), known: new Uint8Array(256),
    tool: "brush", value: null, size: 12, strokeOpacity: 0.7, labelOpacity: 0.35,
    zoom: 1, tx: 0, ty: 0, undo: [], redo: [], op: null, last: null,
    panning: null, space: false, seenLoad: "", image: null, overlay: null, ctx: null, data: null,
  };
  const $ = (sel, root = document) => root.querySelector(sel);

  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.appendChild(c);
    return node;
  }

  function hexToRgb(hex) {
    const n = parseInt(hex.slice(1), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }

  // --- building the editor ------------------------------------------------------------------
  function build(root) {
    root.innerHTML = "";
    const palette = el("div", { class: "slr-palette", id: "slr-palette" });
    const tools = el("div", { class: "slr-tools" }, [
      toolButton("brush", "Brush (B)"), toolButton("eraser", "Eraser (E)"),
      toolButton("region", "Region (R)"), toolButton("relabel", "Relabel region (F)"),
      el("label", { class: "slr-field" }, [
        el("span", { text: "Size [ ]" }),
        el("input", { type: "range", min: "1", max: "120", value: String(state.size), id: "slr-size",
          oninput: (e) => { state.size = Number(e.target.value); status(); } }),
      ]),
      el("label", { class: "slr-field" }, [
        el("span", { text: "Stroke opacity" }),
        el("input", { type: "range", min: "0.1", max: "1", step: "0.05", value: String(state.strokeOpacity),
          id: "slr-stroke-opacity", oninput: (e) => { state.strokeOpacity = Number(e.target.value); renderAll(); } }),
      ]),
      el("label", { class: "slr-field" }, [
        el("span", { text: "Label opacity" }),
        el("input", { type: "range", min: "0", max: "1", step: "0.05", value: String(state.labelOpacity),
          id: "slr-label-opacity", oninput: (e) => { state.labelOpacity = Number(e.target.value); renderAll(); } }),
      ]),
      el("button", { type: "button", class: "slr-btn", id: "slr-undo", title: "Ctrl+Z", text: "↶ Undo",
        onclick: () => undo() }),
      el("button", { type: "button", class: "slr-btn", id: "slr-redo", title: "Ctrl+Shift+Z", text: "↷ Redo",
        onclick: () => redo() }),
      el("button", { type: "button", class: "slr-btn", id: "slr-fit", title: "fit the image (0)", text: "Fit",
        onclick: () => fit() }),
    ]);
    const stage = el("div", { class: "slr-stage", id: "slr-stage", tabindex: "0" });
    const layer = el("div", { class: "slr-layer", id: "slr-layer" });
    const image = el("img", { class: "slr-image", id: "slr-image", alt: "", draggable: "false" });
    const overlay = el("canvas", { class: "slr-overlay", id: "slr-overlay" });
    const cursor = el("div", { class: "slr-cursor", id: "slr-cursor" });
    const veil = el("div", { class: "slr-veil", id: "slr-veil", text: "Choose an image to paint." });
    const hover = el("canvas", { class: "slr-overlay slr-hover", id: "slr-hover" });
    layer.append(image, overlay, hover);
    stage.append(layer, cursor, veil);
    root.append(palette, tools, stage, el("div", { class: "slr-status", id: "slr-status" }));
    state.image = image; state.overlay = overlay;
    bindStage(stage);
    setDisabled(true);
  }

  function toolButton(tool, label) {
    return el("button", { type: "button", class: "slr-btn slr-tool", "data-tool": tool, id: `slr-tool-${tool}`,
      text: label, onclick: () => setTool(tool) });
  }

  function buildPalette(classes) {
    const palette = $("#slr-palette");
    palette.innerHTML = "";
    for (const c of classes) {
      const button = el("button", { type: "button", class: "slr-class", "data-value": String(c.value),
        title: c.key ? `${c.name} (key ${c.key})` : c.name, onclick: () => setValue(c.value) }, [
        el("span", { class: c.value === UNKNOWN ? "slr-swatch slr-swatch-unknown" : "slr-swatch",
          style: `background:${c.color}` }),
        el("span", { class: "slr-class-name", text: c.name }),
      ]);
      if (c.key) button.prepend(el("kbd", { text: c.key }));
      palette.appendChild(button);
    }
  }

  function setTool(tool) {
    state.tool = tool;
    document.querySelectorAll(".slr-tool").forEach((b) => b.classList.toggle("active", b.dataset.tool === tool));
    const cursor = $("#slr-cursor");
    if (cursor) cursor.classList.toggle("slr-cursor-region", tool === "region");
    if (tool !== "region") showHover(-1, -1);
    status();
  }

  function setValue(value) {
    state.value = value;
    document.querySelectorAll(".slr-class").forEach((b) => b.classList.toggle("active", Number(b.dataset.value) === value));
    if (state.tool === "eraser") setTool("brush");
    status();
  }

  function className(value) {
    const c = (state.doc?.classes || []).find((k) => k.value === value);
    return c ? c.name : String(value);
  }

  function status(message) {
    const node = $("#slr-status");
    if (!node) return;
    if (message) { node.textContent = message; return; }
    if (!state.ready) return;
    const what = state.tool === "eraser" ? "eraser" : `${state.tool}: ${className(state.value)}`;
    const size = state.tool === "region"
      ? `level ${state.level + 1} of ${state.levels.length} ([ finer, ] coarser)` : `size ${state.size} px`;
    node.textContent = `${state.doc.name} · ${what} · ${size} · zoom ${Math.round(state.zoom * 100)}%` +
      ` · ${state.undo.length} edit(s)`;
  }

  function setDisabled(disabled) {
    document.querySelectorAll(".slr-btn, .slr-class, #slr-size, #slr-stroke-opacity, #slr-label-opacity")
      .forEach((b) => { b.disabled = disabled; });
    document.querySelectorAll("#paint-save, #paint-clear, #paint-next").forEach((b) => {
      b.disabled = disabled;
      b.classList.toggle("slr-disabled", disabled);
    });
    const root = $("#painter");
    if (root) root.classList.toggle("slr-loading", disabled);
  }

  // --- loading ------------------------------------------------------------------------------
  // A click that reloads the editor (Start from, Next image) disables it at once, in the browser,
  // so no stroke is made in the round trip (the reload would drop it); the document that comes
  // back enables it again: a new image, or {keep: true, token} when the server refused (e.g.
  // "every image has a mask") and the open image stays as it was.
  function expectLoad() {
    if (!state.doc || !state.ready) return;
    state.ready = false; state.loading = true;
    setDisabled(true);
    const veil = $("#slr-veil");
    if (veil) { veil.style.display = "flex"; veil.textContent = "Loading…"; }
  }

  function keep(doc) {
    if (!state.doc || doc.token !== state.token) return;  // (open() clears state.doc while it loads)
    state.ready = true; state.loading = false;
    setDisabled(false);
    $("#slr-veil").style.display = "none";
  }

  function loadImage(src) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("could not decode an image"));
      img.src = src;
    });
  }

  function pixels(img, w, h) {
    const canvas = document.createElement("canvas");
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, 0, 0, w, h);
    return ctx.getImageData(0, 0, w, h).data;
  }

  async function open(doc) {
    if (doc.keep) { keep(doc); return; }
    state.ready = false; state.loading = true; state.token = doc.token; state.doc = null;
    setDisabled(true);
    const veil = $("#slr-veil");
    veil.style.display = "flex";
    veil.textContent = doc.loading ? "Loading…" : (doc.message || "Loading…");
    if (doc.loading || !doc.image) {
      // a message in place of an image (none open): only "Next image without mask" stays usable
      if (!doc.loading) {
        state.loading = false;
        $("#slr-layer").style.visibility = "hidden"; $("#slr-palette").innerHTML = "";  // nothing of the last image
        const next = $("#paint-next");
        if (next) { next.disabled = false; next.classList.remove("slr-disabled"); }
      }
      return;
    }
    try {
      const [image, labels, ...levels] = await Promise.all([
        loadImage(doc.image), doc.labels ? loadImage(doc.labels) : null, ...doc.regions.map(loadImage),
      ]);
      if (state.token !== doc.token) return; // a newer image was asked for meanwhile
      const W = doc.width, H = doc.height, N = W * H;
      state.W = W; state.H = H;
      state.start = new Uint8Array(N).fill(UNKNOWN);
      if (labels) { const p = pixels(labels, W, H); for (let i = 0; i < N; i++) state.start[i] = p[4 * i]; }
      state.levels = levels.map((picture) => {
        const s = pixels(picture, W, H), ids = new Int32Array(N);
        for (let i = 0; i < N; i++) ids[i] = s[4 * i] + 256 * s[4 * i + 1];
        return ids;
      });
      setLevel(doc.region_level || 0);
      state.edit = new Uint8Array(N).fill(UNKNOWN);
      state.painted = new Uint8Array(N);
      state.stamp = new Int32Array(N);
      state.opId = 0; state.undo = []; state.redo = [];
      state.lut.fill(0); state.known.fill(0);
      for (const c of doc.classes) {
        if (c.value === UNKNOWN) continue;
        const [r, g, b] = hexToRgb(c.display || c.color);
        state.lut.set([r, g, b], 3 * c.value); state.known[c.value] = 1;
      }
      $("#slr-layer").style.visibility = "";
      state.image.src = image.src;
      state.image.style.width = `${W}px`; state.image.style.height = `${H}px`;
      state.overlay.width = W; state.overlay.height = H;
      state.overlay.style.width = `${W}px`; state.overlay.style.height = `${H}px`;
      const layer = $("#slr-layer");
      layer.style.width = `${W}px`; layer.style.height = `${H}px`;
      state.ctx = state.overlay.getContext("2d");
      state.data = state.ctx.createImageData(W, H);
      state.doc = doc;
      buildPalette(doc.classes);
      const first = doc.classes.find((c) => c.value !== UNKNOWN && c.value !== doc.background) || doc.classes[0];
      setValue(first.value);
      setTool("brush");
      renderAll();
      fit();
      veil.style.display = "none";
      state.loading = false; state.ready = true;
      setDisabled(false);
      status();
    } catch (err) {
      if (state.token === doc.token) { state.loading = false; veil.textContent = `Could not load: ${err.message}`; }
    }
  }

  function pollLoad() {
    const box = $("#paint-load textarea") || $("#paint-load input");
    if (!box || box.value === state.seenLoad) return;
    state.seenLoad = box.value;
    if (!box.value) return;
    try { open(JSON.parse(box.value)); } catch (err) { console.error("painter: bad load document", err); }
  }

  // --- drawing ------------------------------------------------------------------------------
  function colorAt(i, out) {
    let v, alpha;
    if (state.painted[i]) { v = state.edit[i]; alpha = state.strokeOpacity; }
    else { v = state.start[i]; alpha = state.labelOpacity; }
    if (v === UNKNOWN) {
      if (state.painted[i]) { out[0] = 255; out[1] = 255; out[2] = 255; out[3] = Math.round(120 * alpha); return; }
      out[3] = 0; return;
    }
    if (!state.known[v]) { out[3] = 0; return; }
    if (v === state.doc.background) alpha *= 0.5; // background: a light shade, not a black veil
    out[0] = state.lut[3 * v]; out[1] = state.lut[3 * v + 1]; out[2] = state.lut[3 * v + 2];
    out[3] = Math.round(255 * alpha);
  }

  function renderRect(x0, y0, x1, y1) {
    if (!state.data) return;
    x0 = Math.max(0, Math.floor(x0)); y0 = Math.max(0, Math.floor(y0));
    x1 = Math.min(state.W, Math.ceil(x1)); y1 = Math.min(state.H, Math.ceil(y1));
    if (x1 <= x0 || y1 <= y0) return;
    const d = state.data.data, out = [0, 0, 0, 0];
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        const i = y * state.W + x;
        colorAt(i, out);
        d[4 * i] = out[0]; d[4 * i + 1] = out[1]; d[4 * i + 2] = out[2]; d[4 * i + 3] = out[3];
      }
    }
    state.ctx.putImageData(state.data, 0, 0, x0, y0, x1 - x0, y1 - y0);
  }

  function renderAll() { if (state.doc) renderRect(0, 0, state.W, state.H); }

  function beginOp() {
    state.opId += 1;
    state.op = { idx: [], edit: [], painted: [], box: [Infinity, Infinity, -Infinity, -Infinity] };
  }

  function setPixel(i, value, paint) {
    const op = state.op;
    if (state.stamp[i] !== state.opId) {
      state.stamp[i] = state.opId;
      op.idx.push(i); op.edit.push(state.edit[i]); op.painted.push(state.painted[i]);
    }
    state.edit[i] = paint ? value : UNKNOWN;
    state.painted[i] = paint ? 1 : 0;
    const x = i % state.W, y = (i - x) / state.W, b = op.box;
    if (x < b[0]) b[0] = x; if (y < b[1]) b[1] = y; if (x > b[2]) b[2] = x; if (y > b[3]) b[3] = y;
  }

  function endOp() {
    const op = state.op;
    state.op = null;
    if (!op || !op.idx.length) return;
    const idx = Int32Array.from(op.idx);
    const after = { edit: new Uint8Array(idx.length), painted: new Uint8Array(idx.length) };
    for (let k = 0; k < idx.length; k++) { after.edit[k] = state.edit[idx[k]]; after.painted[k] = state.painted[idx[k]]; }
    state.undo.push({ idx, before: { edit: Uint8Array.from(op.edit), painted: Uint8Array.from(op.painted) }, after,
      box: op.box });
    state.redo = [];
    status();
  }

  function applyRecord(record, side) {
    const values = record[side];
    for (let k = 0; k < record.idx.length; k++) {
      state.edit[record.idx[k]] = values.edit[k]; state.painted[record.idx[k]] = values.painted[k];
    }
    const b = record.box;
    renderRect(b[0], b[1], b[2] + 1, b[3] + 1);
  }

  function undo() {
    if (!state.ready || !state.undo.length) return;
    const record = state.undo.pop();
    applyRecord(record, "before"); state.redo.push(record); status();
  }

  function redo() {
    if (!state.ready || !state.redo.length) return;
    const record = state.redo.pop();
    applyRecord(record, "after"); state.undo.push(record); status();
  }

  function dab(cx, cy) {
    const r = state.size / 2, paint = state.tool !== "eraser";
    const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(state.H - 1, Math.ceil(cy + r));
    for (let y = y0; y <= y1; y++) {
      const dy = y + 0.5 - cy, half = Math.sqrt(Math.max(0, r * r - dy * dy));
      const x0 = Math.max(0, Math.ceil(cx - half - 0.5)), x1 = Math.min(state.W - 1, Math.floor(cx + half - 0.5));
      for (let x = x0; x <= x1; x++) setPixel(y * state.W + x, state.value, paint);
    }
    if (r < 1 && cx >= 0 && cy >= 0 && cx < state.W && cy < state.H) {
      setPixel(Math.floor(cy) * state.W + Math.floor(cx), state.value, paint);
    }
    renderRect(cx - r - 1, cy - r - 1, cx + r + 2, cy + r + 2);
  }

  function strokeTo(x, y) {
    const last = state.last;
    if (!last) { dab(x, y); state.last = [x, y]; return; }
    const dist = Math.hypot(x - last[0], y - last[1]), step = Math.max(0.5, state.size / 4);
    const n = Math.max(1, Math.ceil(dist / step));
    for (let k = 1; k <= n; k++) dab(last[0] + ((x - last[0]) * k) / n, last[1] + ((y - last[1]) * k) / n);
    state.last = [x, y];
  }

  function currentValue(i) { return state.painted[i] ? state.edit[i] : state.start[i]; }

  function setLevel(level) {
    state.level = Math.max(0, Math.min(state.levels.length - 1, level));
    state.spx = state.levels[state.level];
    state.hoverId = -1;
    status();
  }

  // the region under the cursor, outlined in white on its own canvas (region tool only)
  function showHover(x, y) {
    const hover = $("#slr-hover");
    if (!hover) return;
    const inside = state.tool === "region" && state.ready && x >= 0 && y >= 0 && x < state.W && y < state.H;
    const id = inside ? state.spx[Math.floor(y) * state.W + Math.floor(x)] : -1;
    if (id === state.hoverId) return;
    state.hoverId = id;
    if (hover.width !== state.W || hover.height !== state.H) { hover.width = state.W; hover.height = state.H; }
    const ctx = hover.getContext("2d"), out = ctx.createImageData(state.W, state.H), d = out.data;
    if (id >= 0) {
      const W = state.W, ids = state.spx;
      for (let i = 0; i < ids.length; i++) {
        if (ids[i] !== id) continue;
        const x0 = i % W;
        const edge = x0 === 0 || x0 === W - 1 || ids[i - 1] !== id || ids[i + 1] !== id ||
          ids[i - W] !== id || ids[i + W] !== id;
        d[4 * i] = d[4 * i + 1] = d[4 * i + 2] = 255; d[4 * i + 3] = edge ? 255 : 60;
      }
    }
    ctx.putImageData(out, 0, 0);
  }

  let lastPointer = [-1, -1];
  function redrawHover() { state.hoverId = -2; showHover(...lastPointer); }

  function fillSuperpixel(x, y) {
    const i = Math.floor(y) * state.W + Math.floor(x), id = state.spx[i];
    for (let j = 0; j < state.spx.length; j++) if (state.spx[j] === id) setPixel(j, state.value, true);
    const b = state.op.box; renderRect(b[0], b[1], b[2] + 1, b[3] + 1);
  }

  function fillRegion(x, y) {
    // the 4-connected region of the current label under the click
    const W = state.W, H = state.H, seed = Math.floor(y) * W + Math.floor(x), target = currentValue(seed);
    const seen = new Uint8Array(W * H), stack = [seed];
    seen[seed] = 1;
    while (stack.length) {
      const i = stack.pop();
      setPixel(i, state.value, true);
      const px = i % W;
      const next = [px > 0 ? i - 1 : -1, px < W - 1 ? i + 1 : -1, i - W, i + W];
      for (const j of next) {
        if (j >= 0 && j < W * H && !seen[j] && currentValue(j) === target) { seen[j] = 1; stack.push(j); }
      }
    }
    const b = state.op.box; renderRect(b[0], b[1], b[2] + 1, b[3] + 1);
  }

  // --- zoom, pan, pointer -------------------------------------------------------------------
  function applyTransform() {
    const layer = $("#slr-layer");
    if (layer) layer.style.transform = `translate(${state.tx}px, ${state.ty}px) scale(${state.zoom})`;
    updateCursorSize();
  }

  function fit() {
    const stage = $("#slr-stage");
    if (!stage || !state.W) return;
    const rect = stage.getBoundingClientRect();
    state.zoom = Math.min(rect.width / state.W, rect.height / state.H) || 1;
    state.tx = (rect.width - state.W * state.zoom) / 2;
    state.ty = (rect.height - state.H * state.zoom) / 2;
    applyTransform(); status();
  }

  function toImage(event) {
    const rect = $("#slr-stage").getBoundingClientRect();
    return [(event.clientX - rect.left - state.tx) / state.zoom, (event.clientY - rect.top - state.ty) / state.zoom];
  }

  function updateCursorSize() {
    const cursor = $("#slr-cursor");
    if (!cursor) return;
    const d = Math.max(2, state.size * state.zoom);
    cursor.style.width = `${d}px`; cursor.style.height = `${d}px`;
  }

  function bindStage(stage) {
    stage.addEventListener("contextmenu", (e) => e.preventDefault());
    stage.addEventListener("wheel", (event) => {
      if (!state.ready) return;
      event.preventDefault();
      const rect = stage.getBoundingClientRect();
      const mx = event.clientX - rect.left, my = event.clientY - rect.top;
      const factor = Math.exp(-event.deltaY * 0.0015), zoom = Math.min(32, Math.max(0.1, state.zoom * factor));
      state.tx = mx - ((mx - state.tx) * zoom) / state.zoom;
      state.ty = my - ((my - state.ty) * zoom) / state.zoom;
      state.zoom = zoom; applyTransform(); status();
    }, { passive: false });
    stage.addEventListener("pointerdown", (event) => {
      if (!state.ready) return;
      stage.focus({ preventScroll: true });
      if (event.button === 1 || (event.button === 0 && state.space) || event.button === 2) {
        state.panning = [event.clientX, event.clientY, state.tx, state.ty];
        stage.setPointerCapture(event.pointerId); event.preventDefault(); return;
      }
      if (event.button !== 0) return;
      const [x, y] = toImage(event);
      if (x < 0 || y < 0 || x >= state.W || y >= state.H) return;
      stage.setPointerCapture(event.pointerId);
      beginOp();
      if (state.tool === "region") { fillSuperpixel(x, y); endOp(); return; }
      if (state.tool === "relabel") { fillRegion(x, y); endOp(); return; }
      state.last = null; strokeTo(x, y);
      event.preventDefault();
    });
    stage.addEventListener("pointermove", (event) => {
      const rect = stage.getBoundingClientRect(), cursor = $("#slr-cursor");
      cursor.style.left = `${event.clientX - rect.left}px`; cursor.style.top = `${event.clientY - rect.top}px`;
      if (state.panning) {
        const [sx, sy, tx, ty] = state.panning;
        state.tx = tx + event.clientX - sx; state.ty = ty + event.clientY - sy; applyTransform(); return;
      }
      const [x, y] = toImage(event);
      if (state.op && state.last) strokeTo(x, y);
      lastPointer = [x, y];
      showHover(x, y);
    });
    const stop = () => { state.panning = null; if (state.op) { state.last = null; endOp(); } };
    stage.addEventListener("pointerup", stop);
    stage.addEventListener("pointercancel", stop);
    stage.addEventListener("pointerenter", () => { $("#slr-cursor").style.display = "block"; });
    stage.addEventListener("pointerleave", () => { $("#slr-cursor").style.display = "none"; showHover(-1, -1); });
  }

  function visible() {
    const root = $("#painter");
    return root && root.offsetParent !== null;
  }

  document.addEventListener("keydown", (event) => {
    if (!visible() || !state.ready) return;
    const t = event.target;
    // only typing in a text field keeps the keys: after a click on a radio, checkbox or slider
    // of the painter's column, its hotkeys still work
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && !["range", "checkbox", "radio"].includes(t.type)))) return;
    const key = event.key;
    if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "z") {
      event.preventDefault(); if (event.shiftKey) redo(); else undo(); return;
    }
    if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "y") { event.preventDefault(); redo(); return; }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (key === " ") { state.space = true; event.preventDefault(); return; }
    const entry = state.doc.classes.find((c) => c.key && c.key === key);
    if (entry) { setValue(entry.value); event.preventDefault(); return; }
    const size = (s) => { state.size = Math.max(1, Math.min(120, s)); $("#slr-size").value = String(state.size); updateCursorSize(); status(); };
    if ((key === "[" || key === "]") && state.tool === "region") { setLevel(state.level + (key === "]" ? 1 : -1)); redrawHover(); }
    else if (key === "[") size(state.size - Math.max(1, Math.round(state.size / 5)));
    else if (key === "]") size(state.size + Math.max(1, Math.round(state.size / 5)));
    else if (key === "b") setTool("brush");
    else if (key === "e") setTool("eraser");
    else if (key === "r") setTool("region");
    else if (key === "f") setTool("relabel");
    else if (key === "0") fit();
    else return;
    event.preventDefault();
  });
  document.addEventListener("keyup", (event) => { if (event.key === " ") state.space = false; });

  function payload() {
    if (!state.ready || state.loading || !state.doc) return JSON.stringify({ loading: true, token: state.token });
    const canvas = document.createElement("canvas");
    canvas.width = state.W; canvas.height = state.H;
    const ctx = canvas.getContext("2d");
    const data = ctx.createImageData(state.W, state.H), d = data.data;
    for (let i = 0; i < state.W * state.H; i++) {
      d[4 * i] = state.painted[i] ? state.edit[i] : 0; d[4 * i + 1] = state.painted[i] ? 255 : 0;
      d[4 * i + 2] = 0; d[4 * i + 3] = 255;
    }
    ctx.putImageData(data, 0, 0);
    return JSON.stringify({ token: state.doc.token, image_id: state.doc.image_id, version: state.doc.version,
      png: canvas.toDataURL("image/png") });
  }

  function mount() {
    const root = $("#painter");
    if (root && !root.dataset.slrBuilt) { root.dataset.slrBuilt = "1"; build(root); }
    if (root) pollLoad();
  }

  setInterval(mount, 150);
  window.slrPainter = {
    payload, expectLoad, undo, redo, setTool, setValue, state,
    // for tests and scripts: image pixel -> client point of the stage
    clientPoint: (x, y) => {
      const rect = $("#slr-stage").getBoundingClientRect();
      return [rect.left + state.tx + x * state.zoom, rect.top + state.ty + y * state.zoom];
    },
  };
})();
