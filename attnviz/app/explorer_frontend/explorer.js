// attnviz hover explorer: a Streamlit custom component v2 (attnviz/app/explorer.py).
// The payload (raw bytes, sent once per image, model and colour map) holds every query
// row of every self-attention layer as 8-bit codes with a scale per row, the package's
// pixel -> cell lookup tables and the display photo. Hovering draws from it: nothing is
// sent to the server until a pin is set or removed.

const MAGIC = "AVX1";
const PHOTO_PX = 360, MEAN_PX = 240, HEAD_PX = 200, PIN_PX = 150, THUMB_PX = 64, FOCUS_PX = 360, BAR_W = 14;
// Colour scales: where a weight v of a layer whose largest weight is zmax falls on 0..1.
// log spans three decades below zmax.
const SCALES = {
  linear: (v, zmax) => v / zmax,
  sqrt: (v, zmax) => Math.sqrt(Math.max(0, v) / zmax),
  log: (v, zmax) => (v <= zmax / 1000 ? 0 : Math.log10(v * 1000 / zmax) / 3),
};
// The scales' names, the default scale (the first) and the default share of the attention
// whose cells are coloured come in the payload (attnviz.figures.ATTENTION_SCALES, DEFAULT_MASS):
// the same as the click panel's and explain's figures, which attnviz.figures.scaled draws.

function ownBytes(data) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data.slice(0));
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  return null;
}

function parse(u8) {
  if (String.fromCharCode(...u8.subarray(0, 4)) !== MAGIC) throw new Error("not an attnviz payload");
  const headLen = new DataView(u8.buffer).getUint32(4, true);
  const p = JSON.parse(new TextDecoder().decode(u8.subarray(8, 8 + headLen)));
  const base = 8 + headLen;
  const view = (sec, T) => new T(u8.buffer, base + sec[0], sec[1] / T.BYTES_PER_ELEMENT);
  for (const L of p.layers) {
    L.rowOf = view(L.rows, Uint16Array);
    L.colOf = view(L.cols, Uint16Array);
    L.scaleOf = view(L.scale, Float32Array);
    L.codeOf = view(L.codes, Uint8Array);
    L.N = L.grid[0] * L.grid[1];
    // One colour scale per layer for this image: its largest weight over every query and head
    // (each row's codes are scaled to its own largest weight: 255 * scale).
    let top = 0;
    for (let i = 0; i < L.scaleOf.length; i++) if (L.scaleOf[i] > top) top = L.scaleOf[i];
    L.zmax = 255 * top || 1;
  }
  p.jpegBytes = u8.subarray(base + p.jpeg[0], base + p.jpeg[0] + p.jpeg[1]);
  return p;
}

function colourTable(stops) {
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 255;
    let k = 0;
    while (k < stops.length - 2 && t > stops[k + 1][0]) k++;
    const [p0, r0, g0, b0] = stops[k], [p1, r1, g1, b1] = stops[k + 1];
    const f = p1 > p0 ? Math.min(1, Math.max(0, (t - p0) / (p1 - p0))) : 0;
    lut[3 * i] = r0 + f * (r1 - r0); lut[3 * i + 1] = g0 + f * (g1 - g0); lut[3 * i + 2] = b0 + f * (b1 - b0);
  }
  return lut;
}

// The weights of query cell q of layer L, per head and their mean, exactly as decoded.
function rowsFor(L, q) {
  const heads = [], mean = new Float32Array(L.N);
  let zmax = 0;
  for (let k = 0; k < L.heads; k++) {
    const s = L.scaleOf[k * L.N + q], off = (k * L.N + q) * L.N, v = new Float32Array(L.N);
    for (let j = 0; j < L.N; j++) { v[j] = L.codeOf[off + j] * s; mean[j] += v[j] / L.heads; if (v[j] > zmax) zmax = v[j]; }
    heads.push(v);
  }
  return { heads, mean, zmax };
}

// The cells that hold ``mass`` of a map's total weight, the largest first: a Uint8Array
// flag per cell, and how many there are (mass >= 1: every cell).
function heldBy(values, mass) {
  const n = values.length, keep = new Uint8Array(n);
  if (mass >= 1) { keep.fill(1); return { keep, count: n }; }
  const order = Array.from(values.keys()).sort((a, b) => values[b] - values[a]);
  let total = 0;
  for (let j = 0; j < n; j++) total += values[j];
  let sum = 0, count = 0;
  for (const j of order) {
    if (sum >= mass * total) break;
    keep[j] = 1; sum += values[j]; count++;
  }
  return { keep, count };
}

function el(tag, cls, parent, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function canvas(parent, w, h) {
  const c = el("canvas", "", parent);
  c.width = Math.round(w); c.height = Math.round(h);
  c.style.width = `${Math.round(w)}px`; c.style.height = `${Math.round(h)}px`;
  return c;
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let root = parentElement.querySelector(".avx-root");
  if (!root) root = el("div", "avx-root", parentElement);
  const bytes = ownBytes(data);
  if (!bytes) return;
  const p = parse(bytes);
  const prev = root.__attnviz;
  const same = prev && prev.id === p.id;
  root.replaceChildren();
  root.dataset.testid = "attnviz-explorer";

  const [W, H] = p.image;
  const finest = p.layers.reduce((a, b) => (b.N > a.N ? b : a));  // the arrow keys step its cells
  const lut = colourTable(p.colorscale);
  const state = {
    id: p.id, payload: p, image: [W, H],
    query: same ? prev.query : [Math.floor(W / 2), Math.floor(H / 2)],
    pins: same ? prev.pins : p.pins.map(q => q.slice()),
    scale: prev ? prev.scale : Object.keys(p.scales)[0], mass: prev ? prev.mass : p.mass,
    focus: same && prev.focus ? prev.focus : { layer: 0, head: -1 },
    drawn: {}, latencies: same ? prev.latencies : [], messages: same ? prev.messages : 0, ready: false,
  };
  root.__attnviz = state;

  const photo = new Image();
  const aspect = H / W;
  const avail = parentElement.clientWidth || 1000;
  const photoW = Math.min(PHOTO_PX, avail);
  el("div", "avx-help", root,
    "Move the pointer over the photo: each map shows where that pixel's cell attends. " +
    "Click or tap to pin a pixel (up to " + p.max_pins + "); arrow keys move one cell, Enter pins. " +
    "Click a small map to enlarge it.");

  // Controls, in the page (no server round trip): the colour scale, and how much of the
  // attention the coloured cells hold (the rest of the photo is dimmed).
  const controls = el("div", "avx-controls", root);
  const scaleLabel = el("label", "", controls, "Colour scale ");
  const scaleSelect = el("select", "avx-scale", scaleLabel);
  for (const [k, name] of Object.entries(p.scales)) {
    const o = el("option", "", scaleSelect, name);
    o.value = k;
  }
  scaleSelect.value = state.scale;
  const massLabel = el("label", "", controls, "Colour the cells holding ");
  const massInput = el("input", "avx-mass", massLabel);
  Object.assign(massInput, { type: "range", min: "10", max: "100", step: "5", value: String(Math.round(state.mass * 100)) });
  const massText = el("span", "avx-mass-text", massLabel);
  const massNote = () => { massText.textContent = state.mass >= 1 ? " 100 % (every cell)" : ` ${Math.round(state.mass * 100)} % of the attention`; };
  massNote();

  const main = el("div", "avx-main", root);
  const photoCanvas = canvas(main, photoW, photoW * aspect);
  photoCanvas.className = "avx-photo";
  photoCanvas.tabIndex = 0;
  photoCanvas.setAttribute("aria-label", "photo: move the pointer, or use the arrow keys, to choose the query pixel");

  // The map chosen in the overview, enlarged, beside the photo; below, every layer and head at
  // once for this query (small multiples: click one to enlarge it).
  const focusBox = el("div", "avx-focus", main);
  const focusTitle = el("div", "avx-readout", focusBox);
  const focusRow = el("div", "avx-row", focusBox);
  const focusSide = Math.min(FOCUS_PX, Math.max(200, avail - photoW - 40));
  const focusCanvas = canvas(focusRow, focusSide, focusSide * aspect);
  const focusBar = el("div", "avx-bar", focusRow);
  const focusTop = el("div", "", focusBar, "");
  const focusBarCanvas = canvas(focusBar, BAR_W, focusSide * aspect);
  const focusBottom = el("div", "", focusBar, "0");
  const focusUniform = el("div", "avx-uniform", focusBar, "");
  const overview = el("div", "avx-overview", root);

  const layersBox = el("div", "avx-layers", root);
  const pinsBox = el("div", "avx-pins", root);
  const offscreen = {};

  const thumbs = p.layers.map((L, li) => {
    const row = el("div", "avx-thumbrow", overview);
    el("div", "avx-thumblabel", row, L.label);
    const cells = [];
    for (let k = -1; k < L.heads; k++) {
      const t = el("div", "avx-thumb", row);
      const c = canvas(t, THUMB_PX, THUMB_PX * aspect);
      el("div", "", t, k < 0 ? "mean" : `head ${k}`);
      t.title = `${L.label} ${k < 0 ? "mean of the heads" : "head " + k}: click to enlarge`;
      t.onclick = () => { state.focus = { layer: li, head: k }; draw(); };
      cells.push({ canvas: c, tile: t, head: k });
    }
    return cells;
  });

  const layers = p.layers.map(L => {
    const box = el("div", "avx-layer", layersBox);
    const title = el("div", "avx-readout", box);
    const row = el("div", "avx-row", box);
    const meanTile = el("div", "avx-tile", row);
    const meanCanvas = canvas(meanTile, MEAN_PX, MEAN_PX * aspect);
    const meanLabel = el("div", "", meanTile, `mean of ${L.heads} heads`);
    const bar = el("div", "avx-bar", row);
    const top = el("div", "", bar, "");
    const barCanvas = canvas(bar, BAR_W, MEAN_PX * aspect);
    const bottom = el("div", "", bar, "0");
    const uniform = el("div", "avx-uniform", bar, "");
    const headCanvases = [], headLabels = [], headBox = el("div", "avx-heads", row);
    for (let k = 0; k < L.heads; k++) {
      const t = el("div", "avx-tile", headBox);
      headCanvases.push(canvas(t, HEAD_PX, HEAD_PX * aspect));
      const q = L.quality ? L.quality[k] : null;
      headLabels.push(el("div", "", t, `head ${k}`));
      if (q) el("div", "avx-quality", t, `entropy ${q[0].toFixed(2)} · query-dep. ${q[1].toFixed(2)}`);
    }
    return { L, title, meanCanvas, meanLabel, headCanvases, headLabels, barCanvas, top, bottom, uniform, pointer: null };
  });

  function grid(L) {
    const key = `${L.grid[1]}x${L.grid[0]}`;
    if (!offscreen[key]) {
      const c = document.createElement("canvas");
      c.width = L.grid[1]; c.height = L.grid[0];
      offscreen[key] = c;
    }
    return offscreen[key];
  }

  // The photo scaled once to each size it is drawn at: a frame then copies pixels
  // instead of resampling the photo for every map.
  const scaled = {};
  function photoAt(wd, ht) {
    const key = `${wd}x${ht}`;
    if (!scaled[key]) {
      const c = document.createElement("canvas");
      c.width = wd; c.height = ht;
      c.getContext("2d").drawImage(photo, 0, 0, wd, ht);
      scaled[key] = c;
    }
    return scaled[key];
  }

  // The query's cell marked by a cross-hair whose arms stop at the cell's edges: the
  // cell's own colour (often where a head attends most) stays visible.
  function crossHair(ctx, x0, y0, cw, ch, colour) {
    const arm = Math.max(6, 1.2 * Math.max(cw, ch)), cx = x0 + cw / 2, cy = y0 + ch / 2;
    const segs = [[x0 - arm, cy, x0 - 1, cy], [x0 + cw + 1, cy, x0 + cw + arm, cy],
                  [cx, y0 - arm, cx, y0 - 1], [cx, y0 + ch + 1, cx, y0 + ch + arm]];
    for (const [wdt, col] of [[4, "black"], [2, colour || "white"]]) {
      ctx.lineWidth = wdt; ctx.strokeStyle = col; ctx.beginPath();
      for (const [a, b, c, d] of segs) { ctx.moveTo(a, b); ctx.lineTo(c, d); }
      ctx.stroke();
    }
  }

  // One map over the photo: the cells holding state.mass of its weight in colour (on the
  // layer's fixed scale), the rest of the photo dimmed. Returns how many cells are coloured.
  function paint(target, L, values, cell, outline) {
    const ctx = target.getContext("2d");
    const [h, w] = L.grid, norm = SCALES[state.scale], alpha = Math.round(255 * p.opacity);
    const { keep, count } = heldBy(values, state.mass);
    ctx.globalAlpha = 1;
    ctx.drawImage(photoAt(target.width, target.height), 0, 0);
    const off = grid(L), octx = off.getContext("2d"), img = octx.createImageData(w, h);
    for (let j = 0; j < L.N; j++) {
      if (keep[j]) {
        const i = Math.max(0, Math.min(255, Math.round(255 * norm(values[j], L.zmax))));
        img.data[4 * j] = lut[3 * i]; img.data[4 * j + 1] = lut[3 * i + 1]; img.data[4 * j + 2] = lut[3 * i + 2];
        img.data[4 * j + 3] = alpha;
      } else {
        img.data[4 * j + 3] = 150;  // black at 0.6: the photo dimmed where little attention goes
      }
    }
    octx.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, w, h, 0, 0, target.width, target.height);
    if (cell) {
      const cw = target.width / w, ch = target.height / h;
      crossHair(ctx, cell[1] * cw, cell[0] * ch, cw, ch, outline);
    }
    return count;
  }

  // The colour bar of a layer: 0 (bottom) to the layer's largest weight in this image, on the
  // chosen scale, with the uniform level 1/N drawn across it.
  const gradients = {};
  function paintBar(barCanvas, L, top, bottom, uniform) {
    const ctx = barCanvas.getContext("2d"), hgt = barCanvas.height;
    if (!gradients[hgt]) {
      const g = document.createElement("canvas");
      g.width = BAR_W; g.height = hgt;
      const gc = g.getContext("2d");
      for (let yy = 0; yy < hgt; yy++) {
        const i = Math.round(255 * (1 - yy / (hgt - 1)));
        gc.fillStyle = `rgb(${lut[3 * i]},${lut[3 * i + 1]},${lut[3 * i + 2]})`;
        gc.fillRect(0, yy, BAR_W, 1);
      }
      gradients[hgt] = g;
    }
    ctx.drawImage(gradients[hgt], 0, 0);
    top.textContent = L.zmax.toPrecision(3);
    bottom.textContent = state.scale === "log" ? (L.zmax / 1000).toPrecision(2) : "0";
    const u = 1 / L.N, at = SCALES[state.scale](u, L.zmax);
    uniform.textContent = `— 1/${L.N} uniform`;
    uniform.title = `the uniform level 1/N = ${u.toPrecision(2)}: a head that spreads evenly shows it everywhere`;
    if (at > 0 && at <= 1) {
      const yy = Math.round((1 - at) * (hgt - 1));
      ctx.fillStyle = "white"; ctx.fillRect(0, yy - 1, BAR_W, 3);
      ctx.fillStyle = "black"; ctx.fillRect(0, yy, BAR_W, 1);
    }
  }

  function cellOf(L, x, y) { return [L.rowOf[y], L.colOf[x]]; }

  function drawPhoto() {
    const ctx = photoCanvas.getContext("2d");
    ctx.drawImage(photoAt(photoCanvas.width, photoCanvas.height), 0, 0);
    const L = finest, [h, w] = L.grid, [r, c] = cellOf(L, ...state.query);
    const cw = photoCanvas.width / w, ch = photoCanvas.height / h;
    ctx.lineWidth = 3; ctx.strokeStyle = "black"; ctx.strokeRect(c * cw, r * ch, cw, ch);
    ctx.lineWidth = 1.5; ctx.strokeStyle = "white"; ctx.strokeRect(c * cw, r * ch, cw, ch);
    state.pins.forEach(([x, y], i) => {
      const px = (x + 0.5) * photoCanvas.width / W, py = (y + 0.5) * photoCanvas.height / H;
      ctx.beginPath(); ctx.arc(px, py, 6, 0, 2 * Math.PI);
      ctx.fillStyle = p.pin_colours[i]; ctx.fill();
      ctx.lineWidth = 2; ctx.strokeStyle = "white"; ctx.stroke();
    });
  }

  function held(count, L) {
    return state.mass >= 1 ? `all ${L.N} cells` :
      `${count} of ${L.N} cells hold ${Math.round(state.mass * 100)} %`;
  }

  function readout(v) {
    const L = v.L, [x, y] = state.query, d = state.drawn[L.name];
    let under = `weight at the query's own cell ${d.mean[d.cell[0] * L.grid[1] + d.cell[1]].toFixed(4)} (mean)`;
    if (v.pointer) {
      const { cell, head } = v.pointer, vals = head < 0 ? d.mean : d.heads[head];
      under = `weight under the pointer: cell (row ${cell[0]}, col ${cell[1]}) ` +
        `${vals[cell[0] * L.grid[1] + cell[1]].toFixed(4)} (${head < 0 ? "mean" : "head " + head})`;
    }
    v.title.textContent = `${L.label}: query pixel (${x}, ${y}) of ${W}×${H} → cell (row ${d.cell[0]}, ` +
      `col ${d.cell[1]}) of ${L.grid[0]}×${L.grid[1]} · ${under}`;
  }

  function draw() {
    drawPhoto();
    for (const v of layers) {
      const L = v.L, cell = cellOf(L, ...state.query), q = cell[0] * L.grid[1] + cell[1];
      const rows = rowsFor(L, q);
      const meanCount = paint(v.meanCanvas, L, rows.mean, cell);
      v.meanLabel.textContent = `mean of ${L.heads} heads: ${held(meanCount, L)}`;
      rows.heads.forEach((vals, k) => {
        const n = paint(v.headCanvases[k], L, vals, cell);
        v.headLabels[k].textContent = `head ${k}: ${held(n, L)}`;
      });
      paintBar(v.barCanvas, L, v.top, v.bottom, v.uniform);
      state.drawn[L.name] = { mean: rows.mean, heads: rows.heads, zmax: L.zmax, cell, query: state.query.slice() };
      readout(v);
    }
    drawOverview();
    root.dataset.query = state.query.join(",");
  }

  function drawOverview() {
    thumbs.forEach((cells, li) => {
      const L = p.layers[li], d = state.drawn[L.name];
      for (const t of cells) {
        paint(t.canvas, L, t.head < 0 ? d.mean : d.heads[t.head], null);
        t.tile.classList.toggle("avx-chosen", state.focus.layer === li && state.focus.head === t.head);
      }
    });
    const li = Math.min(state.focus.layer, p.layers.length - 1), L = p.layers[li], d = state.drawn[L.name];
    const head = Math.min(state.focus.head, L.heads - 1);
    const n = paint(focusCanvas, L, head < 0 ? d.mean : d.heads[head], d.cell);
    paintBar(focusBarCanvas, L, focusTop, focusBottom, focusUniform);
    focusTitle.textContent = `${L.label}, ${head < 0 ? `mean of ${L.heads} heads` : "head " + head}: ${held(n, L)}`;
  }

  function drawPins() {
    pinsBox.replaceChildren();
    state.pins.forEach(([x, y], i) => {
      const card = el("div", "avx-pin", pinsBox);
      card.style.borderColor = p.pin_colours[i];
      const head = el("div", "avx-row", card);
      el("span", "", head, `pin ${i + 1}: pixel (${x}, ${y})`);
      const rm = el("button", "", head, "×");
      rm.title = "remove this pin";
      rm.setAttribute("aria-label", `remove pin ${i + 1}`);
      rm.onclick = () => { state.pins.splice(i, 1); pinsChanged(); };
      const tiles = el("div", "avx-row", card);
      for (const v of layers) {
        const L = v.L, cell = cellOf(L, x, y), rows = rowsFor(L, cell[0] * L.grid[1] + cell[1]);
        const t = el("div", "avx-tile", tiles);
        paint(canvas(t, PIN_PX, PIN_PX * aspect), L, rows.mean, cell, p.pin_colours[i]);
        el("div", "", t, `${L.label} mean`);
      }
    });
  }

  function pinsChanged() {
    drawPins(); drawPhoto();
    state.messages++;
    setStateValue("pins", state.pins.map(q => q.slice()));
  }

  function pin() {
    const [x, y] = state.query;
    if (state.pins.some(([a, b]) => a === x && b === y)) return;
    if (state.pins.length >= p.max_pins) state.pins.shift();  // the oldest pin makes room
    state.pins.push([x, y]);
    pinsChanged();
  }

  // Pointer -> the original image's pixel under it (the app's click mapping: the pixel
  // whose area holds the pointer).
  function pixelAt(e, target) {
    const r = target.getBoundingClientRect();
    const x = Math.floor((e.clientX - r.left) * W / r.width), y = Math.floor((e.clientY - r.top) * H / r.height);
    return [Math.min(W - 1, Math.max(0, x)), Math.min(H - 1, Math.max(0, y))];
  }

  let pending = null;
  state.drawMs = same ? prev.drawMs : [];
  function frame() {
    const t0 = pending;
    pending = null;
    const start = performance.now();
    draw();
    const end = performance.now();
    if (t0 !== null) {  // from the pointer's event to this frame's maps drawn; and the drawing alone
      state.latencies.push(end - t0);
      state.drawMs.push(end - start);
      if (state.latencies.length > 2000) { state.latencies.shift(); state.drawMs.shift(); }
    }
  }
  function setQuery(q, t) {
    if (q[0] === state.query[0] && q[1] === state.query[1]) return;
    state.query = q;
    if (pending === null) requestAnimationFrame(frame);
    pending = t;
  }

  scaleSelect.addEventListener("change", () => { state.scale = scaleSelect.value; draw(); drawPins(); });
  massInput.addEventListener("input", () => {
    state.mass = Number(massInput.value) / 100; massNote(); draw(); drawPins();
  });
  photoCanvas.addEventListener("pointermove", e => setQuery(pixelAt(e, photoCanvas), e.timeStamp));
  photoCanvas.addEventListener("pointerdown", e => {
    photoCanvas.focus();
    state.query = pixelAt(e, photoCanvas);
    draw();
    pin();
  });
  photoCanvas.addEventListener("keydown", e => {
    const steps = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pin(); return; }
    if (!steps[e.key]) return;
    e.preventDefault();
    const [h, w] = finest.grid, [r, c] = cellOf(finest, ...state.query);
    const nr = Math.min(h - 1, Math.max(0, r + steps[e.key][0])), nc = Math.min(w - 1, Math.max(0, c + steps[e.key][1]));
    // the middle pixel of the neighbouring cell, as the package maps it
    let x = Math.min(W - 1, Math.floor((nc + 0.5) * W / w)), y = Math.min(H - 1, Math.floor((nr + 0.5) * H / h));
    while (x > 0 && finest.colOf[x] > nc) x--;
    while (x < W - 1 && finest.colOf[x] < nc) x++;
    while (y > 0 && finest.rowOf[y] > nr) y--;
    while (y < H - 1 && finest.rowOf[y] < nr) y++;
    setQuery([x, y], e.timeStamp);
  });
  for (const v of layers) {
    const targets = [[v.meanCanvas, -1], ...v.headCanvases.map((c, k) => [c, k])];
    for (const [c, head] of targets) {
      c.addEventListener("pointermove", e => {
        const [x, y] = pixelAt(e, c);
        v.pointer = { cell: cellOf(v.L, x, y), head };
        readout(v);
      });
      c.addEventListener("pointerleave", () => { v.pointer = null; readout(v); });
    }
  }

  const url = URL.createObjectURL(new Blob([p.jpegBytes], { type: "image/jpeg" }));
  photo.onload = () => {
    draw(); drawPins();
    state.ready = true;
    root.dataset.ready = "1";
    URL.revokeObjectURL(url);
  };
  photo.src = url;
}
