// facelandmarks web page: upload a photo, GIF or short video to the service on this origin and show the faces.
// Photos: POST /faces (JSON), drawn here on a canvas (boxes, scores, 68 points, optional point numbers); when the
// browser cannot decode the photo, POST /annotate draws it on the server. GIFs and videos: POST /annotate_gif.
// Plain JavaScript, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#00e676", "#ffea00", "#00b0ff", "#ff4081", "#ff9100", "#d500f9", "#76ff03", "#18ffff"];
const state = { info: null, file: null, faces: null, image: null, urls: [] };

function setState(name, message) {
  document.body.dataset.state = name;
  $("status").textContent = message || "";
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  setState("error", "");
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function mib(bytes) {
  return (bytes / 1048576).toFixed(1) + " MiB";
}

// The message of an API refusal: BentoML answers {"error": ...} or [{"error": ...}]; the size limit of the
// service's middleware answers {"error": ...}; anything else is shown as text.
async function refusal(resp, name) {
  let detail = "";
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    const first = Array.isArray(body) ? body[0] : body;
    detail = (first && (first.error || first.detail)) || text;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
  } catch (e) {
    detail = text;
  }
  const what = resp.status === 413 ? "is over the service's limits" : resp.status === 400 ? "was refused" : "failed";
  return `"${name}" ${what} (HTTP ${resp.status} ${resp.statusText}): ${detail.trim()}`;
}

async function post(path, field, file) {
  const form = new FormData();
  form.append(field, file, file.name);
  try {
    return await fetch(path, { method: "POST", body: form });
  } catch (e) {
    throw new Error(`Could not send "${file.name}" to the service (${e.message}).`);
  }
}

// --- model and limits ---------------------------------------------------------------------------------------

async function loadInfo() {
  try {
    const resp = await fetch("/info", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const info = await resp.json();
    state.info = info;
    const reg = info.registry ? `${info.registry.name} version ${info.registry.version}` : "not from the registry";
    const sha = info.checkpoint_sha256 ? info.checkpoint_sha256.slice(0, 12) : "unknown";
    $("model").innerHTML = "";
    const parts = [
      ["Model", reg],
      ["backbone", `${info.backbone} (${info.head} head, ${info.input_size} px)`],
      ["checkpoint", sha],
      ["device", info.device],
    ];
    parts.forEach(([k, v], i) => {
      if (i) $("model").append(" \u00b7 ");
      const b = document.createElement("b");
      b.textContent = v;
      $("model").append(`${k}: `, b);
    });
    $("model").title = `${info.source || info.model_uri}\n${info.model_uri}\nsha256 ${info.checkpoint_sha256}`;
    $("model").dataset.sha256 = info.checkpoint_sha256 || "";
    const L = info.limits;
    $("limits").textContent =
      `Limits: ${L.max_upload_mb} MiB per upload, ${(L.max_pixels / 1e6).toFixed(1)} megapixels per photo or frame; ` +
      `GIFs and videos: the first ${L.max_frames} frames at ${L.fps} frames/s, shown at ${L.max_side} px.`;
  } catch (e) {
    $("model").textContent = `Could not ask the service which model it serves (${e.message}).`;
  }
}

// --- drawing ------------------------------------------------------------------------------------------------

function draw() {
  const img = state.image;
  const faces = state.faces || [];
  const canvas = $("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const side = Math.max(canvas.width, canvas.height);
  const unit = Math.max(1, side / 600); // line width and point size grow with the photo
  const boxes = $("show-boxes").checked;
  const numbers = $("show-numbers").checked;
  faces.forEach((face, i) => {
    const color = COLORS[i % COLORS.length];
    const [x0, y0, x1, y1] = face.box;
    if (boxes) {
      ctx.strokeStyle = color;
      ctx.lineWidth = 2 * unit;
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      const label = `${i + 1}: ${face.score.toFixed(3)}`;
      ctx.font = `${Math.round(14 * unit)}px sans-serif`;
      const w = ctx.measureText(label).width + 6 * unit;
      const h = 18 * unit;
      const ty = y0 - h >= 0 ? y0 - h : y0;
      ctx.fillStyle = color;
      ctx.fillRect(x0, ty, w, h);
      ctx.fillStyle = "#000";
      ctx.textBaseline = "middle";
      ctx.fillText(label, x0 + 3 * unit, ty + h / 2);
    }
    // points: pixel centres at integers, so a point (x, y) is drawn around the centre of pixel (x, y);
    // their size and the numbers' size follow the face's size
    const faceSide = Math.max(x1 - x0, y1 - y0);
    const r = Math.max(1.2, faceSide / 90);
    ctx.fillStyle = color;
    for (const [x, y] of face.landmarks) {
      ctx.beginPath();
      ctx.arc(x + 0.5, y + 0.5, r, 0, 2 * Math.PI);
      ctx.fill();
    }
    if (numbers) {
      const size = Math.max(7, faceSide / 24);
      ctx.font = `${size.toFixed(1)}px sans-serif`;
      ctx.textBaseline = "bottom";
      ctx.lineWidth = Math.max(1.5, size / 5);
      ctx.strokeStyle = "#000";
      ctx.fillStyle = "#fff";
      face.landmarks.forEach(([x, y], k) => {
        ctx.strokeText(String(k + 1), x + r, y);
        ctx.fillText(String(k + 1), x + r, y);
      });
    }
  });
}

// --- results and downloads ----------------------------------------------------------------------------------

function stem(name) {
  const dot = name.lastIndexOf(".");
  return (dot > 0 ? name.slice(0, dot) : name).replace(/[^\w.-]+/g, "_") || "upload";
}

function link(label, blob, filename, cls) {
  const url = URL.createObjectURL(blob);
  state.urls.push(url);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  a.textContent = label;
  if (cls) a.className = cls;
  $("downloads").append(a);
  return a;
}

// One face as a 300-W .pts file: "version: 1", "n_points: K", "{", K lines "x y", "}". 300-W's coordinates
// are 1-based, so 1 is added to the service's 0-based pixels (as facelandmarks.io.pts.write_pts writes them).
function ptsText(landmarks) {
  const lines = ["version: 1", `n_points:  ${landmarks.length}`, "{"];
  for (const [x, y] of landmarks) lines.push(`${(x + 1).toFixed(6)} ${(y + 1).toFixed(6)}`);
  lines.push("}");
  return lines.join("\n") + "\n";
}

function resetResult() {
  state.urls.forEach((u) => URL.revokeObjectURL(u));
  state.urls = [];
  state.faces = null;
  state.image = null;
  $("downloads").innerHTML = "";
  $("faces").innerHTML = "";
  $("face-count").textContent = "";
  $("face-count").dataset.count = "0";
  $("canvas").hidden = true;
  $("annotated").hidden = true;
  $("annotated").removeAttribute("src");
  $("result").hidden = true;
}

function showFaces(file, faces, width, height) {
  const n = faces.length;
  $("face-count").textContent = n === 0 ? "No face found" : n === 1 ? "1 face" : `${n} faces`;
  $("face-count").dataset.count = String(n);
  faces.forEach((f, i) => {
    const li = document.createElement("li");
    const b = f.box.map((v) => v.toFixed(1)).join(", ");
    li.textContent = `score ${f.score.toFixed(3)}, box [${b}], ${f.landmarks.length} points`;
    li.style.borderLeft = `6px solid ${COLORS[i % COLORS.length]}`;
    li.style.paddingLeft = "0.4rem";
    $("faces").append(li);
  });
  const s = stem(file.name);
  const info = state.info || {};
  const doc = {
    file: file.name,
    width,
    height,
    coordinates: "photo pixels, 0-based, pixel centres at integers",
    scheme: info.scheme || "ibug68",
    model: info.registry
      ? { registry: info.registry, checkpoint_sha256: info.checkpoint_sha256 }
      : { model_uri: info.model_uri, checkpoint_sha256: info.checkpoint_sha256 },
    faces,
  };
  const json = new Blob([JSON.stringify(doc, null, 1)], { type: "application/json" });
  link("JSON", json, `${s}.json`, "download-json");
  faces.forEach((f, i) => {
    link(`.pts face ${i + 1}`, new Blob([ptsText(f.landmarks)], { type: "text/plain" }), `${s}_${i + 1}.pts`,
      "download-pts");
  });
  $("result").hidden = false;
}

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    const url = URL.createObjectURL(file);
    state.urls.push(url);
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show this image"));
    img.src = url;
  });
}

async function photo(file) {
  setState("busy", `Finding faces in "${file.name}"\u2026`);
  const resp = await post("/faces", "image", file);
  if (!resp.ok) throw new Error(await refusal(resp, file.name));
  const faces = await resp.json();
  state.faces = faces;
  try {
    state.image = await loadImage(file);
    draw();
    $("canvas").hidden = false;
    showFaces(file, faces, state.image.naturalWidth, state.image.naturalHeight);
  } catch (e) {
    // e.g. a TIFF: the service read it, the browser cannot; let the service draw it
    const drawn = await post("/annotate", "image", file);
    if (!drawn.ok) throw new Error(await refusal(drawn, file.name));
    const url = URL.createObjectURL(await drawn.blob());
    state.urls.push(url);
    $("annotated").src = url;
    $("annotated").hidden = false;
    showFaces(file, faces, null, null);
  }
  setState("done", `Done: "${file.name}".`);
}

async function clip(file) {
  setState("busy", `Landmarking the frames of "${file.name}" (this takes a while)\u2026`);
  const resp = await post("/annotate_gif", "media", file);
  if (!resp.ok) throw new Error(await refusal(resp, file.name));
  const gif = await resp.blob();
  const url = URL.createObjectURL(gif);
  state.urls.push(url);
  $("annotated").src = url;
  $("annotated").hidden = false;
  $("face-count").textContent = "Annotated GIF";
  link("annotated GIF", gif, `${stem(file.name)}_landmarks.gif`, "download-gif");
  $("result").hidden = false;
  setState("done", `Done: "${file.name}".`);
}

function isClip(file) {
  const name = file.name.toLowerCase();
  return file.type === "image/gif" || file.type.startsWith("video/") || /\.(gif|mp4|mov|avi|webm|mkv|m4v)$/.test(name);
}

async function handle(file) {
  if (!file) return;
  if (document.body.dataset.state === "busy") return;
  clearError();
  resetResult();
  state.file = file;
  const limit = state.info && state.info.limits.max_upload_mb;
  if (limit && file.size > limit * 1048576) {
    showError(`"${file.name}" is over the service's limits: ${mib(file.size)} exceeds the upload limit of ${limit} MiB.`);
    return;
  }
  if (file.size === 0) {
    showError(`"${file.name}" is empty.`);
    return;
  }
  try {
    await (isClip(file) ? clip(file) : photo(file));
  } catch (e) {
    resetResult();
    showError(e.message);
  }
}

// --- wiring -------------------------------------------------------------------------------------------------

function init() {
  $("origin").textContent = window.location.origin;
  $("file").addEventListener("change", (e) => {
    handle(e.target.files[0]);
    e.target.value = ""; // choosing the same file again uploads it again
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    handle(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") $("file").click();
  });
  for (const id of ["show-boxes", "show-numbers"]) {
    $(id).addEventListener("change", () => state.image && draw());
  }
  loadInfo();
}

init();
