// vlaforge console page: the state arrives as JSON, the camera view as binary JPEG (no libraries, no CDN).
"use strict";
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token") || "";
let ws = null, state = null, controls = false, gripper = -1;
const held = new Set();

function connect() {
  ws = new WebSocket(`ws://${location.host}/ws?token=${encodeURIComponent(token)}`);
  ws.binaryType = "blob";
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") {  // the camera view
      const url = URL.createObjectURL(ev.data);
      const img = $("camera");
      const old = img.src;
      img.onload = () => { if (old.startsWith("blob:")) URL.revokeObjectURL(old); };
      img.src = url;
      img.dataset.frames = String(Number(img.dataset.frames || 0) + 1);
      return;
    }
    const m = JSON.parse(ev.data);
    if (m.type === "error") { showError(m.message); return; }
    if (m.type === "state") render(m);
  };
  ws.onclose = () => { setBadge("status", "disconnected", "HOLD"); setTimeout(connect, 1000); };
}

function send(m) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(m)); }
function showError(text) { const e = $("error"); e.textContent = text; e.hidden = false;
  setTimeout(() => { e.hidden = true; }, 4000); }
function setBadge(id, text, cls) { const b = $(id); b.textContent = text; b.className = "badge " + cls; }

function render(m) {
  state = m;
  controls = m.role === "control";
  $("task").textContent = m.task;
  $("instruction").textContent = m.instruction;
  setBadge("status", m.mode === "ask" ? "ASK" : m.status, m.mode === "ask" ? "ask" : m.status);
  setBadge("role", controls ? "control" : "view", controls ? "control" : "view");
  $("take-control").hidden = controls;
  $("mode").textContent = m.mode;
  $("step").textContent = m.step; $("seed").textContent = m.seed;
  $("success").textContent = m.success ? "yes" : "no";
  $("state").textContent = m.state.map((v) => v.toFixed(3)).join(" ");
  $("recording").textContent = m.recording ? "yes" : "no";
  $("buffered").textContent = m.buffered ?? "-"; $("recorded").textContent = m.recorded ?? "-";
  $("episodes").textContent = m.episodes;
  $("rate").textContent = m.success_rate == null ? "-" : Math.round(100 * m.success_rate) + "%";
  $("corrections").textContent = m.corrections ?? "-"; $("version").textContent = m.adapted_version ?? "-";
  const alarms = m.monitor ? Object.entries(m.monitor).filter(([, v]) => v).map(([k]) => k) : [];
  $("alarms").textContent = alarms.length ? alarms.join(", ") : "none";
  $("ask").hidden = m.mode !== "ask";
  $("mode-policy").disabled = !m.has_policy;
  for (const id of ["mode-teleop", "mode-policy", "rec-start", "rec-save", "rec-discard", "next", "reset",
                    "set-instruction"]) { $(id).disabled = !controls || (id === "mode-policy" && !m.has_policy); }
  plotChunk(m.chunk); plotSeries("latency", m.latency_ms, m.budget_ms, "ms"); plotSeries("confidence",
    m.confidence, null, "");
}

function plotChunk(chunk) {
  const c = $("chunk"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  g.fillStyle = "#555"; g.fillText("planned chunk", 4, 10);
  if (!chunk || !chunk.length) return;
  const colors = ["#c92a2a", "#2f9e44", "#1971c2", "#e8590c", "#862e9c", "#0b7285", "#5f3dc4"];
  const h = chunk.length, d = chunk[0].length;
  for (let j = 0; j < d; j++) {
    g.strokeStyle = colors[j % colors.length]; g.beginPath();
    for (let i = 0; i < h; i++) {
      const x = 4 + (c.width - 8) * i / Math.max(1, h - 1), y = c.height / 2 - chunk[i][j] * (c.height / 2 - 12);
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    }
    g.stroke();
  }
}

function plotSeries(id, values, budget, unit) {
  const c = $(id), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  g.fillStyle = "#555"; g.fillText(id + (values && values.length ? ` ${values[values.length - 1].toFixed(2)} ${unit}`
    : " -"), 4, 10);
  if (!values || !values.length) return;
  const top = Math.max(budget || 0, ...values.filter(Number.isFinite), 1e-6) * 1.1;
  const y = (v) => c.height - 4 - (c.height - 16) * v / top;
  if (budget) { g.strokeStyle = "#c92a2a"; g.beginPath(); g.moveTo(0, y(budget)); g.lineTo(c.width, y(budget));
    g.stroke(); }
  g.strokeStyle = "#1971c2"; g.beginPath();
  values.forEach((v, i) => { const x = 4 + (c.width - 8) * i / Math.max(1, values.length - 1);
    i ? g.lineTo(x, y(v)) : g.moveTo(x, y(v)); });
  g.stroke();
}

// teleoperation: keys held (and a gamepad) -> a command per control period while anything is pressed
const KEYS = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [1, 1], ArrowDown: [1, -1], w: [2, 1], s: [2, -1] };
function axes() {
  const d = state ? state.action_dim : 4, a = new Array(d).fill(0);
  for (const k of held) { const m = KEYS[k]; if (m) a[m[0]] += m[1]; }
  const pads = navigator.getGamepads ? Array.from(navigator.getGamepads()).filter(Boolean) : [];
  if (pads.length) {
    const p = pads[0], dead = (v) => (Math.abs(v) < 0.15 ? 0 : v);
    a[0] += dead(p.axes[0] || 0); a[1] += -dead(p.axes[1] || 0); a[2] += -dead(p.axes[3] || 0);
    if (p.buttons[0] && p.buttons[0].pressed && !axes.padDown) gripper = -gripper;
    axes.padDown = !!(p.buttons[0] && p.buttons[0].pressed);
  }
  a[d - 1] = gripper;
  return a.map((v, i) => (i === d - 1 ? v : Math.max(-1, Math.min(1, v))));
}
setInterval(() => { if (controls && state && (state.mode === "teleop" || state.mode === "takeover"))
  send({ type: "command", axes: axes() }); }, 50);
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT") return;
  const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (k === "c") { gripper = -gripper; e.preventDefault(); return; }
  if (KEYS[k]) { held.add(k); e.preventDefault(); }
});
document.addEventListener("keyup", (e) => { held.delete(e.key.length === 1 ? e.key.toLowerCase() : e.key); });
window.addEventListener("blur", () => held.clear());

$("estop").onclick = () => send({ type: "estop" });
$("reset").onclick = () => send({ type: "reset" });
$("take-control").onclick = () => send({ type: "take_control" });
$("mode-teleop").onclick = () => send({ type: "mode", mode: "teleop" });
$("mode-policy").onclick = () => send({ type: "mode", mode: "policy" });
$("takeover").onclick = () => send({ type: "mode", mode: "teleop" });
$("resume").onclick = () => send({ type: "resume" });
$("rec-start").onclick = () => send({ type: "record", action: "start" });
$("rec-save").onclick = () => send({ type: "record", action: "save" });
$("rec-discard").onclick = () => send({ type: "record", action: "discard" });
$("next").onclick = () => send({ type: "next_episode" });
$("set-instruction").onclick = () => send({ type: "instruction", text: $("instruction-text").value });
connect();
